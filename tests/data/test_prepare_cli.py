"""`kopretrain prepare` from the command line: the smoke recipe on the shipped sample (run dir
printed last, report.json, summary table, MLflow run), one-line errors before Ray starts, and
every shipped prepare YAML composing into sources that exist."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kopretrain.cli import compose_typed
from kopretrain.errors import UserError
from kopretrain.paths import CONF_DIR


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", "kopretrain", "prepare", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("option", sorted(p.stem for p in (CONF_DIR / "source").glob("*.yaml")))
def test_every_source_set_points_at_shipped_files_with_their_text_fields(option):
    from kopretrain.data.read import list_files, plan_reads

    cfg = compose_typed("prepare", [f"source={option}"])
    assert {s.domain for s in cfg.sources} <= {"ko", "en"}
    for s in cfg.sources:
        tasks = plan_reads(s, list_files(s), 1 << 30)  # raises if a csv/tsv header lacks text_field
        assert tasks and all(t["format"] != "unsupported" for t in tasks), s.name


def test_smoke_recipe_and_config_errors_compose():
    cfg = compose_typed("prepare", ["experiment=smoke"])
    assert cfg.read_chunk_bytes == 1 << 20 and cfg.tokenizer.path == "" and len(cfg.sources) == 8
    for override, message in [("dedup.threshold=1.5", "dedup.threshold: must be in (0, 1)"),
                              ("dedup.num_bands=4", "dedup.num_bands: set num_bands and rows_per_band together"),
                              ("dedup.shingle_whitespace=drop", "dedup.shingle_whitespace"),
                              ("seq_len=1", "seq_len: must be >= 2"), ("sources=[]", "sources: give at least one source")]:
        with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
            compose_typed("prepare", [override])


def test_bad_source_path_is_one_line_before_ray_starts(tmp_path):
    out = run_cli("sources=[{name:web,path:nowhere/web.jsonl,domain:ko}]", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip() == "kopretrain prepare: error: source 'web': path 'nowhere/web.jsonl' does not exist"
    assert "Ray" not in out.stdout + out.stderr


def test_smoke_run_prints_run_dir_last_and_writes_report(tmp_path):
    run_dir = tmp_path / "run"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = run_cli("experiment=smoke", f"hydra.run.dir={run_dir}", f"tracking.uri={uri}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert lines[-1] == str(run_dir)
    assert any(line.startswith("total ") for line in lines) and "rejected:" in out.stdout  # the summary table
    report = json.loads((run_dir / "report.json").read_text())
    t = report["totals"]
    assert t["docs_in"] == t["docs_out"] + sum(t["rejected"].values()) + t["exact_dups"] + t["near_dups"]
    assert t["docs_out"] > 40_000 and t["exact_dups"] > 0 and t["near_dups"] > 0
    assert set(report["domains"]) == {"ko", "en"} and report["sources"]["nsmc"]["docs_out"] > 0
    assert {"clean", "duplicates", "rejected", "report.json"} <= {p.name for p in run_dir.iterdir()}
    from mlflow.tracking import MlflowClient

    run = MlflowClient(tracking_uri=uri).get_run(report["mlflow_run_id"])
    assert run.data.metrics["docs_out"] == t["docs_out"]
    # the run covers the command's work: opened before clean + dedup wrote its marker
    assert run.info.start_time / 1000 <= (run_dir / "_stage" / "clean_done.json").stat().st_mtime <= run.info.end_time / 1000
