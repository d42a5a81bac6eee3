"""KoBEST by log-likelihood of the answer choices, zero- and k-shot.

    result = score_kobest(model, tokenizer, cfg.kobest, max_len=512)
    result["COPA"] == {"acc": .., "macro_f1": .., "num_items": ..}; result["mean"] == {"acc": .., "macro_f1": ..}

The prompts, choices and targets are those of lm-evaluation-harness 0.4.13's `kobest_*` task
definitions (lm_eval/tasks/kobest), its multiple-choice formatting (few-shot examples as
`prompt + " " + answer`, separated by a blank line; the choice scored as `" " + choice`, the
context's trailing spaces moved onto it before encoding) and its few-shot draw
(`random.Random(seed).sample` of the dev split per item, in item order; an item of the dev split
is never its own example). The prediction is the choice with the highest summed log-likelihood
(lm-eval's `acc`); macro-F1 is over the labels present in the gold answers and predictions
(scikit-learn's `f1_score(average="macro")`, as lm-eval reports `f1`). tests/eval/test_kobest_lmeval.py
shows identical prompts, log-likelihoods and scores to lm-eval's own `HFLM` on a tiny model.

Scored by `kopretrain.eval.scoring.loglikelihoods` (no BOS is added: the prompt starts the
sequence, as in lm-eval with `add_bos_token` off). Pure torch; no Ray.
"""

from __future__ import annotations

import random

from kopretrain.eval.kobest_data import read_task
from kopretrain.eval.scoring import Request, loglikelihoods

TARGET_DELIMITER = " "
FEWSHOT_DELIMITER = "\n\n"
_YES_NO = ["아니오", "예"]


def doc_to_text(task: str, doc: dict) -> str:
    if task == "BoolQ":
        return f"{doc['paragraph']} 질문: {doc['question']} 답변: "
    if task == "COPA":
        connector = {"원인": " 왜냐하면", "결과": " 그래서"}[doc["question"].strip()]
        return f"{doc['premise']} {connector}"
    if task == "HellaSwag":
        return f"문장: {doc['context']}"
    if task == "SentiNeg":
        return f"문장: {doc['sentence']} 긍부정:"
    if task == "WiC":
        return f"문장1: {doc['context_1']} 문장2: {doc['context_2']} 두 문장에서 {doc['word']}가 같은 뜻으로 쓰였나?"
    raise ValueError(task)


def doc_to_choice(task: str, doc: dict) -> list[str]:
    if task in ("BoolQ", "WiC"):
        return list(_YES_NO)
    if task == "COPA":
        return [doc["alternative_1"], doc["alternative_2"]]
    if task == "HellaSwag":
        return [doc[f"ending_{i}"] for i in range(1, 5)]
    if task == "SentiNeg":
        return ["부정", "긍정"]
    raise ValueError(task)


def contexts(task: str, docs: list[dict], fewshot_docs: list[dict], num_fewshot: int, seed: int,
             same_split: bool) -> list[str]:
    """The prompt of each item, its few-shot examples first (drawn as lm-eval draws them)."""
    rnd = random.Random(seed)
    out = []
    for doc in docs:
        if num_fewshot == 0:
            shots = []
        elif same_split:  # draw one more and drop the item itself
            shots = [d for d in rnd.sample(fewshot_docs, num_fewshot + 1) if d != doc][:num_fewshot]
        else:
            shots = rnd.sample(fewshot_docs, num_fewshot)
        prefix = "".join(doc_to_text(task, d) + TARGET_DELIMITER + doc_to_choice(task, d)[d["label"]] + FEWSHOT_DELIMITER
                         for d in shots)
        out.append(prefix + doc_to_text(task, doc))
    return out


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-eval's HFLM._encode_pair: trailing spaces of the context go to the continuation, and the
    continuation's ids are those of `context + continuation` after the context's."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    whole, ctx = tokenizer.encode_batch([context + continuation, context])
    return list(ctx), list(whole)[len(ctx):]


