"""`kopretrain plan`: memory per GPU per strategy, wall time, GPU-hours and cost, as a table and report.json.

    kopretrain plan base_model=Llama-2-7B num_tokens=15e9 gpu=H100-80GB num_gpus=2 mfu=0.45
    kopretrain plan base_model=<HF dir> vocab_size=46336 activation_checkpointing=true price_per_gpu_hour=3
    kopretrain plan base_model=<HF dir> from_report=outputs/train/<date>/<time>/report.json

Pure arithmetic (no torch, no Ray): `run_plan` sizes the model from its HF config
(kopretrain/plan/model_size.py), sums the memory terms of every strategy (memory.py) and the
time (estimate.py), prints the table and returns the report.
"""

from __future__ import annotations

from pathlib import Path

from kopretrain.config.plan import DEFAULT_MFU, PlanConfig
from kopretrain.errors import UserError
from kopretrain.paths import input_path
from kopretrain.plan import estimate, memory
from kopretrain.plan.hardware import GIB, GPUS, MIB
from kopretrain.plan.model_size import model_size
from kopretrain.plan.shapes import KNOWN_SHAPES, load_model_config

TERMS = ("parameters", "gradients", "optimizer", "activations", "logits", "total")


def build_plan(cfg: PlanConfig) -> dict:
    """The whole plan as a JSON-ready dict (bytes, seconds); raises UserError for bad input."""
    path = "" if cfg.base_model in KNOWN_SHAPES else input_path(cfg.base_model, "base_model")
    config = load_model_config(cfg.base_model, path)
    base_vocab = int(config.get("vocab_size") or 0)
    size = model_size(config, cfg.vocab_size)
    if cfg.vocab_size and base_vocab and cfg.vocab_size < base_vocab:
        raise UserError(f"vocab_size: {cfg.vocab_size} is smaller than the model's vocabulary ({base_vocab})")
    unknown = [t for t in cfg.lora_targets if t not in size.linears]
    if unknown:
        raise UserError(f"lora_targets: {', '.join(unknown)} not in a {size.model_type} layer ({', '.join(size.linears)})")
    gpu = GPUS[cfg.gpu]
    memory_bytes = cfg.gpu_memory_gib * GIB if cfg.gpu_memory_gib else gpu.memory_bytes
    peak = (cfg.peak_tflops or gpu.peak_tflops) * 1e12
    measured = estimate.read_train_report(input_path(cfg.from_report, "from_report")) if cfg.from_report else None
    if cfg.mfu:
        mfu, mfu_source = cfg.mfu, "given"
    elif measured and measured["mfu"]:
        mfu, mfu_source = float(measured["mfu"]), "from_report"
    else:
        mfu, mfu_source = DEFAULT_MFU, "default"
    lora = memory.Lora(rank=cfg.lora_rank, targets=tuple(cfg.lora_targets), train_new_rows=cfg.lora_train_new_rows,
                       num_new_rows=max(0, size.vocab_size - base_vocab) if base_vocab else 0)
    lora_trainable = memory.lora_trainable_params(size, lora)
    strategies = {}
    for name in cfg.strategies:
        trainable = lora_trainable if name == "lora" else size.total_params
        mem = memory.plan_memory(name, size, cfg.num_gpus, cfg.micro_batch_size, cfg.seq_len,
                                 cfg.activation_checkpointing, cfg.attention, memory_bytes * cfg.usable_memory_fraction,
                                 trainable, memory.lora_copied_rows(size, lora) if name == "lora" else 0)
        flops = estimate.flops_per_token(size, cfg.seq_len, name, trainable)
        strategies[name] = {"memory_bytes": mem, "trainable_params": trainable, "flops_per_token": flops,
                            **estimate.timing(flops, cfg.num_tokens, cfg.num_gpus, peak, mfu, cfg.price_per_gpu_hour)}
    flops = estimate.flops_per_token(size, cfg.seq_len)
    report = {
        "model": cfg.base_model, "model_type": size.model_type, "num_params": size.total_params,
        "non_embedding_params": size.non_embedding_params, "embedding_params": size.embedding_params,
        "lm_head_params": size.lm_head_params, "tied_embeddings": size.tied, "vocab_size": size.vocab_size,
        "num_new_rows": lora.num_new_rows, "num_tokens": cfg.num_tokens, "seq_len": cfg.seq_len,
        "micro_batch_size": cfg.micro_batch_size, "activation_checkpointing": cfg.activation_checkpointing,
        "attention": cfg.attention, "gpu": cfg.gpu, "num_gpus": cfg.num_gpus, "gpus_per_node": cfg.nodes_size,
        "num_nodes": cfg.num_gpus // cfg.nodes_size, "gpu_memory_bytes": memory_bytes,
        "usable_memory_bytes": memory_bytes * cfg.usable_memory_fraction, "peak_tflops": peak / 1e12,
        "mfu": mfu, "mfu_source": mfu_source, "flops_per_token": flops,
        "flops_formula": "6N + 12 x layers x q_dim x seq_len, N = parameters without the embedding matrices (PaLM, appendix B)",
        "attention_flops_per_token": estimate.attention_flops_per_token(size, cfg.seq_len),
        **estimate.timing(flops, cfg.num_tokens, cfg.num_gpus, peak, mfu, cfg.price_per_gpu_hour),
        "price_per_gpu_hour": cfg.price_per_gpu_hour,
        "lora": {"rank": lora.rank, "targets": list(lora.targets or size.linears), "train_new_rows": lora.train_new_rows,
                 "trainable_params": lora_trainable},
        "strategies": strategies,
        "measured": None,
    }
    if measured:
        report["measured"] = measured | estimate.project_measured(measured, size, cfg.num_tokens, cfg.num_gpus)
    return report


