"""Ctrl-C (or SIGTERM) of the ray_jobs launcher: stop the sweep's points and record how they ended
(pure: the Jobs API client is passed in; no Ray import).

`ray job stop` (`JobSubmissionClient.stop_job`) makes the job's supervisor send SIGTERM to the
entrypoint and every process under it, wait RAY_JOB_STOP_WAIT_TIME_S (read from the supervisor's
environment, which a job's runtime_env.env_vars set; Ray's default is 3 s), SIGKILL what is left and
only then report the job STOPPED. The launcher gives each job `stop_grace_s` (10 s) so that the point's
CLI can end its MLflow run KILLED and disconnect from Ray (its Train workers end with that connection),
and waits that long plus 20 s for Ray to report every stopped point ended.

    stop_points(client, points, interrupted=True, wait_s=30, copy_log=copy_log)
    # [sweep] #1 mix.replay_ratio=0.5: CANCELLED (not submitted)
    # [sweep] #0: STOPPED (stopped: the sweep was interrupted); log <sweep dir>/0/ray-job.log
"""

from __future__ import annotations

import time
from typing import Callable

from kopretrain.launch.points import error_line

STOP_WAIT_ENV = "RAY_JOB_STOP_WAIT_TIME_S"
"""Seconds Ray's job supervisor waits between the SIGTERM and the SIGKILL of a stopped job."""
STOP_GRACE_S = 10
"""The launcher's default for STOP_WAIT_ENV (`hydra.launcher.stop_grace_s`)."""
ENDED = ("SUCCEEDED", "FAILED", "STOPPED")
"""Ray's final job statuses."""
CANCELLED = "CANCELLED"
"""A point the launcher never submitted because the sweep stopped first."""


def _say(message: str) -> None:
    print(f"[sweep] {message}", flush=True)


def _one_line(exc: BaseException, limit: int = 300) -> str:
    return " ".join(str(exc).split())[:limit]


def _request_stops(client, points: list, why: str) -> list:
    """Cancel the points never submitted; ask Ray to stop the others that have not ended. Returns those."""
    live = []
    for p in points:
        if p.status == "QUEUED" and not p.submission_id:
            p.status, p.message = CANCELLED, f"not submitted: {why}"
            _say(f"#{p.num} {p.label}: {CANCELLED} (not submitted)")
        elif p.submission_id and p.status not in ENDED and p.status != "NOT SUBMITTED":
            try:
                client.stop_job(p.submission_id)
                live.append(p)
            except Exception as exc:  # noqa: BLE001 - interrupted while submitting it, or the cluster is gone
                if p.status == "QUEUED":
                    p.status, p.message = CANCELLED, f"not submitted: {why}"
                else:
                    p.message = f"could not stop it ({_one_line(exc)})"
                _say(f"#{p.num}: {p.status} ({p.message})")
    return live


def stop_points(client, points: list, interrupted: bool, wait_s: float, copy_log: Callable) -> None:
    """Stop every submitted point of `points` that has not ended (`client.stop_job`) and follow each for
    up to `wait_s` until Ray reports it ended (a second Ctrl-C ends the wait): its `status` becomes Ray's
    (STOPPED), its log is copied (`copy_log(p)`) and one `[sweep]` line printed. Points never submitted
    become CANCELLED. `p` has num, label, submission_id, status, message, log (ray_jobs._Point)."""
    why = "the sweep was interrupted" if interrupted else "the launcher failed"
    live = _request_stops(client, points, why)
    deadline = time.monotonic() + wait_s
    try:
        while live and time.monotonic() < deadline:
            time.sleep(0.5)
            for p in list(live):
                try:
                    status = str(client.get_job_status(p.submission_id).value)
                except Exception as exc:  # noqa: BLE001 - the cluster is gone: what was seen last stands
                    live.remove(p)
                    p.message = f"stop requested; its status is unknown ({_one_line(exc, 200)})"
                    _say(f"#{p.num}: {p.status} ({p.message})")
                    continue
                if status not in ENDED:
                    continue
                live.remove(p)
                text = copy_log(p)
                p.status = status
                if status == "STOPPED":
                    p.message = f"stopped: {why}"
                elif status == "FAILED":  # it failed on its own (or on the SIGTERM) before Ray stopped it
                    p.message = error_line(text) or "failed while being stopped"
                _say(f"#{p.num}: {status}" + (f" ({p.message})" if p.message else "") + f"; log {p.log}")
    except KeyboardInterrupt:  # a second Ctrl-C: no more waiting
        pass
    for p in live:
        p.message = "stop requested; Ray had not reported it ended when the launcher stopped waiting"
        _say(f"#{p.num}: {p.status} ({p.message})")
