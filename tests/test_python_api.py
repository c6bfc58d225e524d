"""The public Python API: the README's notebook example, executed on the tiny model."""

import re
import socket

import pytest

import tuneloop
from conftest import REPO, write_tickets


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_readme_example_runs(tmp_path, tiny_model, monkeypatch, capsys):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    [code] = re.findall(r"<!-- api-example -->\n```python\n(.*?)```", readme, re.S)
    # The quickstart's tickets (80 of them), on the tiny model.
    write_tickets(tmp_path / "tickets.jsonl", 80)
    config = tmp_path / "quickstart.yaml"
    config.write_text(
        f"model: {tiny_model}\ndata: {{path: tickets.jsonl, max_seq_len: 384}}\n"
        "train: {batch_size: 16, learning_rate: 2.0e-3, metric_rows: 8}\n"
        f"eval: {{max_new_tokens: 8, max_examples: 8}}\nruns_dir: {tmp_path / 'runs'}\n"
    )
    assert '"examples/quickstart/quickstart.yaml"' in code and "port=8765" in code
    code = code.replace('"examples/quickstart/quickstart.yaml"', repr(str(config)))
    code = code.replace("port=8765", f"port={_free_port()}")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)

    run = scope["run"]
    assert isinstance(run, tuneloop.Run) and run.status == "finished" and run.config.train.epochs == 2
    assert run.path.parent == tmp_path / "runs"
    assert set(run.evaluation["finetuned"]["metrics"]) >= {"loss", "field_accuracy"}
    assert scope["diagnosis"].verdict in ("healthy", "overfitting", "underfitting", "diverging", "undertrained")
    held_out = scope["held_out"]
    assert held_out.metric == "json_fields" and len(held_out.examples) == 8
    assert held_out.path == run.dir.eval_record_file("test") and held_out.path.is_file()
    ab = scope["ab"]
    assert (ab.a, ab.b) == ("base", run.id) and "field_accuracy" in ab.result["metrics"] and ab.path.is_file()
    out = capsys.readouterr().out
    assert "'id': 'tickets'" in out  # the served adapter was listed by the server


def test_open_run_and_compare_reject_what_is_not_a_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        tuneloop.open_run(tmp_path)
    with pytest.raises(ValueError, match="at least one side"):
        tuneloop.compare("base", "base")


def test_the_package_exposes_the_api_without_importing_torch_up_front():
    import subprocess
    import sys

    code = "import sys, tuneloop; assert 'torch' not in sys.modules; tuneloop.run; assert 'torch' in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
