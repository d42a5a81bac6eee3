"""Starting or joining Ray, and where its logs go, in one place (glue: only commands call this).

- `ray job submit` sets RAY_ADDRESS, so a job joins the cluster it was submitted to.
- `ray.address=...` joins a given cluster.
- Otherwise a private local instance is started (`address="local"`: never silently joins a
  cluster that happens to run on this machine). Its logical CPU count is raised above the
  core count, because on small machines Train workers holding a CPU each would starve the
  Ray Data tasks that feed them. It runs without the dashboard (lighter, faster to start), so
  Ray's state API is absent there: Ray Train's PlacementGroupCleaner would warn once a second
  for the whole run that it cannot query it. Workers of such an instance (and of commands the
  demo runs against it, which inherit NO_DASHBOARD_ENV) drop that one message and nothing else.

Logs (`init_ray(cfg, log_dir=<run dir>/logs)`): the console gets kopretrain's own lines, Ray
Data's progress bars (on a terminal), warnings and errors. Ray's INFO logs on the driver (Ray
Data's execution plans and "Full logs are in ...", Ray Train's worker-group lines) and every line
the workers print go to `<log_dir>/ray.log`; of the workers' lines, only kopretrain's stage lines
(`[train] step ...`, printed by rank 0, shown without Ray's `(RayTrainWorker pid=...)` prefix)
and warnings or errors are echoed. `ray.verbose=true` echoes everything, as Ray does by default.
The raylet's messages (a worker killed for memory, ...) are echoed too. Never echoed, only filed:
the PreemptionWatcher "has constructor arguments" error that Ray Train 2.60's controller logs
(C++) for every worker group of a healthy run (the watcher itself is switched off on a private
local instance: it watches cluster nodes being drained), and the raylet's "N worker processes
have been started" warning, routine when logical CPUs outnumber cores (as on a local instance).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from pathlib import Path

from kopretrain.config.common import RayConfig
from kopretrain.console import is_stage_line

NO_DASHBOARD_ENV = "KOPRETRAIN_RAY_NO_DASHBOARD"
LOG_FILE = "ray.log"
_STATE_API_NOISE = "Failed to query Ray Train Controller actor state"
_CLEANER_LOGGER = "ray.train.v2._internal.execution.controller.placement_group_cleaner"
_DRIVER_LOGGERS = ("ray", "ray.data", "ray.train", "mlflow")
# healthy-run noise forwarded from Ray's processes: kept in ray.log, never echoed
_NOISE = ("has constructor arguments in the object store", "worker processes have been started on node",
          "Setting accelerator to CPU")  # DeepSpeed's detection on CPU-only workers, every run
_LEVEL = re.compile(r"\b(WARNING|ERROR|CRITICAL|FATAL)\b")


class _DropStateApiNoise:
    """logging filter: drops the cleaner's 'state API unavailable' warning (no dashboard here)."""

    def filter(self, record) -> bool:
        return not str(record.msg).startswith(_STATE_API_NOISE)


def quiet_worker_logs() -> None:
    """Ray `worker_process_setup_hook` of instances without a dashboard."""
    logging.getLogger(_CLEANER_LOGGER).addFilter(_DropStateApiNoise())


class _WorkerLines:
    """Replaces Ray's printer of the lines workers send to the driver: all to ray.log, some echoed."""

    def __init__(self):
        self.lock = threading.Lock()
        self.file = None
        self.verbose = False
        self.ray_print = None  # Ray's own printer, for its distributed progress bars

    def open(self, path: Path | None, verbose: bool) -> None:
        with self.lock:
            if self.file is not None:
                self.file.close()
            self.file = open(path, "a", encoding="utf-8", buffering=1) if path else None
            self.verbose = verbose

    def __call__(self, data: dict, ignore_prefix: bool = False) -> None:
        from ray._private.worker import RAY_TQDM_MAGIC, filter_autoscaler_events

        pid = data.get("pid")
        name = data.get("actor_name") or data.get("task_name") or ""
        prefix = f"({pid})" if pid in ("raylet", "autoscaler") else f"({name + ' ' if name else ''}pid={pid})"
        sink = sys.stderr if data.get("is_err") else sys.stdout
        lines = data.get("lines", [])
        if pid == "autoscaler":  # its status dumps: only the events, as Ray's own printer does
            lines = list(filter_autoscaler_events(lines))
        bars = [line for line in lines if RAY_TQDM_MAGIC in line]
        if bars and self.ray_print is not None:  # Ray's distributed progress bars: Ray draws them
            self.ray_print({**data, "lines": bars}, ignore_prefix=False)
        with self.lock:
            for line in lines:
                if RAY_TQDM_MAGIC in line:
                    continue
                if self.file is not None:
                    self.file.write(f"{prefix} {line}\n")
                if is_stage_line(line):
                    print(line, file=sys.stdout, flush=True)
                elif any(n in line for n in _NOISE):
                    continue
                elif self.verbose or pid in ("raylet", "autoscaler") or _LEVEL.search(line):
                    print(f"{prefix} {line}", file=sink, flush=True)


