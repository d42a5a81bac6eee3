"""Time, GPU-hours and cost: (6N + attention) x D / (GPUs x peak x MFU) with N = the parameters
without the embeddings (PaLM's count, the one `train` measures MFU with); the issue's question (7B,
15e9 tokens, 2 x H100 at 45% MFU: about 9 days, not two years); the projection from a real
`train` report.json."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kopretrain.config.plan import DEFAULT_MFU, PlanConfig
from kopretrain.errors import UserError
from kopretrain.plan import estimate
from kopretrain.plan.command import build_plan

REPORT = Path(__file__).parent / "data" / "train_report_cpu_ddp.json"


def test_time_is_6nd_over_gpus_peak_mfu():
    t = estimate.timing(6 * 7e9, 15e9, 2, 989e12, 0.45, price_per_gpu_hour=3.0)
    seconds = 6 * 7e9 * 15e9 / (2 * 989e12 * 0.45)
    assert t["wall_seconds"] == pytest.approx(seconds)
    assert t["wall_days"] == pytest.approx(seconds / 86400) == pytest.approx(8.19, abs=0.01)  # the arithmetic
    assert t["gpu_hours"] == pytest.approx(2 * seconds / 3600)
    assert t["cost"] == pytest.approx(3.0 * 2 * seconds / 3600)
    assert estimate.timing(1, 1, 1, 1, 1, 0)["cost"] is None


def test_the_readme_question_7b_15e9_tokens_two_h100():
    """Llama-2-7B (6.74e9 parameters, N = 6.48e9 without the embeddings) on 15e9 tokens of 4,096,
    2 x H100 at MFU 0.45: 8.8 days."""
    report = build_plan(PlanConfig(base_model="Llama-2-7B", num_tokens=15e9, gpu="H100-80GB", num_gpus=2, mfu=0.45))
    n, attention = 6_476_271_616, 12 * 32 * 4096 * 4096
    assert report["num_params"] == 6_738_415_616 and report["non_embedding_params"] == n
    assert report["flops_per_token"] == 6 * n + attention
    assert report["wall_seconds"] == pytest.approx((6 * n + attention) * 15e9 / (2 * 989e12 * 0.45))
    assert 8.5 < report["wall_days"] < 9.0
    # "about two years" would mean an MFU of half a percent
    assert (6 * n + attention) * 15e9 / (2 * 989e12 * 2 * 365 * 86400) == pytest.approx(0.005, abs=0.001)
    assert report["strategies"]["fsdp"]["wall_seconds"] == report["wall_seconds"]
    lora = report["strategies"]["lora"]
    assert lora["flops_per_token"] == 4 * n + 6 * lora["trainable_params"] + attention


def test_attention_flops_are_counted_and_reported():
    report = build_plan(PlanConfig(base_model="Llama-2-7B", seq_len=4096, mfu=0.5))
    assert report["attention_flops_per_token"] == 12 * 32 * 4096 * 4096
    assert report["flops_per_token"] == 6 * report["non_embedding_params"] + report["attention_flops_per_token"]


def test_from_report_projects_the_measured_throughput(tmp_path):
    measured = json.loads(REPORT.read_text())
    report = build_plan(PlanConfig(base_model="data/smoke/model", num_tokens=1e9, gpu="L4", num_gpus=4,
                                   from_report=str(REPORT)))
    m = report["measured"]
    assert m["device"] == "cpu" and m["mfu"] is None and report["mfu"] == DEFAULT_MFU and report["mfu_source"] == "default"
    rate = measured["tokens_per_second"] / measured["num_workers"] * 4 * measured["num_params"] / report["num_params"]
    assert m["tokens_per_second"] == measured["tokens_per_second"]
    assert m["projected_tokens_per_second"] == pytest.approx(rate)
    assert m["projected_wall_seconds"] == pytest.approx(1e9 / rate)
    # the run directory works as well as the file
    shutil.copy(REPORT, tmp_path / "report.json")
    again = build_plan(PlanConfig(base_model="data/smoke/model", num_tokens=1e9, gpu="L4", num_gpus=4, from_report=str(tmp_path)))
    assert again["measured"]["projected_wall_seconds"] == m["projected_wall_seconds"]


def test_a_measured_mfu_is_the_plans_mfu_unless_mfu_is_given(tmp_path):
    """A GPU run's report has an mfu (here the real CPU report with one filled in)."""
    gpu_report = json.loads(REPORT.read_text()) | {"mfu": 0.31, "device": "cuda:0"}
    (tmp_path / "report.json").write_text(json.dumps(gpu_report))
    report = build_plan(PlanConfig(from_report=str(tmp_path / "report.json")))
    assert (report["mfu"], report["mfu_source"]) == (0.31, "from_report")
    assert build_plan(PlanConfig(from_report=str(tmp_path), mfu=0.5))["mfu"] == 0.5


def test_a_bad_report_is_a_user_error(tmp_path):
    (tmp_path / "report.json").write_text('{"losses": []}')
    with pytest.raises(UserError, match="not a train report"):
        build_plan(PlanConfig(from_report=str(tmp_path)))
    with pytest.raises(UserError, match="from_report"):
        build_plan(PlanConfig(from_report=str(tmp_path / "nothing.json")))


def test_plan_imports_no_torch_ray_or_mlflow():
    import subprocess
    import sys

    code = ("import sys, kopretrain.plan.command, kopretrain.config.plan; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'deepspeed', 'transformers', 'ray', 'mlflow')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_measured_mfu_reproduces_the_measured_time(tmp_path):
    """plan and train count FLOPs with the same function (kopretrain/train/throughput.py): a report's
    MFU, planned on the same model, sequence length, GPU type and GPU count, gives back the measured
    tokens/s exactly."""
    from kopretrain.plan.model_size import model_size
    from kopretrain.plan.shapes import load_model_config
    from kopretrain.train import throughput

    measured = json.loads(REPORT.read_text())
    n, tps, workers, seq = measured["num_params"], measured["tokens_per_second"], measured["num_workers"], measured["seq_len"]
    flops = throughput.flops_per_token(throughput.shape_of_size(model_size(load_model_config("data/smoke/model"))), seq)
    as_on_h100 = measured | {"mfu": throughput.mfu(flops, tps, [989e12] * workers)}  # as train measures it
    (tmp_path / "report.json").write_text(json.dumps(as_on_h100))
    report = build_plan(PlanConfig(base_model="data/smoke/model", num_tokens=1e9, gpu="H100-80GB", num_gpus=workers,
                                   seq_len=seq, from_report=str(tmp_path)))
    assert report["num_params"] == n
    assert report["wall_seconds"] == pytest.approx(1e9 / tps)
    assert report["measured"]["projected_wall_seconds"] == pytest.approx(1e9 / tps)
