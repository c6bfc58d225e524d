"""The packages form layers, lowest first; a module may import its own layer or lower ones,
never higher. Imports inside functions count too: hiding an import in a function hides the
cycle, it does not remove it."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "tuneloop"
LAYERS = [
    {"paths", "config", "cpu", "machine"},  # the schema every stage reads; the CPU threads every stage uses
    {"models"},  # resolve, load, generate; precision and kernel choices
    {"data"},
    {"runs"},  # runs/<id>/: the contract between stages
    {"eval"},
    {"train"},
    {"plan"},  # minutes and memory of a run before it starts, from the train stage's own batches
    {"doctor"},
    {"report"},
    {"pipeline"},  # the loop: data -> auto values -> train -> evaluate -> report
    {"tune"},
    {"serve"},
    {"finetuning"},  # OpenAI's fine-tuning API: jobs are runs (pipeline), their models served (serve)
    {"api"},  # the public Python API; `import tuneloop` exposes it
    {"ui", "cli"},
]
LEVEL = {name: level for level, names in enumerate(LAYERS) for name in names}


def _component(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "tuneloop" and len(parts) > 1 else None


def _imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out.extend((node.lineno, alias.name) for alias in node.names)
    return out


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE or p.name != "__init__.py")


def test_every_component_has_a_layer():
    components = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in _modules()}
    assert components <= set(LEVEL), f"place {sorted(components - set(LEVEL))} in LAYERS"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_upward_import(path):
    own = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
    upward = [
        f"line {line}: {module} ({_component(module)} is above {own})"
        for line, module in _imports(path)
        if _component(module) in LEVEL and LEVEL[_component(module)] > LEVEL[own]
    ]
    assert not upward, "\n".join(upward)
