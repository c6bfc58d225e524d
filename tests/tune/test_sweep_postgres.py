"""A sweep shared by two worker processes through a real PostgreSQL server (-m postgres).

.ci/run starts the server with scripts/postgres.sh, which exports TUNELOOP_TEST_POSTGRES. The
workers are the real CLI (`tuneloop sweep --storage URL`), as on two hosts. One is killed with
SIGKILL in the middle of a trial: its trial must be marked failed (heartbeat) and replaced, so
the study still finishes its trials, split between both workers.
"""

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest

from conftest import write_tickets

pytestmark = pytest.mark.postgres
URL = os.environ.get("TUNELOOP_TEST_POSTGRES")
TRIALS = 6


def worker(cwd, study):
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tuneloop.cli",
            "sweep",
            "s.yaml",
            "--trials",
            str(TRIALS),
            "--storage",
            URL,
            "--study",
            study,
        ],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def trials_of(study):
    return optuna.load_study(study_name=study, storage=URL).get_trials(deepcopy=False)


@pytest.mark.skipif(URL is None, reason='no PostgreSQL server: run `eval "$(scripts/postgres.sh start)"` first')
def test_two_workers_share_one_study_and_a_killed_workers_trial_is_replaced(tmp_path, tiny_model):
    write_tickets(tmp_path / "d.jsonl", 40)
    (tmp_path / "s.yaml").write_text(f"""
model: {tiny_model}
data: {{path: d.jsonl, max_seq_len: 256}}
train: {{epochs: 2, batch_size: 8, metric_rows: 0}}
sweep:
  heartbeat_seconds: 1
  pruning: false
  space:
    train.learning_rate: {{low: 1.0e-4, high: 1.0e-3, log: true}}
""")
    study = f"shared-{os.getpid()}-{time.time_ns()}"
    a = worker(tmp_path, study)
    b = worker(tmp_path, study)
    # Kill worker A once it has finished a trial and is in the middle of the next one.
    pid_a = f":{a.pid}"
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            trials = trials_of(study)
        except KeyError:  # the study is not created yet
            trials = []
        mine = [t for t in trials if str(t.user_attrs.get("worker", "")).endswith(pid_a)]
        if any(t.state == optuna.trial.TrialState.COMPLETE for t in mine) and any(
            t.state == optuna.trial.TrialState.RUNNING for t in mine
        ):
            break
        time.sleep(0.5)
    else:
        a.kill()
        b.kill()
        pytest.fail("worker A never had a finished and a running trial: " + a.stdout.read())
    a.send_signal(signal.SIGKILL)
    a.wait()
    out, _ = b.communicate(timeout=600)
    assert b.returncode == 0, out
    trials = trials_of(study)
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(done) == TRIALS  # nothing lost: the killed trial's place was taken by a new one
    assert any(str(t.user_attrs["worker"]).endswith(pid_a) for t in failed)  # the heartbeat marked it failed
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    workers = {t.user_attrs["worker"] for t in done}
    assert len(workers) == 2  # the trials were split between the two workers
    assert all(t.user_attrs.get("run") for t in done)
