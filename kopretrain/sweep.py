"""Hydra multirun glue: a sweep-level report.json with one entry per job.

Registered as a Hydra callback in every `conf/<command>.yaml` (`hydra.callbacks.sweep_report`).
After `kopretrain train -m mix.replay_ratio=0,0.2` the sweep directory holds `report.json`:
`{"command": "train", "jobs": [{"overrides": [...], "run_dir": ..., "report": {...}}, ...]}`
(built by `kopretrain.run_dir.collect_sweep_report`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from kopretrain.run_dir import collect_sweep_report, record_sweep_dir, write_report


class SweepReport(Callback):
    def __init__(self, command: str = "") -> None:
        self.command = command

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir).resolve()
        write_report(sweep_dir / "report.json", collect_sweep_report(sweep_dir, self.command))
        record_sweep_dir(sweep_dir)
