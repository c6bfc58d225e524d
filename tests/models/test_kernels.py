"""Kernel choices by device and what is installed (CI has no GPU: the CPU choices are what it runs)."""

import pytest

from tuneloop.models.kernels import attention_for, use_liger


@pytest.mark.parametrize(
    "device, inference, expected",
    [
        ("cpu", False, "eager"),
        ("cuda", False, "sdpa"),  # flash_attn is not installed
        ("cpu", True, "sdpa"),
        ("cuda", True, "sdpa"),
    ],
)
def test_attention_kernel(device, inference, expected):
    assert attention_for(device, inference=inference) == expected


def test_liger_only_on_cuda_when_installed():
    assert not use_liger("cpu", True) and not use_liger("cuda", False)


def test_liger_stays_out_of_compiled_layers(monkeypatch):
    monkeypatch.setattr("tuneloop.models.kernels.installed", lambda package: True)
    assert use_liger("cuda", True) and not use_liger("cuda", True, compiled=True)
