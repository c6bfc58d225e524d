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


def test_the_output_head_gets_a_contiguous_input_during_generation(tiny_model):
    # The prompt's forward projects a strided slice (hidden[:, -1:, :]); a non-contiguous 3-D input
    # made torch broadcast and copy the whole head per row (models/generate.py).
    from tuneloop.models.generate import contiguous_lm_head

    model = load_model(tiny_model, Precision.fp32)
    head = model.get_output_embeddings()
    seen = []
    probe = head.register_forward_pre_hook(lambda m, args: seen.append(args[0].is_contiguous()))
    ids = torch.tensor([[1, 5, 6, 7], [1, 8, 9, 10]])
    with torch.no_grad():
        plain = model.generate(input_ids=ids, max_new_tokens=3, do_sample=False, pad_token_id=0)
        assert seen[0] is False  # transformers' prompt forward: the last position, strided
        seen.clear()
        with contiguous_lm_head(model):
            hooked = model.generate(input_ids=ids, max_new_tokens=3, do_sample=False, pad_token_id=0)
        assert seen and all(seen)
    assert torch.equal(plain, hooked)
    probe.remove()
    assert not head._forward_pre_hooks  # removed on the way out