def _count(n: float) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.2f}M"


def format_table(report: dict) -> str:
    """The printed plan: a header, one row per strategy (GiB per GPU), the time and the projection."""
    cost = report["price_per_gpu_hour"] > 0
    lines = [
        f"{report['model']} ({report['model_type']}): {_count(report['num_params'])} parameters "
        f"(vocab {report['vocab_size']}, {report['num_new_rows']} new rows), {report['num_tokens']:.3g} tokens of {report['seq_len']}, "
        f"micro-batch {report['micro_batch_size']}, activation checkpointing {'on' if report['activation_checkpointing'] else 'off'}",
        f"{report['num_gpus']} x {report['gpu']} ({report['num_nodes']} node(s), {report['gpu_memory_bytes'] / GIB:.1f} GiB, "
        f"{report['usable_memory_bytes'] / GIB:.1f} usable; {report['peak_tflops']:g} TFLOPS bf16), MFU {report['mfu']:.2f} ({report['mfu_source']})",
        "",
    ]
    head = ["strategy", "params", "grads", "optim", "activ", "logits", "total", "fits", "max mb", "days", "GPU-h"]
    unit, size = ("GiB", GIB) if max(s["memory_bytes"]["total"] for s in report["strategies"].values()) >= GIB else ("MiB", MIB)
    rows = []
    for name, s in report["strategies"].items():
        m = s["memory_bytes"]
        row = [name] + [f"{m[t] / size:.1f}" for t in TERMS] + ["yes" if m["fits"] else "no", str(m["max_micro_batch"]),
                                                       f"{s['wall_days']:.1f}", f"{s['gpu_hours']:,.0f}"]
        rows.append(row + ([f"{s['cost']:,.0f}"] if cost else []))
    head += ["cost"] if cost else []
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    lines += [fmt(head) + f"   ({unit} per GPU)"] + [fmt(r) for r in rows]
    if "lora" in report["strategies"]:
        lora = report["lora"]
        rows_note = f" + {report['num_new_rows']} new embedding rows" if lora["train_new_rows"] and report["num_new_rows"] else ""
        lines.append(f"lora: rank {lora['rank']} on {', '.join(lora['targets'])}{rows_note}: "
                     f"{_count(lora['trainable_params'])} trainable parameters, the base frozen in fp32 and replicated on every GPU as with ddp (lora with fsdp shards it: not modelled)")
    lines += ["", f"time = (6N + attention) x tokens / (GPUs x peak x MFU) = {report['wall_seconds']:,.0f} s = "
                  f"{report['wall_days']:.2f} days, {report['gpu_hours']:,.0f} GPU-hours" + (f", cost {report['cost']:,.0f}" if cost else "")
                  + " (N = parameters without the embeddings; attention = 12 x layers x q_dim x seq_len)"]
    offload = [s["memory_bytes"]["cpu_optimizer"] for n, s in report["strategies"].items() if n.endswith("_offload")]
    if offload:
        host = max(offload) * report["gpus_per_node"] / GIB
        lines.append(f"offload rows: {host:,.1f} GiB of host memory per node for fp32 gradients and optimizer state; their "
                     "time leaves out the CPU optimizer step and the PCIe transfers (measure one with train, then plan from_report=...)")
    measured = report["measured"]
    if measured:
        lines.append(f"measured ({measured['path']}): {measured['tokens_per_second']:,.0f} tokens/s on {measured['num_workers']} "
                     f"{measured['device']} worker(s), MFU {'unknown' if measured['mfu'] is None else round(measured['mfu'], 3)}; "
                     f"at that rate per GPU, scaled to {_count(report['num_params'])} parameters and {report['num_gpus']} GPUs: "
                     f"{measured['projected_tokens_per_second']:,.1f} tokens/s, {measured['projected_wall_days']:,.2f} days")
    return "\n".join(lines)


def run_plan(cfg: PlanConfig, run_dir: Path) -> dict:
    from kopretrain.console import print_out

    report = build_plan(cfg)
    print_out(format_table(report))  # `kopretrain plan | head -1`: the rest unread, report.json still written
    return report

