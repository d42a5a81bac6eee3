"""kopretrain/console.py: stage lines, step lines and which steps get one (pure, no Ray)."""

from __future__ import annotations

import pytest

from kopretrain.console import StepPrinter, human_count, is_stage_line, stage_line, step_line


def test_stage_lines_are_recognised_and_others_are_not():
    assert stage_line("demo", "--- prepare") == "[demo] --- prepare"
    assert is_stage_line("[train] step 1/8  loss 6.9188  lr 1.50e-03")
    assert is_stage_line(stage_line("eval", "x"))
    for other in ["(RayTrainWorker pid=12) [train] step 1/8", "[2026-11-29 22:26:05,887 E 7790] core_worker.cc",
                  "[HYDRA] Launching 2 jobs locally", "train: step 1", "[trainer] x"]:
        assert not is_stage_line(other), other
    with pytest.raises(AssertionError):
        stage_line("nonsense", "x")


@pytest.mark.parametrize("value,text", [(12, "12"), (999, "999"), (1234, "1.2k"), (5_600_000, "5.6M"), (2.5e9, "2.5G")])
def test_human_count(value, text):
    assert human_count(value) == text


def test_step_line_shows_step_loss_lr_and_throughput():
    record = {"step": 10, "loss": 3.21049, "lr": 2.9e-4, "tokens": 10_240}
    assert step_line(record, 100, 1234.0) == "[train] step 10/100  loss 3.2105  lr 2.90e-04  1.2k tok/s"
    assert step_line(record, 100, None) == "[train] step 10/100  loss 3.2105  lr 2.90e-04"


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run_printer(printer: StepPrinter, clock: FakeClock, num_steps: int, seconds_per_step: float, tokens_per_step: int,
                first_step: int = 1) -> dict[int, str]:
    printed = {}
    for step in range(first_step, num_steps + 1):
        clock.now += seconds_per_step
        line = printer.line({"step": step, "loss": 1.0, "lr": 1e-3, "tokens": step * tokens_per_step})
        if line:
            printed[step] = line
    return printed


def test_printer_prints_the_first_every_tenth_and_the_last_step_with_tokens_per_second():
    clock = FakeClock()
    printer = StepPrinter(95, clock=clock)
    printer.start(0)
    printed = run_printer(printer, clock, 95, seconds_per_step=0.5, tokens_per_step=1000)
    assert list(printed) == [1, 9, 18, 27, 36, 45, 54, 63, 72, 81, 90, 95]
    assert all(line.endswith("2.0k tok/s") for line in printed.values())  # 1000 tokens per 0.5 s, per interval
    assert printed[95].startswith("[train] step 95/95  loss 1.0000")


def test_printer_every_num_steps_and_a_line_after_a_long_quiet_spell():
    clock = FakeClock()
    printer = StepPrinter(1000, every_num_steps=500, every_seconds=60.0, clock=clock)
    printer.start(0)
    printed = run_printer(printer, clock, 1000, seconds_per_step=7.0, tokens_per_step=10)
    # 7 s a step: a line at least every 60 s (every 9th step), besides steps 1, 500 and 1000
    assert {1, 500, 1000} <= set(printed)
    steps = sorted(printed)
    assert max(b - a for a, b in zip(steps, steps[1:])) <= 9


def test_printer_after_a_resume_counts_tokens_from_the_resumed_step():
    clock = FakeClock()
    printer = StepPrinter(20, every_num_steps=5, clock=clock)
    printer.start(tokens=10 * 100)  # resumed after step 10
    printed = run_printer(printer, clock, 20, seconds_per_step=1.0, tokens_per_step=100, first_step=11)
    assert list(printed) == [15, 20]
    assert printed[15].endswith("100 tok/s")
