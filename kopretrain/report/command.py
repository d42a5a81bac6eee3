"""`kopretrain report <sweep dir | MLflow parent run id>`: report.md (the table, also printed) and
tradeoff.png, written to the sweep directory (or `output_dir`) and logged as artifacts of the
sweep's MLflow parent run.

    kopretrain report multirun/train/2026-11-30/14-02-33
    kopretrain report 3f9c0d... tracking.uri=http://mlflow:5000
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from kopretrain.config.report import ReportConfig
from kopretrain.errors import UserError
from kopretrain.report import markdown, plots
from kopretrain.report.rows import Sweep, base_row, loss_curves, row

_RUN_ID = re.compile(r"[A-Za-z0-9_-]{8,}")


def load_sweep(cfg: ReportConfig) -> Sweep:
    from kopretrain.paths import resolve_path
    from kopretrain.report.collect import collect_dir, collect_mlflow
    from kopretrain.tracking import resolve_tracking_uri

    if not cfg.sweep.strip():
        raise UserError("sweep: give a sweep directory or a sweep's MLflow parent run id "
                        "(kopretrain report <sweep dir | run id>)")
    path = resolve_path(cfg.sweep)
    if path.is_dir():
        return collect_dir(path)
    if path.exists() or not _RUN_ID.fullmatch(cfg.sweep.strip()):
        raise UserError(f"sweep: {cfg.sweep} is neither a sweep directory nor an MLflow run id")
    return collect_mlflow(cfg.sweep.strip(), resolve_tracking_uri(cfg.tracking.uri))


def run_report(cfg: ReportConfig, run_dir: Path) -> dict:
    from kopretrain.report.collect import add_tracked_eval
    from kopretrain.tracking import resolve_tracking_uri

    sweep = load_sweep(cfg)
    add_tracked_eval(sweep)  # a training run evaluated during training: its eval/<d>_bpc metrics
    check_domains(cfg, sweep)
    rows = [row(r, cfg.korean_domain, cfg.english_domain) for r in sweep.runs]
    base = base_row(rows)
    out = Path(cfg.output_dir) if cfg.output_dir else Path(sweep.sweep_dir) if Path(sweep.sweep_dir or "-").is_dir() else Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    curves = {r.name: loss_curves(r) for r in sweep.runs}
    png = plots.draw(out / "tradeoff.png", rows, sweep.runs, curves)
    md = out / "report.md"
    link = compare_link(cfg, sweep, rows)
    store = (sweep.tracking_uri or resolve_tracking_uri(cfg.tracking.uri)) if link else ""
    md.write_text(markdown.document(sweep, rows, base, png.name, link, store), encoding="utf-8")
    print(markdown.table(sweep, rows, base), flush=True)
    for failed in sweep.extra.get("failed", []):
        print(f"not in the table: {failed}", flush=True)
    if link:
        hint = markdown.ui_hint(store)
        print(f"MLflow compare view: {link}" + (f" ({hint})" if hint else ""), flush=True)
    logged = _log_on_parent(cfg, sweep, [md, png])
    return {"source": sweep.source, "sweep_dir": sweep.sweep_dir, "output_dir": str(out), "report_md": str(md),
            "tradeoff_png": str(png), "swept": sweep.swept, "base": base, "rows": rows,
            "failed_points": sweep.extra.get("failed", []),
            "mlflow_parent_run_id": sweep.parent_run_id if logged else ""}


def check_domains(cfg: ReportConfig, sweep: Sweep) -> None:
    """A korean_domain / english_domain set to a domain no run was evaluated on is one line (its
    column would silently vanish); the defaults may be absent (their columns are left out)."""
    from dataclasses import fields

    from kopretrain.report.rows import eval_part

    seen = {d for r in sweep.runs for d in (eval_part(r.report).get("domains") or {})}
    defaults = {f.name: f.default for f in fields(ReportConfig)}
    for key in ("korean_domain", "english_domain"):
        value = getattr(cfg, key)
        if seen and value != defaults[key] and value not in seen:
            raise UserError(f"{key}: no run was evaluated on {value!r} (domains: {', '.join(sorted(seen))})")


def compare_link(cfg: ReportConfig, sweep: Sweep, rows: list[dict]) -> str:
    """The MLflow UI's compare view of the sweep's runs, in its model-training layout (MLflow 3.17's UI
    otherwise opens in its GenAI layout, whatever the experiment's kind tag says); '' without runs."""
    ids = [r["mlflow_run_id"] for r in rows if r["mlflow_run_id"]]
    if not (cfg.tracking.enabled and sweep.parent_run_id and ids):
        return ""
    from urllib.parse import quote

    from kopretrain.tracking import resolve_tracking_uri

    uri = sweep.tracking_uri or resolve_tracking_uri(cfg.tracking.uri)
    try:
        from mlflow.tracking import MlflowClient

        experiment_id = MlflowClient(tracking_uri=uri).get_run(sweep.parent_run_id).info.experiment_id
    except Exception:  # noqa: BLE001 - the link is a convenience
        return ""
    server = uri.rstrip("/") if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"  # `mlflow ui`
    runs, exps = quote(json.dumps(ids), safe=""), quote(json.dumps([experiment_id]), safe="")
    return f"{server}/#/compare-runs?runs={runs}&experiments={exps}&workflowType=machine_learning"


def _log_on_parent(cfg: ReportConfig, sweep: Sweep, files: list[Path]) -> bool:
    """Log the files on the sweep's parent run (its own store when the sweep recorded one)."""
    if not (cfg.tracking.enabled and sweep.parent_run_id):
        return False
    from kopretrain.tracking import MlflowTracker, resolve_tracking_uri

    tracker = MlflowTracker(sweep.tracking_uri or resolve_tracking_uri(cfg.tracking.uri), "", "", run_id=sweep.parent_run_id)
    for f in files:
        tracker.log_artifact(f)
    return not tracker.failed and not tracker.disabled
