"""End to end: multi-turn ShareGPT and OpenAI files (weights, tool calls) through the real `tuneloop run`."""

import json

import pytest

from conftest import tuneloop, write_jsonl
from tuneloop.data import load_examples_strict
from tuneloop.runs import RunDir
from tuneloop.train import to_training_rows

END = "<|im_end|>\n"  # what SmolLM2's template writes after each assistant turn: learned with it


def sharegpt_rows(n: int) -> list[dict]:
    return [
        {
            "system": "You are a terse assistant.",
            "conversations": [
                {"from": "human", "value": f"Pick a number near {i}."},
                {"from": "gpt", "value": str(i + 1)},
                {"from": "human", "value": "Double it."},
                {"from": "gpt", "value": str(2 * (i + 1))},
                {"from": "human", "value": "Now say it in words, please."},
                {"from": "gpt", "value": f"It is {2 * (i + 1)} in words, number {i}."},
            ],
        }
        for i in range(n)
    ]


TOOLS = [{"type": "function", "function": {"name": "lookup_order", "parameters": {"type": "object"}}}]


def openai_rows(n: int) -> list[dict]:
    return [
        {
            "messages": [
                {"role": "user", "content": f"Where is order {1000 + i}?"},
                {"role": "assistant", "content": "One moment, I am checking.", "weight": 0},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": f"call{i}",
                            "type": "function",
                            "function": {"name": "lookup_order", "arguments": json.dumps({"order": 1000 + i})},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": f"call{i}", "content": json.dumps({"status": "shipped", "day": i})},
                {"role": "assistant", "content": f"Order {1000 + i} shipped on day {i}.", "weight": 1},
            ],
            "tools": TOOLS,
        }
        for i in range(n)
    ]


def expected_learned_tokens(tokenizer, rows: list[dict], learned_texts) -> int:
    """Counted independently of the span search: each learned turn's text plus its end marker."""
    return sum(
        len(tokenizer(text + END, add_special_tokens=False)["input_ids"]) for row in rows for text in learned_texts(row)
    )


def sharegpt_learned(row):
    return [t["value"] for t in row["conversations"] if t["from"] == "gpt"]


def openai_learned(row):
    order = json.loads(row["messages"][2]["tool_calls"][0]["function"]["arguments"])
    call = json.dumps({"name": "lookup_order", "arguments": order})
    return [f"<tool_call>\n{call}\n</tool_call>", row["messages"][4]["content"]]


@pytest.mark.parametrize(
    "name, rows, learned",
    [("sharegpt", sharegpt_rows(24), sharegpt_learned), ("openai", openai_rows(24), openai_learned)],
)
def test_conversations_train_end_to_end(tmp_path, tiny_model, tokenizer, name, rows, learned):
    write_jsonl(tmp_path / "chats.jsonl", rows)
    (tmp_path / "chats.yaml").write_text(f"""
model: {tiny_model}
data: {{path: chats.jsonl, max_seq_len: 256, dedup: none, test_size: 4, validation_size: 4}}
lora: {{r: 4, alpha: 8}}
train: {{epochs: 1, batch_size: 4, learning_rate: 1.0e-2, log_every: 1}}
eval: {{max_new_tokens: 24, turns: all}}
""")
    result = tuneloop("run", "chats.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    [path] = (tmp_path / "runs").iterdir()
    run = RunDir(path)
    report = run.data_report()
    assert report["total_trainable_tokens"] == expected_learned_tokens(tokenizer, rows, learned)
    assert report["assistant_turns_per_example"] == {"3": 24}  # JSON keys
    assert len(report["preview"]["spans"]) == len(learned(rows[0]))
    # What the Trainer is handed: the same learned tokens, row by row of the training split.
    train = run.read_split("train")
    labels = to_training_rows(train, tokenizer)["labels"]
    assert sum(t != -100 for row in labels for t in row) == sum(
        len(tokenizer(text + END, add_special_tokens=False)["input_ids"])
        for e in train
        for text in learned(next(r for r in rows if _same(r, e)))
    )
    evaluation = run.evaluation()
    points = 3 if name == "sharegpt" else 2  # every assistant turn that follows the first message
    assert (evaluation["n_generated"], evaluation["n_generated_rows"]) == (4 * points, 4)
    if name == "openai":
        assert evaluation["metric"] == "tool_calls"
        assert "tool_call_accuracy" in evaluation["finetuned"]["metrics"]
    assert "One training example as the model sees it" in (path / "report.html").read_text()


def _same(row: dict, example) -> bool:
    first_user = next(m["content"] for m in example.messages if m["role"] == "user")
    turns = row.get("conversations") or row["messages"]
    return first_user == (turns[0].get("value") or turns[0].get("content"))


def test_learned_tokens_are_what_the_trainer_sees(tmp_path, tokenizer):
    rows = openai_rows(3)
    examples = load_examples_strict(write_jsonl(tmp_path / "d.jsonl", rows * 4), label="none").examples[:3]
    labels = to_training_rows(examples, tokenizer)["labels"]
    assert sum(t != -100 for row in labels for t in row) == expected_learned_tokens(tokenizer, rows, openai_learned)
