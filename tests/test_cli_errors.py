"""Every user error is one line on stderr and exit status 2: the README's error table (walked as
written), override syntax errors, tracking settings MLflow would refuse, and train settings checked
against what they apply to (the model, the machine) before Ray Train starts."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from kopretrain.cli import main

REPO = Path(__file__).resolve().parents[1]


def readme_error_table() -> list[tuple[str, str]]:
    """(command line, expected stderr line) pairs of the `$ kopretrain ...` block in README
    "Commands and configuration"."""
    section = (REPO / "README.md").read_text(encoding="utf-8").split("## Commands and configuration", 1)[1]
    section = section.split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.strip()]
    cases = [(line[2:], lines[i + 1]) for i, line in enumerate(lines) if line.startswith("$ kopretrain ")]
    assert len(cases) >= 7, "the README's error table went missing"
    return cases


def run_in_process(argv: list[str], tmp_path: Path, monkeypatch, capsys) -> tuple[int, list[str]]:
    """`kopretrain <argv>` through `kopretrain.cli.main` in this process, from an empty directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    return info.value.code, [line for line in err.splitlines() if line.strip()]


@pytest.mark.parametrize("command,expected", readme_error_table(), ids=lambda v: v[:60])
def test_the_readme_error_table(command, expected, tmp_path, monkeypatch, capsys):
    code, err = run_in_process(shlex.split(command)[1:], tmp_path, monkeypatch, capsys)
    assert (code, err) == (2, [expected])
    created = [p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()]
    assert all(".hydra" in p.parts or p.suffix == ".log" for p in created), created  # at most Hydra's run dir


@pytest.mark.parametrize(
    "argv,expected",
    [
        (["train", "tracking.run_name=한국어-실험1"],
         """cannot parse override 'tracking.run_name=한국어-실험1': quote the value, e.g. 'tracking.run_name="한국어-실험1"'"""),
        (["eval", "a)b"], """cannot parse override 'a)b': write key=value and quote a value with special characters, e.g. 'key="a)b"'"""),
        (["eval", "-m", "model_dir=x", "tracking.run_name=가,나"],
         """cannot parse override 'tracking.run_name=가,나': quote the value, e.g. 'tracking.run_name="가","나"'"""),
        (["prepare", "hydra.run.dir=out(1)"],
         """cannot parse override 'hydra.run.dir=out(1)': quote the value, e.g. 'hydra.run.dir="out(1)"'"""),
        (["eval", "--cfg", "job", "model_dir=a b)"],
         """cannot parse override 'model_dir=a b)': quote the value, e.g. 'model_dir="a b)"'"""),
        (["eval", "model_dir=x", "hydra.run.dirr=x"], "unknown config key 'hydra.run.dirr'"),
        (["eval", "model_dir=x", "tracking.experiment_name="], "tracking.experiment_name: must not be empty"),
        (["eval", "model_dir=x", "tracking.parent_run_id=no-such-run", "tracking.uri=sqlite:///m.db"],
         "tracking.parent_run_id: no run 'no-such-run' in sqlite:///m.db (the store does not exist yet)"),
        (["eval", "model_dir=x", "+tracking.tags.x=" + "v" * 8001],
         "tracking.tags: the value of tag 'x' is 8001 characters; MLflow keeps at most 8000"),
    ],
    ids=lambda v: " ".join(v)[:50] if isinstance(v, list) else None,
)
def test_syntax_and_tracking_errors(argv, expected, tmp_path, monkeypatch, capsys):
    code, err = run_in_process(argv, tmp_path, monkeypatch, capsys)
    assert (code, err) == (2, [f"kopretrain {argv[0]}: error: {expected}"])
    assert list(tmp_path.iterdir()) == []


def test_the_suggested_quoting_is_accepted(tmp_path, monkeypatch, capsys):
    from kopretrain.cli import compose_typed

    _, err = run_in_process(["train", "tracking.run_name=한국어-실험1"], tmp_path, monkeypatch, capsys)
    suggestion = shlex.split(err[0].rsplit("e.g. ", 1)[1])[0]
    assert compose_typed("train", ["experiment=smoke", suggestion]).tracking.run_name == "한국어-실험1"


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "kopretrain", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def _no_gpu() -> bool:
    import torch

    return torch.cuda.device_count() == 0


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (["model.arch.max_position_embeddings=64"],
         "data.tokens_dir: its sequences are 128 tokens, longer than the model's context (max_position_embeddings=64); "
         "pack with seq_len<=64 or raise the model's context"),
        (["scale.num_workers=8", "batch.micro_batch_size=1", "ray.num_cpus=4"],
         "scale: 8 workers need 8 CPU in all, the local Ray instance has 4 (Ray Train would wait forever); "
         "lower scale.num_workers or scale.cpus_per_worker, or raise ray.num_cpus"),
        pytest.param(["scale.use_gpu=true"],
                     "scale: 2 workers need 2 GPU in all, the local Ray instance has 0 (Ray Train would wait forever); "
                     "set scale.use_gpu=false, or join a cluster with GPUs (ray.address=...)",
                     marks=pytest.mark.skipif("not _no_gpu()", reason="this machine has GPUs")),
        (["+scale.resources_per_worker={A100: 1}"],  # checked on the (local) cluster: Ray's notices stay off the console
         "scale.resources_per_worker: 2 workers need 2 A100 in all, the local Ray instance has 0 (Ray Train would wait "
         "forever); join a cluster that has them (ray.address=...)"),
    ],
    ids=["context", "cpus", "gpu", "custom-resource"],
)
def test_train_settings_are_checked_against_the_model_and_machine_before_ray(overrides, expected, tmp_path):
    out = run_cli("train", "experiment=smoke", "tracking.enabled=false", f"hydra.run.dir={tmp_path / 'run'}", *overrides,
                  cwd=tmp_path)
    assert (out.returncode, out.stderr.strip().splitlines()) == (2, [f"kopretrain train: error: {expected}"]), out.stderr
    assert not (tmp_path / "run" / "ray").exists(), "no checkpoint storage, no Ray Train"


@pytest.mark.parametrize("uri,expected", [
    ("postgresql://x:secret@127.0.0.1:1/db", "kopretrain train: error: tracking.uri: cannot connect to the database at "
     'postgresql://x:***@127.0.0.1:1/db: connection failed: connection to server at "127.0.0.1", port 1 failed: Connection refused'),
    ("mysql://x@127.0.0.1:1/db", "kopretrain train: error: tracking.uri: the mysql driver is not installed (No module named 'MySQLdb')"),
], ids=["postgresql-refused", "mysql-no-driver"])
def test_a_database_store_that_cannot_be_used_is_one_line(uri, expected, tmp_path, monkeypatch, capsys):
    """Not MLflow's minutes of engine retries and a psycopg / ModuleNotFoundError traceback."""
    code, err = run_in_process(["train", "experiment=smoke", f"tracking.uri={uri}"], tmp_path, monkeypatch, capsys)
    assert (code, err) == (2, [expected])
