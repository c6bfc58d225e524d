"""The per-row decoding controls (serve/controls.py) on synthetic logits: OpenAI's penalty and bias
definitions, and a grammar's mask."""

import json

import pytest
import torch

from tuneloop.serve.controls import ControlsProcessor, RowControls, token_logprobs

WIDTH = 2  # prompt tokens before each row's answer


@pytest.mark.parametrize(
    "controls, answer, expected",
    [
        (RowControls(), [1, 1, 2], [0.0, 0.0, 0.0, 0.0]),
        # frequency: minus 0.5 per time the token was generated; presence: minus 1 once it was
        (RowControls(frequency_penalty=0.5), [1, 1, 2], [0.0, -1.0, -0.5, 0.0]),
        (RowControls(presence_penalty=1.0), [1, 1, 2], [0.0, -1.0, -1.0, 0.0]),
        (RowControls(presence_penalty=1.0, frequency_penalty=0.5), [1, 1, 2], [0.0, -2.0, -1.5, 0.0]),
        # negative penalties encourage repetition; the prompt's tokens never count
        (RowControls(frequency_penalty=-1.0), [3], [0.0, 0.0, 0.0, 1.0]),
        (RowControls(logit_bias={0: 100.0, 3: -100.0}), [], [100.0, 0.0, 0.0, -100.0]),
    ],
)
def test_penalties_and_bias_follow_openais_definition(controls, answer, expected):
    ids = torch.tensor([[3, 3, *answer]])
    scores = ControlsProcessor([controls], WIDTH, None)(ids, torch.zeros(1, 4))
    assert scores[0].tolist() == expected


def test_rows_without_controls_are_untouched():
    ids = torch.tensor([[3, 3, 1], [3, 3, 1]])
    scores = ControlsProcessor([RowControls(presence_penalty=2.0), RowControls()], WIDTH, None)(ids, torch.zeros(2, 4))
    assert scores[1].tolist() == [0.0] * 4 and scores[0, 1] == -2.0


def test_a_grammar_masks_its_row_only(tiny_model):
    from transformers import AutoConfig

    from tuneloop.models import load_tokenizer
    from tuneloop.serve.controls import Grammars

    tokenizer = load_tokenizer(tiny_model)
    vocab = AutoConfig.from_pretrained(tiny_model).vocab_size
    grammars = Grammars(tokenizer, vocab)
    schema = {
        "type": "json_schema",
        "json_schema": {"schema": {"type": "object", "properties": {"a": {"type": "boolean"}}, "required": ["a"]}},
    }
    processor = ControlsProcessor([RowControls(grammar=grammars.compile(schema)), RowControls()], WIDTH, grammars)
    ids = torch.tensor([[5, 5], [5, 5]])
    scores = processor(ids, torch.zeros(2, vocab))
    allowed = [t for t in range(vocab) if scores[0, t] > -1e9]
    assert allowed and all(tokenizer.decode([t]).startswith("{") for t in allowed)
    assert (scores[1] == 0).all()
    assert grammars.compile(schema) is grammars.compile(json.loads(json.dumps(schema)))  # cached


def test_token_logprobs_rank_the_chosen_token_among_the_alternatives():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
    out = token_logprobs(logits, [0, 2], top=2)
    assert [t for t, _, _ in out] == [0, 2]
    assert out[0][2][0][0] == 0 and out[1][2][0][0] == 1  # the likeliest first
    assert out[0][1] == pytest.approx(torch.log_softmax(logits[0], -1)[0].item())
