"""`kopretrain report`: the table against the runs' report.json files, the PNG, the artifacts on
the sweep's parent run, from a sweep directory and from an MLflow parent run id (real SQLite
MLflow store; the sweep directory is laid out as a `-m` run leaves it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from kopretrain.config.common import TrackingConfig
from kopretrain.config.report import ReportConfig
from kopretrain.errors import UserError
from kopretrain.report.command import run_report
from kopretrain.run_dir import collect_sweep_report, write_report
from kopretrain.tracking import MlflowTracker

BASE = {"ko": {"bpc": 6.0}, "en": {"bpc": 2.0}}
# replay ratio -> (ko bpc, en bpc, KoBEST mean acc)
POINTS = {"0": (3.0, 2.5, 0.60), "0.2": (3.2, 2.1, 0.58), "0.5": (3.6, 2.02, 0.55)}


def _report(ratio: str, ko: float, en: float, acc: float, run_id: str) -> dict:
    """A training run's report.json as the demo leaves it: losses per domain, evaluation under `eval`."""
    losses = [{"step": s, "loss": 5.0 - s * 0.1, "loss_by_domain": {"ko": 5.2 - s * 0.15, "en": 4.0 - s * 0.02}}
              for s in range(1, 6)]
    return {"weights": {"ko": 1 - float(ratio), "en": float(ratio)}, "losses": losses, "mlflow_run_id": run_id,
            "eval": {"domains": {"ko": {"bpc": ko}, "en": {"bpc": en}}, "base": BASE,
                     "kobest": {"COPA": {"acc": acc}, "mean": {"acc": acc, "macro_f1": acc - 0.1}},
                     "base_kobest": {"mean": {"acc": 0.5, "macro_f1": 0.4}}}}


@pytest.fixture()
def sweep(tmp_path):
    """A finished 3-point sweep: job dirs with report.json and .hydra/overrides.yaml, a parent run
    with three children (each with its report.json artifact), the sweep's report.json."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep_dir = tmp_path / "sweep"
    parent = MlflowTracker(uri, "report-test", "train-sweep", tags={"kopretrain.swept": "mix.replay_ratio"})
    for num, (ratio, (ko, en, acc)) in enumerate(POINTS.items()):
        child = MlflowTracker(uri, "report-test", f"replay_ratio={ratio}", parent.run_id,
                              tags={"sweep.mix.replay_ratio": ratio, "kopretrain.sweep_point": str(num)})
        job = sweep_dir / str(num)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["experiment=smoke", f"mix.replay_ratio={ratio}"]))
        write_report(job / "report.json", _report(ratio, ko, en, acc, child.run_id))
        child.log_artifact(job / "report.json")
        child.end()
    report = collect_sweep_report(sweep_dir, "train")
    report.update(swept=["mix.replay_ratio"], mlflow_parent_run_id=parent.run_id, tracking_uri=uri)
    write_report(sweep_dir / "report.json", report)
    parent.end()
    return sweep_dir, uri, parent.run_id


def table_rows(markdown: str) -> list[dict[str, str]]:
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]


def check_table(markdown: str, sweep_dir: Path) -> None:
    """Every cell against the numbers in the runs' report.json files."""
    rows = table_rows(markdown)
    assert rows[0]["replay_ratio"] == "base"
    assert float(rows[0]["Korean bpc"]) == BASE["ko"]["bpc"] and float(rows[0]["English bpc"]) == BASE["en"]["bpc"]
    assert float(rows[0]["KoBEST mean acc"]) == 0.5
    assert [r["replay_ratio"] for r in rows[1:]] == list(POINTS)
    for num, row in enumerate(rows[1:]):
        ev = json.loads((sweep_dir / str(num) / "report.json").read_text())["eval"]
        ko, en, acc = ev["domains"]["ko"]["bpc"], ev["domains"]["en"]["bpc"], ev["kobest"]["mean"]["acc"]
        assert float(row["Korean bpc"]) == pytest.approx(ko, abs=1e-4)
        assert float(row["English bpc"]) == pytest.approx(en, abs=1e-4)
        assert float(row["KoBEST mean acc"]) == pytest.approx(acc, abs=1e-4)
        assert float(row["Δ Korean bpc"]) == pytest.approx(ko - 6.0, abs=1e-4)
        assert float(row["Δ English bpc"]) == pytest.approx(en - 2.0, abs=1e-4)
        assert float(row["Δ KoBEST"]) == pytest.approx(acc - 0.5, abs=1e-4)
        assert float(row["English retained"]) == pytest.approx(2.0 / en, abs=1e-4)
        assert float(row["Korean gained (bpc)"]) == pytest.approx(6.0 - ko, abs=1e-4)
        losses = json.loads((sweep_dir / str(num) / "report.json").read_text())["losses"]
        assert float(row["final train loss"]) == pytest.approx(losses[-1]["loss"], abs=1e-4)


