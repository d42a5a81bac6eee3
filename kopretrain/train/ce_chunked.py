"""Chunked linear cross-entropy in plain torch: the loss of `hidden @ weight.T` without full logits.

    loss_sum = chunked_linear_cross_entropy(hidden [N, H], weight [V, H], targets [N])

Positions are taken `chunk_size` at a time. For each chunk the logits ([chunk, V], fp32) are
computed, the loss summed, and, when a gradient is wanted, the gradient of that sum with
respect to the chunk's hidden states and to the weight computed right away (softmax minus
one-hot, through the softcap's tanh when there is one); the chunk's logits are then dropped.
Backward only multiplies the stored gradients by the incoming scalar. So neither forward nor
backward ever holds more than one chunk of logits: the memory is [N, H] (hidden gradient) plus
[V, H] fp32 (weight gradient), not [N, V] (Gemma's 256k vocabulary: 8 GB of fp32 logits per
8k-token sequence). Same idea as liger-kernel's fused linear cross-entropy, without Triton.

Precision: matmuls run in the autocast dtype when autocast is on (bf16 on GPU), else in the
hidden states' dtype; logits, softmax and the loss in fp32; the weight gradient accumulates
in fp32 over chunks.
"""

from __future__ import annotations

import torch

LOGITS_BYTES_PER_CHUNK = 256 * 2**20
"""chunk_size=0 picks as many positions as keep one chunk's fp32 logits under this many bytes."""


def auto_chunk_size(vocab_size: int) -> int:
    """Positions per chunk whose fp32 logits fit LOGITS_BYTES_PER_CHUNK (at least 1)."""
    return max(1, LOGITS_BYTES_PER_CHUNK // (4 * vocab_size))


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, softcap, chunk_size, ignore_index):
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        device_type = hidden.device.type
        dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else hidden.dtype
        acc = torch.promote_types(torch.float32, dtype)  # fp32 (fp64 for fp64 inputs, in tests)
        with torch.autocast(device_type, enabled=False):
            w = weight.to(dtype)
            per_position = torch.empty(hidden.shape[0], dtype=acc, device=hidden.device)
            grad_hidden = torch.empty_like(hidden) if need_hidden else None
            grad_weight = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_weight else None
            for start in range(0, hidden.shape[0], chunk_size):
                h = hidden[start : start + chunk_size].to(dtype)
                t = targets[start : start + chunk_size]
                logits = (h @ w.T).to(acc)
                if softcap:
                    logits.div_(softcap).tanh_()  # tanh(z / c); times c below
                    capped_tanh = logits.clone() if (need_hidden or need_weight) else None
                    logits.mul_(softcap)
                valid = None if ignore_index is None else t != ignore_index  # None: every position a target
                safe = t if valid is None else torch.where(valid, t, 0)
                lse = torch.logsumexp(logits, dim=-1)
                loss = lse - logits.gather(1, safe[:, None])[:, 0]
                per_position[start : start + chunk_size] = loss if valid is None else loss * valid
                if not (need_hidden or need_weight):
                    continue
                grad = logits.sub_(lse[:, None]).exp_()  # softmax, in place
                grad[torch.arange(len(t), device=t.device), safe] -= 1.0
                if valid is not None:
                    grad.mul_(valid[:, None])
                if softcap:
                    grad.mul_(1.0 - capped_tanh * capped_tanh)  # d(c tanh(z / c)) / dz
                grad = grad.to(dtype)
                if need_hidden:
                    grad_hidden[start : start + chunk_size] = (grad @ w).to(hidden.dtype)
                if need_weight:
                    grad_weight += (grad.T @ h).to(acc)
        ctx.weight_dtype = weight.dtype
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.mark_non_differentiable(per_position)
        return per_position.sum(), per_position

    @staticmethod
    def backward(ctx, grad_output, _grad_per_position):
        grad_hidden, grad_weight = ctx.saved_tensors  # unpacked once: a second backward fails on their version
        if grad_hidden is not None:
            grad_hidden.mul_(grad_output.to(grad_hidden.dtype))  # in place: no second [N, H] buffer
        if grad_weight is not None:
            grad_weight = grad_weight.mul_(grad_output).to(ctx.weight_dtype)  # no second fp32 [V, H] buffer
        return grad_hidden, grad_weight, None, None, None, None


def chunked_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                                 softcap: float | None = None, chunk_size: int = 0, ignore_index: int | None = -100,
                                 per_position: bool = False):
    """Sum over positions of cross_entropy(hidden @ weight.T (softcapped), targets); [N, H], [V, H], [N].

    `ignore_index`: targets equal to it count 0 (no gradient); None = every target counts (packed
    rows), which skips the masking pass over each chunk's logits. `per_position=True` returns
    (sum, [N] per-position losses, detached) from the same pass, for per-domain sums without
    one call per domain (each call keeps its own fp32 [V, H] weight gradient until backward).
    """
    chunk = chunk_size or auto_chunk_size(weight.shape[0])
    total, losses = _ChunkedLinearCrossEntropy.apply(hidden, weight, targets, softcap, chunk, ignore_index)
    return (total, losses) if per_position else total
