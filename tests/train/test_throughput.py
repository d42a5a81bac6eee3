"""kopretrain/train/throughput.py against hand-computed values for a Llama-7B-shaped model (pure, no Ray).

Llama-2-7B: hidden 4096, intermediate 11008, 32 layers, 32 heads, vocabulary 32000, untied.
One decoder layer: q, k, v, o = 4 x 4096^2 = 67,108,864; gate, up, down = 3 x 4096 x 11008 =
135,266,304; two RMSNorm weights 8,192: 202,383,360. N (no embedding matrices) = 32 x 202,383,360
+ the final norm 4,096 = 6,476,271,616. Attention at 2,048 tokens: 12 x 32 x 4096 x 2048 =
3,221,225,472. FLOPs per token = 6N + attention = 38,857,629,696 + 3,221,225,472 = 42,078,855,168.
"""

from __future__ import annotations

import pytest

from kopretrain.console import step_line
from kopretrain.plan.model_size import model_size
from kopretrain.plan.shapes import KNOWN_SHAPES
from kopretrain.train import throughput
from kopretrain.train.throughput import FlopsShape, Meter

LLAMA_7B_N = 6_476_271_616
LLAMA_7B_FLOPS_2048 = 42_078_855_168


def test_llama_7b_flops_per_token_by_hand():
    shape = throughput.shape_of_size(model_size(KNOWN_SHAPES["Llama-2-7B"]))
    assert shape == FlopsShape(LLAMA_7B_N, 32, 4096)
    assert throughput.attention_flops_per_token(shape, 2048) == 3_221_225_472
    assert throughput.flops_per_token(shape, 2048) == LLAMA_7B_FLOPS_2048
    assert throughput.flops_per_token(shape, 4096) == 6 * LLAMA_7B_N + 6_442_450_944
    # LoRA: 4N + 6T + attention (T = 4,194,304 trainable: rank 8 on q and v, 32 layers x 2 x 8 x (4096 + 4096))
    assert throughput.flops_per_token(shape, 2048, lora_trainable=4_194_304) == 4 * LLAMA_7B_N + 6 * 4_194_304 + 3_221_225_472


def test_the_model_counts_as_its_config_does():
    """shape_of_model (what train measures) on a real transformers model on the meta device
    equals shape_of_size (what plan computes from config.json): plan and measurement agree."""
    import torch
    from transformers import GemmaConfig, GemmaForCausalLM, LlamaConfig, LlamaForCausalLM

    with torch.device("meta"):
        llama = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in KNOWN_SHAPES["Llama-2-7B"].items() if k != "model_type"}))
        gemma = GemmaForCausalLM(GemmaConfig(**{k: v for k, v in KNOWN_SHAPES["Gemma-2B"].items() if k != "model_type"}))
    assert throughput.shape_of_model(llama) == FlopsShape(LLAMA_7B_N, 32, 4096)
    # Gemma: tied embeddings, q_dim = 8 heads x 256 = 2048 (= hidden here), N = its layers and final norm
    assert throughput.shape_of_model(gemma) == throughput.shape_of_size(model_size(KNOWN_SHAPES["Gemma-2B"]))
    gemma7 = throughput.shape_of_size(model_size(KNOWN_SHAPES["Gemma-7B"]))
    assert gemma7.q_dim == 16 * 256 and gemma7.q_dim != 3072  # the attention term uses q_dim, not hidden


def test_mfu_is_achieved_flops_over_the_sum_of_the_ranks_peaks():
    # 8 x H100 (989 TFLOPS) at 3,000 tokens/s in all: 42,078,855,168 x 3,000 / (8 x 989e12) = 0.0159550...
    mfu = throughput.mfu(LLAMA_7B_FLOPS_2048, 3000.0, [989e12] * 8)
    assert mfu == pytest.approx(0.015955, abs=1e-6)
    # a mixed group: one A100 (312) and one H100 (989) measured against 1,301 TFLOPS
    assert throughput.mfu(1e9, 1e5, [312e12, 989e12]) == pytest.approx(1e14 / 1301e12)
    assert throughput.mfu(1e9, 1e5, [0.0, 0.0]) is None  # CPU workers: no peak, no MFU
    assert throughput.mfu(1e9, 1e5, [989e12, 0.0]) is None and throughput.mfu(1e9, 1e5, []) is None


