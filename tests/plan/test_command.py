"""`kopretrain plan` end to end through the CLI: the table on stdout, report.json, the run
directory as the last line; bad input is one line on stderr and exit status 2."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from kopretrain.cli import main
from kopretrain.plan.memory import STRATEGIES

REPORT = Path(__file__).parent / "data" / "train_report_cpu_ddp.json"


def run_cli(argv, tmp_path, monkeypatch, capsys):
    """`kopretrain <argv>` in this process from `tmp_path`: (exit code, stdout lines, stderr lines)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    capsys.readouterr()
    code = 0
    try:
        main(argv)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, [line for line in out.splitlines() if line.strip()], [line for line in err.splitlines() if line.strip()]


def test_plan_prints_the_table_and_the_run_dir_last(tmp_path, monkeypatch, capsys):
    code, out, _ = run_cli(["plan", "base_model=Llama-2-7B", "num_tokens=15e9", "gpu=H100-80GB", "num_gpus=2", "mfu=0.45",
                            "price_per_gpu_hour=3", f"from_report={REPORT}", "hydra.run.dir=run"], tmp_path, monkeypatch, capsys)
    assert code == 0
    run_dir = tmp_path / "run"
    assert out[-1] == str(run_dir)
    report = json.loads((run_dir / "report.json").read_text())
    assert list(report["strategies"]) == list(STRATEGIES)
    assert report["wall_days"] == pytest.approx(8.84, abs=0.01) and report["cost"] == pytest.approx(report["gpu_hours"] * 3)
    header = next(line for line in out if line.startswith("strategy"))
    assert header.split()[:8] == ["strategy", "params", "grads", "optim", "activ", "logits", "total", "fits"]
    rows = {line.split()[0]: line.split() for line in out if line.split()[0] in STRATEGIES}
    assert set(rows) == set(STRATEGIES)
    for name, row in rows.items():
        memory = report["strategies"][name]["memory_bytes"]
        assert float(row[6]) == pytest.approx(memory["total"] / 2**30, abs=0.05)
        assert row[7] == ("yes" if memory["fits"] else "no") and int(row[8]) == memory["max_micro_batch"]
    assert rows["ddp"][7] == "no" and rows["deepspeed_zero3_offload"][7] == "yes"  # 7B: a full replica does not fit 80 GB
    assert any(line.startswith("time = (6N + attention) x tokens") and "8.84 days" in line for line in out)
    assert any(line.startswith("measured (") for line in out)


def test_the_smoke_recipe(tmp_path, monkeypatch, capsys):
    code, out, _ = run_cli(["plan", "experiment=smoke", "hydra.run.dir=run"], tmp_path, monkeypatch, capsys)
    assert code == 0 and out[-1] == str(tmp_path / "run")
    assert json.loads((tmp_path / "run" / "report.json").read_text())["model_type"] == "llama"


@pytest.mark.parametrize("override,message", [
    ("base_model=Llama-9B", "base_model: 'Llama-9B' is neither a known shape"),
    ("gpu=V100", "gpu: 'V100' is not one of"),
    ("num_gpus=12", "num_gpus: 12 is not a multiple of gpus_per_node (8)"),
    ("strategies=[ddp,zero9]", "strategies: 'zero9' is not one of"),
    ("mfu=1.5", "mfu: must be in [0, 1] (got 1.5)"),
    ("lora_targets=[qkv]", "lora_targets: qkv not in a llama layer"),
    ("vocab_size=1000", "vocab_size: 1000 is smaller than the model's vocabulary (32000)"),
    ("from_report=nowhere/report.json", "from_report: 'nowhere/report.json' does not exist"),
])
def test_bad_input_is_one_line_and_exit_2(override, message, tmp_path, monkeypatch, capsys):
    code, _, err = run_cli(["plan", override, "hydra.run.dir=run"], tmp_path, monkeypatch, capsys)
    assert code == 2
    assert len(err) == 1 and err[0].startswith(f"kopretrain plan: error: {message}"), err


