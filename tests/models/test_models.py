import pytest

from tuneloop.models import ModelNotFound, Precision, choose_precision, resolve_model
from tuneloop.models import precision as precision_mod


def test_builtin_model_is_a_cached_hf_folder(smollm2_folder):
    assert (smollm2_folder / "model.safetensors").is_file()
    assert "quantization_config" not in (smollm2_folder / "config.json").read_text()
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == smollm2_folder


def test_local_folder_is_used_as_is(tiny_model):
    assert resolve_model(str(tiny_model)) == tiny_model


def test_folder_without_config_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotFound, match="needs config.json"):
        resolve_model(str(tmp_path))


def test_unknown_model_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFound, match="not a built-in model .* Offline, pass a local"):
        resolve_model("someone/not-a-model-xyz")


@pytest.mark.parametrize(
    "requested, fast_bf16, expected",
    [
        ("auto", True, Precision.bf16),
        ("auto", False, Precision.fp32),
        ("fp32", True, Precision.fp32),
        ("bf16", False, Precision.bf16),
    ],
)
def test_choose_precision_on_cpu(monkeypatch, requested, fast_bf16, expected):
    monkeypatch.setattr(precision_mod, "cpu_has_fast_bf16", lambda: fast_bf16)
    assert choose_precision(requested, device="cpu") is expected


@pytest.mark.parametrize(
    "flags, speedup, expected",
    [
        (["avx2"], None, False),  # no bf16 instructions: emulated, not measured
        (["amx_bf16", "avx512_bf16"], 8.0, True),  # AMX Xeon
        (["avx512_bf16"], 3.0, True),
        (["avx512_bf16"], 0.95, True),  # about a tie: bf16 halves the weights' memory
        (["avx512_bf16"], 0.55, False),  # Xeon VM without AMX: fp32 multiplies faster
    ],
)
def test_bf16_only_where_it_pays(monkeypatch, flags, speedup, expected):
    monkeypatch.setattr(precision_mod, "cpu_flags", lambda: flags)
    monkeypatch.setattr(precision_mod, "bf16_speedup", lambda: speedup if speedup else pytest.fail("measured"))
    assert precision_mod.cpu_has_fast_bf16.__wrapped__() is expected


def test_bf16_speedup_is_measured_once_per_machine(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNELOOP_HOME", str(tmp_path))
    measured = []
    monkeypatch.setattr(precision_mod, "_product_seconds", lambda: measured.append(1) or {"bf16": 2.0, "fp32": 1.0})
    assert precision_mod.bf16_speedup() == 0.5
    assert precision_mod.bf16_speedup() == 0.5 and len(measured) == 1
    (cached,) = (tmp_path / "calibration" / "bf16").glob("*.json")
    cached.write_text("{damaged")
    assert precision_mod.bf16_speedup() == 0.5 and len(measured) == 2


def test_product_timing_is_real():
    seconds = precision_mod._product_seconds(repeats=2)
    assert set(seconds) == {"bf16", "fp32"} and all(0 < s < 5 for s in seconds.values())


def test_loaded_precision(tiny_model):
    import torch

    from tuneloop.models import load_model

    assert load_model(tiny_model, Precision.bf16).dtype == torch.bfloat16
    assert load_model(tiny_model, Precision.fp32).dtype == torch.float32


def test_processes_starting_at_once_convert_the_default_model_once(tmp_path, monkeypatch):
    """An empty TUNELOOP_HOME and several runs starting together: one converts under a lock, the
    others wait and load its folder (they used to delete and replace it under each other)."""
    import threading
    import time

    from tuneloop.models import resolve

    monkeypatch.setenv("TUNELOOP_HOME", str(tmp_path))
    converting, conversions = [], []

    def fake_convert(gguf, target):
        converting.append(1)
        assert len(converting) == 1, "two conversions ran at the same time"
        time.sleep(0.2)
        target.mkdir(parents=True)
        (target / "config.json").write_text("{}")
        (target / "model.safetensors").write_bytes(b"x")
        conversions.append(target)
        converting.pop()

    monkeypatch.setattr(resolve, "_convert_gguf", fake_convert)
    results, errors = [], []

    def start():
        try:
            results.append(resolve_model("smollm2-135m-instruct"))
        except Exception as e:  # noqa: BLE001 — collected for the assertion below
            errors.append(e)

    threads = [threading.Thread(target=start) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(conversions) == 1 and len(set(results)) == 1
