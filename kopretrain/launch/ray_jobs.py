"""The Ray Jobs launcher's work (`hydra/launcher=ray_jobs`; the Hydra plugin class is
`hydra_plugins.kopretrain_ray_jobs.ray_jobs_launcher.RayJobsLauncher`).

Each point of the sweep becomes one Ray job, submitted through `JobSubmissionClient` (what
`ray job submit` does) to `hydra.launcher.address` or $RAY_ADDRESS, with the token of
$RAY_AUTH_TOKEN / ~/.ray/auth_token when the cluster uses token authentication. The job's
entrypoint is the same CLI on the point's overrides, run as a single run in the point's directory
of the sweep:

    cd <launch dir> && <python> -m kopretrain train <overrides of the point> hydra.run.dir=<sweep dir>/<num>

with KOPRETRAIN_SWEEP_POINT in its environment so that its MLflow run is filed under the sweep's
parent run (kopretrain.sweep). At most `max_concurrent` points run at once and, with
`hydra.launcher.fit_check`, only as many as fit the cluster beside each other (`kopretrain.launch.fit`:
a point that can never fit a cluster without autoscaler is refused before anything is submitted,
`LaunchRefused`, exit 2); their status changes
are printed as `[sweep]` lines and each point's log is copied to `<sweep dir>/<num>/ray-job.log` as
it grows. A failed point does not stop the others: when every point has ended, the failed ones
are listed (`SweepFailed`) and the CLI exits 1. `<sweep dir>/ray_jobs.json` records every point's
submission id, final status and log.

Ctrl-C (or SIGTERM) of the launcher: the points that have not ended are stopped and recorded as Ray
reports them (STOPPED), the ones not submitted yet as CANCELLED (`kopretrain.launch.stop`); then the
CLI ends the sweep's parent run KILLED and exits 130.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Sequence

from kopretrain.launch.fit import Needs, check_params, check_points, fits, point_needs, read_cluster, waits_line
from kopretrain.launch.points import POINT_ENV, hydra_quoted, swept_values, LaunchRefused, PointFailure, SweepFailed, encode_point, error_line
from kopretrain.run_dir import write_report
from kopretrain.launch.stop import STOP_GRACE_S, STOP_WAIT_ENV, stop_points

_FORWARDED_ENV = ("MLFLOW_TRACKING_URI",)  # the sweep's store, when it came from the environment


def _say(message: str) -> None:
    print(f"[sweep] {message}", flush=True)


def entrypoint(python: str, job_dir: str, command: str, overrides: Sequence[str], point_dir: Path) -> str:
    args = [python, "-m", "kopretrain", command, *overrides, f"hydra.run.dir={hydra_quoted(str(point_dir))}"]
    return (f"cd {shlex.quote(job_dir)} && " if job_dir else "") + " ".join(shlex.quote(a) for a in args)


def _client(address: str):
    from ray.job_submission import JobSubmissionClient

    if not address:
        raise LaunchRefused("hydra.launcher.address: no Ray cluster given (set it, or RAY_ADDRESS, to the "
                            "dashboard's address, e.g. http://head:8265)")
    try:
        return JobSubmissionClient(address)
    except Exception as exc:  # noqa: BLE001 - unreachable, refused token: one line
        text = " ".join(str(exc).split())[:300]
        raise LaunchRefused(f"hydra.launcher.address: cannot reach the Ray Jobs API at {address} ({text})") from None


@contextlib.contextmanager
def _explicit_address(address: str):
    """While the launcher talks to the cluster, an explicit `hydra.launcher.address` is $RAY_ADDRESS (and
    $RAY_API_SERVER_ADDRESS is unset): Ray's clients (JobSubmissionClient, ray.util.state) take those
    over the address they are given. Restored afterwards; the points' jobs get Ray's own RAY_ADDRESS."""
    keys = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")
    saved = {k: os.environ.get(k) for k in keys}
    if address:
        os.environ.pop("RAY_API_SERVER_ADDRESS", None)
        os.environ["RAY_ADDRESS"] = address
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _scale_of(sweep_config) -> Any:
    """A train point's ScaleConfig from its composed config (None: no `scale`, or a config its own job refuses)."""
    from omegaconf import OmegaConf

    if str(sweep_config.hydra.job.name) != "train" or "scale" not in sweep_config:
        return None
    try:
        return OmegaConf.to_object(sweep_config.scale)
    except Exception:  # noqa: BLE001 - the point's job reports its config error
        return None


