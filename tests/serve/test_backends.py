"""Which engine serves (no vLLM needed: `installed` is swapped for each case)."""

import pytest

from tuneloop.serve import backends


@pytest.mark.parametrize(
    "requested, device, has_vllm, dora, want",
    [
        ("auto", "cuda", True, False, "vllm"),
        ("auto", "cuda", False, False, "transformers"),
        ("auto", "cuda", True, True, "transformers"),  # vLLM cannot serve DoRA adapters
        ("auto", "cpu", True, False, "transformers"),  # vLLM's CPU build only when asked for
        ("vllm", "cpu", True, False, "vllm"),
        ("transformers", "cuda", True, False, "transformers"),
    ],
)
def test_choose_backend(monkeypatch, tmp_path, requested, device, has_vllm, dora, want):
    from tuneloop.serve import AdapterSpec

    (tmp_path / "adapter_config.json").write_text('{"r": 8, "use_dora": %s}' % ("true" if dora else "false"))
    monkeypatch.setattr(backends, "installed", lambda package: has_vllm)
    name, why = backends.choose_backend(requested, device, [AdapterSpec("a", tmp_path)])
    assert name == want and why


@pytest.mark.parametrize("requested, has_vllm, needle", [("vllm", False, "not installed"), ("tgi", True, "choose")])
def test_choose_backend_errors(monkeypatch, requested, has_vllm, needle):
    monkeypatch.setattr(backends, "installed", lambda package: has_vllm)
    with pytest.raises(ValueError, match=needle):
        backends.choose_backend(requested, "cpu", [])


def test_lora_rank_limit_fits_every_adapter(tmp_path):
    from tuneloop.serve import AdapterSpec
    from tuneloop.serve.vllm_engine import lora_rank_limit

    specs = []
    for name, config in [("a", '{"r": 8}'), ("b", '{"r": 16, "rank_pattern": {"q_proj": 24}}')]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "adapter_config.json").write_text(config)
        specs.append(AdapterSpec(name, tmp_path / name))
    assert lora_rank_limit(specs[:1]) == 8 and lora_rank_limit(specs) == 32 and lora_rank_limit([]) == 1


def test_the_batcher_follows_the_free_cores_before_each_batch_on_its_own_thread():
    """torch's thread count is per calling thread: the governor must step where generate() runs."""
    import threading

    from tuneloop.serve.batcher import Batcher
    from tuneloop.serve.engine import Request

    seen = []

    class Governor:
        def step(self):
            seen.append(("governor", threading.current_thread().name))

    class Engine:
        def generate(self, requests, streamer=None):
            seen.append(("generate", threading.current_thread().name))
            return [r.model for r in requests]

    batcher = Batcher(Engine(), max_batch=4, wait_ms=1, governor=Governor())
    try:
        assert batcher.submit(Request("a", [1])).result(timeout=10) == "a"
        assert batcher.submit(Request("b", [1])).result(timeout=10) == "b"
    finally:
        batcher.close()
    assert [kind for kind, _ in seen] == ["governor", "generate"] * 2
    assert {name for _, name in seen} == {"tuneloop-batcher"}
