"""`eval.at_end`: a training run files its own held-out evaluation, against the base it started from.

    ref = base_reference(plan)                  # None: from scratch (no base); else (tokenizer dir, rows)
    part = eval_report(final, base)             # report.json `eval`, in `kopretrain eval`'s layout
    tracker.log_metrics(metrics(part))          # ko_bpc, en_bpc, ..., en_bpc_delta, en_bpc_retained

The workers score the held-out windows (kopretrain/train/validate.py, all ranks) twice:
- the base, before the first step (kopretrain/train/worker.py `RayHooks.on_start`), when the run
  starts from a pretrained checkpoint (`model.name_or_path`): with the base tokenizer (the base
  model directory's own, which `kopretrain eval base_model_dir=<dir>` uses too) and the logits cut to
  the base checkpoint's rows (`model_vocab_size`, its embedding rows before the resize). At that point
  those rows are the checkpoint's (only the new rows are written), base token ids never index a new
  row, and the softmax over the cut logits is the base model's: the score equals `kopretrain eval`
  of the base checkpoint (tests/train/test_eval_at_end.py). Kept in `TrainState.base_eval`, so a
  resumed run neither scores it again nor loses it. Not exact when the expanded tokenizer puts new
  tokens into padding rows the base matrix already had (they are re-initialised; `base_exact` is then
  false in the report). Not with deepspeed_zero3 (worker.py: a forward before the first step breaks
  ZeRO-3's parameter trace);
- the model, at the last step (with the run's tokenizer and all rows).

Pure Python (kopretrain/eval/forgetting.py does the comparison); no Ray.
"""

from __future__ import annotations

from dataclasses import dataclass

from kopretrain.eval.forgetting import compare, metrics, retention_line  # noqa: F401  (re-exported for the driver)


@dataclass(frozen=True)
class BaseReference:
    tokenizer_dir: str
    """The base's tokenizer: the base model directory's (or the run's when it adds no token)."""
    num_rows: int | None
    """Logits cut to these rows (the base checkpoint's embedding rows); None = the model has no more."""
    exact: bool
    """False when new tokens were written into rows the base matrix already had (its padding)."""


TOKENIZER_FILES = ["*.json", "*.model", "*.txt", "*.jinja", "*.tiktoken"]
"""A hub snapshot's files a tokenizer may need (configs, SentencePiece / BPE files, chat templates)."""


def base_reference(plan) -> BaseReference | None:
    """How to score the base of a run planned as `plan` (a `ModelPlan`); None when it has no base
    (from scratch). A hub id's tokenizer files come from its snapshot in the Hugging Face cache
    (downloaded there if need be; offline, the cached one)."""
    from pathlib import Path

    if not plan.name_or_path:
        return None
    new_rows = plan.new_rows
    if new_rows is None:
        tokenizer_dir = plan.tokenizer_dir
    elif Path(plan.name_or_path).is_dir():
        tokenizer_dir = plan.name_or_path
    else:
        from huggingface_hub import snapshot_download

        tokenizer_dir = snapshot_download(plan.name_or_path, allow_patterns=TOKENIZER_FILES)
    num_rows = plan.model_vocab_size if plan.num_rows > plan.model_vocab_size else None
    exact = new_rows is None or all(r >= plan.model_vocab_size for r in new_rows.rows)
    return BaseReference(tokenizer_dir, num_rows, exact)


def eval_report(domains: dict[str, dict], base: dict[str, dict] | None, step: int | None = None,
                base_exact: bool = True) -> dict:
    """report.json `eval`: {"domains", "step"} and with a base {"base", "base_exact", "delta", "delta_bpc", "retention"}."""
    part: dict = {"domains": domains, "step": step}
    if base:
        part["base"] = base
        part["base_exact"] = base_exact
        part.update(compare(part))
    return part


def summary_line(part: dict) -> str:
    """One console line: 'eval at step 6: ko bpc 4.1021 (base 5.3320), en bpc 2.9000 (base 2.8712)', with
    eval.kobest_tasks ', KoBEST mean acc 0.5400' as the step eval lines (kopretrain/train/worker.py)."""
    base = part.get("base") or {}
    items = [f"{d} bpc {v['bpc']:.4f}" + (f" (base {base[d]['bpc']:.4f})" if d in base else "")
             for d, v in part["domains"].items()]
    if (part.get("kobest") or {}).get("mean"):
        items.append(f"KoBEST mean acc {part['kobest']['mean']['acc']:.4f}")
    return f"eval at step {part.get('step')}: " + ", ".join(items)
