"""KoBEST through lm-evaluation-harness itself, offline: its `kobest_*` task definitions and its
`HFLM` wrapper on an already-loaded model, fed the local TSVs.

    result, samples = lm_eval_kobest(model, hf_tokenizer, cfg.kobest, max_len=128)
    result["COPA"] == {"acc": .., "macro_f1": .., "num_items": ..}   # same shape as score_kobest
    samples["COPA"] == [{"context": str, "logprobs": [float per choice]}, ...]

The reference that `kopretrain.eval.kobest` is checked against (tests/eval/test_kobest_lmeval.py).
The task YAMLs shipped in the lm_eval package are read with their `!function` helpers; the
Hugging Face `skt/kobest_v1` download is replaced by lm-eval's `custom_dataset` hook returning the
documents of `kobest_data.read_task` (validation = dev, test = test; few-shot examples from dev).
The Hugging Face offline switches are set, so nothing reaches the network. Needs `lm-eval`
(a pinned dependency); not used on the `kopretrain eval` path.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from kopretrain.eval.kobest_data import read_task

LM_EVAL_TASK = {"BoolQ": "kobest_boolq", "COPA": "kobest_copa", "HellaSwag": "kobest_hellaswag",
                "SentiNeg": "kobest_sentineg", "WiC": "kobest_wic"}
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1"}


def task_config(task: str, cfg) -> dict:
    """lm-eval's YAML definition of `task`, pointed at the local TSVs."""
    import datasets
    import lm_eval
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    utils = importlib.import_module("lm_eval.tasks.kobest.utils")
    Loader.add_constructor("!function", lambda loader, node: getattr(utils, loader.construct_scalar(node).split(".")[-1]))
    path = Path(lm_eval.__file__).parent / "tasks" / "kobest" / f"{LM_EVAL_TASK[task]}.yaml"
    config = yaml.load(path.read_text(encoding="utf-8"), Loader=Loader)
    evaluated = read_task(cfg.data_dir, task, cfg.split)  # lm-eval applies the limit itself
    dev = read_task(cfg.data_dir, task, "dev")

    def dataset(**_):
        return datasets.DatasetDict({"validation": datasets.Dataset.from_list(dev),
                                     "test": datasets.Dataset.from_list(evaluated)})

    config.pop("dataset_path", None)
    config.pop("dataset_name", None)
    # few-shot from dev; when dev is also the split evaluated, name it "test" so that lm-eval
    # leaves an item out of its own examples (it does so when the two split names are equal)
    config.update(custom_dataset=dataset, training_split=None, validation_split="validation", test_split="test",
                  fewshot_split="test" if cfg.split == "dev" else "validation", num_fewshot=cfg.num_fewshot)
    return config


def lm_eval_kobest(model, hf_tokenizer, cfg, *, max_len: int, device: str = "cpu") -> tuple[dict, dict]:
    """(result, samples) of lm-eval's own evaluation of `cfg.tasks` (see the module docstring)."""
    os.environ.update(OFFLINE)
    from lm_eval import evaluator
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.models.huggingface import HFLM

    tasks = {}
    for task in cfg.tasks:
        t = ConfigurableTask(config=task_config(task, cfg))
        t.set_fewshot_seed(cfg.seed)
        tasks[LM_EVAL_TASK[task]] = t
    lm = HFLM(pretrained=model, tokenizer=hf_tokenizer, batch_size=cfg.batch_size, max_length=max_len, device=device)
    out = evaluator.evaluate(lm, tasks, limit=cfg.limit or None, log_samples=True, verbosity="ERROR")
    result, samples = {}, {}
    for task in cfg.tasks:
        r = out["results"][LM_EVAL_TASK[task]]
        result[task] = {"acc": r["acc,none"], "macro_f1": r["f1,none"], "num_items": len(out["samples"][LM_EVAL_TASK[task]])}
        samples[task] = [{"context": s["arguments"][0][0] if isinstance(s["arguments"][0], (list, tuple)) else None,
                          "logprobs": [resp[0][0] for resp in s["resps"]]}
                         for s in sorted(out["samples"][LM_EVAL_TASK[task]], key=lambda s: s["doc_id"])]
    return result, samples
