"""The one line `kopretrain train` prints when Ray Train gives up (kopretrain/train/failure.py), from
Ray Train's own exception types, built in-process; the real SIGKILL past scale.max_failures through
the CLI is in test_rerun.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ray.train import ControllerError, TrainingFailedError, WorkerGroupError

from kopretrain.errors import RunFailed
from kopretrain.train import resume
from kopretrain.train.failure import describe_worker_error, one_line, raise_one_line


def checkpoint_at(storage: Path, step: int) -> None:
    """One checkpoint Ray Train registered (its 2.60 snapshot, as tests/train/test_rerun.py writes it)."""
    exp = storage / "train"
    (exp / "checkpoint_a").mkdir(parents=True)
    (exp / "checkpoint_a" / "train_state.json").write_text(json.dumps({"step": step, "config_fingerprint": "f"}))
    result = {"version": 0, "checkpoint_dir_name": "checkpoint_a", "metrics": {}}
    (exp / resume.SNAPSHOT_FILE).write_text(json.dumps({"checkpoint_results": [result], "latest_checkpoint_result": result}))


def test_a_worker_exception_is_its_last_line_and_no_checkpoint_says_so(tmp_path):
    error = WorkerGroupError("...", {1: RuntimeError("Traceback (most recent call last):\n  ...\nfault: boom\n"),
                                     3: RuntimeError("peer gone")})
    log = tmp_path / "run" / "logs" / "ray.log"
    line = one_line(error, 2, str(tmp_path / "ray"), "auto", log)
    assert line == ("the workers failed 3 times (scale.max_failures=2), last rank 1: RuntimeError: fault: boom "
                    f"(and 1 other rank); no checkpoint yet (a rerun starts from step 0); details in {log}")
    assert "WorkerGroupError" in log.read_text() and "\n" not in line


def test_the_newest_registered_checkpoint_is_where_a_rerun_resumes(tmp_path):
    checkpoint_at(tmp_path, 40)
    error = WorkerGroupError("...", {0: ValueError("bad")})
    assert "; rerun the same command to resume from step 40; " in one_line(error, 0, str(tmp_path), "auto", tmp_path / "l")
    assert ("; the newest checkpoint is at step 40: rerun with resume=auto to resume from it (resume=never starts fresh); "
            in one_line(error, 0, str(tmp_path), "never", tmp_path / "l"))


def test_a_controller_failure_and_other_errors():
    assert describe_worker_error(KeyError("x")) == "KeyError: 'x'"
    with pytest.raises(RunFailed, match=r"^Ray Train's controller failed \(no placement\); no checkpoint yet"):
        raise_one_line(ControllerError(RuntimeError("no placement")), 0, "/nonexistent/x", "auto", Path("/nonexistent/l"))
    raise_one_line(ValueError("a bug"), 0, "/nonexistent/x", "auto", Path("/nonexistent/l"))  # not Ray Train's: goes on
    with pytest.raises(RunFailed, match=r"^Ray Train gave up \(TrainingFailedError: lost\); no checkpoint yet"):
        raise_one_line(TrainingFailedError("lost"), 3, "/nonexistent/x", "auto", Path("/nonexistent/l"))
