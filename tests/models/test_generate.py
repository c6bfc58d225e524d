import pytest
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


@pytest.mark.parametrize(
    "tokens, repeating",
    [
        ([7] * 32, True),  # one token: 32 of them
        ([7] * 31, False),
        ([1, 2, 3, 4, 5] * 7, True),  # a short block needs 32 tokens of copies: 7 of 5
        ([1, 2, 3, 4, 5] * 6, False),
        (list(range(20)) * 3, True),  # a sentence-long block: 3 copies
        (list(range(20)) * 2 + list(range(19)), False),
        (list(range(64)) * 3, True),
        (list(range(65)) * 3, False),  # longer blocks than REPEAT_PERIOD are not looked for
        ([9] * 40 + [1, 2, 3], False),  # it looped, then went on: only the end counts
        (list(range(100)), False),
    ],
)
def test_a_row_repeats_when_its_end_is_one_block_written_again_and_again(tokens, repeating):
    from tuneloop.models.generate import repeating_rows

    rows = torch.tensor([tokens, list(range(1000, 1000 + len(tokens)))])
    assert repeating_rows(rows).tolist() == [repeating, False]


def test_a_row_that_ended_is_not_counted_as_looping():
    # After EOS a row is padded, and its pads repeat; with pad == EOS, the looping row's own
    # later pads must not clear it either.
    from tuneloop.models.generate import StopRepeating

    eos, width = 2, 3
    prompt = [[5, 5, 5], [6, 6, 6], [7, 7, 7]]
    new = [[8, eos] + [0] * 40, [30, 31] + list(range(10, 20)) * 4, list(range(10, 52))]
    stop = StopRepeating(width, eos)
    ended = stop(torch.tensor([p + n for p, n in zip(prompt, new)]), None)
    assert ended.tolist() == [True, True, False]
    assert stop.looped.tolist() == [False, True, False]
    new[1] = new[1][:-2] + [eos, eos]
    stop(torch.tensor([p + n for p, n in zip(prompt, new)]), None)
    assert stop.looped.tolist() == [False, True, False]


def test_looping_answers_are_cut_not_changed(tiny_model, tokenizer):
    """The tiny model's random weights loop ('Sug Sug Sug ...'): stopped, each answer is a strict
    prefix of the one that ran to max_new_tokens."""
    model = load_model(tiny_model, Precision.fp32)
    prompts = [[{"role": "user", "content": text}] for text in ["hi", "what is two plus two", "write a poem"]]
    full = generate_answers(model, tokenizer, prompts, max_new_tokens=120, batch_size=3, stop_repeating=False)
    cut = generate_answers(model, tokenizer, prompts, max_new_tokens=120, batch_size=3)
    assert all(f.startswith(c) and len(c) < len(f) for f, c in zip(full, cut))
