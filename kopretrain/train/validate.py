"""Held-out bits per character per domain during training (`eval.every_num_steps`, `eval.at_end`), on all ranks.

    validator = Validator.from_config(cfg.eval, tokenizer, seq_len, rank, world_size, num_steps)
    metrics = validator.maybe_run(step, strategy)   # {} or {"eval/ko_bpc": .., "eval/ko_loss_per_token": .., ...}
    scores = validator.score(strategy)              # {"ko": {"bpc", "loss_per_token", "perplexity", ...}, ...}

`score` gives each domain in `kopretrain eval`'s report layout (kopretrain/eval/bpc.py `BpcResult.as_dict`).
A validator built with `num_rows` scores through `RestrictedRows`: the logits cut to the first
`num_rows` rows, so that the softmax runs over the base checkpoint's vocabulary only. Before the
first step the model's first rows are the base's (kopretrain/train/model_init.py writes only the
new rows), and with the base tokenizer no new row is ever a target: the score is the base
checkpoint's own (kopretrain/train/eval_at_end.py, tests/train/test_eval_at_end.py).

The documents (the first `max_docs_per_domain` of each held-out file, read once with prepare's
reader and put in NFC) are cut into the same windows as `kopretrain eval` scores
(`kopretrain.eval.bpc.document_windows`: each document after an EOS, as training packs them).
The windows are dealt to the ranks round-robin; a rank with one window fewer scores a copy of a
window with weight 0, so that every rank runs the same number of forward passes (a sharded
model's forward is collective). Each rank scores its windows through the model's own forward
(`strategy.model`: FSDP2 unshards there), in eval mode under no_grad, then one all-reduce sums
the nats per domain. The model goes back to train mode; no random number is drawn and nothing
of the training state changes, so a run with evals has the same losses and resumes exactly
(tests/train/test_validate.py).

Pure torch (no Ray): the loop's hooks call it (kopretrain/train/worker.py `RayHooks.on_step`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from kopretrain.eval.bpc import BpcResult, document_windows
from kopretrain.eval.scoring import Request, loglikelihoods


def deal_round_robin(items: list, rank: int, world_size: int) -> list[tuple[object, bool]]:
    """This rank's share of `items` dealt round-robin, as (item, True), padded with (a copy, False)
    so that every rank gets ceil(len / world_size) and runs the same number of forward passes (a
    sharded model's forward is collective); the copy is the rank's first item, or the first of all."""
    per_rank = math.ceil(len(items) / world_size)
    mine = [(item, True) for item in items[rank::world_size]]
    return mine + [((mine[0][0] if mine else items[0]), False)] * (per_rank - len(mine))


class RestrictedRows(torch.nn.Module):
    """`model`'s forward with the logits cut to the first `num_rows` rows (the base checkpoint's)."""

    def __init__(self, model, num_rows: int):
        super().__init__()
        self.inner, self.num_rows = model, num_rows
        self.train(model.training)  # loglikelihoods restores this mode on both

    def forward(self, **inputs):
        return _Logits(self.inner(**inputs).logits[..., : self.num_rows])


@dataclass
class _Logits:
    logits: torch.Tensor


@dataclass
class Validator:
    every_num_steps: int
    num_steps: int
    domains: list[str]
    mine: list[tuple[int, Request, float]]
    """This rank's windows: (domain index, request, weight 1 or 0 for a padding copy)."""
    num_chars: list[int]
    num_tokens: list[int]
    max_len: int
    batch_size: int
    pad_id: int
    num_docs: list[int] = field(default_factory=list)
    num_rows: int | None = None
    """Score with the logits cut to the first num_rows rows (the base's); None = all rows."""
    extra: dict[str, dict] = field(default_factory=dict)
    """Per domain, what the held-out reader reported (num_rejected, rejected), added to `score`'s entries."""
    kobest: object = None
    """KoBEST scored at the same evals (kopretrain/train/validate_kobest.py `KobestValidator`); None = none."""

    @classmethod
    def build(cls, texts: dict[str, list[str]], tokenizer, *, every_num_steps: int, num_steps: int, max_len: int,
              batch_size: int, rank: int, world_size: int, num_rows: int | None = None,
              extra: dict[str, dict] | None = None) -> Validator:
        """From the held-out texts per domain; every rank builds the same windows and keeps its share."""
        windows: list[tuple[int, Request]] = []
        num_chars, num_tokens = [], []
        for k, domain in enumerate(texts):
            requests, chars, tokens = document_windows(tokenizer, texts[domain], max_len)
            windows += [(k, r) for r in requests]
            num_chars.append(chars)
            num_tokens.append(tokens)
        mine = [(k, r, 1.0 if real else 0.0) for (k, r), real in deal_round_robin(windows, rank, world_size)]
        return cls(every_num_steps, num_steps, list(texts), mine, num_chars, num_tokens, max_len, batch_size,
                   tokenizer.eos_id, [len(texts[d]) for d in texts], num_rows, dict(extra or {}))

    @classmethod
    def from_config(cls, cfg, tokenizer, seq_len: int, rank: int, world_size: int, num_steps: int,
                    num_rows: int | None = None) -> Validator | None:
        """None when `cfg.every_num_steps` is 0 and `cfg.at_end` false; `cfg` is a `TrainEvalConfig`."""
        if not (cfg.every_num_steps or cfg.at_end):
            return None
        from kopretrain.eval.heldout import read_heldout_documents

        docs = {d: read_heldout_documents(d, path, cfg.max_docs_per_domain) for d, path in cfg.heldout.items()}
        return cls.build({d: v.texts for d, v in docs.items()}, tokenizer, every_num_steps=cfg.every_num_steps,
                         num_steps=num_steps, max_len=cfg.max_len or seq_len, batch_size=cfg.batch_size, rank=rank,
                         world_size=world_size, num_rows=num_rows,
                         extra={d: {"num_rejected": v.num_rejected, "rejected": v.rejected} for d, v in docs.items()})

    def due(self, step: int) -> bool:
        """Every `every_num_steps` steps (0 = never) and at the last step."""
        return bool(self.every_num_steps and step % self.every_num_steps == 0) or step == self.num_steps

    def maybe_run(self, step: int, strategy) -> dict[str, float]:
        return self.run(strategy) if self.due(step) else {}

    def run(self, strategy) -> dict[str, float]:
        """Every rank: score this rank's windows, all-reduce, return the step metrics (the same on every rank)."""
        return step_metrics(self.score(strategy))

    def score(self, strategy) -> dict[str, dict]:
        """Every rank: {domain: bpc, loss_per_token, perplexity, tokens_per_char, num_docs, num_chars, num_tokens}."""
        model = strategy.model if self.num_rows is None else RestrictedRows(strategy.model, self.num_rows)
        lls = loglikelihoods(model, [r for _, r, _ in self.mine], max_len=self.max_len,
                             batch_size=self.batch_size, device=strategy.s.device, pad_id=self.pad_id, split_head=False)
        nats = torch.zeros(len(self.domains), dtype=torch.float64)
        for (k, _, weight), ll in zip(self.mine, lls):
            nats[k] += -ll.logprob * weight
        nats = strategy.all_reduce_sum(nats).cpu().tolist()
        return {d: BpcResult(nats[k] / math.log(2), self.num_chars[k], self.num_tokens[k], self.num_docs[k]).as_dict()
                | self.extra.get(d, {}) for k, d in enumerate(self.domains)}


