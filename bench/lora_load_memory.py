"""Peak host memory of one rank while it builds a LoRA model (peft=lora, expanded vocabulary):
the full path (`build_model`: from_pretrained, resize, peft, then `wrap`) against `Strategy.build`
(in place: kopretrain/train/model_init_lora.py), each in a fresh process.

    .venv/bin/python bench/lora_load_memory.py [--hidden 1536 --layers 18 --intermediate 4096] [--device meta]

Model: a Llama (default the 0.51B shape of bench/train_load_memory.py, 2.06 GB in fp32) over the
first 1,500 pieces of the smoke SentencePiece model, saved in bf16 safetensors, continued with the
smoke tokenizer (2,048 rows), LoRA r=16 on every decoder-layer linear plus the new rows. `--device
meta` stands for an accelerator: the model the strategy places lives off the host, so what the
host holds is what loading costs (a GPU rank of DDP; FSDP2 places only its shard); `cpu` holds the
model in host memory on both paths. Figures: the peak RSS (VmHWM, reset just before the build
through /proc/self/clear_refs; mmapped checkpoint pages included) above the RSS just before the build (after the imports both paths need: peft,
transformers' Llama, accelerate, safetensors); the fp32 model's size for scale. Used by
tests/train/test_lora_in_place.py with a small shape.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from train_load_memory import make_model as make_base_model  # bench/ is on sys.path (run as a script; the test adds it)

ROOT = Path(__file__).resolve().parents[1]
SMOKE_TOKENIZER = ROOT / "data/smoke/tokenizer"


def make_model(out: Path, hidden: int, layers: int, intermediate: int) -> int:
    """The bf16 safetensors base model and its 1,500-token tokenizer in `out` (bench/train_load_memory.py's
    `make_model`); returns the parameter count."""
    return make_base_model(out, layers, hidden=hidden, intermediate=intermediate)


def _reset_peak() -> None:
    """Linux: the peak RSS (VmHWM) starts again from the current RSS (imports and planning peaked higher)."""
    Path("/proc/self/clear_refs").write_text("5")


def _peak() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def measure(model_dir: str, device: str, path: str) -> dict:
    """In this process: one build (`path`: "in place" or "full"); its peak RSS above the RSS before it."""
    import accelerate  # noqa: F401 (imported before the baseline: both paths need them)
    import peft  # noqa: F401
    import safetensors.torch  # noqa: F401
    import torch
    from transformers import LlamaForCausalLM  # noqa: F401

    torch.set_num_threads(1)
    from kopretrain.cli import compose_typed
    from kopretrain.train.model import build_model, plan_model
    from kopretrain.train.strategies import strategy_class
    from kopretrain.train.strategies.base import StrategySettings

    cfg = compose_typed("train", ["experiment=smoke", "tracking.enabled=false", "model=pretrained", f"model.name_or_path={model_dir}",
                                  f"tokenizer={SMOKE_TOKENIZER}", "model.gradient_checkpointing=false", "peft=lora",
                                  "strategy.name=local", "scale.num_workers=1"])
    plan = plan_model(cfg)
    strategy = strategy_class("local")(StrategySettings(device=torch.device(device)))
    before = _rss()
    _reset_peak()
    if path == "full":
        model, info = build_model(plan, cfg.seed)
        strategy.wrap(model)
    else:
        info = strategy.build(plan, cfg.seed)
    return {"load": info.get("load", "full"), "peak_above": max(_peak() - before, 0), "fp32_bytes": info["num_params"] * 4}


def run(hidden: int, layers: int, intermediate: int, device: str, tmp: Path) -> dict:
    """Make the model in `tmp`, then measure in a fresh process (its peak RSS is this measurement's alone)."""
    out: dict = {"base_params": make_model(tmp, hidden, layers, intermediate)}
    for path in ("full", "in place"):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--measure", str(tmp / "base"), "--device", device, "--path", path]
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        if done.returncode:
            raise SystemExit(f"measurement failed:\n{done.stderr[-3000:]}")
        out[path] = json.loads(done.stdout.strip().splitlines()[-1])
    out["fp32_bytes"] = out["full"]["fp32_bytes"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, default=1536)
    ap.add_argument("--layers", type=int, default=18)
    ap.add_argument("--intermediate", type=int, default=4096)
    ap.add_argument("--device", default="meta", choices=["meta", "cpu"])
    ap.add_argument("--measure")
    ap.add_argument("--path", default="in place")
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.device, args.path)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        r = run(args.hidden, args.layers, args.intermediate, args.device, Path(tmp))
    mb = 1024 * 1024
    print(f"LoRA r=16 + new rows, {r['base_params'] / 1e6:.1f}M-parameter base ({r['fp32_bytes'] / mb:.0f} MiB in fp32), device {args.device}")
    for path in ("full", "in place"):
        print(f"  {path:9s} peak host RSS above the start: {r[path]['peak_above'] / mb:8.0f} MiB  "
              f"({r[path]['peak_above'] / r['fp32_bytes']:.2f} x the fp32 model)")
    print(json.dumps(r))


if __name__ == "__main__":
    main()
