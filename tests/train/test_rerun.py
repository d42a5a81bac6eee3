"""Reruns on an existing run directory (kopretrain/train/resume.py, fingerprint.py).

Three tiny smoke trainings share one run directory on the session Ray instance: a run killed at
step 5 (checkpoint at step 3, no restarts allowed), its rerun, which resumes from step 3, and a
`resume=never` run with another learning rate. Everything else (the finished run rerun, changed
keys refused, `resume=must` without a checkpoint) is decided on the driver before Ray is used.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kopretrain.errors import UserError
from kopretrain.train import resume
from kopretrain.train.command import resolve_train_paths, run_train
from kopretrain.train.fingerprint import changed_keys, fingerprint, math_keys
from tests.train.conftest import smoke_cfg

REPO = Path(__file__).resolve().parents[2]


def keys_of(*overrides: str) -> dict:
    return math_keys(resolve_train_paths(smoke_cfg(*overrides), Path("/tmp/run")))


# ---------------------------------------------------------------- pure: fingerprint and decisions
def test_fingerprint_covers_the_math_and_not_the_placement():
    base = keys_of()
    same = [("checkpoint.every_num_steps=2", "checkpoint.num_to_keep=5", "checkpoint.storage_path=s3://b/x"),
            ("scale.num_workers=1", "batch.micro_batch_size=4", "model.gradient_checkpointing=true"),
            ("fault.fail_at_step=2", "resume=never", "output_dir=elsewhere", "tracking.enabled=true")]
    for overrides in same:
        assert keys_of(*overrides) == base, overrides
    for override, change in [("optim.lr=1e-3", "optim.lr 0.003 -> 0.001"), ("seed=1", "seed 0 -> 1"),
                             ("num_steps=8", "num_steps 6 -> 8"), ("mix.replay_ratio=0.5", "mix.replay_ratio 0.2 -> 0.5"),
                             ("strategy=ddp", 'strategy.name "fsdp" -> "ddp"'),
                             ("batch.num_sequences_per_step=16", "batch.num_sequences_per_step 8 -> 16"),
                             ("model.arch.hidden_size=32", "model.arch.hidden_size 64 -> 32")]:
        other = keys_of(override)
        assert fingerprint(other) != fingerprint(base), override
        assert changed_keys(base, other) == [change]
    # a relative and an absolute spelling of the same tokens directory are the same key value
    assert keys_of(f"data.tokens_dir={REPO / 'data/smoke/tokens'}") == base


def test_decide_by_policy():
    keys = keys_of()
    fp = fingerprint(keys)
    none = resume.Prior("s/train")
    ours = resume.Prior("s/train", [(3, fp), (6, fp)], {"fingerprint": fp, "keys": keys}, exists=True)
    other_keys = keys_of("optim.lr=1e-3")
    theirs = resume.Prior("s/train", [(6, fingerprint(other_keys))], {"fingerprint": "x", "keys": other_keys}, exists=True)
    legacy = resume.Prior("s/train", [(6, "")], None, exists=True)
    assert resume.decide("auto", none, fp, keys, 6, False).action == "fresh"
    assert resume.decide("auto", ours, fp, keys, 6, True).action == "complete"
    assert resume.decide("auto", ours, fp, keys, 6, False).action == "resume"  # no report: export and report again
    assert resume.decide("auto", ours, fp, keys, 8, True).action == "resume"
    assert resume.decide("must", ours, fp, keys, 8, True).action == "resume"
    for policy in ("auto", "must"):
        with pytest.raises(UserError, match=r"another configuration \(changed: optim\.lr 0\.001 -> 0\.003\)"):
            resume.decide(policy, theirs, fp, keys, 6, False)
        with pytest.raises(UserError, match="unknown configuration"):
            resume.decide(policy, legacy, fp, keys, 6, False)
    with pytest.raises(UserError, match="or choose another checkpoint.storage_path$"):
        resume.decide("auto", theirs, fp, keys, 6, False, elsewhere="checkpoint.storage_path")
    with pytest.raises(UserError, match="^resume=must: no checkpoint to resume in s/train$"):
        resume.decide("must", none, fp, keys, 6, False)
    two = dataclasses.replace(ours, num_ranks=2)
    assert resume.decide("auto", two, fp, keys, 8, False, num_workers=1).action == "resume"  # fewer workers: fine
    with pytest.raises(UserError, match="^scale.num_workers: 4 workers cannot resume the checkpoint at step 6 written by 2"):
        resume.decide("auto", two, fp, keys, 8, False, num_workers=4)
    assert resume.decide("never", none, fp, keys, 6, False).action == "fresh"
    for prior in (ours, theirs, legacy):
        assert resume.decide("never", prior, fp, keys, 6, True).action == "clear"


# ---------------------------------------------------------------- Ray: three real trainings
ORPHAN = "checkpoint_9999-12-31_23-59-59.999999"  # sorts after every real one


def add_orphan(run_dir: Path, step: int) -> Path:
    """A checkpoint directory Ray Train never registered (as a worker killed before the controller
    polled it leaves): a copy of a registered one, claiming a later step."""
    exp = run_dir / "ray/train"
    source = sorted(p for p in exp.glob("checkpoint_*") if p.is_dir())[-1]
    orphan = exp / ORPHAN
    shutil.copytree(source, orphan)
    state = json.loads((orphan / "train_state.json").read_text())
    (orphan / "train_state.json").write_text(json.dumps({**state, "step": step}))
    return orphan


@pytest.fixture(scope="module")
def finished_run(ray_local, tmp_path_factory):
    """A run killed at step 5 (checkpoints at step 3; an orphan checkpoint dir claiming step 5 added),
    then rerun: it resumes from step 3, the one Ray Train registered, removes the orphan and finishes.
    The killed run is the CLI's (joining the session's Ray instance): its stderr is in FAILED_CLI."""
    run_dir = tmp_path_factory.mktemp("rerun") / "run"
    run_dir.mkdir()
    FAILED_CLI.append(_cli("fault.fail_at_step=5", "fault.kind=sigkill", "scale.max_failures=0",
                           f"ray.address={ray_local['gcs_address']}", f"hydra.run.dir={run_dir}"))
    prior = resume.find_prior(str(run_dir / "ray"))
    assert [step for step, _ in prior.checkpoints] == [3] and prior.orphans == []
    orphan = add_orphan(run_dir, 5)
    prior = resume.find_prior(str(run_dir / "ray"))
    assert prior.last_step == 3 and prior.orphans == [str(orphan)]  # not in Ray's snapshot: not resumable
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        report = run_train(smoke_cfg(), run_dir)
    FIRST_RERUN_STDOUT.append(out.getvalue())
    return run_dir, report


FIRST_RERUN_STDOUT: list[str] = []
FAILED_CLI: list[subprocess.CompletedProcess] = []


def _state(run_dir: Path) -> dict:
    """Everything a rerun must leave alone (not logs/: Ray's log stream of the session goes on)."""
    files = [p for p in sorted(run_dir.rglob("*")) if p.is_file() and p.relative_to(run_dir).parts[0] != "logs"]
    return {str(p.relative_to(run_dir)): (p.stat().st_mtime_ns, p.read_bytes() if p.name == "report.json" else b"")
            for p in files}


@pytest.mark.ray
def test_a_killed_run_resumes_from_its_checkpoint(finished_run):
    run_dir, report = finished_run
    assert report["resumed_from_step"] == 3  # a new fit: Ray Train restored the checkpoint, nothing restarted
    lines = FIRST_RERUN_STDOUT[0].splitlines()
    assert any(line.startswith("kopretrain train: resuming from the checkpoint at step 3 of 6 in ") for line in lines), lines
    assert [line for line in lines if "never registered" in line] == [
        f"kopretrain train: removed 1 checkpoint directory Ray Train never registered (incomplete, or written just "
        f"before the run was killed) from {run_dir / 'ray/train'}"]
    assert not (run_dir / "ray/train" / ORPHAN).exists()
    assert [r["step"] for r in report["losses"]] == [1, 2, 3, 4, 5, 6]
    assert report["config_fingerprint"] == fingerprint(keys_of()) != ""
    prior = resume.find_prior(str(run_dir / "ray"))
    assert prior.checkpoints == [(3, report["config_fingerprint"]), (6, report["config_fingerprint"])]
    assert prior.num_ranks == 2


@pytest.mark.ray
def test_workers_failing_past_max_failures_is_one_line_naming_the_resume_step(finished_run):
    """Not Ray's WorkerGroupError traceback: how often, why (the worker's own death), where a rerun starts."""
    run_dir, _ = finished_run
    out = FAILED_CLI[0]
    assert out.returncode == 1, out.stderr[-3000:]
    assert "Traceback" not in out.stderr and "WorkerGroupError" not in out.stderr, out.stderr[-3000:]
    line = out.stderr.strip().splitlines()[-1]
    # Ray only sees rank 0's connection drop: it cannot tell the SIGKILL from a crash, so neither can the line
    assert line.startswith("kopretrain train: error: the workers failed 1 time (scale.max_failures=0), last rank 0: "
                           "its process died without a Python error (killed, e.g. by SIGKILL or the OOM killer, or crashed"), line
    assert line.endswith(f"; rerun the same command to resume from step 3; details in {run_dir / 'logs/ray.log'}"), line
    assert "WorkerGroupError" in (run_dir / "logs/ray.log").read_text()  # Ray's whole error is kept there


@pytest.mark.ray
def test_rerunning_a_finished_run_changes_nothing(finished_run, capsys):
    run_dir, report = finished_run
    before = _state(run_dir)
    again = run_train(smoke_cfg(), run_dir)
    out = capsys.readouterr().out
    assert again == report
    assert "run already complete: 6 of 6 steps with this configuration" in out
    assert _state(run_dir) == before


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", "kopretrain", "train", "experiment=smoke", "tracking.enabled=false", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.ray
def test_cli_rerun_of_a_finished_run_says_so_and_prints_the_run_dir(finished_run):
    run_dir, report = finished_run
    before = (run_dir / "report.json").read_bytes()
    checkpoints = sorted(p.name for p in (run_dir / "ray/train").glob("checkpoint_*"))
    out = _cli(f"hydra.run.dir={run_dir}")
    lines = out.stdout.strip().splitlines()
    assert out.returncode == 0, out.stderr[-3000:]
    assert lines[-1] == str(run_dir) and any("kopretrain train: run already complete: 6 of 6 steps" in x for x in lines)
    assert (run_dir / "report.json").read_bytes() == before
    assert sorted(p.name for p in (run_dir / "ray/train").glob("checkpoint_*")) == checkpoints


@pytest.mark.ray
@pytest.mark.parametrize("override,change", [("optim.lr=1e-3", "optim.lr 0.003 -> 0.001"), ("seed=1", "seed 0 -> 1")])
def test_another_configuration_is_refused_in_one_line(finished_run, override, change):
    run_dir, _ = finished_run
    before = _state(run_dir)
    with pytest.raises(UserError) as info:
        run_train(smoke_cfg(override), run_dir)
    message = str(info.value)
    assert f"(changed: {change})" in message and "\n" not in message and "resume=never" in message
    assert _state(run_dir) == before


@pytest.mark.ray
def test_cli_refuses_a_changed_lr_before_ray_starts(finished_run):
    """The issue's reproduction: the second `kopretrain train` on the same hydra.run.dir."""
    run_dir, _ = finished_run
    out = _cli("optim.lr=1e-3", f"hydra.run.dir={run_dir}")
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr[-3000:]
    assert lines[0].startswith("kopretrain train: error: ") and "(changed: optim.lr 0.003 -> 0.001)" in lines[0]
    assert "Traceback" not in out.stderr and "Ray" not in out.stdout


def test_resume_must_without_a_checkpoint_is_one_line(tmp_path):
    with pytest.raises(UserError, match=r"^resume=must: no checkpoint to resume in .*/ray/train$"):
        run_train(smoke_cfg("resume=must"), tmp_path)
    assert not (tmp_path / "ray").exists() and not (tmp_path / "report.json").exists()


@pytest.mark.ray
def test_resume_never_starts_fresh_with_the_new_configuration(finished_run, capsys):
    run_dir, old = finished_run
    report = run_train(smoke_cfg("optim.lr=1e-3", "resume=never"), run_dir)
    out = capsys.readouterr().out
    assert "resume=never: removed 2 checkpoint(s), the last at step 6" in out
    assert report["num_resumes"] == 0 and report["resumed_from_step"] == 0
    assert [r["step"] for r in report["losses"]] == [1, 2, 3, 4, 5, 6]
    assert max(r["lr"] for r in report["losses"]) == pytest.approx(1e-3)
    assert report["config_fingerprint"] == fingerprint(keys_of("optim.lr=1e-3")) != old["config_fingerprint"]
    assert json.loads((run_dir / "report.json").read_text())["config_fingerprint"] == report["config_fingerprint"]
    prior = resume.find_prior(str(run_dir / "ray"))
    assert {fp for _, fp in prior.checkpoints} == {report["config_fingerprint"]}
    assert not (run_dir / "fault_injected").exists()


def test_unreadable_storage_is_one_line_before_ray(tmp_path):
    with pytest.raises(UserError, match=r"^checkpoint\.storage_path: cannot read foo://bucket/ckpts \("):
        run_train(smoke_cfg("checkpoint.storage_path=foo://bucket/ckpts"), tmp_path)


def test_only_checkpoints_in_ray_trains_snapshot_count(tmp_path):
    """Ray 2.60's snapshot format, written by hand: the latest registered checkpoint is the resume
    point; a directory it does not list is an orphan, whatever step it claims; no snapshot: all are."""
    exp = tmp_path / "train"

    def ckpt(name: str, step: int):
        (exp / name).mkdir(parents=True)
        (exp / name / "train_state.json").write_text(json.dumps({"step": step, "config_fingerprint": "f"}))
        (exp / name / "rng-0.pt").write_bytes(b"")

    ckpt("checkpoint_a", 5)
    ckpt("checkpoint_b", 10)
    ckpt("checkpoint_c", 15)
    assert resume.find_prior(str(tmp_path)).checkpoints == [] and len(resume.find_prior(str(tmp_path)).orphans) == 3

    def result(name):
        return {"version": 0, "checkpoint_dir_name": name, "metrics": {}}
    (exp / resume.SNAPSHOT_FILE).write_text(json.dumps({
        "ray_version": "2.60.0", "checkpoint_results": [result("checkpoint_a"), result("checkpoint_b")],
        "checkpoint_report_indices": [0, 1], "latest_checkpoint_result": result("checkpoint_b"),
        "pending_training_results": [], "pending_validation_specs": [], "current_report_index": 2,
        "validated_checkpoint_dir_names": [], "timed_out_validation_checkpoint_dir_names": [],
        "failed_validation_checkpoint_dir_names": []}))
    prior = resume.find_prior(str(tmp_path))
    assert prior.checkpoints == [(5, "f"), (10, "f")] and prior.last_step == 10 and prior.num_ranks == 1
    assert prior.orphans == [str(exp / "checkpoint_c")]
    decision = resume.decide("auto", prior, "f", {}, 40, False)
    assert decision.message.startswith("resuming from the checkpoint at step 10 of 40")
    assert resume.remove_orphans(str(tmp_path), prior).startswith("removed 1 checkpoint directory Ray Train never registered")
    assert sorted(p.name for p in exp.glob("checkpoint_*") if p.is_dir()) == ["checkpoint_a", "checkpoint_b"]
    assert resume.remove_orphans(str(tmp_path), resume.find_prior(str(tmp_path))) == ""