_WORKER_LINES = _WorkerLines()


def route_logs(log_dir: Path | None, verbose: bool = False, with_ray: bool = True) -> None:
    """Send Ray's (and MLflow's) driver-side INFO logs to `<log_dir>/ray.log`; the console keeps
    warnings and errors (everything with `verbose`). Called again, it moves to the new log_dir.
    `with_ray=False` (eval, which starts no Ray): MLflow's logs and transformers' bars only."""
    import mlflow  # noqa: F401  (importing configures the loggers whose handlers are adjusted here)

    if with_ray:
        import ray.data  # noqa: F401

    path = None
    if log_dir is not None:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        path = Path(log_dir) / LOG_FILE
    fmt = logging.Formatter("%(asctime)s\t%(levelname)s %(name)s %(filename)s:%(lineno)s -- %(message)s")
    file_handler = None
    if path is not None:
        file_handler = logging.FileHandler(path, encoding="utf-8")
        file_handler.setLevel(logging.INFO)
        file_handler.setFormatter(fmt)
        file_handler._kopretrain = True  # type: ignore[attr-defined]
    for name in _DRIVER_LOGGERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if getattr(handler, "_kopretrain", False):
                logger.removeHandler(handler)
                handler.close()
            elif isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                handler.setLevel(logging.INFO if verbose else logging.WARNING)
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)
        if file_handler is not None and (logger.handlers or not logger.propagate):
            logger.addHandler(file_handler)
    _WORKER_LINES.open(path, verbose)
    if not verbose:
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # "Loading weights" bars of transformers
        if "transformers" in sys.modules or not with_ray:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()


def _take_over_worker_lines() -> None:
    """Route what Ray prints on the driver for other processes through `_WORKER_LINES`: the
    workers' forwarded output (a handler of Ray's dispatcher) and the raylet's error messages,
    which Ray 2.60's `listen_error_messages` prints with `print_to_stdstream` directly."""
    import ray._private.worker as ray_worker
    from ray._private.ray_logging import global_worker_stdstream_dispatcher

    if _WORKER_LINES.ray_print is None:
        _WORKER_LINES.ray_print = ray_worker.print_to_stdstream
        ray_worker.print_to_stdstream = _WORKER_LINES
    global_worker_stdstream_dispatcher.remove_handler("ray_print_logs")
    global_worker_stdstream_dispatcher.add_handler("ray_print_logs", _WORKER_LINES)


class _DropTokenAuthNotice(logging.Filter):
    """Drops Ray's "Token authentication is enabled for this Ray cluster ..." notice, which every
    `ray.init` of a local instance logs at WARNING (Ray 2.5x default); the warning that it is
    *disabled* still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Token authentication is enabled for this Ray cluster")


_TOKEN_NOTICE_LOGGER = "ray._private.authentication.authentication_token_setup"


def default_local_cpus() -> int:
    return max(8, 2 * (os.cpu_count() or 1))


def init_ray(cfg: RayConfig, log_dir: Path | None = None) -> dict:
    """Connect to (or start) Ray once per process; returns a short description for reports.

    `log_dir`: where Ray's INFO logs and the workers' output go (`ray.log`); a later call with
    another log_dir (the next job of a sweep) moves them there.
    """
    import ray

    route_logs(log_dir, cfg.verbose)
    notice = logging.getLogger(_TOKEN_NOTICE_LOGGER)
    if not any(isinstance(f, _DropTokenAuthNotice) for f in notice.filters):
        notice.addFilter(_DropTokenAuthNotice())  # a console line per run that tells the user nothing to do
    if not ray.is_initialized():
        address = cfg.address or os.environ.get("RAY_ADDRESS")
        kwargs: dict = {"log_to_driver": True, "configure_logging": True, "logging_level": "INFO"}
        if not address or os.environ.get(NO_DASHBOARD_ENV) == address:
            kwargs["runtime_env"] = {"worker_process_setup_hook": f"{__name__}.quiet_worker_logs",
                                     "env_vars": {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}}
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(
                address="local",
                num_cpus=cfg.num_cpus or default_local_cpus(),
                object_store_memory=cfg.object_store_memory_bytes,
                include_dashboard=False,
                **kwargs,
            )
            os.environ[NO_DASHBOARD_ENV] = ray.get_runtime_context().gcs_address  # for subprocesses joining it
        _take_over_worker_lines()
    ctx = ray.get_runtime_context()
    return {"gcs_address": ctx.gcs_address, "resources": ray.cluster_resources()}


def shutdown_ray() -> None:
    """Disconnect (and stop a local instance) if this process started or joined Ray."""
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    os.environ.pop(NO_DASHBOARD_ENV, None)
    _WORKER_LINES.open(None, False)
