import torch

from tuneloop.models import Precision, load_model
from tuneloop.models.generate import generate_answers


def test_batched_generation_matches_one_by_one(tiny_model, tokenizer):
    """Left padding must not change what each prompt generates."""
    model = load_model(tiny_model, Precision.fp32)
    prompts = [
        [{"role": "user", "content": text}]
        for text in ["hi", "a much longer prompt with many more words in it than the first", "mid length prompt"]
    ]
    batched = generate_answers(model, tokenizer, prompts, max_new_tokens=8, batch_size=3)
    single = [generate_answers(model, tokenizer, [p], max_new_tokens=8, batch_size=1)[0] for p in prompts]
    assert batched == single
    assert all(isinstance(a, str) for a in batched)


def test_generation_restores_training_mode(tiny_model, tokenizer):
    model = load_model(tiny_model, Precision.fp32)
    model.train()
    generate_answers(model, tokenizer, [[{"role": "user", "content": "x"}]], max_new_tokens=2, batch_size=1)
    assert model.training
    torch.manual_seed(0)
