"""Training methods are plug-ins (train/methods/): the contract every registered method keeps, and no
code outside their folder that branches on a method's name."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest

from tuneloop.config import ConfigError, SearchRange, TrainConfig, config_from_dict
from tuneloop.train.methods import METHODS, method_of

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "tuneloop"


def test_the_schema_accepts_exactly_the_registered_methods():
    accepted = typing.get_args(TrainConfig.model_fields["method"].annotation)
    assert set(accepted) == set(METHODS)
    with pytest.raises(ConfigError, match="one of"):
        method_of("sft2")


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_keeps_the_contract(name):
    method = METHODS[name]
    assert method.name == name and method.summary
    low, high = method.lr_range
    assert 0 < low <= method.lr_usual <= high
    assert method.learns_from in ("answers", "pairs", "prompts")
    assert method.sides >= 1 and callable(method.build_trainer)
    for key, bounds in method.search_space.items():  # the sweep's default space is valid config keys and ranges
        section = key.split(".")[0]
        assert section in ("train", "lora", name) and SearchRange(**bounds)
    defaults = config_from_dict({"data": {"path": "x"}, "train": {"method": name}})
    method.check(defaults)  # the defaults are always acceptable
    assert isinstance(method.learns_answer_ends(defaults), bool) and isinstance(
        method.reference_forward(defaults), bool
    )


# A comparison with a method's name: `method == "dpo"`, `!= "full"`, `in ("dpo", "orpo")`, or a
# table of the names (PREFERENCE_METHODS). The methods' own folder may; the schema lists the names it
# accepts; the fine-tuning API maps OpenAI's method types (its own names) onto them.
NAMES = "|".join(METHODS)
BRANCH = re.compile(
    rf"""(==|!=)\s*["']({NAMES})["']|["']({NAMES})["']\s*(==|!=)|\bin\s*\(\s*["']({NAMES})["']|PREFERENCE_METHODS"""
)
ALLOWED = {"train/methods", "finetuning/hyperparameters.py", "finetuning/validate.py"}


def test_no_code_outside_the_methods_branches_on_a_method_name():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = str(path.relative_to(PACKAGE))
        if any(relative.startswith(a) for a in ALLOWED):
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if BRANCH.search(line):
                found.append(f"{relative}:{number}: {line.strip()}")
    assert not found, "branch on the method's properties (train/methods/), not its name:\n" + "\n".join(found)