def _point_dirs(hydra_context, config, job_overrides, initial_job_idx, scales: list | None = None) -> list[Path]:
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    dirs = []
    for i, overrides in enumerate(job_overrides):
        sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = sweep_config.hydra.job.num = initial_job_idx + i
        HydraConfig.instance().set_config(sweep_config)
        dirs.append(Path(str(sweep_config.hydra.sweep.dir)).resolve() / str(sweep_config.hydra.sweep.subdir))
        if scales is not None:
            scales.append(_scale_of(sweep_config))
    HydraConfig.instance().set_config(config)
    return dirs


def _fit_check(params: dict[str, Any], client, points: list) -> dict[str, float] | None:
    """`hydra.launcher.fit_check`: refuse a point that can never fit a cluster that cannot add nodes;
    the capacity to pack the points into (None = no packing: check off, nothing reserved, or a cluster that may grow)."""
    names = sorted({k for p in points for k in p.needs.total()})
    if not params.get("fit_check", True) or not names:
        return None
    try:
        capacity, scaler = read_cluster(client, client.get_address())
    except Exception as exc:  # noqa: BLE001 - one line, exit 2
        raise LaunchRefused(f"hydra.launcher.fit_check: cannot read the cluster's resources at {client.get_address()} "
                            f"({' '.join(str(exc).split())[:200]}); hydra.launcher.fit_check=false submits without the check") from None
    line = check_points([(p.num, p.label, p.needs) for p in points], capacity, scaler)
    if line:
        _say(line)
    have = ", ".join(f"{capacity.get(k, 0.0):g} {k}" for k in names)
    if scaler is not None:
        _say(f"fit check: the cluster has {have} now and may add nodes; points are not packed (at most max_concurrent at once)")
        return None
    _say(f"fit check: the cluster has {have} in all; a point is submitted when its needs fit beside the running points' "
         "(other jobs on the cluster are not counted)")
    return capacity


def _admits(p, running: list, capacity: dict[str, float] | None, told: set) -> bool:
    """Whether the next point fits beside the running points (one `waits` line the first time it does not)."""
    if capacity is None or not running:
        return True
    short = fits(p.needs, [r.needs for r in running], capacity)
    if short and p.num not in told:
        told.add(p.num)
        _say(waits_line(p.num, p.needs, [(r.num, r.needs) for r in running], capacity, short))
    return not short


class _Point:
    def __init__(self, num: int, overrides: list[str], point_dir: Path, swept: list[str]):
        self.num, self.overrides, self.dir = num, overrides, point_dir
        self.values = swept_values(overrides, swept)
        self.label = " ".join(f"{k}={v}" for k, v in self.values.items()) or " ".join(overrides)  # what the point varies
        self.log = point_dir / "ray-job.log"
        self.submission_id = ""
        self.status = "QUEUED"
        self.message = ""
        self.needs = Needs()  # what it reserves on the cluster (kopretrain.launch.fit)

    def record(self) -> dict:
        return {"num": self.num, "overrides": self.overrides, "submission_id": self.submission_id,
                "status": self.status, "message": self.message, "log": str(self.log)}


def launch_points(params: dict[str, Any], hydra_context, config, job_overrides, initial_job_idx: int) -> list:
    """Every point as a Ray job on `hydra.launcher.address` (which wins over $RAY_ADDRESS) or $RAY_ADDRESS."""
    with _explicit_address(str(params.get("address") or "")):
        return _launch_points(params, hydra_context, config, job_overrides, initial_job_idx)


