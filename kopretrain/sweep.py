"""Hydra multirun glue: a sweep-level report.json with one entry per job.

Registered as a Hydra callback in every `conf/<command>.yaml` (`hydra.callbacks.sweep_report`).
After `kopretrain train -m mix.replay_ratio=0,0.2` the sweep directory holds `report.json`:
`{"command": "train", "jobs": [{"overrides": [...], "run_dir": ..., "report": {...}}, ...]}`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

_SWEEP_DIRS: list[str] = []


def last_sweep_dir() -> str | None:
    return _SWEEP_DIRS[-1] if _SWEEP_DIRS else None


def collect_sweep_report(sweep_dir: Path, command: str) -> dict:
    """Gather every job's report.json under `sweep_dir` (jobs in their numeric order)."""
    jobs = []
    subdirs = [p for p in sweep_dir.iterdir() if p.is_dir() and (p / "report.json").exists()]
    for job_dir in sorted(subdirs, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name)):
        overrides_file = job_dir / ".hydra" / "overrides.yaml"
        overrides = []
        if overrides_file.exists():
            import yaml

            overrides = yaml.safe_load(overrides_file.read_text()) or []
        jobs.append(
            {
                "overrides": overrides,
                "run_dir": str(job_dir),
                "report": json.loads((job_dir / "report.json").read_text(encoding="utf-8")),
            }
        )
    return {"command": command, "sweep_dir": str(sweep_dir), "jobs": jobs}


class SweepReport(Callback):
    def __init__(self, command: str = "") -> None:
        self.command = command

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        from kopretrain.cli import write_report

        sweep_dir = Path(config.hydra.sweep.dir).resolve()
        write_report(sweep_dir / "report.json", collect_sweep_report(sweep_dir, self.command))
        _SWEEP_DIRS.append(str(sweep_dir))
