"""LLM-as-judge for A/B pairs: a judge model says which of two answers is better under a rubric.

Judges prefer whichever answer they read first (position bias), so every pair is judged twice
with the order swapped, and the two verdicts are averaged:

    p(A better) = ( p(first better | A, B) + p(second better | B, A) ) / 2

A judge that only ever picks the first answer thus scores every pair 0.5, a tie. `consistent`
marks pairs where both orders agree. The judge is any model tuneloop loads (the probability comes
from its next-token logits for "1" against "2"), or an OpenAI-compatible endpoint (its one-token
answer, temperature 0, so each order gives 1 or 0).
"""

from __future__ import annotations

import torch

from tuneloop.eval.compare import win_rate

RUBRIC = (
    "Judge which answer better fulfils the user's request: correct, complete, following the "
    "requested format, and no longer than needed."
)
TIE_BAND = 0.1  # |p - 0.5| below this is a tie


def judge_prompt(rubric: str, prompt: str, first: str, second: str) -> list[dict]:
    return [
        {"role": "system", "content": "You are a strict, impartial judge of answers."},
        {
            "role": "user",
            "content": f"{rubric}\n\n[Request]\n{prompt}\n\n[Answer 1]\n{first}\n\n"
            f"[Answer 2]\n{second}\n\nWhich answer is better? Reply with 1 or 2 only.",
        },
    ]


class LocalJudge:
    def __init__(self, spec: str):
        from tuneloop.models import choose_precision, load_model, load_tokenizer, resolve_model

        folder = resolve_model(spec)
        self.name = spec
        self.tokenizer = load_tokenizer(folder)
        self.precision = choose_precision("auto", "cpu" if not torch.cuda.is_available() else "cuda")
        self.model = load_model(
            folder, self.precision, "cuda" if torch.cuda.is_available() else "cpu", inference=True
        ).eval()
        self.choices = [self.tokenizer.encode(c, add_special_tokens=False)[0] for c in ("1", "2")]

    @torch.inference_mode()
    def first_is_better(self, messages: list[dict]) -> float:
        ids = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        device = next(self.model.parameters()).device
        logits = self.model(**{k: v.to(device) for k, v in ids.items()}).logits[0, -1, self.choices].float()
        return float(torch.softmax(logits, dim=0)[0])


class EndpointJudge:
    def __init__(self, url: str, model: str | None = None, api_key: str | None = None):
        import os

        from openai import OpenAI

        self.client = OpenAI(base_url=url, api_key=api_key or os.environ.get("OPENAI_API_KEY", "unused"))
        self.name = model or self.client.models.list().data[0].id

    def first_is_better(self, messages: list[dict]) -> float:
        reply = self.client.chat.completions.create(model=self.name, messages=messages, max_tokens=2, temperature=0)
        text = (reply.choices[0].message.content or "").strip()
        return 1.0 if text.startswith("1") else 0.0 if text.startswith("2") else 0.5


def make_judge(spec: str, model: str | None = None):
    return EndpointJudge(spec, model) if spec.startswith(("http://", "https://")) else LocalJudge(spec)


def judge_pairs(judge, prompts: list[str], a: list[str], b: list[str], rubric: str = RUBRIC) -> dict:
    pairs = []
    for prompt, answer_a, answer_b in zip(prompts, a, b):
        a_first = judge.first_is_better(judge_prompt(rubric, prompt, answer_a, answer_b))
        b_first = judge.first_is_better(judge_prompt(rubric, prompt, answer_b, answer_a))
        p_a = (a_first + (1 - b_first)) / 2
        winner = "a" if p_a > 0.5 + TIE_BAND else "b" if p_a < 0.5 - TIE_BAND else "tie"
        pairs.append(
            {
                "p_a": p_a,
                "a_first": a_first,
                "b_first": b_first,
                "winner": winner,
                "consistent": (a_first > 0.5) == (b_first < 0.5) and a_first != 0.5,
            }
        )
    n = max(1, len(pairs))
    return {
        "judge": judge.name,
        "rubric": rubric,
        "pairs": pairs,
        "b_wins": sum(p["winner"] == "b" for p in pairs),
        "ties": sum(p["winner"] == "tie" for p in pairs),
        "a_wins": sum(p["winner"] == "a" for p in pairs),
        "position_consistency": sum(p["consistent"] for p in pairs) / n,
        "b_win_rate": win_rate([{"b": 1.0, "tie": 0.5, "a": 0.0}[p["winner"]] for p in pairs]),
    }
