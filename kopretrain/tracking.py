"""Experiment tracking: MLflow on the driver and on rank 0, a null tracker elsewhere.

One explicit `MlflowClient` per run (no fluent global state, so it behaves the same in the
CLI process and inside a Ray Train worker). A run is nested under a parent by the standard
`mlflow.parentRunId` tag, which is how the demo files one child run per training under its
own parent run and how the MLflow UI shows them.

    check_tracking(cfg.tracking)                                        # before any work: one-line UserErrors
    tracker = start_run(cfg.tracking, run_name="train", config=cfg)   # cfg: any dataclass
    tracker.log_metrics({"loss": 2.3}, step=10)
    tracker.log_steps([(11, {"loss": 2.2}), (12, {"loss": 2.1})])      # many steps, one request
    tracker.log_artifact(run_dir / "report.json")
    tracker.end()                                                       # FINISHED; end("FAILED") on error

Tracking never loses a result: once a run is open, an MLflow failure in any call is one warning
line on stderr (`kopretrain: warning: MLflow ...`), never an exception. A server that no longer answers
(refused, timed out) disables that process's tracker after its one warning: later calls are skipped. Metric and param names
MLflow refuses are mapped by `metric_name`. Every run opened in a process is remembered until it
ends, so the CLI ends the ones a failing command left open (`end_open_runs("FAILED")`); ending a
run twice does nothing the second time.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import posixpath
import re
import sys
from typing import Any

from kopretrain.config.common import TrackingConfig
from kopretrain.errors import UserError
from kopretrain.tracking_checks import (  # noqa: F401 - re-exported
    HTTP_FAIL_FAST, check_database, check_server, check_tracking, fail_fast_http, resolve_tracking_uri,
)
from kopretrain.signals import interrupt_signal, sigint_seen, watch_sigint  # noqa: F401 - re-exported
from kopretrain.tracking_sqlite import prepare_store, retry_busy

# The experiment tag the MLflow 3 UI reads to choose its layout; "custom_model_development" is its
# "machine learning" kind (runs, charts, compare), as opposed to "genai_development" (traces first).
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
MAX_NAME_LENGTH = 250  # MLflow's limit for metric, param and tag keys
_REFUSED_CHARS = re.compile(r"[^\w./ :-]")  # MLflow keeps (Unicode) letters, digits, _ - . space / :


def metric_name(name: str) -> str:
    """The metric/param name MLflow accepts for `name` (the documented mapping).

    Every character other than a letter, digit, `_`, `-`, `.`, space, `/` or `:` becomes `_`
    (`token_share_ko(news)` -> `token_share_ko_news_`); a name MLflow would read as a path that is
    not its own normal form (`a//b`, `/x`, `..x`, `x/`) gets its `/` as `_` and a leading `.` as
    `_`; the result is cut to 250 characters. Valid names are unchanged. Not injective: names that
    differ only in refused characters meet (`ko(news)` and `ko_news_`); `log_metrics` warns once.
    """
    out = _REFUSED_CHARS.sub("_", str(name)) or "_"
    if posixpath.normpath(out) != out or out.startswith(("/", "..")) or out == ".":
        out = out.replace("/", "_")
        out = "_" + out[1:] if out.startswith(".") else out
    return out[:MAX_NAME_LENGTH]


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dataclasses / dicts / lists -> {"optim.lr": 0.001, "sources.0.path": ...}."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    out: dict[str, Any] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(obj, (list, tuple)) and any(isinstance(v, (dict, list)) or dataclasses.is_dataclass(v) for v in obj):
        for i, v in enumerate(obj):
            out.update(flatten(v, f"{prefix}{i}."))
    else:
        out[prefix[:-1]] = obj
    return out


def warn(message: str) -> None:
    print(f"kopretrain: warning: {message}", file=sys.stderr, flush=True)


class NullTracker:
    """Does nothing; used when tracking is disabled and on ranks other than 0."""

    run_id = ""

    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...
    def log_steps(self, rows: list[tuple[int, dict[str, float]]]) -> None: ...
    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None: ...
    def log_dict(self, data: dict, name: str) -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...
    def last_step(self, metric: str) -> int: return 0
    def end(self, status: str = "FINISHED") -> None: ...


_OPEN: dict[int, "MlflowTracker"] = {}  # runs this process opened and has not ended yet


def keep_open(tracker) -> None:
    """Leave `tracker` out of `end_open_runs` (a sweep's parent run outlives each point's command)."""
    _OPEN.pop(id(tracker), None)


def end_open_runs(status: str) -> None:
    """End every run this process opened and left open (the CLI: FAILED when a command raised)."""
    for tracker in list(_OPEN.values()):
        tracker.end(status)


def _unreachable(exc: BaseException) -> bool:
    """The tracking server did not answer (refused, reset, timed out), as opposed to refusing a call."""
    import requests

    seen = exc
    while seen is not None:
        if isinstance(seen, (requests.exceptions.ConnectionError, requests.exceptions.Timeout, ConnectionError, TimeoutError)):
            return True
        seen = seen.__cause__ or seen.__context__
    text = str(exc)
    return text.startswith("API request to ") and ("Max retries exceeded" in text or "timeout exception" in text)


def _guarded(op: str):
    """After the run exists, an MLflow failure is one warning line (once per kind), not an exception.
    A server that no longer answers disables the tracker: one warning, every later call is skipped."""

    def wrap(fn):
        @functools.wraps(fn)
        def call(self, *args, **kwargs):
            if self.disabled:
                return None
            try:
                return retry_busy(fn, self, *args, **kwargs)  # a busy SQLite store: retried with backoff
            except Exception as exc:  # noqa: BLE001 - tracking must never lose a result
                text = " ".join(str(exc).split())[:300]
                if _unreachable(exc):
                    self.disabled = True
                    warn(f"MLflow could not {op} for run {self.run_id} ({type(exc).__name__}: {text}); "
                         "tracking of this run stops")
                elif op not in self.failed:
                    self.failed.add(op)
                    warn(f"MLflow could not {op} for run {self.run_id} ({type(exc).__name__}: {text}); "
                         "the command goes on")
        return call

    return wrap


class MlflowTracker:
    """One MLflow run, written through an explicit client."""

    def __init__(self, uri: str, experiment_name: str, run_name: str, parent_run_id: str = "", tags=None, run_id: str = ""):
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.disabled = False  # set when the server stopped answering: every later call is skipped
        fail_fast_http(uri)
        self.client = MlflowClient(tracking_uri=prepare_store(uri))  # a new SQLite store: one process creates it
        self.failed: set[str] = set()
        self.status = ""  # set by end()
        self._names: dict[str, str] = {}  # mapped metric name -> the name it was first logged as
        if run_id:  # re-attach (a restarted worker continues the same run; the driver ends it)
            self.run_id = run_id
            return
        exp = self.client.get_experiment_by_name(experiment_name)
        exp_id = exp.experiment_id if exp else self._create_experiment(experiment_name)
        all_tags = dict(tags or {})
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        self.run_id = self.client.create_run(exp_id, run_name=run_name or None, tags=all_tags).info.run_id
        if exp is not None and EXPERIMENT_KIND_TAG not in exp.tags:  # made before kopretrain marked its kind
            self._mark_kind(exp_id)
        _OPEN[id(self)] = self

    def _create_experiment(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        try:  # marked as model training, so `mlflow ui` opens on its runs, not on the GenAI traces page
            return self.client.create_experiment(name, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        except MlflowException:  # another process created it meanwhile
            return self.client.get_experiment_by_name(name).experiment_id

    @_guarded("mark the experiment's kind")
    def _mark_kind(self, exp_id: str) -> None:
        self.client.set_experiment_tag(exp_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)

    def _mapped(self, items: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items.items():
            name = metric_name(key)
            first = self._names.setdefault(name, key)
            if first != key and f"collide:{name}" not in self.failed:
                self.failed.add(f"collide:{name}")
                warn(f"MLflow names {first!r} and {key!r} both map to {name!r}; the later value is kept")
            out[name] = value
        return out

    @_guarded("log params")
    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in self._mapped(params).items()]
        for i in range(0, len(items), 100):  # MLflow's batch limit
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    @_guarded("log metrics")
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        import time

        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = [Metric(k, float(v), ts, step or 0) for k, v in self._mapped(metrics).items()]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i : i + 1000])

    @_guarded("log metrics")
    def log_steps(self, rows: list[tuple[int, dict[str, float]]]) -> None:
        """Many steps' metrics in as few requests as MLflow allows (1,000 metrics per log_batch)."""
        import time

        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = [Metric(k, float(v), ts, step) for step, metrics in rows for k, v in self._mapped(metrics).items()]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i : i + 1000])

    @_guarded("log an artifact")
    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    @_guarded("log a dict")
    def log_dict(self, data: dict, name: str) -> None:
        self.client.log_text(self.run_id, json.dumps(data, indent=2, ensure_ascii=False, default=str), name)

    @_guarded("set tags")
    def set_tags(self, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, v)

    def last_step(self, metric: str) -> int:
        """The highest step `metric` was logged at (0 if never, or if the store cannot say)."""
        return max((m.step for m in self._history(metric) or []), default=0)

    @_guarded("read the metric history")
    def _history(self, metric: str):
        return self.client.get_metric_history(self.run_id, metric)

    def end(self, status: str = "FINISHED") -> None:
        """End the run with `status` (FINISHED, FAILED, KILLED); a second call does nothing.
        FAILED while a KeyboardInterrupt is being handled (a command's `except BaseException`), or after
        a SIGINT whatever Ray made of it (`sigint_seen`), is KILLED."""
        if self.status:
            return
        if status == "FAILED" and (isinstance(sys.exc_info()[1], KeyboardInterrupt) or sigint_seen()):
            status = "KILLED"
        self.status = status
        _OPEN.pop(id(self), None)
        self._terminate(status)

    @_guarded("end the run")
    def _terminate(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=status)


