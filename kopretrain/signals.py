"""Ctrl-C and SIGTERM seen by any command, whichever handler took the signal (no Ray, no MLflow).

    watch_sigint()          # the CLI, once, in the main thread
    ...
    if sigint_seen(): ...   # a run ends KILLED rather than FAILED (kopretrain/tracking.py, train/command.py)
"""

from __future__ import annotations

import os
from typing import Any

# Ctrl-C. Python's own handler raises KeyboardInterrupt, but Ray Train's `fit` replaces it with one that
# aborts the run and ends in SystemExit or a RayActorError; every Python-level handler first writes the
# signal number to the wakeup fd, so `sigint_seen()` knows of a SIGINT whichever handler took it.
# SIGTERM (`kill`, `ray job stop` of a sweep point) is an interrupt too: KeyboardInterrupt until `ray.init`
# replaces the handler with its own `sys.exit(15)`, seen through the same fd.
_SIGNALS: dict[str, Any] = {"fd": None, "seen": 0}


def _terminated(signum, frame) -> None:
    raise KeyboardInterrupt


def watch_sigint() -> None:
    """From now on, remember a SIGINT to this process (the CLI calls it; main thread only). A SIGINT
    ignored by inheritance is made Python's KeyboardInterrupt again, so `kill -INT` stops any command."""
    import signal
    import threading

    if _SIGNALS["fd"] is not None or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # inherited, e.g. `kopretrain ... &` in a script:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # Ray Train would react anyway; every command does
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:  # else the process would die with its MLflow run RUNNING
        signal.signal(signal.SIGTERM, _terminated)
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    os.set_blocking(write_fd, False)
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    _SIGNALS["fd"] = read_fd


def interrupt_signal() -> int:
    """The first SIGINT or SIGTERM this process got since `watch_sigint`, 0 if none (stays set)."""
    import signal

    if not _SIGNALS["seen"] and _SIGNALS["fd"] is not None:
        try:
            data = os.read(_SIGNALS["fd"], 4096)
        except BlockingIOError:
            data = b""
        _SIGNALS["seen"] = next((n for n in data if n in (signal.SIGINT, signal.SIGTERM)), 0)
    return int(_SIGNALS["seen"])


def sigint_seen() -> bool:
    """Whether this process got a SIGINT (or a SIGTERM) since `watch_sigint` (stays true)."""
    return bool(interrupt_signal())
