"""A sweep's runs for `kopretrain report`, from a sweep directory or from an MLflow parent run.

    collect_dir(Path("multirun/train/2026-11-30/14-02-33"))   # the sweep's report.json + each job's
    collect_mlflow("3f9c...", "sqlite:///mlflow.db")            # the parent's children and their report.json

A job's own report.json is read again from its run directory (the demo adds its evaluation
there after the sweep); the copy inside the sweep's report.json is the fallback.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from kopretrain.errors import UserError
from kopretrain.launch.points import point_name, swept_values, values_from_tags
from kopretrain.report.rows import Run, Sweep, eval_part


def _varying_keys(job_overrides: list[list[str]]) -> list[str]:
    """Keys whose override values differ between the jobs (a sweep made before `swept` was recorded)."""
    from kopretrain.launch.points import override_key, override_value

    seen: dict[str, set[str]] = {}
    order: list[str] = []
    for overrides in job_overrides:
        for o in overrides:
            key = override_key(o)
            if key not in seen:
                seen[key] = set()
                order.append(key)
            seen[key].add(override_value(o))
    return [k for k in order if len(seen[k]) > 1 or len(job_overrides) == 1]


def collect_dir(sweep_dir: Path) -> Sweep:
    sweep_dir = Path(sweep_dir)
    path = sweep_dir / "report.json"
    try:
        sweep = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"sweep: {sweep_dir} has no report.json (give a sweep directory that a `-m` run finished, "
                        "or the MLflow run id of a sweep's parent run)") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"sweep: {path} is not JSON ({exc})") from None
    if not isinstance(sweep, dict) or not isinstance(sweep.get("jobs"), list):
        raise UserError(f"sweep: {path} is a single run's report, not a sweep's (no 'jobs'); give its sweep directory")
    swept = sweep.get("swept") or _varying_keys([job.get("overrides") or [] for job in sweep["jobs"]])
    runs = []
    for job in sweep["jobs"]:
        run_dir = Path(job.get("run_dir") or "")
        own = run_dir / "report.json"
        report = _read_json(own) if own.is_file() else job.get("report") or {}
        values = swept_values(job.get("overrides") or [], swept)
        runs.append(Run(point_name(values) or run_dir.name, values, report, str(run_dir), report.get("mlflow_run_id", "")))
    uri = sweep.get("tracking_uri", "")
    if missing_store(uri):  # moved or deleted: reading it through MLflow would create an empty one there
        print(f"kopretrain report: warning: the sweep's MLflow store {uri} is gone; nothing is read from or "
              "logged to it (bpc of eval during training, the parent run's artifacts)", file=sys.stderr, flush=True)
        sweep = {**sweep, "tracking_uri": "", "mlflow_parent_run_id": ""}
    failed = failed_points(sweep_dir, swept, {Path(r.run_dir).name for r in runs})
    if not runs:
        raise UserError(f"sweep: {sweep_dir} has no finished points (no point directory has a report.json)"
                        + (f"; failed: {'; '.join(failed)}" if failed else ""))
    return Sweep(str(sweep_dir), swept, runs, sweep.get("mlflow_parent_run_id", ""), sweep.get("tracking_uri", ""),
                 str(sweep_dir), {"failed": failed})


def failed_points(sweep_dir: Path, swept: list[str], done: set[str]) -> list[str]:
    """The sweep's points that left no report.json: from ray_jobs.json (status and error line) when the
    ray_jobs launcher ran it, else the numbered point directories without one (Hydra's own launcher
    stops at the first failed point: later points have no directory)."""
    launched = sweep_dir / "ray_jobs.json"
    if launched.is_file():
        try:
            points = json.loads(launched.read_text(encoding="utf-8")).get("points") or []
        except (json.JSONDecodeError, AttributeError):
            points = []
        out = []
        for p in points:
            if str(p.get("num")) in done and p.get("status") == "SUCCEEDED":
                continue
            label = point_name(swept_values(p.get("overrides") or [], swept))
            msg = f" ({p['message']})" if p.get("message") else ""
            out.append(f"#{p.get('num')} {label}: {p.get('status')}{msg}".replace("  ", " "))
        return out
    dirs = [d for d in sweep_dir.iterdir() if d.is_dir() and d.name.isdigit() and d.name not in done]
    return [f"#{' '.join(filter(None, [d.name, point_name(swept_values(_job_overrides(d), swept))]))}: no report.json "
            f"(failed or unfinished; its log is in {d})" for d in sorted(dirs, key=lambda d: int(d.name))]


def _job_overrides(job_dir: Path) -> list[str]:
    """The overrides Hydra wrote to `<job>/.hydra/overrides.yaml` when the point started ([] without one)."""
    import yaml

    try:
        overrides = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return []
    return [str(o) for o in overrides] if isinstance(overrides, list) else []


def missing_store(uri: str) -> str:
    """The path of a local SQLite store `uri` names that does not exist ('' otherwise)."""
    if not uri.startswith("sqlite:///"):
        return ""
    path = uri[len("sqlite:///"):]
    return "" if path in ("", ":memory:") or Path(path).exists() else path


def _read_json(path: Path) -> dict:
    """A point's report.json, or one UserError naming it."""
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"sweep: {path} is not JSON ({exc})") from None
    if not isinstance(report, dict):
        raise UserError(f"sweep: {path} is not a run's report (a JSON {type(report).__name__}, not an object)")
    return report