def macro_f1(golds: list[int], preds: list[int]) -> float:
    """Mean over the labels seen (in golds or preds) of each label's F1 (0 where undefined)."""
    scores = []
    for label in sorted(set(golds) | set(preds)):
        tp = sum(g == label and p == label for g, p in zip(golds, preds))
        fp = sum(g != label and p == label for g, p in zip(golds, preds))
        fn = sum(g == label and p != label for g, p in zip(golds, preds))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(scores) / len(scores)


def fewshot_shortage(task: str, num_fewshot: int, num_dev: int, split: str) -> str:
    """Why `num_fewshot` examples cannot be drawn from a dev split of `num_dev` items ('' when they can):
    scoring the dev split itself, an item is never its own example (zero-shot draws nothing)."""
    available = num_dev - (split == "dev")
    if not num_fewshot or num_fewshot <= available:
        return ""
    return (f"the {task} dev split has {available} examples to draw from, {num_fewshot} needed"
            + (" (scoring the dev split, an item is not its own example)" if split == "dev" else ""))


def task_requests(tokenizer, task: str, cfg) -> tuple[list[dict], list[list[Request]]]:
    """The items of one task and, per item, one request per choice."""
    docs = read_task(cfg.data_dir, task, cfg.split, cfg.limit)
    fewshot_docs = read_task(cfg.data_dir, task, "dev") if cfg.num_fewshot else []
    short = fewshot_shortage(task, cfg.num_fewshot, len(fewshot_docs), cfg.split)
    if short:
        from kopretrain.errors import UserError

        raise UserError(f"kobest.num_fewshot={cfg.num_fewshot}: {short}")
    prompts = contexts(task, docs, fewshot_docs, cfg.num_fewshot, cfg.seed, same_split=cfg.split == "dev")
    requests = []
    for doc, prompt in zip(docs, prompts):
        pairs = [encode_pair(tokenizer, prompt, TARGET_DELIMITER + c) for c in doc_to_choice(task, doc)]
        requests.append([Request(ctx or [tokenizer.eos_id], cont) for ctx, cont in pairs])
    return docs, requests


def task_result(docs: list[dict], requests: list[list[Request]], logprobs: list[float]) -> dict:
    """{"acc", "macro_f1", "num_items"} of one task from each choice's summed log-likelihood (in the
    order of `requests`, flattened); also used by KoBEST during training (kopretrain/train/validate_kobest.py)."""
    preds, pos = [], 0
    for per_doc in requests:
        scores = logprobs[pos : pos + len(per_doc)]
        preds.append(max(range(len(scores)), key=scores.__getitem__))  # first of equal maxima, as numpy.argmax
        pos += len(per_doc)
    golds = [d["label"] for d in docs]
    return {"acc": sum(g == p for g, p in zip(golds, preds)) / len(golds), "macro_f1": macro_f1(golds, preds),
            "num_items": len(golds)}


def with_mean(result: dict) -> dict:
    """`result` (task -> scores) with "mean": the unweighted mean of acc and macro_f1 over its tasks."""
    if result:
        tasks = [t for t in result if t != "mean"]
        result["mean"] = {k: sum(result[t][k] for t in tasks) / len(tasks) for k in ("acc", "macro_f1")}
    return result


def score_kobest(model, tokenizer, cfg, *, max_len: int, device="cpu") -> dict:
    """Accuracy, macro-F1 and the number of items per task of `cfg.tasks`, and their means."""
    result: dict = {}
    for task in cfg.tasks:
        docs, requests = task_requests(tokenizer, task, cfg)
        flat = [r for per_doc in requests for r in per_doc]
        lls = loglikelihoods(model, flat, max_len=max_len, batch_size=cfg.batch_size, device=device,
                             pad_id=tokenizer.eos_id)
        result[task] = task_result(docs, requests, [ll.logprob for ll in lls])
    return with_mean(result)
