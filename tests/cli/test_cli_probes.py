"""Probes a careless user or a fuzzer would send: odd data files through the data commands, bad
configs through `tuneloop run`. Each ends in one clear `error:` line naming the file (and row or
field), never a traceback; no source file is modified; a bad config leaves no run directory.

The commands run in-process (typer's runner): the same code as the `tuneloop` command line,
in a fraction of the time of a fresh interpreter per probe."""

import hashlib
import json

import pytest
from typer.testing import CliRunner

from conftest import write_jsonl, write_tickets
from tuneloop.cli import app


def tuneloop(*args, cwd, monkeypatch):
    monkeypatch.chdir(cwd)
    return CliRunner().invoke(app, [str(a) for a in args])


def _chat(i: int) -> dict:
    return {"messages": [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": f"a{i}"}]}


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _one_clear_error(result, *expected: str):
    text = result.output
    assert result.exit_code in (1, 2), text
    assert "Traceback" not in text and not isinstance(result.exception, (TypeError, RecursionError, RuntimeError))
    assert "error" in text, text
    for piece in expected:
        assert piece in text, text


# ------------------------------------------------------------------ the source is never overwritten


@pytest.mark.parametrize(
    "command",
    [
        ["data", "dedup", "d/train.jsonl", "-o", "d/train.jsonl"],
        ["data", "dedup", "d/train.jsonl", "-o", "other.jsonl", "--log", "d/train.jsonl"],
        ["data", "dedup", "d", "-o", "d/train.jsonl"],  # a folder's own file
        ["data", "split", "d/train.jsonl", "-o", "d"],  # d/train.jsonl would be replaced
        ["data", "augment", "d/train.jsonl", "-o", "d/train.jsonl"],
        ["data", "clean", "d/train.jsonl", "-o", "d/train.jsonl"],
        ["data", "stats", "d/train.jsonl", "--plot", "d/train.jsonl"],  # refused before a tokenizer loads
    ],
    ids=["dedup", "dedup-log", "dedup-folder", "split", "augment", "clean", "stats-plot"],
)
def test_no_command_overwrites_its_source(tmp_path, monkeypatch, command):
    (tmp_path / "d").mkdir()
    source = write_jsonl(tmp_path / "d" / "train.jsonl", [_chat(i) for i in range(40)] + [_chat(0)] * 5)
    before = _digest(source)
    result = tuneloop(*command, cwd=tmp_path, monkeypatch=monkeypatch)
    _one_clear_error(result, "would overwrite the source data")
    assert _digest(source) == before


# ------------------------------------------------------------------ no traceback, whatever the data

DEEP = "[" * 1000 + "]" * 1000


@pytest.mark.parametrize(
    "name, content, expected",
    [
        (
            "role-list.jsonl",
            [{"messages": [{"role": ["user"], "content": "q"}, {"role": "assistant", "content": "a"}]}],
            ["role-list.jsonl", "messages[0].role"],
        ),
        (
            "role-dict.jsonl",
            [{"messages": [{"role": {"r": 1}, "content": "q"}, {"role": "assistant", "content": "a"}]}],
            ["messages[0].role"],
        ),
        (
            "sharegpt-from-list.jsonl",
            [{"conversations": [{"from": ["human"], "value": "q"}, {"from": "gpt", "value": "a"}]}],
            ["conversations[0].from"],
        ),
        ("deep.jsonl", ['{"messages": ' + DEEP + "}"], ["deep.jsonl", "too_deep"]),
        ("valid-but-deep.jsonl", ['{"messages": ' + "[" * 500 + "]" * 500 + "}"], ["valid-but-deep.jsonl", "deep"]),
        (
            "zero-width.jsonl",
            [{"messages": [{"role": "user", "content": "\u200b"}, {"role": "assistant", "content": "a"}]}],
            ["zero-width.jsonl", "messages[0].content"],
        ),
    ],
    ids=lambda v: v if isinstance(v, str) and v.endswith(".jsonl") else "",
)
@pytest.mark.parametrize("command", ["check", "clean", "dedup", "split"])
def test_odd_rows_give_file_row_and_field(tmp_path, monkeypatch, name, content, expected, command):
    rows = content + [_chat(i) for i in range(20)]
    path = write_jsonl(tmp_path / name, rows)
    before = _digest(path)
    args = {
        "check": ["--no-tokens"],
        "clean": ["-o", "out.jsonl"],
        "dedup": ["-o", "out.jsonl"],
        "split": ["-o", "out"],
    }[command]
    result = tuneloop("data", command, name, *args, cwd=tmp_path, monkeypatch=monkeypatch)
    assert _digest(path) == before
    if command == "clean":  # clean keeps the good rows and logs the bad one with its reason
        assert result.exit_code == 0, result.output
        log = (tmp_path / "out.jsonl.log.jsonl").read_text()
        assert all(piece in log or piece == name for piece in expected[1:]) and '"row": 1' in log
        return
    _one_clear_error(result, name)
    assert "row 1" in result.output or ":1:" in result.output or "1 " in result.output


def test_a_symbolic_link_loop_is_named(tmp_path, monkeypatch):
    (tmp_path / "loop.jsonl").symlink_to(tmp_path / "loop.jsonl")
    for command in (["data", "check", "loop.jsonl", "--no-tokens"], ["data", "clean", "loop.jsonl", "-o", "o.jsonl"]):
        _one_clear_error(tuneloop(*command, cwd=tmp_path, monkeypatch=monkeypatch), "loop.jsonl", "link")


def test_check_agrees_with_the_commands_that_use_the_data(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table({"prompt": pa.array([], pa.string()), "completion": pa.array([], pa.string())}),
        tmp_path / "empty.parquet",
    )
    _one_clear_error(
        tuneloop("data", "check", "empty.parquet", "--no-tokens", cwd=tmp_path, monkeypatch=monkeypatch), "no examples"
    )
    write_jsonl(tmp_path / "few.jsonl", [_chat(i) for i in range(5)])
    _one_clear_error(
        tuneloop("data", "check", "few.jsonl", "--no-tokens", cwd=tmp_path, monkeypatch=monkeypatch), "too_few_rows"
    )
    write_jsonl(tmp_path / "same.jsonl", [_chat(0)] * 40)  # all duplicates: no training row survives the split
    result = tuneloop("data", "split", "same.jsonl", "-o", "out", cwd=tmp_path, monkeypatch=monkeypatch)
    _one_clear_error(result, "no_training_rows")
    assert not (tmp_path / "out" / "train.jsonl").exists()


# ------------------------------------------------------------------ bad configs: checked before a run directory


@pytest.fixture
def work(tmp_path, tiny_model):
    write_tickets(tmp_path / "tickets.jsonl", 40)
    (tmp_path / "tiny.yaml").write_text(
        f"model: {tiny_model}\ndata: {{path: tickets.jsonl, max_seq_len: 256}}\nlora: {{r: 4, alpha: 8}}\n"
        "train: {epochs: 1, batch_size: 8}\neval: {max_new_tokens: 4}\n"
    )
    write_jsonl(tmp_path / "same.jsonl", [_chat(0)] * 40)
    (tmp_path / "runs_file").write_text("not a folder")
    (tmp_path / "latin1.yaml").write_bytes("data: {path: caf\xe9.jsonl}\n".encode("latin-1"))
    (tmp_path / "a_folder").mkdir()
    return tmp_path


@pytest.mark.parametrize(
    "config, overrides, expected",
    [
        ("tiny.yaml", ["train.epochs=["], "not valid YAML"),
        ("tiny.yaml", ["train.epochs=\t3"], "not valid YAML"),
        ("tiny.yaml", ["train.epochs=!!binary AA=="], "train.epochs"),
        ("a_folder", [], "is a folder"),
        ("latin1.yaml", [], "not UTF-8"),
        ("tiny.yaml", ["runs_dir=runs_file"], "is a file"),
        ("tiny.yaml", ["run_name=a/b"], "plain name"),
        ("tiny.yaml", ["run_name=../../x"], "plain name"),
        ("tiny.yaml", ["train.batch_size=1000000000000"], "train.batch_size"),
        ("tiny.yaml", ["lora.r=1000000000000"], "lora.r"),
        ("tiny.yaml", ["lora.r=512"], "hidden size"),
        ("tiny.yaml", ["lora.target_modules=[no_such_proj]"], "match no module"),
        ("tiny.yaml", ["eval.metric=no_such_module:fn"], "eval.metric"),
        ("tiny.yaml", ["data.path=same.jsonl", "data.dedup=none"], "no_training_rows"),
        ("tiny.yaml", ["train.learning_rate=.inf"], "finite"),
        ("tiny.yaml", ["train.learning_rate=.nan"], "finite"),
        ("tiny.yaml", ["train.epochs=1e300"], "train.epochs"),
    ],
)
def test_a_bad_config_is_one_line_and_leaves_no_run(work, monkeypatch, config, overrides, expected):
    args = [a for o in overrides for a in ("--set", o)]
    result = tuneloop("run", config, *args, cwd=work, monkeypatch=monkeypatch)
    _one_clear_error(result, expected)
    assert result.exit_code == 2
    assert not (work / "runs").exists() or not any((work / "runs").iterdir()), "a run directory was left behind"
    assert not any(p.name.startswith("x-") for p in work.parent.parent.iterdir())  # ../../x was not written either


# ------------------------------------------------------------------ runs tell the truth about their state


def _start(work, *args, **popen):
    import subprocess
    import sys

    return subprocess.Popen(
        [sys.executable, "-m", "tuneloop.cli", "run", "tiny.yaml", *args],
        cwd=work,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def test_sigterm_records_interrupted_and_the_run_resumes(work):
    import signal
    import time

    from conftest import tuneloop as cli
    from tuneloop.runs import RunDir

    process = _start(work, "--set", "train.epochs=12", "--set", "train.eval_every=4")
    deadline = time.monotonic() + 240
    while not list(work.glob("runs/*/checkpoints/checkpoint-*/trainer_state.json")):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode != 0 and "Traceback" not in err, err
    [run] = (work / "runs").iterdir()
    info = RunDir(run).info()
    assert info["status"] == "interrupted" and info["resumable"] is True and "SIGTERM" in info["error"]
    diagnosis = cli("diagnose", run, cwd=work)
    assert "the run is interrupted" in diagnosis.stdout and "tuneloop resume" in diagnosis.stdout
    resumed = cli("resume", run, cwd=work)
    assert resumed.returncode == 0, resumed.stderr
    assert RunDir(run).status() == "finished" and (run / "eval.json").is_file()


def test_a_full_disk_is_one_line_recorded_in_run_json_with_no_temporary_files(work):
    import resource
    import signal

    def small_disk():  # files may not grow past 200 kB: the first checkpoint cannot be written
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    process = _start(work, "--set", "train.epochs=3", preexec_fn=small_disk)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 2, out + err
    assert "Traceback" not in err and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    [run] = (work / "runs").iterdir()
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "failed" and "File too large" in info["error"]
    assert not list(run.rglob("*.tmp")) and _digest(work / "tickets.jsonl")