def test_projection_eta_and_durations():
    p = throughput.projected(15e9, 25_000.0, 8)
    assert p["wall_seconds"] == 600_000 and p["wall_days"] == pytest.approx(6.944444) and p["gpu_hours"] == pytest.approx(1333.333, abs=1e-3)
    assert throughput.projected(0, 25_000.0, 8) is None and throughput.projected(15e9, 0.0, 8) is None
    assert throughput.eta_seconds(10, 20.0, 90) == 180.0 and throughput.eta_seconds(0, 0.0, 5) is None
    assert [throughput.human_duration(s) for s in (7, 75, 3725, 200_000)] == ["7s", "1m15s", "1h02m", "2d07h"]


def test_meter_windows_and_eta_after_a_resume():
    meter = Meter(num_steps=20, flops_token=1e9, peak_flops_per_rank=[1e12, 1e12])
    meter.start(step=10, tokens=10_000, train_seconds=50.0)  # resumed at step 10
    for step in range(11, 16):  # 1,000 tokens per step, 2 s per step
        rates = meter.update(step, step * 1000, 50.0 + 2 * (step - 10))
    assert rates == {"tokens_per_second": 500.0, "mfu": pytest.approx(1e9 * 500 / 2e12)}
    window = meter.window()
    assert window["tokens_per_second"] == 500.0 and window["eta_seconds"] == 10.0  # 5 steps left at 2 s
    meter.update(16, 16_000, 64.0)  # a slow step (4 s)
    assert meter.window()["tokens_per_second"] == 250.0
    assert Meter(5).update(1, 100, 1.0)["mfu"] is None  # no peaks (CPU)


def test_step_line_shows_grad_norm_mfu_memory_and_eta():
    record = {"step": 10, "loss": 3.21049, "lr": 2.9e-4, "grad_norm": 0.8412, "tokens": 10_240}
    line = step_line(record, 100, 1234.0, mfu=0.4123, peak_memory_bytes=int(31.2 * 2**30), eta="1h02m")
    assert line == "[train] step 10/100  loss 3.2105  lr 2.90e-04  gnorm 0.841  1.2k tok/s  MFU 41.2%  mem 31.2 GiB  ETA 1h02m"
    cpu = step_line(record, 100, 1234.0, mfu=None, peak_memory_bytes=300 * 2**20, eta="12s")
    assert cpu == "[train] step 10/100  loss 3.2105  lr 2.90e-04  gnorm 0.841  1.2k tok/s  mem 300 MiB  ETA 12s"


def test_each_rank_is_measured_against_its_own_peak():
    """The worker's per-rank peaks: scale's accelerator for every rank, or each rank's group's
    (scale.groups: here one A100 and one H100 rank); none on CPU workers."""
    from types import SimpleNamespace

    from kopretrain.train.worker import rank_peak_flops
    from tests.train.conftest import smoke_cfg

    h100 = smoke_cfg("scale.use_gpu=true", "scale.accelerator_type=H100")
    assert rank_peak_flops(h100, None, 2) == [989e12, 989e12]
    mixed = SimpleNamespace(peak_tflops=[312.0, 989.0])  # RankGroups.peak_tflops, one per rank
    assert rank_peak_flops(h100, mixed, 2) == [312e12, 989e12]
    assert rank_peak_flops(smoke_cfg(), mixed, 2) == [0.0, 0.0] and rank_peak_flops(smoke_cfg(), None, 2) == [0.0, 0.0]
