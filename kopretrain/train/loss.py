"""The training loss: summed cross-entropy over target tokens, per domain, without full logits.

    install_loss(model, "chunked", chunk_size=0)     # once; patches the causal LM's forward
    out = model(input_ids=x, loss_request=batch.request)   # through FSDP/DDP/DeepSpeed/peft
    out.loss       # sum of the micro-batch's per-token losses (differentiable, fp32)
    out.by_domain  # [num_domains] the same sum per domain (detached)

The loss is computed inside the model's own forward (its instance `forward` is replaced), so
FSDP2's root unit gathers lm_head/embeddings, DeepSpeed ZeRO-3 gathers them as an external
parameter, and peft's wrappers reach it, exactly as HF's loss would; only the last step
differs: the decoder (`model.model`, `model.gpt_neox`) gives the hidden states and the loss
is taken against the output weight (`lm_head.weight`, with peft's trainable new rows merged),
with Gemma-2's final-logit softcapping where the config has it. Then either

- `chunked` (kopretrain.train.ce_chunked, plain torch, CPU and GPU): positions in chunks, each
  chunk's logits and their gradient computed in forward and dropped; never `[tokens, vocab]`;
- `fused` (liger-kernel's LigerFusedLinearCrossEntropyLoss, GPU only, imported lazily).

Sums, not means: the loop (kopretrain/train/loop.py) divides by the step's global number of
target tokens. The rows of a micro-batch come grouped by domain (`LossRequest.groups`): `chunked`
takes the whole micro-batch in one call and sums its per-position losses per group; `fused` is
called once per group (liger returns no per-position losses).
"""

from __future__ import annotations

import types
from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput

from kopretrain.errors import UserError
from kopretrain.registry import LOSSES, LOSS_MODEL_TYPES, load

IGNORE_INDEX = -100


@dataclass
class LossRequest:
    """What the patched forward needs besides input_ids: the domain groups of the rows."""

    groups: list[tuple[int, int, int]]
    """(domain index, first row, end row) of each run of rows of one domain (rows sorted by domain)."""
    num_domains: int = 1
    targets: torch.Tensor | None = None
    """[rows, seq_len - 1] next-token targets (-100 = ignored); None = input_ids shifted by one."""


@dataclass
class MicroBatch:
    """One forward/backward's rows, grouped by domain, with their target counts known on the host."""

    input_ids: torch.Tensor
    """[rows, seq_len] on the device, rows sorted by domain."""
    request: LossRequest
    num_targets: int
    """Target tokens (labels != -100) of this micro-batch."""
    targets_by_domain: list[int]
    """The same per domain index."""

    @classmethod
    def of(cls, input_ids: torch.Tensor) -> "MicroBatch":
        """Every row one domain, every next token a target."""
        n = input_ids.shape[0] * (input_ids.shape[1] - 1)
        return cls(input_ids, LossRequest(groups=[(0, 0, input_ids.shape[0])]), n, [n])

    @classmethod
    def build(cls, rows, domains: list[int], num_domains: int, device: torch.device) -> "MicroBatch":
        """From host rows ([rows, seq_len] numpy) and each row's domain index: sorted by domain, counted."""
        import numpy as np

        order = sorted(range(len(domains)), key=lambda i: domains[i])  # stable
        rows, domains = rows[order], [domains[i] for i in order]
        counts = np.count_nonzero(rows[:, 1:] != IGNORE_INDEX, axis=1)
        groups, by_domain, start = [], [0] * num_domains, 0
        for i in range(1, len(domains) + 1):
            if i == len(domains) or domains[i] != domains[start]:
                groups.append((domains[start], start, i))
                by_domain[domains[start]] += int(counts[start:i].sum())
                start = i
        ids = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.int64)).to(device)
        return cls(ids, LossRequest(groups=groups, num_domains=num_domains), sum(by_domain), by_domain)


@dataclass
class LossOutput(ModelOutput):
    """A ModelOutput (a dict registered with torch's pytree), so that FSDP2 and ZeRO-3 find its
    tensors and hook the root module's backward on them, as on HF's CausalLMOutput."""

    loss: torch.Tensor | None = None
    """Sum of the per-token losses of the micro-batch (fp32, differentiable)."""
    by_domain: torch.Tensor | None = None
    """[num_domains] the same sum per domain (detached)."""


def check_loss(name: str, model_type: str, use_gpu: bool, key: str = "loss.name") -> None:
    """One-line UserError before Ray when `name` cannot run on this model or device."""
    if name not in LOSSES:
        raise UserError(f"{key}: {name!r} is not one of {sorted(LOSSES)}")
    if model_type not in LOSS_MODEL_TYPES:
        raise UserError(f"{key}: model_type {model_type!r} has no causal-LM loss here "
                        f"(supported: {', '.join(sorted(LOSS_MODEL_TYPES))})")
    if name == "fused":
        import importlib.util

        if not use_gpu:
            raise UserError(f"{key}: fused (liger-kernel) runs on GPU only; use loss.name=chunked on CPU")
        if importlib.util.find_spec("liger_kernel") is None:
            raise UserError(f"{key}: fused needs liger-kernel (pip install liger-kernel); or use loss.name=chunked")


def causal_lm(model: torch.nn.Module) -> torch.nn.Module:
    """The HF *ForCausalLM inside `model` (itself, or the base model of a peft model)."""
    return model.get_base_model() if hasattr(model, "peft_config") else model


