"""Writes tickets.jsonl: customer support messages triaged into a fixed JSON schema.

The task is one where a 135M model clearly gains from fine-tuning: zero-shot it cannot keep to
the schema or the label set; a few hundred examples teach both. Messages are composed from
many independent parts (opening, issue, product, order reference, urgency, closing, typos),
so the test split asks for generalisation, not recall of a template.

    python examples/quickstart/make_tickets.py            # rewrites tickets.jsonl (seeded)
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SYSTEM = (
    "Triage this support message. Reply with JSON only: category (billing, shipping, returns, account, "
    "technical, product_question), priority (low, medium, high, urgent), product (or null), "
    "order_id (or null), refund_requested (true/false)."
)

PRODUCTS = [
    "AeroBook 14 laptop",
    "Pulse X2 headphones",
    "Nimbus smart speaker",
    "Vantage 27 monitor",
    "Orbit fitness watch",
    "Glide wireless mouse",
    "Keyforge mechanical keyboard",
    "Lumen desk lamp",
    "Stratus router",
    "Echo Dock charging station",
    "Pixel Pro webcam",
    "Tempo bluetooth speaker",
    "Quill drawing tablet",
    "Atlas power bank",
    "Horizon 4K projector",
]

# Each category: issue sentences with a {p} slot for the product; whether a refund fits it.
ISSUES = {
    "billing": [
        "I was charged twice for my {p}.",
        "My card was billed but the {p} order shows as unpaid.",
        "The invoice for the {p} has the wrong amount on it.",
        "I see a charge I don't recognise, it mentions the {p}.",
        "The discount code didn't apply when I bought the {p}.",
        "You charged me full price for the {p} even though it was on sale.",
    ],
    "shipping": [
        "My {p} still hasn't arrived and tracking hasn't moved in a week.",
        "The tracking page says delivered but there is no {p} at my door.",
        "Can you tell me when the {p} will ship?",
        "The {p} was sent to my old address.",
        "The box with my {p} arrived crushed.",
        "Delivery of the {p} keeps getting postponed.",
    ],
    "returns": [
        "I want to return the {p}, it's not what I expected.",
        "How do I send back the {p}? It doesn't fit my setup.",
        "I'd like to exchange the {p} for a different colour.",
        "The return label for the {p} doesn't work.",
        "I sent the {p} back two weeks ago and heard nothing since.",
    ],
    "account": [
        "I can't log in to my account since I changed my email.",
        "Please delete my account and all my data.",
        "I never got the password reset email.",
        "Someone else seems to have access to my account.",
        "How do I change the shipping address saved in my profile?",
        "My account got locked after too many login attempts.",
    ],
    "technical": [
        "The {p} won't turn on anymore.",
        "My {p} keeps disconnecting every few minutes.",
        "The {p} stopped charging after the last firmware update.",
        "The {p} makes a loud buzzing noise.",
        "The app doesn't detect my {p} at all.",
        "The screen on my {p} flickers constantly.",
    ],
    "product_question": [
        "Does the {p} work with a Mac?",
        "Is the {p} compatible with USB-C?",
        "What's the battery life of the {p}?",
        "Will the {p} be back in stock soon?",
        "Does the {p} come with a warranty?",
        "Can the {p} be used outside the US?",
    ],
}
NEEDS_PRODUCT = {"account": False}  # account issues never name a product; others always do

REFUND_ASKS = [
    "I want my money back.",
    "Please refund me.",
    "I'd like a full refund.",
    "Refund the charge please.",
    "Just give me a refund.",
    "Can I get a refund for this?",
]
OPENINGS = ["", "", "Hi,", "Hello,", "Hey there.", "Good morning,", "Hi team,", "To whom it may concern,", "Hiya -"]
CLOSINGS = ["", "", "", "Thanks.", "Thank you!", "Cheers,\nSam", "Regards, Priya", "Thanks in advance.", "- Tom"]

# Priority cues, by level; sentiment of the wording follows the level.
URGENCY = {
    # Only "medium" may carry no cue at all, so the label is always recoverable from the text.
    "low": ["No rush on this.", "Whenever you get a chance.", "Just curious.", "Not urgent at all."],
    "medium": ["", "Could you look into it?", "Let me know what to do.", "Please advise."],
    "high": [
        "This is really frustrating.",
        "Please sort this out quickly.",
        "I need this fixed this week.",
        "This is the second time I'm writing about this.",
    ],
    "urgent": [
        "I need this resolved TODAY.",
        "URGENT - I need it for work tomorrow.",
        "This is unacceptable, fix it immediately!",
        "Please help ASAP, it's an emergency.",
    ],
}
PRIORITY_BY_CATEGORY = {
    "billing": ["medium", "high", "urgent"],
    "shipping": ["low", "medium", "high", "urgent"],
    "returns": ["low", "medium", "high"],
    "account": ["medium", "high", "urgent"],
    "technical": ["medium", "high", "urgent"],
    "product_question": ["low", "low", "medium"],
}
ORDER_REFS = ["Order {o}.", "My order number is {o}.", "(order {o})", "Order #: {o}", "Ref {o}", "It was order {o}."]


def make_ticket(rng: random.Random) -> dict:
    category = rng.choice(list(ISSUES))
    product = rng.choice(PRODUCTS) if NEEDS_PRODUCT.get(category, True) else None
    # Customers often drop the product type ("Pulse X2"); the label stays the catalogue name.
    written = " ".join(product.split()[:2]) if product and rng.random() < 0.2 else product
    issue = rng.choice(ISSUES[category]).format(p=written or "")
    # Order numbers come up for orders; product questions and account issues rarely have one.
    has_order = rng.random() < (0.15 if category in ("product_question", "account") else 0.7)
    order_id = f"ORD-{rng.randint(10000, 99999)}" if has_order else None
    refund = category in ("billing", "returns", "shipping", "technical") and rng.random() < 0.35
    priority = rng.choice(PRIORITY_BY_CATEGORY[category])

    parts = [rng.choice(OPENINGS), issue]
    if order_id:
        parts.insert(rng.choice([1, 2]), rng.choice(ORDER_REFS).format(o=order_id))
    if refund:
        parts.append(rng.choice(REFUND_ASKS))
    parts.append(rng.choice(URGENCY[priority]))
    parts.append(rng.choice(CLOSINGS))
    text = " ".join(p for p in parts if p).replace(" \n", "\n")
    if rng.random() < 0.2:
        text = text.lower()

    answer = {
        "category": category,
        "priority": priority,
        "product": product,
        "order_id": order_id,
        "refund_requested": refund,
    }
    return {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": text},
            {"role": "assistant", "content": json.dumps(answer)},
        ]
    }


def main(n: int = 480, seed: int = 7) -> None:
    rng = random.Random(seed)
    seen: set[str] = set()
    rows = []
    while len(rows) < n:
        row = make_ticket(rng)
        key = row["messages"][1]["content"]
        if key not in seen:  # no duplicate messages, so no train/test overlap by construction
            seen.add(key)
            rows.append(row)
    out = Path(__file__).resolve().parents[2] / "src" / "tuneloop" / "presets" / "quickstart" / "tickets.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {len(rows)} rows to {out}")


if __name__ == "__main__":
    main()