def step_metrics(scores: dict[str, dict]) -> dict[str, float]:
    """The step metrics of `score`'s result: eval/<domain>_bpc, eval/<domain>_loss_per_token."""
    out = {}
    for d, v in scores.items():
        out[f"eval/{d}_bpc"], out[f"eval/{d}_loss_per_token"] = v["bpc"], v["loss_per_token"]
    return out


def check_heldout(cfg, context: int | None) -> None:
    """In the driver, before Ray starts: `eval.max_len` fits the model's context and every
    `eval.heldout.<d>` has readable documents, each mistake one UserError naming its key (in the
    workers it would surface as a Ray Train traceback). `cfg` is a `TrainEvalConfig`."""
    from kopretrain.errors import UserError

    if not (cfg.every_num_steps or cfg.at_end):
        return
    if context is not None and cfg.max_len > context:
        raise UserError(f"eval.max_len={cfg.max_len} exceeds the model's context (max_position_embeddings={context})")
    from kopretrain.eval.heldout import read_heldout_documents

    for domain, path in cfg.heldout.items():
        try:
            read_heldout_documents(domain, path, cfg.max_docs_per_domain)
        except UserError as e:
            text = str(e)
            raise UserError("eval." + (text if text.startswith(f"heldout.{domain}:") else f"heldout.{domain}: {text}")) from None
