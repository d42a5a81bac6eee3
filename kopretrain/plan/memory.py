"""Bytes per GPU of one training run, per strategy: parameters, gradients, optimizer state,
activations and logits; whether it fits and the largest micro-batch that does.

Model states (AdamW, bf16 compute), N parameters, G GPUs, M = the largest module's parameters:

    strategy                  parameters          gradients          optimizer (fp32 master + 2 moments)
    ddp                       4N fp32 + 2N bf16   4N + 4N buckets    8N          (autocast; DDP's buckets copy the grads)
    fsdp (FSDP2)              4N/G + 2 x 2L       4N/G + 2L          8N/G        (L = one decoder layer, gathered bf16, + prefetch)
    deepspeed_zero2           2N                  (2 + 4)N/G         (4 + 8)N/G
    deepspeed_zero3           2N/G + 4M           4N/G               (4 + 8)N/G
    deepspeed_zero2_offload   2N                  0 (CPU)            0 (CPU)
    deepspeed_zero3_offload   2N/G + 4M           0 (CPU)            0 (CPU)
    lora                      2N frozen bf16 + 4T  4T                8T          (T = adapters + new embedding rows)

The DeepSpeed rows are DeepSpeed's own estimators' terms (`estimate_zero2_model_states_mem_needs`:
2N + 18N/G; `estimate_zero3_model_states_mem_needs`: 4M + 18N/G; with cpu_offload: 2N and
4M + 2N/G), which tests/plan checks against the installed deepspeed.

Activations per decoder layer per token, bf16 (2 bytes), without activation checkpointing: the
tensors autograd keeps (Korthikanti et al. 2022, "Reducing Activation Recomputation in Large
Transformer Models", sec. 4.1, counted for GQA and gated MLPs without dropout):
2 x (4h + 2 q_dim + 2 kv_dim + k x I) bytes, k = 4 for a gated MLP (gate, up, act(gate), product)
and 2 for a plain one (fc1 out, act out); for a GPT with a 4h MLP this is the paper's 34sbh less
its 2sbh of dropout masks. With attention=eager the softmax adds the paper's 5as^2b (5 x heads x
seq bytes per token); SDPA / flash attention keep no [s, s] matrix. With activation checkpointing
(one checkpoint per decoder layer, as HF gradient checkpointing) each layer keeps its 2h-byte
input and one layer's full activations are live during its recomputation.

Logits: [micro_batch, seq, vocab] as bf16 logits (2 bytes), the fp32 log-softmax cross-entropy
keeps (4), its fp32 gradient (4) and the bf16 gradient (2): 12 bytes per element, all live at the
start of backward. At Gemma's 256k vocabulary this is 12 GiB per 4k-token sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

from kopretrain.plan.model_size import ModelSize

STRATEGIES = ("ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3", "deepspeed_zero2_offload",
              "deepspeed_zero3_offload", "lora")
ATTENTION = ("sdpa", "flash", "eager")
LOGIT_BYTES = 12


@dataclass(frozen=True)
class Lora:
    """LoRA adapters: rank, target modules ([] = every linear of a decoder layer), new rows trained."""

    rank: int = 16
    targets: tuple[str, ...] = ()
    train_new_rows: bool = True
    num_new_rows: int = 0


def lora_trainable_params(size: ModelSize, lora: Lora) -> int:
    """Adapters (r x (in + out) per target per layer) + the new embedding rows (and lm_head rows if untied)."""
    targets = lora.targets or tuple(size.linears)
    adapters = size.num_layers * sum(lora.rank * sum(size.linears[t]) for t in targets)
    rows = lora.num_new_rows * size.hidden * (1 if size.tied else 2) if lora.train_new_rows else 0
    return adapters + rows


def model_states(strategy: str, size: ModelSize, num_gpus: int, trainable: int = 0) -> dict[str, float]:
    """{parameters, gradients, optimizer, cpu_optimizer}: bytes per GPU (cpu_*: per GPU's share on the host)."""
    n, g, m = size.total_params, num_gpus, size.largest_module_params
    layer = size.layer_params
    cpu = 0.0
    if strategy == "ddp":
        params, grads, optim = 6 * n, 8 * n, 8 * n
    elif strategy == "fsdp":
        params, grads, optim = 4 * n / g + 4 * layer, 4 * n / g + 2 * layer, 8 * n / g
    elif strategy == "deepspeed_zero2":
        params, grads, optim = 2 * n, 6 * n / g, 12 * n / g
    elif strategy == "deepspeed_zero3":
        params, grads, optim = 2 * n / g + 4 * m, 4 * n / g, 12 * n / g
    elif strategy == "deepspeed_zero2_offload":
        params, grads, optim, cpu = 2 * n, 0.0, 0.0, 16 * n / g
    elif strategy == "deepspeed_zero3_offload":
        params, grads, optim, cpu = 2 * n / g + 4 * m, 0.0, 0.0, 16 * n / g
    elif strategy == "lora":
        params, grads, optim = 2 * n + 4 * trainable, 4 * trainable, 8 * trainable
    else:
        raise ValueError(f"unknown strategy {strategy!r}")
    return {"parameters": params, "gradients": grads, "optimizer": optim, "cpu_optimizer": cpu}


def activation_bytes_per_layer_token(size: ModelSize, seq_len: int, attention: str) -> float:
    """Bytes one decoder layer keeps per token without checkpointing (see the module docstring)."""
    k = 4 if size.gated_mlp else 2
    elements = 4 * size.hidden + 2 * size.q_dim + 2 * size.kv_dim + k * size.intermediate
    return 2 * elements + (5 * size.num_heads * seq_len if attention == "eager" else 0)


def activations(size: ModelSize, micro_batch: int, seq_len: int, checkpointing: bool, attention: str) -> float:
    """Activation bytes of one micro-batch (decoder layers + the final norm's input and output)."""
    per_layer = activation_bytes_per_layer_token(size, seq_len, attention)
    if checkpointing:
        per_token = size.num_layers * 2 * size.hidden + per_layer
    else:
        per_token = size.num_layers * per_layer
    return micro_batch * seq_len * (per_token + 4 * size.hidden)


def logits(size: ModelSize, micro_batch: int, seq_len: int) -> float:
    """Bytes of the logits and their gradients for one micro-batch (LOGIT_BYTES per element)."""
    return LOGIT_BYTES * micro_batch * seq_len * size.vocab_size


def plan_memory(strategy: str, size: ModelSize, num_gpus: int, micro_batch: int, seq_len: int,
                checkpointing: bool, attention: str, usable_bytes: float, trainable: int = 0) -> dict:
    """Every term in bytes, the total, whether it fits `usable_bytes` and the largest micro-batch that does."""
    states = model_states(strategy, size, num_gpus, trainable)
    fixed = states["parameters"] + states["gradients"] + states["optimizer"]
    per_sequence = activations(size, 1, seq_len, checkpointing, attention) + logits(size, 1, seq_len)
    act, lg = micro_batch * per_sequence - logits(size, micro_batch, seq_len), logits(size, micro_batch, seq_len)
    total = fixed + act + lg
    max_micro_batch = max(0, int((usable_bytes - fixed) // per_sequence))
    return {**states, "activations": act, "logits": lg, "total": total, "usable": usable_bytes,
            "fits": total <= usable_bytes, "max_micro_batch": max_micro_batch}
