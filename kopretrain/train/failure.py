"""What `kopretrain train` says when Ray Train gives up on a run: one line, not Ray's traceback.

Ray Train's `fit` raises `WorkerGroupError` when the workers failed once more than
`scale.max_failures` allows (its `worker_failures` maps each failed rank to its error), or
`ControllerError` when its controller failed (e.g. the worker group could not be scheduled).
`one_line` turns either into a `kopretrain.errors.RunFailed` (the CLI prints
`kopretrain train: error: ...`, exit 1) that says how often the workers failed, the failed
worker's own last error (the last line of its exception; for a process that died, that it died
and Ray's exit detail: Ray only sees the connection drop, so it cannot tell a SIGKILL from a
crash), and where a rerun would start: the newest checkpoint Ray Train registered
(kopretrain/train/resume.py), or none yet. Ray's full error goes to `<run dir>/logs/ray.log`.
A Ctrl-C (or SIGTERM) is left alone: the CLI reports it as interrupted.
"""

from __future__ import annotations

import re
import signal
import traceback
from pathlib import Path

from kopretrain.errors import RunFailed, UserError

_SIGNAL = re.compile(r"killed by signal (\d+)|exit(?:ed|s)? (?:with|by) signal (\d+)")
_EXIT_DETAIL = re.compile(r"Worker exit detail: (.*?)(?:\. Some common causes|\n|$)")


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def describe_worker_error(error: BaseException) -> str:
    """One phrase for one worker's failure: how its process died, or its exception's last line."""
    from ray.exceptions import RayActorError

    error = getattr(error, "health_check_failure", None) or error  # WorkerHealthCheckFailedError wraps the death
    if isinstance(error, RayActorError) or "actor died" in str(error).lower():
        text = str(error)
        match = _SIGNAL.search(text)
        if match:
            number = int(match.group(1) or match.group(2))
            return f"killed by signal {number} ({signal_name(number)})"
        detail = _EXIT_DETAIL.search(text)  # Ray cannot tell a SIGKILL from a crash: it lost the connection
        said = f"; Ray: '{detail.group(1).strip()[:200]}'" if detail else ""
        return f"its process died without a Python error (killed, e.g. by SIGKILL or the OOM killer, or crashed{said})"
    line = _last_line(str(error)) or type(error).__name__
    name = type(error).__name__
    return line if line.startswith(name) else f"{name}: {line}"


def worker_errors(exc: BaseException) -> str:
    """`rank 0: its process died ...` for the failed rank whose process died (the others' errors are
    mostly its peers losing it), else the lowest failed rank ('' when Ray named none)."""
    from ray.exceptions import RayActorError

    failures = getattr(exc, "worker_failures", None) or {}
    if not failures:
        return ""

    def died(rank: int) -> bool:
        return isinstance(getattr(failures[rank], "health_check_failure", None) or failures[rank], RayActorError)

    rank = min(failures, key=lambda r: (not died(r), r))
    others = len(failures) - 1
    more = f" (and {others} other rank{'s' if others > 1 else ''})" if others else ""
    return f"rank {rank}: {describe_worker_error(failures[rank])}{more}"


def resume_hint(storage: str, policy: str) -> str:
    """Where a rerun of the same command starts: the newest registered checkpoint, or none yet."""
    from kopretrain.train import resume

    try:
        prior = resume.find_prior(storage)
    except UserError:
        return f"the checkpoints in {storage} cannot be read"
    if not prior.checkpoints:
        return "no checkpoint yet (a rerun starts from step 0)"
    if policy == "never":
        return (f"the newest checkpoint is at step {prior.last_step}: rerun with resume=auto to resume from it "
                "(resume=never starts fresh)")
    return f"rerun the same command to resume from step {prior.last_step}"


def one_line(exc: BaseException, max_failures: int, storage: str, policy: str, log_file: Path) -> str:
    """The RunFailed message for Ray Train's `exc`; Ray's whole error is appended to `log_file`."""
    from ray.train import ControllerError, WorkerGroupError

    try:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "a", encoding="utf-8") as f:
            f.write("kopretrain train: Ray Train gave up on the run:\n" + "".join(traceback.format_exception(exc)) + "\n")
        where = f"details in {log_file}"
    except OSError:
        where = "details: rerun with ray.verbose=true"
    if isinstance(exc, ControllerError):
        cause = getattr(exc, "controller_failure", None) or exc
        what = f"Ray Train's controller failed ({_last_line(str(cause)) or type(cause).__name__})"
    elif not isinstance(exc, WorkerGroupError):  # PreemptionError (its own retry budget), or a newer kind
        what = f"Ray Train gave up ({type(exc).__name__}: {_last_line(str(exc))})"
    else:
        times = max_failures + 1
        what = f"the workers failed {times} time{'s' if times != 1 else ''} (scale.max_failures={max_failures})"
        why = worker_errors(exc)
        what += f", last {why}" if why else ""
    return f"{what}; {resume_hint(storage, policy)}; {where}"


def raise_one_line(exc: BaseException, max_failures: int, storage: str, policy: str, log_file: Path) -> None:
    """Raise RunFailed for Ray Train's TrainingFailedError (not after a Ctrl-C); return for anything else."""
    from ray.train import TrainingFailedError

    from kopretrain.tracking import sigint_seen

    if isinstance(exc, TrainingFailedError) and not sigint_seen():
        raise RunFailed(one_line(exc, max_failures, storage, policy, log_file)) from exc
