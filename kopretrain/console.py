"""What kopretrain prints on the console: stage lines and training step lines (pure: no Ray).

Every line kopretrain prints about its own progress has the shape `[<stage>] <message>`:

    [demo] --- base_model
    [train] step 10/100  loss 3.2100  lr 2.90e-04  1.2k tok/s

Ray's own INFO logs and the workers' output go to `<run dir>/logs/ray.log` instead
(kopretrain/ray_session.py); from the lines the workers send to the driver, only these
stage lines (printed by rank 0) and warnings or errors reach the console. `is_stage_line`
is how the driver tells them apart.
"""

from __future__ import annotations

import re
import sys
import time

STAGES = ("demo", "prepare", "tokenizer", "train", "eval")
_STAGE_LINE = re.compile(r"^\[(?:%s)\] " % "|".join(STAGES))


def stage_line(stage: str, message: str) -> str:
    assert stage in STAGES, stage
    return f"[{stage}] {message}"


def say(stage: str, message: str) -> None:
    """Print one stage line now (flushed)."""
    print(stage_line(stage, message), flush=True)


def emit(line: str) -> None:
    """Write a line to the process's real stdout, from a Ray worker (Ray forwards it to the driver).

    Not `print`: Ray Train 2.60 replaces `print` in its workers with a logger call that also
    tees to stdout, so a printed line would reach the driver twice."""
    sys.__stdout__.write(line + "\n")
    sys.__stdout__.flush()


def is_stage_line(line: str) -> bool:
    return bool(_STAGE_LINE.match(line))


def human_count(value: float) -> str:
    """1234 -> '1.2k', 5_600_000 -> '5.6M', 12 -> '12'."""
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.1f}{suffix}"
    return f"{value:.0f}"


def human_bytes(value: float) -> str:
    """1.5 * 2**30 -> '1.5 GiB', 300 * 2**20 -> '300 MiB'."""
    if value >= 2**30:
        return f"{value / 2**30:.1f} GiB"
    return f"{value / 2**20:.0f} MiB"


def step_line(record: dict, num_steps: int, tokens_per_second: float | None, mfu: float | None = None,
              peak_memory_bytes: int | None = None, eta: str | None = None) -> str:
    """`[train] step 10/100  loss 3.2100  lr 2.90e-04  gnorm 0.84  1.2k tok/s  MFU 41.2%  mem 31.2 GiB  ETA 1h02m`
    for one loop record (grad norm, MFU, memory and ETA when known)."""
    parts = [f"step {record['step']}/{num_steps}", f"loss {record['loss']:.4f}", f"lr {record['lr']:.2e}"]
    if record.get("grad_norm") is not None:
        parts.append(f"gnorm {record['grad_norm']:.3g}")
    if tokens_per_second:
        parts.append(f"{human_count(tokens_per_second)} tok/s")
    if mfu is not None:
        parts.append(f"MFU {100 * mfu:.1f}%")
    if peak_memory_bytes:
        parts.append(f"mem {human_bytes(peak_memory_bytes)}")
    if eta is not None:
        parts.append(f"ETA {eta}")
    return stage_line("train", "  ".join(parts))


class StepPrinter:
    """Decides which steps get a console line: the first, every `every_num_steps`-th, the last,
    and any step finishing more than `every_seconds` after the previous line (long steps on
    big runs). tok/s is measured over the steps since the previous line."""

    def __init__(self, num_steps: int, every_num_steps: int = 0, every_seconds: float = 60.0, clock=time.perf_counter):
        self.num_steps = num_steps
        self.every = every_num_steps or max(1, num_steps // 10)
        self.every_seconds = every_seconds
        self.clock = clock
        self.last_time: float | None = None
        self.last_tokens: int | None = None

    def start(self, tokens: int) -> None:
        """Call before the first step this process runs (`tokens` = tokens seen so far)."""
        self.last_time, self.last_tokens = self.clock(), tokens

    def due(self, record: dict) -> bool:
        """Whether this step gets a line (a caller composing its own line calls this, not `line`)."""
        now = self.clock()
        if self.last_time is None:
            self.start(record["tokens"])
        step = record["step"]
        if step == 1 or step == self.num_steps or step % self.every == 0 or now - self.last_time >= self.every_seconds:
            self.last_time = now
            return True
        return False

    def line(self, record: dict) -> str | None:
        """The line to print after this step, or None."""
        now = self.clock()
        if self.last_time is None:
            self.start(record["tokens"])
        step = record["step"]
        due = step == 1 or step == self.num_steps or step % self.every == 0 or now - self.last_time >= self.every_seconds
        if not due:
            return None
        elapsed = now - self.last_time
        tps = (record["tokens"] - self.last_tokens) / elapsed if elapsed > 0 else None
        self.last_time, self.last_tokens = now, record["tokens"]
        return step_line(record, self.num_steps, tps)


def print_out(text: str) -> bool:
    """Print `text` on stdout, flushed. When the reader of a pipe is gone (`kopretrain plan | head -1`),
    stdout goes to /dev/null from then on (no BrokenPipeError traceback, now or at exit) and False is returned."""
    try:
        print(text, flush=True)
        return True
    except BrokenPipeError:
        stdout_gone()
        return False


def stdout_gone() -> None:
    """Point the process's stdout at /dev/null (its pipe's reader exited), so later writes and the
    flush at exit succeed silently."""
    import os

    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):  # not a real file (captured in tests)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)