def check_png(path: Path) -> None:
    from PIL import Image

    import matplotlib.image

    pixels = matplotlib.image.imread(path)
    height, width = pixels.shape[:2]
    assert width > 1.8 * height  # two panels: the trade-off and the loss curves per domain
    assert pixels[..., :3].std() > 0.05  # something was drawn
    assert Image.open(path).format == "PNG"


def test_report_from_a_sweep_dir_matches_the_runs_reports_and_is_logged_on_the_parent(sweep, tmp_path, capsys):
    sweep_dir, uri, parent_id = sweep
    out = run_report(ReportConfig(sweep=str(sweep_dir), tracking=TrackingConfig(enabled=True, uri="sqlite:///unused.db")),
                     tmp_path / "run")
    assert out["output_dir"] == str(sweep_dir) and out["mlflow_parent_run_id"] == parent_id
    markdown = (sweep_dir / "report.md").read_text()
    check_table(markdown, sweep_dir)
    assert "![trade-off](tradeoff.png)" in markdown
    printed = capsys.readouterr().out
    assert all(line in printed for line in markdown.splitlines() if line.startswith("|"))  # the table is printed
    check_png(sweep_dir / "tradeoff.png")
    client = MlflowClient(uri)  # the sweep's own store, not the config's
    assert {"report.md", "tradeoff.png"} <= {a.path for a in client.list_artifacts(parent_id)}
    assert not Path("unused.db").exists()


def test_report_from_an_mlflow_parent_run_id_reads_the_children(sweep, tmp_path):
    sweep_dir, uri, parent_id = sweep
    run_dir = tmp_path / "run"
    out = run_report(ReportConfig(sweep=parent_id, tracking=TrackingConfig(uri=uri)), run_dir)
    assert out["output_dir"] == str(run_dir)  # the parent names no sweep directory: this run's own
    check_table(Path(out["report_md"]).read_text(), sweep_dir)
    check_png(Path(out["tradeoff_png"]))


def test_report_cli_takes_the_sweep_dir_as_its_argument(sweep, tmp_path):
    sweep_dir, _, _ = sweep
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "kopretrain", "report", str(sweep_dir), "tracking.enabled=false",
                           f"output_dir={tmp_path / 'out'}", f"hydra.run.dir={tmp_path / 'run'}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    check_table((tmp_path / "out" / "report.md").read_text(), sweep_dir)
    assert proc.stdout.strip().splitlines()[-1] == str(tmp_path / "run")
    assert json.loads((tmp_path / "run" / "report.json").read_text())["report_md"] == str(tmp_path / "out" / "report.md")


@pytest.mark.parametrize("what,message", [
    ("", "sweep: give a sweep directory"),
    ("nope/not-here", "is neither a sweep directory nor an MLflow run id"),
    ("0123456789abcdef0123456789abcdef", "no MLflow run 0123456789abcdef0123456789abcdef"),
])
def test_report_refuses_what_is_no_sweep_in_one_line(tmp_path, what, message):
    cfg = ReportConfig(sweep=what, tracking=TrackingConfig(uri=f"sqlite:///{tmp_path / 'mlflow.db'}"))
    with pytest.raises(UserError, match=message):
        run_report(cfg, tmp_path)


