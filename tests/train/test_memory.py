import ctypes

import pytest

from tuneloop.train import memory

glibc = pytest.mark.skipif(memory._glibc() is None, reason="mallinfo2/malloc_trim are glibc's (Linux)")


def _resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@glibc
def test_heap_in_use_counts_what_malloc_handed_out():
    libc = memory._glibc()
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    before = memory.heap_bytes_in_use()
    blocks = [libc.malloc(64 * 1024) for _ in range(160)]  # 10 MiB in heap-sized blocks
    during = memory.heap_bytes_in_use()
    for block in blocks:
        libc.free(block)
    assert during - before >= 10 * 2**20
    assert memory.heap_bytes_in_use() - before < 2**20


@glibc
def test_free_heap_pages_go_back_to_the_system():
    libc = memory._glibc()
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    # 200 MiB of touched 64 KiB blocks and one more above them that stays: freed, they stay in the
    # heap (free() shrinks it only from the top), resident, until handed back
    blocks = [libc.malloc(64 * 1024) for _ in range(3201)]
    for block in blocks:
        ctypes.memset(block, 1, 64 * 1024)
    fence = blocks.pop()
    for block in blocks:
        libc.free(block)
    held = _resident_bytes()
    memory.return_free_memory()
    assert held - _resident_bytes() > 150 * 2**20
    libc.free(fence)