def _metrics_report(metrics: dict[str, float]) -> dict:
    """An eval-shaped report from a run's metrics (`<d>_bpc`, `<d>_bpc_delta`) when it logged no report.json."""
    domains = {k[: -len("_bpc")]: {"bpc": v} for k, v in metrics.items() if k.endswith("_bpc")}
    base = {d: {"bpc": v["bpc"] - metrics[f"{d}_bpc_delta"]} for d, v in domains.items() if f"{d}_bpc_delta" in metrics}
    return {"domains": domains, **({"base": base} if base else {})}


def add_tracked_eval(sweep: Sweep) -> None:
    """A run whose report.json has no evaluation gets the one its MLflow run holds: the last values of
    `eval/<d>_bpc` (eval during training, `eval.every_num_steps`) or `<d>_bpc` (and `<d>_bpc_delta`)."""
    from kopretrain.report.rows import eval_part

    todo = [r for r in sweep.runs if r.mlflow_run_id and not eval_part(r.report).get("domains")]
    if not (todo and sweep.tracking_uri):
        return
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=sweep.tracking_uri)
    for run in todo:
        try:
            metrics = client.get_run(run.mlflow_run_id).data.metrics
        except MlflowException:
            continue
        tracked = {k[len("eval/"):]: v for k, v in metrics.items() if k.startswith("eval/")} or metrics
        found = _metrics_report(tracked)
        if found["domains"]:
            run.report = {**run.report, "eval": found}


def collect_mlflow(run_id: str, uri: str) -> Sweep:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no progress bar per report.json
    if missing_store(uri):
        raise UserError(f"sweep: no MLflow run {run_id}: the store {uri} does not exist (set tracking.uri)")
    client = MlflowClient(tracking_uri=uri)
    try:
        parent = client.get_run(run_id)
    except MlflowException:
        raise UserError(f"sweep: no MLflow run {run_id} in {uri} (and no directory of that name)") from None
    children = client.search_runs([parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{run_id}'",
                                  max_results=1000)
    if not children:
        raise UserError(f"sweep: MLflow run {run_id} has no child runs (give a sweep's parent run)")
    swept = [k for k in parent.data.tags.get("kopretrain.swept", "").split(",") if k]
    runs, failed = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for child in children:
            try:
                local = client.download_artifacts(child.info.run_id, "report.json", tmp)
                report = json.loads(Path(local).read_text(encoding="utf-8"))
            except (MlflowException, OSError, json.JSONDecodeError):
                metrics = child.data.metrics  # eval during training's eval/<d>_bpc first, as add_tracked_eval
                report = _metrics_report({k[len("eval/"):]: v for k, v in metrics.items() if k.startswith("eval/")}
                                         or metrics)
            values = values_from_tags(child.data.tags)
            if swept:
                values = {k: values[k] for k in swept if k in values}
            name = point_name(values) or child.info.run_name or child.info.run_id
            if child.info.status != "FINISHED":  # failed, killed or still running: named, in the table only with numbers
                failed.append((_point_num(children, child.info.run_id), f"{name}: {child.info.status} in MLflow"))
                if not (eval_part(report).get("domains") or report.get("losses")):
                    continue
            runs.append(Run(name, values, report, "", child.info.run_id))
    runs.sort(key=lambda r: _point_num(children, r.mlflow_run_id))
    failed_lines = [line for _, line in sorted(failed)]
    if not runs:
        raise UserError(f"sweep: MLflow run {run_id} has no finished child runs ({'; '.join(failed_lines)})")
    return Sweep(run_id, swept or sorted({k for r in runs for k in r.values}), runs, run_id, uri,
                 parent.data.tags.get("kopretrain.sweep_dir", ""), {"failed": failed_lines})


def _point_num(children, run_id: str) -> tuple:
    for c in children:
        if c.info.run_id == run_id:
            num = c.data.tags.get("kopretrain.sweep_point", "")
            return (0, int(num)) if num.isdigit() else (1, c.info.start_time or 0)
    return (2, 0)