def _launch_points(params: dict[str, Any], hydra_context, config, job_overrides, initial_job_idx: int) -> list:
    from hydra.core.utils import JobReturn, JobStatus
    from omegaconf import OmegaConf

    from kopretrain.sweep import current_swept_keys, parent_run_id

    max_concurrent = check_params(params)
    client = _client(str(params.get("address") or os.environ.get("RAY_ADDRESS", "")))
    command = str(config.hydra.job.name)
    sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    scales: list = []
    dirs = _point_dirs(hydra_context, config, job_overrides, initial_job_idx, scales)
    points = [_Point(initial_job_idx + i, list(o), d, current_swept_keys()) for i, (o, d) in enumerate(zip(job_overrides, dirs))]
    for p, scale in zip(points, scales):
        p.needs = point_needs(params, scale)
    runtime_env = OmegaConf.to_container(OmegaConf.create(params.get("runtime_env") or {}), resolve=True)
    grace_s = int((runtime_env.get("env_vars") or {}).get(STOP_WAIT_ENV) or params.get("stop_grace_s", STOP_GRACE_S))
    if grace_s < 0:
        raise LaunchRefused(f"hydra.launcher.stop_grace_s: must be >= 0, got {grace_s}")
    python = str(params.get("python") or sys.executable)
    # where the point starts: the launch dir (a shared filesystem), or Ray's copy of runtime_env.working_dir
    job_dir = str(params.get("job_dir") or ("" if runtime_env.get("working_dir") else os.getcwd()))
    stamp = re.sub(r"[^\w-]", "-", sweep_dir.name)
    _say(f"{len(points)} points as Ray jobs on {client.get_address()} (at most {max_concurrent} at once); sweep dir {sweep_dir}")
    capacity, told = _fit_check(params, client, points), set()

    def submit(p: _Point) -> None:
        p.dir.mkdir(parents=True, exist_ok=True)
        env = dict(runtime_env.get("env_vars") or {})
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.update({k: os.environ[k] for k in _FORWARDED_ENV if k in os.environ and k not in env})
        env.setdefault(STOP_WAIT_ENV, str(grace_s))  # read by the job's supervisor when the job is stopped
        env[POINT_ENV] = encode_point(parent_run_id(), p.values, str(sweep_dir), p.num)
        p.submission_id = f"kopretrain-{command}-{stamp}-{p.num}-{uuid.uuid4().hex[:6]}"
        try:
            client.submit_job(
                entrypoint=entrypoint(python, job_dir, command, p.overrides, p.dir), submission_id=p.submission_id,
                runtime_env={**runtime_env, "env_vars": env},
                entrypoint_num_cpus=params.get("entrypoint_num_cpus") or None,
                entrypoint_num_gpus=params.get("entrypoint_num_gpus") or None,
                entrypoint_resources=dict(params.get("entrypoint_resources") or {}) or None,
                metadata={"kopretrain.sweep_dir": str(sweep_dir), "kopretrain.point": str(p.num)},
            )
            p.status = "PENDING"
            _say(f"#{p.num} {p.label}: submitted as {p.submission_id}")
        except Exception as exc:  # noqa: BLE001 - this point fails, the others go on
            p.status, p.message = "NOT SUBMITTED", " ".join(str(exc).split())[:300]
            _say(f"#{p.num}: not submitted ({p.message})")

    def copy_log(p: _Point) -> str:
        try:
            text = client.get_job_logs(p.submission_id)
        except Exception:  # noqa: BLE001 - the next poll tries again
            return ""
        p.log.write_text(text, encoding="utf-8")
        return text

    queue, running = list(points), []
    try:
        while queue or running:
            while queue and len(running) < max_concurrent and _admits(queue[0], running, capacity, told):
                p = queue.pop(0)
                submit(p)
                if p.status == "PENDING":
                    running.append(p)
            time.sleep(float(params.get("poll_interval_s") or 2.0))
            for p in list(running):
                status = str(client.get_job_status(p.submission_id).value)
                text = copy_log(p)
                if status != p.status:
                    p.status = status
                    if status in ("SUCCEEDED", "FAILED", "STOPPED"):
                        running.remove(p)
                        if status != "SUCCEEDED":
                            p.message = error_line(text) or client.get_job_info(p.submission_id).message or ""
                    _say(f"#{p.num}: {status}" + (f" ({p.message})" if p.message else "") +
                         (f"; log {p.log}" if status in ("SUCCEEDED", "FAILED", "STOPPED") else ""))
    except BaseException as exc:  # Ctrl-C, SIGTERM or a lost cluster: the points still running are stopped, not left behind
        from kopretrain.tracking import sigint_seen

        stop_points(client, points, isinstance(exc, KeyboardInterrupt) or sigint_seen(), grace_s + 20.0, copy_log)
        raise
    finally:
        write_report(sweep_dir / "ray_jobs.json", {"address": client.get_address(), "points": [p.record() for p in points]})

    failures = [PointFailure(p.num, p.label, p.status, p.message, str(p.log)) for p in points if p.status != "SUCCEEDED"]
    error = SweepFailed(failures, len(points)) if failures else None
    returns = []
    for p in points:
        ret = JobReturn(overrides=p.overrides, working_dir=str(p.dir))
        ret.status = JobStatus.COMPLETED if p.status == "SUCCEEDED" else JobStatus.FAILED
        ret._return_value = None if p.status == "SUCCEEDED" else error
        returns.append(ret)
    return returns
