"""Graders (eval/graders.py): each kind scores a right and a wrong answer as it should; bad graders fail
when they are built, naming where they are."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from tuneloop.eval.graders import GraderError, build_graders, reward

REFERENCE = json.dumps({"category": "billing", "priority": "high"})
ROW = {"reference": REFERENCE, "text": "I was charged twice", "label": "billing"}
PROMPT = [{"role": "user", "content": "I was charged twice"}]


def score(spec, answer, metric="json_fields", references=(REFERENCE,), row=ROW):
    [grader] = build_graders([spec], metric, list(references))
    return grader.score(PROMPT, answer, row)


@pytest.mark.parametrize(
    "spec, right, wrong, wrong_score",
    [
        ("task_metric", REFERENCE, json.dumps({"category": "billing", "priority": "low"}), 0.5),
        ("format", '{"any": 1}', "not json", 0.0),
        ({"type": "string_check", "input": "{{sample.output_text}}", "reference": "{{item.label}}"}, "billing", "x", 0),
        ({"type": "string_check", "reference": "{{item.label}}", "operation": "ilike"}, "It is BILLING", "none", 0),
        ({"type": "text_similarity", "reference": "{{item.text}}", "evaluation_metric": "rouge_l"}, ROW["text"], "", 0),
        (
            {"type": "python", "source": "def grade(sample, item):\n    return len(sample['output_text']) < 20"},
            "ok",
            "x" * 30,
            0,
        ),
        (
            {
                "type": "multi",
                "graders": {
                    "label": {"type": "string_check", "reference": "{{item.label}}", "operation": "like"},
                    "short": {"type": "python", "source": "def grade(s, i):\n    return len(s['output_text']) < 12"},
                },
                "calculate_output": "0.5 * label + 0.5 * short",
            },
            "billing",
            "a long answer about nothing at all",
            0.0,
        ),
        ("tests.eval.test_graders:mentions_the_label", "billing it is", "no", 0.0),
    ],
)
def test_each_grader_scores_right_above_wrong(spec, right, wrong, wrong_score):
    assert score(spec, right) == pytest.approx(1.0)
    assert score(spec, wrong) == pytest.approx(wrong_score)


def mentions_the_label(prompt, answer, row) -> float:
    return float(row["label"] in answer)


def test_format_follows_the_references_form():
    labels = ["billing", "shipping", "billing", "returns"] * 5  # a label set: few distinct short answers
    assert score("format", "shipping", metric="classification", references=labels) == 1.0
    assert score("format", "a sentence", metric="classification", references=labels) == 0.0


def test_weighted_reward_is_the_weighted_mean():
    graders = build_graders(["task_metric", {"grader": "format", "weight": 3}], "json_fields", [REFERENCE])
    half_right = json.dumps({"category": "billing", "priority": "low"})
    assert reward(graders, PROMPT, half_right, ROW) == pytest.approx((0.5 + 3 * 1.0) / 4)


@pytest.mark.parametrize(
    "spec, named",
    [
        ({"type": "string_check", "reference": "x", "operation": "regex"}, "operation"),
        ({"type": "text_similarity", "reference": "x", "evaluation_metric": "meteor"}, "meteor"),
        ({"type": "python", "source": "def nothing(): pass"}, "grade"),
        ({"type": "python", "source": "def grade(:"}, "does not run"),
        (
            {
                "type": "multi",
                "graders": {"a": {"type": "string_check", "reference": "x"}},
                "calculate_output": "a ** 2",
            },
            "arithmetic",
        ),
        ({"type": "label_model"}, "label_model"),
        ("nowhere:function", "cannot import"),
        ("sometimes", "not a grader"),
    ],
)
def test_a_bad_grader_fails_when_built_naming_it(spec, named):
    with pytest.raises(GraderError, match=named) as failed:
        build_graders(["task_metric", spec], "json_fields", [REFERENCE])
    assert "grpo.graders[1]" in str(failed.value)


def test_a_template_naming_a_missing_field_says_which_fields_there_are():
    with pytest.raises(GraderError, match=r"no 'answer'.*fields: reference, text, label"):
        score({"type": "string_check", "reference": "{{item.answer}}"}, "billing")


def test_score_model_asks_an_openai_compatible_endpoint():
    """A judge model behind /v1/chat/completions (here a stub answering "7"), its score mapped from `range`."""
    asked = []

    class Judge(BaseHTTPRequestHandler):
        def do_POST(self):
            asked.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            body = json.dumps({"choices": [{"message": {"role": "assistant", "content": "Score: 7"}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Judge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        spec = {
            "type": "score_model",
            "model": "judge",
            "base_url": f"http://127.0.0.1:{server.server_port}/v1",
            "input": [{"role": "user", "content": "Rate 0-10: {{sample.output_text}} for {{item.text}}"}],
            "range": [0, 10],
        }
        assert score(spec, "a refund is on its way") == pytest.approx(0.7)
        assert asked[0]["messages"][0]["content"] == "Rate 0-10: a refund is on its way for I was charged twice"
    finally:
        server.shutdown()
