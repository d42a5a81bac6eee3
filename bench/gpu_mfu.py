"""Tokens/s per GPU, MFU and peak memory of a ~1B Llama under kopretrain's FSDP2 and ZeRO-3, bf16,
torch.compile on and off, seq_len 2048 and 4096: one script, one time budget, a markdown table.

    torchrun --nproc_per_node=8 bench/gpu_mfu.py --max-seconds 1500 --out bench/gpu_mfu.md   # 1..N GPUs
    .venv/bin/python bench/gpu_mfu.py --max-seconds 600                                     # 1 GPU, no torchrun
    .venv/bin/python bench/gpu_mfu.py --tiny --device cpu --peak-tflops 1                  # CPU, seconds (the test)

The model is the TinyLlama-1.1B shape (hidden 2048, 22 layers, 32 heads, 4 KV heads,
intermediate 5632, vocabulary 32000) with random weights; `--tiny` shrinks it to a few hundred
thousand parameters. Each case builds it, wraps it with kopretrain's own strategy class
(kopretrain/train/strategies: `fsdp` = FSDP2 with bf16 MixedPrecisionPolicy, `deepspeed_zero3`
with bf16), optionally compiles every decoder layer first (`torch.compile`, per block, as
torchtitan does; not with ZeRO-3, which `train` refuses too), runs `--warmup` steps, then times `--num-steps` optimizer steps of
`--micro-batch-size` sequences per GPU (random token ids; no gradient accumulation). The step
is the one `kopretrain train` takes (`strategy.forward_backward` then `strategy.step`).

MFU = FLOPs per token (kopretrain/train/throughput.py: 6N without the embeddings + 12 x layers
x q_dim x seq_len) x tokens/s of all ranks / sum of the ranks' peaks (`--peak-tflops`, else the
GPU's name looked up in kopretrain/plan/hardware.py PEAK_TFLOPS_BF16). Peak memory: GPU max
allocated per case (rank 0), or on CPU the process's peak RSS so far. A case that fails (out
of memory, a compile error) gets its error in the table; cases that would start after
`--max-seconds` are listed as skipped. Rank 0 prints the table and writes `--out`.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHAPE_1B = dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                num_key_value_heads=4, vocab_size=32000)
SHAPE_TINY = dict(hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=512)
STRATEGIES = {"fsdp2": "fsdp", "zero3": "deepspeed_zero3"}
COLUMNS = ["strategy", "compile", "seq_len", "GPUs", "micro-batch", "step s", "tokens/s per GPU", "FLOPs/token", "MFU",
           "peak memory GiB", "note"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="a tiny Llama (for CPU tests)")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--seq-lens", default="2048,4096")
    p.add_argument("--strategies", default="fsdp2,zero3")
    p.add_argument("--compile", default="off,on", help="off, on or off,on")
    p.add_argument("--micro-batch-size", type=int, default=1)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--num-steps", type=int, default=10)
    p.add_argument("--max-seconds", type=float, default=1800.0, help="start no case after this much wall time")
    p.add_argument("--peak-tflops", type=float, default=0.0, help="peak bf16 TFLOPS per device (0 = from the GPU's name)")
    p.add_argument("--out", default="", help="write the markdown table here")
    return p.parse_args(argv)


def peak_tflops(args, torch) -> float:
    from kopretrain.plan.hardware import PEAK_TFLOPS_BF16

    if args.peak_tflops or args.device == "cpu":
        return args.peak_tflops
    name = torch.cuda.get_device_name().upper()
    return next((v for k, v in PEAK_TFLOPS_BF16.items() if k in name.replace(" ", "")), 0.0)


def setup(args):
    """Process group (torchrun's env, or a one-process group) and this rank's device."""
    import torch
    import torch.distributed as dist

    if "RANK" not in os.environ:  # a single process without torchrun
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                              MASTER_PORT=str(s.getsockname()[1]))
    local = int(os.environ["LOCAL_RANK"])
    if args.device == "cuda":
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    dist.init_process_group("nccl" if args.device == "cuda" else "gloo")
    return device, dist.get_rank(), dist.get_world_size()


def run_case(args, strategy_name: str, compiled: bool, seq_len: int, device, rank: int, world: int, peak: float) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from kopretrain.train import throughput
    from kopretrain.train.strategies import strategy_class
    from kopretrain.train.strategies.base import RowFreeze, StrategySettings

    shape = SHAPE_TINY if args.tiny else SHAPE_1B
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**shape, max_position_embeddings=seq_len, tie_word_embeddings=False))
    flops = throughput.flops_per_token(throughput.shape_of_model(model), seq_len)
    if compiled:
        for layer in model.model.layers:
            layer.compile()
    bf16 = args.device == "cuda"
    settings = StrategySettings(device=device, rank=rank, world_size=world, num_accumulation_steps=1,
                                micro_batch_size=args.micro_batch_size, autocast_dtype=torch.bfloat16 if bf16 else None,
                                max_grad_norm=1.0)
    strategy = strategy_class(STRATEGIES[strategy_name])(settings)
    strategy.wrap(model)
    params = [p for p in strategy.module.parameters() if p.requires_grad]
    strategy.start_stage([{"params": params, "weight_decay": 0.1}], RowFreeze())
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    gen = torch.Generator().manual_seed(rank)
    batch = torch.randint(0, shape["vocab_size"], (args.micro_batch_size, seq_len), generator=gen).to(device)

    def step():
        strategy.forward_backward(batch, last=True)
        return float(strategy.step(3e-4))  # one host sync per step, as the training loop reads it

    for _ in range(args.warmup):
        step()
    torch.distributed.barrier()
    started = time.perf_counter()
    for _ in range(args.num_steps):
        step()
    torch.distributed.barrier()
    seconds = (time.perf_counter() - started) / args.num_steps
    per_gpu = args.micro_batch_size * seq_len / seconds
    mfu = throughput.mfu(flops, per_gpu * world, [peak] * world)
    memory = peak_memory_bytes(device)
    engine = getattr(strategy, "engine", None)
    if engine is not None and hasattr(engine, "destroy"):
        engine.destroy()
    return {"step s": f"{seconds:.4g}", "tokens/s per GPU": f"{per_gpu:.6g}", "FLOPs/token": f"{flops:.6g}",
            "MFU": "-" if mfu is None else f"{100 * mfu:.3g}%", "peak memory GiB": f"{memory / 2**30:.2f}"}


def peak_memory_bytes(device) -> int:
    """GPU max allocated bytes, or on CPU the process's peak RSS (as kopretrain/train/worker.py reports it)."""
    import torch

    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def markdown(rows: list[dict], header: str) -> str:
    lines = [header, "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    import platform

    import torch
    import torch.distributed as dist

    args = parse_args(argv)
    started = time.monotonic()
    device, rank, world = setup(args)
    peak = peak_tflops(args, torch) * 1e12
    rows = []
    for seq_len in [int(s) for s in args.seq_lens.split(",")]:
        for strategy_name in args.strategies.split(","):
            for compiled in [c == "on" for c in args.compile.split(",")]:
                row = {"strategy": strategy_name, "compile": "on" if compiled else "off", "seq_len": seq_len, "GPUs": world,
                       "micro-batch": args.micro_batch_size}
                over = [time.monotonic() - started > args.max_seconds]
                dist.broadcast_object_list(over, src=0)  # every rank takes the same decision
                if over[0]:
                    rows.append(row | {"note": "skipped (--max-seconds)"})
                    continue
                if compiled and strategy_name == "zero3":  # as `train` refuses strategy.compile with ZeRO-3
                    rows.append(row | {"note": "not run: ZeRO-3's parameter hooks run inside the layers"})
                    continue
                try:
                    row |= run_case(args, strategy_name, compiled, seq_len, device, rank, world, peak)
                except Exception as exc:  # noqa: BLE001 - a failed case is a row, the others still run
                    row["note"] = f"failed: {type(exc).__name__}: {' '.join(str(exc).split())[:120]}"
                    if "out of memory" not in str(exc).lower() and world > 1:
                        raise  # ranks may have diverged: stop rather than hang
                rows.append(row)
                gc.collect()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                if rank == 0:
                    print(row, flush=True)
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({platform.processor() or platform.machine()})"
    header = (f"{'tiny Llama' if args.tiny else 'TinyLlama-1.1B-shaped Llama'}, {'bf16' if device.type == 'cuda' else 'fp32'}, "
              f"{world} x {name}, peak {peak / 1e12:g} TFLOPS per device, torch {torch.__version__}, "
              f"{args.num_steps} timed steps after {args.warmup} warm-up, wall {time.monotonic() - started:.0f} s")
    if rank == 0:
        text = markdown(rows, header)
        print(text, flush=True)
        if args.out:
            Path(args.out).write_text(text, encoding="utf-8")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
