"""Learned spans from the model's own chat template: decoded back, they are exactly the assistant turns."""

import copy

import pytest

from tuneloop.data import Example
from tuneloop.data.conversation import learned_turns, marked, preview, tokenize_examples

CONVERSATION = [
    {"role": "system", "content": "You answer briefly."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Italy?"},
    {"role": "assistant", "content": "Rome, since 1871."},
]
CONTENTS = ["Paris.", "Rome, since 1871."]

# Templates without {% generation %} markers, in the styles models ship. The SmolLM2 tokenizer's
# eos_token is <|im_end|>, which the Zephyr and Mistral styles write after each answer.
LLAMA3 = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
ZEPHYR = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
MISTRAL = (  # drops the system turn, as Mistral's first templates did
    "{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
    "{% elif m['role'] == 'assistant' %}{{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
)
# Marks the conversation's last message: a turn renders differently once another follows.
NOT_INCREMENTAL = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% if loop.last %} (last){% endif %}"
    "</{{ m['role'] }}>\n{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
)


def learned_texts(tokenizer, tokenized) -> list[str]:
    """Each contiguous run of learned tokens, decoded."""
    runs, current = [], []
    for token, bit in zip(tokenized.input_ids, tokenized.learned):
        if bit:
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    runs += [current] if current else []
    return [tokenizer.decode(run) for run in runs]


def with_template(tokenizer, template):
    """`tokenizer` with another chat template; its <|...|> markers become special tokens, as in the
    models that ship such templates (else BPE merges '|><' across two markers)."""
    other = copy.deepcopy(tokenizer)
    other.chat_template = template
    other.add_special_tokens({"additional_special_tokens": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]})
    return other


@pytest.mark.parametrize("model", ["smollm2_folder", "tiny_model"])
def test_default_and_tiny_model_learn_exactly_the_assistant_turns(request, model):
    from tuneloop.models import load_tokenizer

    tokenizer = load_tokenizer(request.getfixturevalue(model))
    [tokenized] = tokenize_examples([Example(CONVERSATION, 1)], tokenizer)
    assert learned_texts(tokenizer, tokenized) == [c + "<|im_end|>\n" for c in CONTENTS]
    assert tokenized.input_ids == tokenizer.apply_chat_template(CONVERSATION, tokenize=True, return_dict=False)


@pytest.mark.parametrize(
    "template, end, problem",
    [
        (LLAMA3, "<|eot_id|>", None),
        (ZEPHYR, "<|im_end|>\n", None),
        (MISTRAL, "<|im_end|>", "template_drops_system"),  # it also drops the system turn
        (NOT_INCREMENTAL, "", "template_not_incremental"),  # found by its text: the marker is not learned
    ],
)
def test_templates_without_generation_markers(tokenizer, template, end, problem):
    other = with_template(tokenizer, template)
    [tokenized] = tokenize_examples([Example(CONVERSATION, 1)], other)
    assert learned_texts(other, tokenized) == [c + end for c in CONTENTS]
    assert {p.code for p in tokenized.problems} == ({problem} if problem else set())


@pytest.mark.parametrize(
    "train_on, weights, learned",
    [
        ("all_assistant", (1, 1), CONTENTS),
        ("last_assistant", (1, 1), CONTENTS[1:]),
        ("all_assistant", (0, 1), CONTENTS[1:]),  # OpenAI's weight 0: shown, not learned
        ("all_assistant", (1, 0), CONTENTS[:1]),
        ("last_assistant", (1, 0), []),
    ],
)
def test_train_on_and_weights(tokenizer, train_on, weights, learned):
    messages = copy.deepcopy(CONVERSATION)
    messages[2]["weight"], messages[4]["weight"] = weights
    [tokenized] = tokenize_examples([Example(messages, 1)], tokenizer, train_on)
    assert learned_texts(tokenizer, tokenized) == [c + "<|im_end|>\n" for c in learned]


def test_all_learns_everything_but_weight_zero_turns(tokenizer):
    messages = copy.deepcopy(CONVERSATION)
    messages[2]["weight"] = 0
    [tokenized] = tokenize_examples([Example(messages, 1)], tokenizer, "all")
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    before, after = rendered.split("Paris.<|im_end|>\n")
    assert learned_texts(tokenizer, tokenized) == [before, after]


def test_learned_turns_rejects_unknown_mode():
    with pytest.raises(ValueError, match="all_assistant"):
        learned_turns(CONVERSATION, "every")


TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
TOOL_CONVERSATION = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "", "tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]},
    {"role": "tool", "content": '{"celsius": 21}'},
    {"role": "assistant", "content": "21 degrees."},
]
# A template that writes tools and calls itself, as Qwen2.5's and Llama 3.1's do.
TOOL_TEMPLATE = (
    "{% if tools %}<tools>{% for t in tools %}{{ t.function.name }};{% endfor %}</tools>\n{% endif %}"
    "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% if m.tool_calls %}{% for c in m.tool_calls %}"
    "CALL {{ c.function.name }} {{ c.function.arguments | tojson }}{% endfor %}{% endif %}</{{ m.role }}>\n"
    "{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
)


def test_tool_calls_written_out_for_templates_without_tools(tokenizer):
    [tokenized] = tokenize_examples([Example(TOOL_CONVERSATION, 1, tools=TOOLS)], tokenizer)
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    assert learned_texts(tokenizer, tokenized) == [call + "<|im_end|>\n", "21 degrees.<|im_end|>\n"]
    assert '"name": "get_weather"' in tokenized.text.split("<|im_start|>user")[0]  # the tools, in the system turn
    assert "<tool_response>\n" + '{"celsius": 21}' in tokenized.text


def test_tool_calls_rendered_by_templates_that_support_them(tokenizer):
    other = with_template(tokenizer, TOOL_TEMPLATE)
    [tokenized] = tokenize_examples([Example(TOOL_CONVERSATION, 1, tools=TOOLS)], other)
    assert tokenized.text.startswith("<tools>get_weather;</tools>")
    assert learned_texts(other, tokenized) == [
        'CALL get_weather {"city": "Paris"}</assistant>\n',
        "21 degrees.</assistant>\n",
    ]


def test_template_problems_name_dropped_turns(tokenizer):
    other = with_template(tokenizer, MISTRAL)
    [[problem]] = [t.problems for t in tokenize_examples([Example(CONVERSATION, 7, file="d.jsonl")], other)]
    assert (problem.row, problem.field, problem.code) == (7, "messages[0].content", "template_drops_system")
    assert [t.problems for t in tokenize_examples([Example(CONVERSATION, 7)], tokenizer)] == [[]]


def test_preview_marks_the_learned_spans_of_the_richest_row(tokenizer):
    single = Example(CONVERSATION[:3], 1)
    shown = preview([single, Example(CONVERSATION, 2)], tokenizer)
    assert shown["row"] == 2 and len(shown["spans"]) == 2
    text = marked(shown)
    assert "[[Paris.<|im_end|>\n]]" in text and "[[Rome, since 1871.<|im_end|>\n]]" in text
