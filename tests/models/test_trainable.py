"""What full fine-tuning trains, and the model's own dropout."""

import pytest

from tuneloop.config import ConfigError
from tuneloop.models import Precision, load_model
from tuneloop.models.trainable import freeze, set_model_dropout


def test_freeze_first_layers_and_named_modules(tiny_model):
    model = load_model(tiny_model, Precision.fp32)
    counts = freeze(model, first_layers=1, modules=["layers.1.mlp"])
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert any("layers.0." in n for n in frozen) and any("layers.1.mlp" in n for n in frozen)
    assert any("embed_tokens" in n for n in frozen) and not any("layers.1.self_attn" in n for n in frozen)
    assert counts["trainable"] == sum(
        p.numel()
        for n, p in model.named_parameters()
        if ("layers.1." in n and "mlp" not in n) or n == "model.norm.weight"
    )
    with pytest.raises(ConfigError, match="has 2 layers"):
        freeze(load_model(tiny_model, Precision.fp32), first_layers=3)
    with pytest.raises(ConfigError, match="no parameter name contains"):
        freeze(load_model(tiny_model, Precision.fp32), modules=["nonexistent"])


def test_model_dropout_is_set_where_the_model_has_it(tiny_model):
    model = load_model(tiny_model, Precision.fp32)
    assert "attention_dropout" in set_model_dropout(model, 0.2)
    assert model.model.layers[0].self_attn.attention_dropout == 0.2
