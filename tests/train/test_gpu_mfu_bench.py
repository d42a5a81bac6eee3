"""bench/gpu_mfu.py end to end on CPU (`--tiny --device cpu`): the table's columns, and its FLOPs per
token and MFU as kopretrain/train/throughput.py computes them (hand-checked for the tiny shape)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kopretrain.train import throughput

REPO = Path(__file__).resolve().parents[2]
COLUMNS = ["strategy", "compile", "seq_len", "GPUs", "micro-batch", "step s", "tokens/s per GPU", "FLOPs/token", "MFU",
           "peak memory GiB", "note"]
# the tiny Llama (hidden 64, intermediate 176, 2 layers, 4 heads, 2 KV heads): per layer q 4096 + k 2048 + v 2048
# + o 4096 + MLP 3 x 64 x 176 + norms 128 = 46,208; N = 2 x 46,208 + 64 = 92,480; seq 64: 6N + 12 x 2 x 64 x 64
TINY_FLOPS_64 = 6 * 92_480 + 12 * 2 * 64 * 64


def read_table(path: Path) -> tuple[list[str], list[dict]]:
    rows = [line.strip().strip("|").split("|") for line in path.read_text().splitlines() if line.startswith("|")]
    header = [c.strip() for c in rows[0]]
    return header, [dict(zip(header, (c.strip() for c in r))) for r in rows[2:]]


def test_gpu_mfu_tiny_on_cpu_writes_the_table(tmp_path):
    out = tmp_path / "mfu.md"
    proc = subprocess.run([sys.executable, str(REPO / "bench/gpu_mfu.py"), "--tiny", "--device", "cpu", "--peak-tflops", "0.001",
                           "--seq-lens", "64", "--strategies", "fsdp2,zero3", "--compile", "off", "--warmup", "1",
                           "--num-steps", "2", "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    header, rows = read_table(out)
    assert header == COLUMNS
    assert [(r["strategy"], r["compile"], r["seq_len"], r["GPUs"]) for r in rows] == [("fsdp2", "off", "64", "1"), ("zero3", "off", "64", "1")]
    for row in rows:
        assert row["note"] == "", row
        assert float(row["FLOPs/token"]) == TINY_FLOPS_64
        tps = float(row["tokens/s per GPU"])
        assert tps > 0 and float(row["step s"]) == pytest.approx(64 / tps, rel=1e-3)
        expected = throughput.mfu(TINY_FLOPS_64, tps, [0.001e12])
        assert float(row["MFU"].rstrip("%")) == pytest.approx(100 * expected, rel=1e-2)
        assert float(row["peak memory GiB"]) > 0