def output_weight(lm_head: torch.nn.Module) -> torch.Tensor:
    """The weight the logits are computed with: lm_head's, with peft's trainable new rows merged in."""
    adapter = getattr(lm_head, "token_adapter", None)  # peft TrainableTokensWrapper
    if adapter is not None:
        if adapter.merged or adapter.disable_adapters or not adapter.active_adapters:
            return adapter.base_layer.weight
        return adapter.get_merged_weights(adapter.active_adapters)
    if not isinstance(lm_head, torch.nn.Linear) or lm_head.bias is not None:
        raise UserError(f"loss.name: the output layer is a {type(lm_head).__name__} (with bias or adapters); "
                        "the chunked/fused loss needs a plain bias-free lm_head")
    return lm_head.weight


def install_loss(model: torch.nn.Module, name: str = "chunked", chunk_size: int = 0) -> torch.nn.Module:
    """Make `model(input_ids=..., loss_request=...)` return a LossOutput (idempotent); returns the causal LM."""
    lm = causal_lm(model)
    model_type = getattr(lm.config, "model_type", "")
    if model_type not in LOSS_MODEL_TYPES:
        raise UserError(f"loss.name: model_type {model_type!r} has no causal-LM loss here "
                        f"(supported: {', '.join(sorted(LOSS_MODEL_TYPES))})")
    if getattr(lm, "_kopretrain_loss", None) == (name, chunk_size):
        return lm
    if not hasattr(lm, "_kopretrain_hf_forward"):
        lm._kopretrain_hf_forward = lm.forward  # the bound HF forward, for calls without a loss request
    lm._kopretrain_loss = (name, chunk_size)
    lm._kopretrain_loss_fn = load(LOSSES, name)
    lm.forward = types.MethodType(_loss_forward, lm)
    return lm


def _loss_forward(self, input_ids=None, attention_mask=None, loss_request: LossRequest | None = None, **kwargs):
    if loss_request is None:
        return self._kopretrain_hf_forward(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    kwargs = {k: v for k, v in kwargs.items() if v is not None and k not in ("labels", "return_dict")}
    decoder = getattr(self, self.base_model_prefix)
    hidden = decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **kwargs).last_hidden_state
    targets = loss_request.targets if loss_request.targets is not None else input_ids[:, 1:]
    hidden = hidden[:, :-1]
    weight = output_weight(self.get_output_embeddings())
    softcap = getattr(self.config, "final_logit_softcapping", None)
    _, chunk_size = self._kopretrain_loss
    loss_fn = self._kopretrain_loss_fn
    ignore = IGNORE_INDEX if loss_request.targets is not None else None  # shifted input_ids: every position a target
    if getattr(loss_fn, "per_position", False):  # one pass over every row, per-domain sums from its per-position losses
        rows, width = hidden.shape[0], hidden.shape[1]
        total, losses = loss_fn(hidden.reshape(-1, hidden.shape[-1]), weight, targets.reshape(-1), softcap=softcap,
                                chunk_size=chunk_size, ignore_index=ignore, per_position=True)
        per_row = losses.view(rows, width).sum(dim=1)
        by_domain = torch.zeros(loss_request.num_domains, dtype=total.dtype, device=total.device)
        for domain, start, end in loss_request.groups:
            by_domain[domain] += per_row[start:end].sum()
        return LossOutput(loss=total, by_domain=by_domain)
    sums = []  # one call per domain group (liger returns no per-position losses)
    for domain, start, end in loss_request.groups:
        h = hidden[start:end].reshape(-1, hidden.shape[-1])
        sums.append(loss_fn(h, weight, targets[start:end].reshape(-1), softcap=softcap, chunk_size=chunk_size))
    total = sum(sums[1:], sums[0])
    by_domain = torch.zeros(loss_request.num_domains, dtype=total.dtype, device=total.device)
    for (domain, _, _), s in zip(loss_request.groups, sums):
        by_domain[domain] += s.detach()
    return LossOutput(loss=total, by_domain=by_domain)


def chunked_cross_entropy(hidden, weight, targets, softcap=None, chunk_size=0, ignore_index=IGNORE_INDEX,
                          per_position=False):
    """Sum of cross-entropies of `hidden @ weight.T` against `targets`, in chunks of positions
    (`per_position`: also the [N] per-position losses, detached; `ignore_index=None`: no target ignored)."""
    from kopretrain.train.ce_chunked import chunked_linear_cross_entropy

    return chunked_linear_cross_entropy(hidden, weight, targets, softcap=softcap, chunk_size=chunk_size,
                                        ignore_index=ignore_index, per_position=per_position)


chunked_cross_entropy.per_position = True  # _loss_forward: one call per micro-batch, not one per domain group


_LIGER: dict = {}


def fused_cross_entropy(hidden, weight, targets, softcap=None, chunk_size=0) -> torch.Tensor:
    """The same sum by liger-kernel's fused linear cross-entropy (Triton, GPU)."""
    if softcap not in _LIGER:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

        _LIGER[softcap] = LigerFusedLinearCrossEntropyLoss(ignore_index=IGNORE_INDEX, reduction="sum", softcap=softcap)
    out = _LIGER[softcap](weight, hidden, targets)
    out = out[0] if isinstance(out, tuple) else getattr(out, "loss", out)
    return out.float()


def full_logits_loss(model: torch.nn.Module, input_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Reference (tests): HF's own forward, full logits, as (sum over target tokens, number of targets)."""
    lm = causal_lm(model)
    forward = getattr(lm, "_kopretrain_hf_forward", lm.forward)
    logits = forward(input_ids=input_ids).logits[:, :-1]
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    targets = input_ids[:, 1:]
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                             ignore_index=IGNORE_INDEX, reduction="sum")
    return loss, int((targets != IGNORE_INDEX).sum())