def test_report_refuses_a_single_runs_directory(tmp_path):
    write_report(tmp_path / "report.json", {"domains": {}})
    with pytest.raises(UserError, match="single run's report, not a sweep's"):
        run_report(ReportConfig(sweep=str(tmp_path), tracking=TrackingConfig(enabled=False)), tmp_path)


def test_training_runs_evaluated_during_training_get_their_bpc_from_mlflow(tmp_path):
    """A train sweep with eval.every_num_steps: report.json has no evaluation, the runs' eval/<d>_bpc
    metrics (last value) are the table's bpc columns."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep_dir = tmp_path / "sweep"
    parent = MlflowTracker(uri, "report-test", "train-sweep", tags={"kopretrain.swept": "mix.replay_ratio"})
    expected = {}
    for num, ratio in enumerate(["0", "0.2"]):
        child = MlflowTracker(uri, "report-test", f"replay_ratio={ratio}", parent.run_id)
        for step, (ko, en) in [(2, (5.0, 3.0)), (4, (4.0 + num, 2.5 - num / 10))]:
            child.log_metrics({"eval/ko_bpc": ko, "eval/en_bpc": en}, step=step)
        expected[ratio] = (4.0 + num, 2.5 - num / 10)
        job = sweep_dir / str(num)
        write_report(job / "report.json", {"losses": [{"step": 4, "loss": 3.0}], "mlflow_run_id": child.run_id})
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"mix.replay_ratio={ratio}"]))
        child.end()
    report = collect_sweep_report(sweep_dir, "train")
    report.update(swept=["mix.replay_ratio"], mlflow_parent_run_id=parent.run_id, tracking_uri=uri)
    write_report(sweep_dir / "report.json", report)
    parent.end()
    run_report(ReportConfig(sweep=str(sweep_dir), tracking=TrackingConfig(enabled=False)), tmp_path / "run")
    rows = table_rows((sweep_dir / "report.md").read_text())
    assert {r["replay_ratio"]: (float(r["Korean bpc"]), float(r["English bpc"])) for r in rows} == expected
    assert "Δ Korean bpc" not in rows[0]  # no base: no changes


def test_a_sweep_without_finished_points_is_one_line(tmp_path):
    """Every point failed (Hydra's launcher: the first failed point's directory holds only its log)."""
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "eval.log").write_text("kopretrain eval: error: model_dir: '/nope' does not exist\n")
    write_report(tmp_path / "report.json", {"command": "eval", "sweep_dir": str(tmp_path), "jobs": [], "swept": ["model_dir"]})
    with pytest.raises(UserError, match=rf"^sweep: {tmp_path} has no finished points .*; failed: #0: no report.json"):
        run_report(ReportConfig(sweep=str(tmp_path), tracking=TrackingConfig(enabled=False)), tmp_path / "run")


def test_a_failed_point_of_hydras_launcher_is_named_by_its_swept_values(sweep, tmp_path, capsys):
    """Hydra's own launcher: a point directory without report.json is named by the swept values of
    the overrides Hydra wrote to its .hydra/overrides.yaml when it started."""
    sweep_dir, _, _ = sweep
    failed = sweep_dir / "3"
    (failed / ".hydra").mkdir(parents=True)
    (failed / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["experiment=smoke", "mix.replay_ratio=0.9"]))
    out = run_report(ReportConfig(sweep=str(sweep_dir), tracking=TrackingConfig(enabled=False)), tmp_path / "run")
    line = f"#3 replay_ratio=0.9: no report.json (failed or unfinished; its log is in {failed})"
    assert out["failed_points"] == [line]
    assert f"not in the table: {line}" in capsys.readouterr().out


def test_the_compare_link_says_how_to_open_a_local_store_in_mlflow_ui(sweep, tmp_path, capsys):
    """`mlflow ui` opens mlflow.db of the directory it runs in; any other local store needs --backend-store-uri."""
    from kopretrain.report.markdown import ui_hint

    sweep_dir, uri, _ = sweep  # sqlite:///<tmp_path>/mlflow.db
    run_report(ReportConfig(sweep=str(sweep_dir), tracking=TrackingConfig(uri=uri)), tmp_path / "run")
    hint = f"run `mlflow ui` in {tmp_path}"
    assert f"(a local store: {hint})." in (sweep_dir / "report.md").read_text()
    assert any(line.startswith("MLflow compare view: http://127.0.0.1:5000/#/compare-runs?") and line.endswith(f" ({hint})")
               for line in capsys.readouterr().out.splitlines())
    assert ui_hint(uri) == hint
    assert ui_hint("sqlite:////tmp/brk11/sw.db") == "run `mlflow ui --backend-store-uri sqlite:////tmp/brk11/sw.db`"
    (tmp_path / "mlruns").mkdir()  # `mlflow ui` would open ./mlruns there
    assert ui_hint(uri) == f"run `mlflow ui --backend-store-uri {uri}`"
    assert ui_hint("http://host:5000") == ""


def test_failed_ray_jobs_points_are_named_in_report_md_and_printed(sweep, tmp_path, capsys):
    """A ray_jobs sweep with a FAILED point: the table holds the others, report.md and the console name
    the failed point with its status and error line (from ray_jobs.json)."""
    sweep_dir, _, _ = sweep
    points = [{"num": n, "overrides": ["experiment=smoke", f"mix.replay_ratio={r}"], "status": "SUCCEEDED", "message": ""}
              for n, r in enumerate(POINTS)]
    points.append({"num": 3, "overrides": ["experiment=smoke", "mix.replay_ratio=0.9"], "status": "FAILED",
                   "message": "kopretrain train: error: data.tokens_dir: '/nope' does not exist"})
    (sweep_dir / "3").mkdir()
    write_report(sweep_dir / "ray_jobs.json", {"address": "http://x:8265", "points": points})
    out = run_report(ReportConfig(sweep=str(sweep_dir), tracking=TrackingConfig(enabled=False)), tmp_path / "run")
    line = "#3 replay_ratio=0.9: FAILED (kopretrain train: error: data.tokens_dir: '/nope' does not exist)"
    assert out["failed_points"] == [line]
    markdown = (sweep_dir / "report.md").read_text()
    check_table(markdown, sweep_dir)  # the three finished points, nothing for the failed one
    assert f"Points without results (not in the table): {line}." in markdown
    assert f"not in the table: {line}" in capsys.readouterr().out


def test_failed_children_of_a_parent_run_are_named_and_a_parent_without_finished_ones_is_one_line(sweep, tmp_path):
    """From a parent run id: a FAILED child without numbers is named, not an empty row; only failed is one line."""
    _, uri, parent_id = sweep
    bad = MlflowTracker(uri, "report-test", "replay_ratio=0.9", parent_id,
                        tags={"sweep.mix.replay_ratio": "0.9", "kopretrain.sweep_point": "3"})
    bad.end("FAILED")
    out = run_report(ReportConfig(sweep=parent_id, tracking=TrackingConfig(uri=uri)), tmp_path / "run")
    assert [r["values"]["mix.replay_ratio"] for r in out["rows"]] == list(POINTS)
    assert out["failed_points"] == ["replay_ratio=0.9: FAILED in MLflow"]
    lonely = MlflowTracker(uri, "report-test", "eval-sweep", tags={"kopretrain.swept": "model_dir"})
    MlflowTracker(uri, "report-test", "model_dir=/nope", lonely.run_id, tags={"sweep.model_dir": "/nope"}).end("FAILED")
    lonely.end("FAILED")
    with pytest.raises(UserError, match=rf"^sweep: MLflow run {lonely.run_id} has no finished child runs \(model_dir=/nope: FAILED in MLflow\)$"):
        run_report(ReportConfig(sweep=lonely.run_id, tracking=TrackingConfig(uri=uri)), tmp_path / "run2")


def test_runs_with_different_bases_get_no_shared_base_row(sweep, tmp_path):
    """A sweep over the held-out set (or base_model_dir): each point's base differs, so there is no one
    base row contradicting the rows' changes; report.md says why."""
    sweep_dir, _, _ = sweep
    own = json.loads((sweep_dir / "1" / "report.json").read_text())
    own["eval"]["base"] = {"ko": {"bpc": 5.0}, "en": {"bpc": 1.5}}
    write_report(sweep_dir / "1" / "report.json", own)
    out = run_report(ReportConfig(sweep=str(sweep_dir), tracking=TrackingConfig(enabled=False)), tmp_path / "run")
    assert out["base"] is None
    markdown = (sweep_dir / "report.md").read_text()
    rows = table_rows(markdown)
    assert [r["replay_ratio"] for r in rows] == list(POINTS)  # no base row
    assert float(rows[1]["Δ Korean bpc"]) == pytest.approx(3.2 - 5.0) and float(rows[0]["Δ Korean bpc"]) == pytest.approx(3.0 - 6.0)
    assert "compared with different bases (no base row)" in markdown


