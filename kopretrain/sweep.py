"""Hydra multirun glue: one MLflow parent run per sweep, a tagged child per point, and the
sweep-level report.json.

Registered as a Hydra callback in every `conf/<command>.yaml` (`hydra.callbacks.sweep_report`).
`kopretrain train -m mix.replay_ratio=0,0.2` then:

- opens the sweep's parent run when the multirun starts (`<command>-sweep-<sweep dir name>`,
  nested under `tracking.parent_run_id` if one is given, e.g. the demo's run);
- files every point's run under it, named by its swept values (`replay_ratio=0.2`) and tagged
  with them (`sweep.mix.replay_ratio=0.2`), whichever launcher runs the point: in this process
  (Hydra's basic launcher) the app asks `point_tracking`; in a Ray job (`hydra/launcher=ray_jobs`)
  the launcher hands the same description over in the KOPRETRAIN_SWEEP_POINT environment variable;
- when the multirun ends, writes `report.json` into the sweep directory
  (`{"command", "sweep_dir", "swept", "mlflow_parent_run_id", "jobs": [...]}`, built by
  `kopretrain.run_dir.collect_sweep_report`), logs it on the parent and ends the parent FINISHED
  (FAILED / KILLED through `finish_sweep` when points failed or the sweep was interrupted).
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from kopretrain.launch.points import decode_point, override_key, point_name, point_tags, swept_values
from kopretrain.run_dir import collect_sweep_report, record_sweep_dir, write_report

_STATE: dict[str, Any] = {}  # the running sweep: command, sweep_dir, swept keys, parent tracker


def swept_keys(task_overrides: list[str]) -> list[str]:
    """The keys a multirun's task overrides sweep (`a=1,2`, `a=range(3)`, `a=choice(x,y)`)."""
    return list(swept_lists(task_overrides))


def swept_lists(task_overrides: list[str]) -> dict[str, list[str]]:
    """Each swept key's values, in order (`a=range(3)` -> {"a": ["0", "1", "2"]}); fixed overrides left out."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(task_overrides))
    return {override_key(o.input_line): list(o.sweep_string_iterator()) for o in parsed if o.is_sweep_override()}


def _tracking_of(config) -> Any:
    from omegaconf import OmegaConf

    node = config.get("tracking") if hasattr(config, "get") else None
    return OmegaConf.to_object(node) if node is not None else None


def start_sweep(command: str, sweep_dir: Path, task_overrides: list[str], tracking) -> None:
    """Remember the sweep and open its parent run (when `tracking` is enabled)."""
    from kopretrain.tracking import keep_open, start_run

    _STATE.clear()
    lists = swept_lists(task_overrides)
    keys = list(lists)
    _STATE.update(command=command, sweep_dir=Path(sweep_dir), swept=keys, parent=None, tracking=tracking)
    if tracking is None or not tracking.enabled:
        return
    cfg = dataclasses.replace(tracking, run_name="", tags={**tracking.tags, "kopretrain.sweep_dir": str(sweep_dir),
                                                            "kopretrain.swept": ",".join(keys)})
    parent = start_run(cfg, run_name=f"{command}-sweep-{Path(sweep_dir).name}")
    keep_open(parent)  # a point's command ends its own runs, never the sweep's
    parent.log_params({f"sweep.{key}": ",".join(values) for key, values in lists.items()})  # the swept keys only
    _STATE["parent"] = parent


def parent_run_id() -> str:
    parent = _STATE.get("parent")
    return parent.run_id if parent is not None else ""


def current_swept_keys() -> list[str]:
    return list(_STATE.get("swept", []))


def point_tracking(typed: Any) -> Any:
    """The typed config with its tracking filed under the sweep's parent, named and tagged by the
    point's swept values (unchanged outside a sweep or without tracking)."""
    from kopretrain.tracking import remember_configured

    tracking = getattr(typed, "tracking", None)
    if tracking is None or not tracking.enabled:
        return typed
    point = None
    if _STATE.get("parent") is not None:  # a sweep in this process first: a point of it may itself be in a Ray job
        from hydra.core.hydra_config import HydraConfig

        hc = HydraConfig.get()
        point = {"parent_run_id": parent_run_id(), "sweep_dir": str(_STATE["sweep_dir"]), "num": hc.job.num,
                 "values": swept_values(list(hc.overrides.task), current_swept_keys())}
    else:
        point = decode_point()  # a point the ray_jobs launcher started in its own process
    if point is None or not point.get("parent_run_id"):
        return typed
    values = point["values"]
    tags = {**tracking.tags, **point_tags(values), "kopretrain.sweep_dir": point["sweep_dir"],
            "kopretrain.sweep_point": str(point["num"])}
    typed.tracking = dataclasses.replace(tracking, parent_run_id=point["parent_run_id"],
                                         run_name=" ".join(filter(None, [tracking.run_name, point_name(values)])), tags=tags)
    remember_configured(typed.tracking, tracking)  # the point's run logs its config's tracking, not the sweep's tags
    return typed


def finish_sweep(status: str = "FINISHED") -> str | None:
    """Write the sweep's report.json, log it on the parent, end the parent with `status`; returns the
    sweep dir (None when no sweep is running). A second call does nothing."""
    if not _STATE:
        return None
    state = dict(_STATE)
    _STATE.clear()
    sweep_dir = state["sweep_dir"]
    parent = state.get("parent")
    report = collect_sweep_report(sweep_dir, state["command"])
    report["swept"] = state["swept"]
    if parent is not None:
        report["mlflow_parent_run_id"] = parent.run_id
        report["tracking_uri"] = parent.uri
    write_report(sweep_dir / "report.json", report)
    if parent is not None:
        parent.log_artifact(sweep_dir / "report.json")
        parent.end(status)
    return str(sweep_dir)


@contextlib.contextmanager
def sweep_outcome(command: str, multirun: bool):
    """Around the Hydra app in the CLI: a sweep that did not end normally ends its parent run FAILED
    (KILLED on Ctrl-C) after writing what its points left; the ray_jobs launcher's failed points are
    listed in one error (exit 1), a cluster it cannot use is one line (exit 2)."""
    from kopretrain.launch.points import LaunchRefused, SweepFailed
    from kopretrain.tracking import sigint_seen

    status = "FAILED"
    try:
        yield
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except (SweepFailed, LaunchRefused) as exc:
        if multirun:
            finish_sweep("KILLED" if sigint_seen() else "FAILED")
        text = exc.summary() if isinstance(exc, SweepFailed) else str(exc)
        sys.stdout.flush()
        print(f"kopretrain {command}: error: {text}", file=sys.stderr, flush=True)
        raise SystemExit(1 if isinstance(exc, SweepFailed) else 2) from None
    finally:
        if multirun:  # no-op when on_multirun_end already ended the sweep FINISHED
            finish_sweep("KILLED" if status == "KILLED" or sigint_seen() else "FAILED")


class SweepReport(Callback):
    def __init__(self, command: str = "") -> None:
        self.command = command

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        from omegaconf import OmegaConf

        sweep_dir = Path(config.hydra.sweep.dir).resolve()
        overrides = OmegaConf.to_container(config.hydra.overrides.task, resolve=False)
        start_sweep(self.command, sweep_dir, list(overrides), _tracking_of(config))

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = finish_sweep("FINISHED")
        if sweep_dir is None:  # started elsewhere (a test calling the callback alone)
            sweep_dir = Path(config.hydra.sweep.dir).resolve()
            write_report(sweep_dir / "report.json", collect_sweep_report(sweep_dir, self.command))
        record_sweep_dir(Path(sweep_dir))
