from conftest import chat
from tuneloop.data import Example, token_lengths


def test_lengths_match_the_chat_template_row_by_row(tokenizer):
    rows = [
        chat("short", "ok"),
        chat("a longer question " * 5, "an answer", system="Be brief."),
        chat("multi\nline", '{"json": true}'),
    ]
    examples = [Example(r["messages"], i + 1) for i, r in enumerate(rows)]
    lengths = token_lengths(examples, tokenizer)
    assert lengths.total == [
        len(tokenizer.apply_chat_template(e.messages, tokenize=True, return_dict=False)) for e in examples
    ]
    assert lengths.prompt == [
        len(tokenizer.apply_chat_template(e.prompt, tokenize=True, add_generation_prompt=True, return_dict=False))
        for e in examples
    ]
    assert all(t > 0 for t in lengths.learned)


def test_plain_text_has_no_prompt(tokenizer):
    [length] = token_lengths(
        [Example([{"role": "assistant", "content": "hello world"}], 1, kind="text")], tokenizer
    ).prompt
    assert length == 0
