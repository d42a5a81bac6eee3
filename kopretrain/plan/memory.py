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
    lora                      4N + 4T + 4R        4T                 8T          (T = adapters + new embedding rows; R = the new rows)

LoRA as kopretrain trains it (kopretrain/train/adapters.py): the frozen base stays fp32 (bf16 only
in autocast compute), and peft's trainable tokens keep the new rows twice, the trained delta (in
T) and a copy of their original values (R), per matrix (embed_tokens, and lm_head when untied).

The DeepSpeed rows are DeepSpeed's own estimators' terms (`estimate_zero2_model_states_mem_needs`:
2N + 18N/G; `estimate_zero3_model_states_mem_needs`: 4M + 18N/G; with cpu_offload: 2N and
4M + 2N/G), which tests/plan checks against the installed deepspeed.

Activations: the bytes autograd keeps per decoder layer per token in Hugging Face's bf16 models,
counted tensor by tensor after Korthikanti et al. 2022 ("Reducing Activation Recomputation in
Large Transformer Models", sec. 4.1: 34sbh + 5as^2b per layer for a GPT with dropout) and
checked against the tensors autograd saves (tests/plan/test_activations.py), h hidden, q and
kv the query and key/value widths (heads x head_dim), I the MLP width, a heads, s the sequence:

    llama, mistral, qwen2   16h + 4q + 4kv + 8I   two RMSNorms (fp32 input 4h, bf16 normalized 2h,
                                                  output 2h), Q, K, V, attention output, and the
                                                  gated MLP's gate, up, act(gate), product
    gemma                   20h + 4q + 4kv + 8I   its RMSNorm keeps the normalized input in fp32
    gpt_neox                6h + 10q + 4I         bf16 LayerNorms on one input, fused QKV, 4h GELU MLP
    + sdpa / flash          4a                    the fp32 log-sum-exp per head; no [s, s] matrix
    + eager                 6as + 4(q - kv)       fp32 softmax output and its bf16 copy, K and V
                                                  repeated to every head (gpt_neox: 6as - 2q)

For a GPT layer with a 4h MLP the sdpa count is 32h, the paper's 34h less its 2h of dropout masks
(these models train without dropout). With activation checkpointing (one checkpoint per decoder
layer, as HF gradient checkpointing) each layer keeps its 2h-byte input and one layer's full
activations are live while it is recomputed. The final norm adds 8h (10h gemma, 4h gpt_neox).

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


def lora_copied_rows(size: ModelSize, lora: Lora) -> int:
    """Elements of peft's copy of the original new rows (trainable tokens), 0 without trained rows."""
    return lora.num_new_rows * size.hidden * (1 if size.tied else 2) if lora.train_new_rows else 0


def model_states(strategy: str, size: ModelSize, num_gpus: int, trainable: int = 0, copied: int = 0) -> dict[str, float]:
    """{parameters, gradients, optimizer, cpu_optimizer}: bytes per GPU (cpu_*: per GPU's share on the host).

    `trainable`: the optimizer's elements (lora); `copied`: `lora_copied_rows`."""
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
        params, grads, optim = 4 * n + 4 * trainable + 4 * copied, 4 * trainable, 8 * trainable
    else:
        raise ValueError(f"unknown strategy {strategy!r}")
    return {"parameters": params, "gradients": grads, "optimizer": optim, "cpu_optimizer": cpu}


def activation_bytes_per_layer_token(size: ModelSize, seq_len: int, attention: str) -> float:
    """Bytes one decoder layer keeps per token without checkpointing (see the module docstring)."""
    h, q, kv, i, a = size.hidden, size.q_dim, size.kv_dim, size.intermediate, size.num_heads
    if size.model_type == "gpt_neox":
        kept, eager = 6 * h + 10 * q + 4 * i, 6 * a * seq_len - 2 * q
    else:
        norms = 2 * (10 if size.model_type == "gemma" else 8) * h
        kept, eager = norms + 4 * q + 4 * kv + (8 if size.gated_mlp else 4) * i, 6 * a * seq_len + 4 * (q - kv)
    return kept + (eager if attention == "eager" else 4 * a)


def final_norm_bytes_per_token(size: ModelSize) -> int:
    """The final norm's kept tensors per token (as one layer norm in the table above)."""
    return {"gemma": 10, "gpt_neox": 4}.get(size.model_type, 8) * size.hidden


def activations(size: ModelSize, micro_batch: int, seq_len: int, checkpointing: bool, attention: str) -> float:
    """Activation bytes of one micro-batch (decoder layers + the final norm)."""
    per_layer = activation_bytes_per_layer_token(size, seq_len, attention)
    if checkpointing:
        per_token = size.num_layers * 2 * size.hidden + per_layer
    else:
        per_token = size.num_layers * per_layer
    return micro_batch * seq_len * (per_token + final_norm_bytes_per_token(size))


def logits(size: ModelSize, micro_batch: int, seq_len: int) -> float:
    """Bytes of the logits and their gradients for one micro-batch (LOGIT_BYTES per element)."""
    return LOGIT_BYTES * micro_batch * seq_len * size.vocab_size


def plan_memory(strategy: str, size: ModelSize, num_gpus: int, micro_batch: int, seq_len: int,
                checkpointing: bool, attention: str, usable_bytes: float, trainable: int = 0,
                copied: int = 0) -> dict:
    """Every term in bytes, the total, whether it fits `usable_bytes` and the largest micro-batch that does."""
    states = model_states(strategy, size, num_gpus, trainable, copied)
    fixed = states["parameters"] + states["gradients"] + states["optimizer"]
    per_sequence = activations(size, 1, seq_len, checkpointing, attention) + logits(size, 1, seq_len)
    act, lg = micro_batch * per_sequence - logits(size, micro_batch, seq_len), logits(size, micro_batch, seq_len)
    total = fixed + act + lg
    max_micro_batch = max(0, int((usable_bytes - fixed) // per_sequence))
    return {**states, "activations": act, "logits": lg, "total": total, "usable": usable_bytes,
            "fits": total <= usable_bytes, "max_micro_batch": max_micro_batch}