@pytest.mark.parametrize("point,sweep_json,message", [
    ('{"dom', None, r"1/report.json is not JSON \("),
    ("[1]", None, r"1/report.json is not a run's report \(a JSON list, not an object\)$"),
    (None, "[]", r"report.json is a single run's report, not a sweep's"),
])
def test_a_damaged_report_json_is_one_line(sweep, tmp_path, point, sweep_json, message):
    sweep_dir, _, _ = sweep
    if point is not None:
        (sweep_dir / "1" / "report.json").write_text(point)
    if sweep_json is not None:
        (sweep_dir / "report.json").write_text(sweep_json)
    with pytest.raises(UserError, match=rf"^sweep: {sweep_dir}/" + message):
        run_report(ReportConfig(sweep=str(sweep_dir), tracking=TrackingConfig(enabled=False)), tmp_path / "run")


def test_a_domain_key_naming_no_evaluated_domain_is_one_line(sweep, tmp_path):
    sweep_dir, _, _ = sweep
    cfg = ReportConfig(sweep=str(sweep_dir), english_domain="eng", tracking=TrackingConfig(enabled=False))
    with pytest.raises(UserError, match=r"^english_domain: no run was evaluated on 'eng' \(domains: en, ko\)$"):
        run_report(cfg, tmp_path / "run")


def test_a_moved_mlflow_store_is_not_recreated(sweep, tmp_path, capsys):
    """The sweep's recorded SQLite store is gone: the report comes from the directory with a warning, and
    no empty store is created there; a parent run id in a store that does not exist is one line."""
    sweep_dir, _, parent_id = sweep
    gone = tmp_path / "moved" / "mlflow.db"
    report = json.loads((sweep_dir / "report.json").read_text())
    write_report(sweep_dir / "report.json", {**report, "tracking_uri": f"sqlite:///{gone}"})
    out = run_report(ReportConfig(sweep=str(sweep_dir), tracking=TrackingConfig(enabled=True)), tmp_path / "run")
    check_table(Path(out["report_md"]).read_text(), sweep_dir)
    assert f"the sweep's MLflow store sqlite:///{gone} is gone" in capsys.readouterr().err
    assert not gone.parent.exists()
    with pytest.raises(UserError, match=rf"^sweep: no MLflow run {parent_id}: the store sqlite:///{gone} does not exist \(set tracking.uri\)$"):
        run_report(ReportConfig(sweep=parent_id, tracking=TrackingConfig(uri=f"sqlite:///{gone}")), tmp_path / "run2")
    assert not gone.parent.exists()