def start_run(cfg: TrackingConfig, run_name: str, config: Any = None, base_dir=None) -> NullTracker | MlflowTracker:
    """Open a run per `cfg` (NullTracker when disabled) and log `config` as params and artifact."""
    if not cfg.enabled:
        return NullTracker()
    from mlflow.exceptions import MlflowException

    check_tracking(cfg, base_dir)
    try:
        tracker = MlflowTracker(resolve_tracking_uri(cfg.uri, base_dir), cfg.experiment_name, cfg.run_name or run_name,
                                cfg.parent_run_id, cfg.tags)
    except MlflowException as exc:
        raise UserError(f"tracking: MLflow refused to start the run ({' '.join(str(exc).split())[:300]})") from None
    if config is not None:
        as_dict = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config
        as_dict = _as_configured(as_dict, cfg)
        tracker.log_params(flatten(as_dict))
        tracker.log_dict(as_dict, "config.json")
    return tracker


# A sweep point's tracking as configured, before kopretrain.sweep filed it under the sweep's parent run
# (parent_run_id, run_name and the sweep.* / kopretrain.sweep_* tags are the sweep's, not the point's config).
_CONFIGURED: dict[tuple[str, str], TrackingConfig] = {}
_POINT_TAGS = ("kopretrain.sweep_dir", "kopretrain.sweep_point")


def remember_configured(point: TrackingConfig, configured: TrackingConfig) -> None:
    """`point` (a sweep point's tracking) was made from `configured`: its runs log `configured` as params."""
    _CONFIGURED[tuple(point.tags.get(t, "") for t in _POINT_TAGS)] = configured


def _as_configured(as_dict: Any, cfg: TrackingConfig) -> Any:
    """The config dict to log, its `tracking` as the user configured it (a sweep point's additions left out)."""
    configured = _CONFIGURED.get(tuple(cfg.tags.get(t, "") for t in _POINT_TAGS))
    tracking = as_dict.get("tracking") if isinstance(as_dict, dict) else None
    if configured is None or not isinstance(tracking, dict):
        return as_dict
    fields = {k: getattr(configured, k) for k in ("run_name", "parent_run_id")} | {"tags": dict(configured.tags)}
    return {**as_dict, "tracking": {**tracking, **fields}}