def readme_plan_blocks() -> list[tuple[str, list[str]]]:
    """(command line, the lines printed under it) for each `$ kopretrain plan` in README's plan section."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Planning a run: `kopretrain plan`", 1)[1].split("\n## ", 1)[0]
    cases = []
    for block in section.split("```")[1::2]:
        lines = [line for line in block.splitlines() if line.strip()]
        starts = [i for i, line in enumerate(lines) if line.startswith("$ kopretrain plan")] + [len(lines)]
        cases += [(lines[a][2:], lines[a + 1:b]) for a, b in zip(starts, starts[1:])]
    assert len(cases) >= 3, "the README's plan examples went missing"
    return cases


@pytest.mark.parametrize("command,expected", readme_plan_blocks())
def test_the_readme_examples_print_what_the_readme_shows(command, expected, tmp_path, monkeypatch, capsys):
    code, out, err = run_cli(command.split()[1:] + ["hydra.run.dir=run"], tmp_path, monkeypatch, capsys)
    if code == 0:
        assert out[:-1] == expected and out[-1] == str(tmp_path / "run")
    else:
        assert code == 2 and err == expected


def test_the_readme_attention_share():
    from kopretrain.config.plan import PlanConfig
    from kopretrain.plan.command import build_plan

    report = build_plan(PlanConfig(base_model="Llama-2-7B", seq_len=4096))
    attention = report["attention_flops_per_token"]
    assert round(attention / (report["flops_per_token"] - attention), 2) == 0.17  # on top of 6N


def test_a_report_without_a_measured_mfu_shows_it_as_unknown(tmp_path, monkeypatch, capsys):
    report = json.loads(REPORT.read_text()) | {"mfu": None}  # a CPU run: no peak FLOP/s, no MFU
    (tmp_path / "cpu.json").write_text(json.dumps(report))
    code, out, _ = run_cli(["plan", "from_report=cpu.json", "hydra.run.dir=run"], tmp_path, monkeypatch, capsys)
    measured = [line for line in out if line.startswith("measured (")]
    assert code == 0 and len(measured) == 1 and " MFU unknown; " in measured[0] and "None" not in measured[0]
    assert any(line.endswith("MFU 0.40 (default)") for line in out)


@pytest.mark.parametrize("field,value", [("num_attention_heads", 0), ("hidden_size", 0), ("num_hidden_layers", "32"),
                                         ("num_key_value_heads", -8), ("intermediate_size", 1.5)])
def test_a_model_config_with_a_size_that_is_not_a_positive_integer_is_one_line(field, value, tmp_path, monkeypatch, capsys):
    from kopretrain.plan.shapes import KNOWN_SHAPES

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(json.dumps(KNOWN_SHAPES["Llama-2-7B"] | {field: value}))
    code, _, err = run_cli(["plan", "base_model=model", "hydra.run.dir=run"], tmp_path, monkeypatch, capsys)
    assert code == 2 and err == [f"kopretrain plan: error: base_model: the config's {field!r} is {value!r}; "
                                 "it must be a positive integer"]


def test_a_model_config_with_0_for_unset_kv_heads_and_head_dim_is_sized_as_without_them(tmp_path):
    from kopretrain.config.plan import PlanConfig
    from kopretrain.plan.command import build_plan
    from kopretrain.plan.shapes import KNOWN_SHAPES

    (tmp_path / "config.json").write_text(json.dumps(KNOWN_SHAPES["Llama-2-7B"] | {"num_key_value_heads": 0, "head_dim": 0}))
    assert build_plan(PlanConfig(base_model=str(tmp_path)))["num_params"] == build_plan(PlanConfig())["num_params"]


def test_a_closed_pipe_on_stdout_is_no_traceback(tmp_path):
    """`kopretrain plan ... | head -1`: the reader gone, the rest of the table is dropped quietly."""
    import os
    import subprocess

    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader exited before anything was written: every write is EPIPE
    try:
        out = subprocess.run([sys.executable, "-m", "kopretrain", "plan", "experiment=smoke", "hydra.run.dir=run"],
                             cwd=tmp_path, stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert out.returncode == 0 and out.stderr == ""
    assert json.loads((tmp_path / "run" / "report.json").read_text())["model_type"] == "llama"
