import json

from tuneloop.runs import RunDir


def test_run_ids_are_unique_and_lifecycle_is_recorded(tmp_path):
    a, b = RunDir.create(tmp_path, "exp"), RunDir.create(tmp_path, "exp")
    assert a.path != b.path and a.id.startswith("exp-")
    a.start(model="m")
    info = json.loads(a.info_file.read_text())
    assert info["status"] == "running" and info["packages"]["torch"]
    a.finish("finished", timings={"total": 1.0})
    info = json.loads(a.info_file.read_text())
    assert info["status"] == "finished" and info["model"] == "m" and "finished_at" in info


def test_metrics_append_and_read(tmp_path):
    run = RunDir.create(tmp_path, "m")
    assert run.read_metrics() == []
    run.append_metrics({"step": 1, "train_loss": 2.0})
    run.append_metrics({"step": 2, "eval_loss": 1.5})
    assert run.read_metrics() == [{"step": 1, "train_loss": 2.0}, {"step": 2, "eval_loss": 1.5}]
