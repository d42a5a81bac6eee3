"""Training throughput: FLOPs per token, MFU, tokens/s, ETA and the run's projected cost (pure: no torch).

    flops_per_token = 6 N + 12 x layers x q_dim x seq_len        (PaLM, appendix B)

N is the parameters without the embedding matrices (the input embedding and the lm_head;
`ModelSize.non_embedding_params`), q_dim = heads x head_dim (= hidden for Llama, Mistral,
Qwen2, GPT-NeoX; Gemma's is larger). The attention term is the score and value matmuls counted
as dense (no causal halving), as PaLM does. LoRA: 4N + 6T + the attention term (the frozen base
needs no weight gradients; T = trainable parameters). `kopretrain plan` counts with the same
function (kopretrain/plan/estimate.py), so a measured MFU carries over to the plan unchanged.

    mfu = flops_per_token x tokens/s / sum of the ranks' peak FLOP/s

Per-rank peaks, so a group of mixed GPUs is measured against what it could do. None when any
rank has no known peak (CPU workers, an unknown accelerator without scale.peak_tflops_per_gpu).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FlopsShape:
    """What FLOPs per token depend on: the matmul parameters and the attention's shape."""

    non_embedding_params: int
    """Parameters outside the input embedding and the lm_head (PaLM's N)."""
    num_layers: int
    q_dim: int
    """Query width: num_heads x head_dim."""


def flops_per_token(shape: FlopsShape, seq_len: int, lora_trainable: int | None = None) -> float:
    """Training FLOPs per token: 6N + 12 x layers x q_dim x seq_len (LoRA: 4N + 6T + the same attention)."""
    n = shape.non_embedding_params
    dense = 6 * n if lora_trainable is None else 4 * n + 6 * lora_trainable
    return float(dense + attention_flops_per_token(shape, seq_len))


def attention_flops_per_token(shape: FlopsShape, seq_len: int) -> float:
    """The attention score and value matmuls, forward and backward: 12 x layers x q_dim x seq_len."""
    return float(12 * shape.num_layers * shape.q_dim * seq_len)


def shape_of_size(size) -> FlopsShape:
    """FlopsShape of a `kopretrain.plan.model_size.ModelSize` (from an HF config, no torch)."""
    return FlopsShape(size.non_embedding_params, size.num_layers, size.q_dim)


def shape_of_model(model) -> FlopsShape:
    """FlopsShape of an HF causal LM (counts `model.parameters()`, a tied matrix once), also once sharded:
    an FSDP2 DTensor counts its global shape, a ZeRO-3 partitioned parameter its `ds_numel`."""
    cfg = model.config
    # the embedding modules' own parameters, not `m.weight`: on peft's TrainableTokensWrapper that
    # is a property merging the new rows (an index_copy that fails on FSDP2's DTensors)
    embeddings = {id(p) for m in (model.get_input_embeddings(), model.get_output_embeddings())
                  if m is not None for p in m.parameters()}
    seen, n = set(), 0
    for p in model.parameters():
        if id(p) not in seen and id(p) not in embeddings:
            n += getattr(p, "ds_numel", None) or p.numel()
        seen.add(id(p))
    heads = int(cfg.num_attention_heads)
    head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // heads)
    return FlopsShape(n, int(cfg.num_hidden_layers), heads * head_dim)


def mfu(flops_token: float, tokens_per_second: float, peak_flops_per_rank: list[float]) -> float | None:
    """Model FLOPs utilisation of the whole group (None when a rank's peak is unknown or 0)."""
    if not peak_flops_per_rank or not all(peak_flops_per_rank):
        return None
    return flops_token * tokens_per_second / sum(peak_flops_per_rank)


def eta_seconds(steps_done: int, seconds: float, steps_left: int) -> float | None:
    """Time left at the pace of the `steps_done` steps measured over `seconds` (None before any)."""
    if steps_done <= 0 or seconds <= 0:
        return None
    return steps_left * seconds / steps_done


def projected(num_tokens: float, tokens_per_second: float, num_gpus: int) -> dict | None:
    """The whole run's wall time and GPU-hours at the measured throughput (None without num_tokens or a measurement)."""
    if not num_tokens or not tokens_per_second:
        return None
    seconds = num_tokens / tokens_per_second
    return {"num_tokens": float(num_tokens), "tokens_per_second": tokens_per_second, "num_gpus": num_gpus,
            "wall_seconds": seconds, "wall_days": seconds / 86400, "gpu_hours": seconds * num_gpus / 3600}


def human_duration(seconds: float) -> str:
    """75 -> '1m15s', 3725 -> '1h02m', 200000 -> '2d07h'."""
    s = int(round(seconds))
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


class Meter:
    """Throughput over windows of steps, from the loop's cumulative `tokens` and `train_seconds`
    (step time without checkpoints). `window()` gives tokens/s since the previous call; `eta`
    the time left at this process's average pace."""

    def __init__(self, num_steps: int, flops_token: float = 0.0, peak_flops_per_rank: list[float] | None = None):
        self.num_steps, self.flops_token = num_steps, flops_token
        self.peaks = list(peak_flops_per_rank or [])
        self.first: tuple[int, float] | None = None  # (step, train_seconds) when this process started
        self.mark: tuple[int, float] | None = None  # (tokens, train_seconds) at the previous window
        self.last: tuple[int, int, float] = (0, 0, 0.0)  # step, tokens, train_seconds

    def start(self, step: int, tokens: int, train_seconds: float) -> None:
        self.first, self.mark, self.last = (step, train_seconds), (tokens, train_seconds), (step, tokens, train_seconds)

    def update(self, step: int, tokens: int, train_seconds: float) -> dict:
        """This step's own tokens/s and MFU (for the per-step metrics)."""
        if self.first is None:
            self.start(step - 1, tokens, train_seconds)
        _, prev_tokens, prev_seconds = self.last
        self.last = (step, tokens, train_seconds)
        return self._rates(tokens - prev_tokens, train_seconds - prev_seconds)

    def window(self) -> dict:
        """tokens/s and MFU since the previous window, and the ETA."""
        step, tokens, seconds = self.last
        rates = self._rates(tokens - self.mark[0], seconds - self.mark[1])
        self.mark = (tokens, seconds)
        rates["eta_seconds"] = eta_seconds(step - self.first[0], seconds - self.first[1], self.num_steps - step)
        return rates

    def _rates(self, tokens: int, seconds: float) -> dict:
        tps = tokens / seconds if seconds > 0 else 0.0
        return {"tokens_per_second": tps, "mfu": mfu(self.flops_token, tps, self.peaks) if tps else None}
