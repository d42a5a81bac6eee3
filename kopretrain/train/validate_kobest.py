"""KoBEST during training (`eval.kobest_tasks`), at every held-out eval, on all ranks.

    kobest = KobestValidator.from_config(cfg.eval, tokenizer, max_len, rank, world_size)
    result = kobest.score(strategy)     # {"COPA": {"acc", "macro_f1", "num_items"}, "mean": {"acc", "macro_f1"}}
    step_metrics(result)                # {"eval/kobest_copa_acc": .., "eval/kobest_copa_macro_f1": .., "eval/kobest_mean_acc": ..}

The items (the first `eval.kobest_max_items` of `eval.kobest_split` per task), their prompts and
one request per answer choice are `kopretrain eval`'s (kopretrain/eval/kobest.py `task_requests`),
and so are accuracy and macro-F1 (`task_result`): the result is `kopretrain eval`'s on the same
items and weights (tests/train/test_validate_kobest.py). The requests of all tasks are dealt to the
ranks round-robin, as the held-out windows are (kopretrain/train/validate.py): a rank with one
fewer scores a copy with weight 0, so every rank runs the same number of forward passes (a
sharded model's forward is collective). Each rank puts its log-likelihoods at their places in one
float64 vector of all requests; one all-reduce sums them, and every rank computes the same scores.
Scored through the model's own forward in eval mode under no_grad (`loglikelihoods` restores
train mode); no random number is drawn (the few-shot draw is a seeded `random.Random`).

Pure torch (no Ray): kopretrain/train/worker.py `RayHooks` calls it with the held-out eval.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kopretrain.eval.kobest import task_requests, task_result, with_mean
from kopretrain.eval.scoring import Request, loglikelihoods
from kopretrain.train.validate import deal_round_robin


@dataclass
class KobestValidator:
    tasks: list[str]
    docs: dict[str, list[dict]]
    requests: dict[str, list[list[Request]]]
    mine: list[tuple[int, Request]]
    """This rank's requests: (index in all tasks' flattened requests, request); -1 = a padding copy."""
    num_requests: int
    max_len: int
    batch_size: int
    pad_id: int

    @classmethod
    def build(cls, kobest_cfg, tokenizer, *, max_len: int, rank: int, world_size: int) -> KobestValidator:
        """`kobest_cfg` is a `KobestConfig` (TrainEvalConfig.kobest_config()); every rank reads the same items."""
        docs, requests, flat = {}, {}, []
        for task in kobest_cfg.tasks:
            docs[task], requests[task] = task_requests(tokenizer, task, kobest_cfg)
            flat += [r for per_doc in requests[task] for r in per_doc]
        mine = [(i if real else -1, r) for (i, r), real in deal_round_robin(list(enumerate(flat)), rank, world_size)]
        return cls(list(kobest_cfg.tasks), docs, requests, mine, len(flat), max_len, kobest_cfg.batch_size,
                   tokenizer.eos_id)

    @classmethod
    def from_config(cls, cfg, tokenizer, max_len: int, rank: int, world_size: int) -> KobestValidator | None:
        """None when `cfg.kobest_tasks` is empty; `cfg` is a `TrainEvalConfig`."""
        if not cfg.kobest_tasks:
            return None
        return cls.build(cfg.kobest_config(), tokenizer, max_len=max_len, rank=rank, world_size=world_size)

    def score(self, strategy) -> dict:
        """Every rank: `kopretrain eval`'s report `kobest` layout, the same on every rank."""
        lls = loglikelihoods(strategy.model, [r for _, r in self.mine], max_len=self.max_len,
                             batch_size=self.batch_size, device=strategy.s.device, pad_id=self.pad_id,
                             split_head=False)
        logprobs = torch.zeros(self.num_requests, dtype=torch.float64)
        for (i, _), ll in zip(self.mine, lls):
            if i >= 0:
                logprobs[i] = ll.logprob
        flat = strategy.all_reduce_sum(logprobs).cpu().tolist()
        result, pos = {}, 0
        for task in self.tasks:
            n = sum(len(per_doc) for per_doc in self.requests[task])
            result[task] = task_result(self.docs[task], self.requests[task], flat[pos : pos + n])
            pos += n
        return with_mean(result)


def step_metrics(result: dict) -> dict[str, float]:
    """eval/kobest_<task>_acc and _macro_f1 (task in lower case, and mean) of `score`'s result."""
    return {f"eval/kobest_{task.lower()}_{m}": v[m] for task, v in result.items() for m in ("acc", "macro_f1")}


def check_kobest(cfg) -> None:
    """In the driver, before Ray starts: every KoBEST file `eval.kobest_*` needs reads, else one
    UserError naming the key (in the workers it would surface as a Ray Train traceback)."""
    from kopretrain.errors import UserError
    from kopretrain.eval.kobest import fewshot_shortage
    from kopretrain.eval.kobest_data import read_task

    if not cfg.kobest_tasks or not (cfg.every_num_steps or cfg.at_end):
        return
    kcfg = cfg.kobest_config()
    for task in kcfg.tasks:
        try:
            read_task(kcfg.data_dir, task, kcfg.split, kcfg.limit)
            short = fewshot_shortage(task, kcfg.num_fewshot, len(read_task(kcfg.data_dir, task, "dev")),
                                     kcfg.split) if kcfg.num_fewshot else ""
        except UserError as e:  # read_task's messages name eval's key: this is the train key
            raise UserError("eval.kobest_data_dir: " + str(e).removeprefix("kobest: ")
                            .replace("(kobest.data_dir holds", "(eval.kobest_data_dir holds")) from None
        if short:
            raise UserError(f"eval.kobest_num_fewshot={kcfg.num_fewshot}: {short}")
