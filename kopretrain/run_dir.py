"""The run directory's files: report.json per run, and the sweep-level report of a multirun.

Imported by the CLI (`kopretrain.cli`) and the Hydra sweep callback (`kopretrain.sweep`), which
therefore do not import each other. No Hydra, Ray or MLflow here.

    write_report(run_dir / "report.json", report)        # atomic: a reader never sees half a file
    read_report(run_dir)                                  # -> dict
    collect_sweep_report(sweep_dir, "train")              # {"command", "sweep_dir", "jobs": [...]}
    last_sweep_dir()                                      # the sweep dir the last multirun finished
"""

from __future__ import annotations

import json
import os
from pathlib import Path

_SWEEP_DIRS: list[str] = []


def write_report(path: Path, report: dict) -> None:
    """Write `report` as JSON to `path` (via a temporary file and a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_report(run_dir: Path) -> dict:
    """The report.json of a run (or sweep) directory."""
    return json.loads((Path(run_dir) / "report.json").read_text(encoding="utf-8"))


def _job_order(path: Path) -> tuple:
    return (not path.name.isdigit(), int(path.name) if path.name.isdigit() else 0, path.name)


def collect_sweep_report(sweep_dir: Path, command: str) -> dict:
    """Gather every job's report.json under `sweep_dir` (jobs in their numeric order)."""
    jobs = []
    subdirs = [p for p in Path(sweep_dir).iterdir() if p.is_dir() and (p / "report.json").exists()]
    for job_dir in sorted(subdirs, key=_job_order):
        overrides_file = job_dir / ".hydra" / "overrides.yaml"
        overrides = []
        if overrides_file.exists():
            import yaml

            overrides = yaml.safe_load(overrides_file.read_text()) or []
        jobs.append({"overrides": overrides, "run_dir": str(job_dir), "report": read_report(job_dir)})
    return {"command": command, "sweep_dir": str(sweep_dir), "jobs": jobs}


def record_sweep_dir(sweep_dir: Path) -> None:
    """Remember a finished multirun's directory (the CLI prints it as its last line)."""
    _SWEEP_DIRS.append(str(sweep_dir))


def last_sweep_dir() -> str | None:
    return _SWEEP_DIRS[-1] if _SWEEP_DIRS else None
