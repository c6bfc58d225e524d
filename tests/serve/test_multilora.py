"""Mixed-adapter batches give each row exactly what PEFT gives that row alone (the reference)."""

import pytest
import torch

from tuneloop.serve.multilora import MultiLora


def _peft_logits(tiny_model, adapter, ids, scale=1.0):
    from peft import PeftModel
    from peft.helpers import rescale_adapter_scale
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), adapter).eval()
    with torch.inference_mode(), rescale_adapter_scale(model, scale):
        return model(ids).logits


def test_each_row_matches_peft(adapter_runs, tiny_model):
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[1, 504, 3458, 314, 260, 1345]] * 4)
    support, billing = adapter_runs["support"] / "adapter", adapter_runs["billing"] / "adapter"
    base = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    with torch.inference_mode():
        plain = base(ids[:1]).logits
    lora = MultiLora(base, {"support": support, "billing": billing}, torch.float32)
    with torch.inference_mode(), lora.rows(["support", None, "billing", "support"], [1.0, 1.0, 0.5, 0.0]):
        mixed = base(ids).logits
    torch.testing.assert_close(mixed[0], _peft_logits(tiny_model, support, ids[:1])[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(mixed[1], plain[0])  # no adapter: the base model
    torch.testing.assert_close(mixed[2], _peft_logits(tiny_model, billing, ids[:1], 0.5)[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(mixed[3], plain[0], atol=1e-5, rtol=1e-5)  # strength 0
    with torch.inference_mode():
        after = base(ids[:1]).logits
    torch.testing.assert_close(after, plain)  # outside a batch the hooks add nothing


def test_unsupported_adapters_are_refused(adapter_runs, tiny_model, tmp_path):
    import json
    import shutil

    from transformers import AutoModelForCausalLM

    dora = tmp_path / "dora"
    shutil.copytree(adapter_runs["support"] / "adapter", dora)
    config = json.loads((dora / "adapter_config.json").read_text())
    (dora / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    with pytest.raises(ValueError, match="DoRA"):
        MultiLora(AutoModelForCausalLM.from_pretrained(tiny_model), {"x": dora}, torch.float32)
