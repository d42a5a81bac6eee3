"""kopretrain's KoBEST scorer against lm-evaluation-harness 0.4.13 itself (its kobest_* task
definitions and HFLM on the same tiny model and items, offline): identical prompts, the same
log-likelihood per choice, identical accuracy and macro-F1, zero-shot and few-shot, test and dev."""

from __future__ import annotations

import pytest

from kopretrain.config.eval import KOBEST_TASKS, KobestConfig
from kopretrain.eval.kobest import contexts, score_kobest, task_requests
from kopretrain.eval.kobest_data import read_task
from kopretrain.eval.scoring import loglikelihoods
from kopretrain.tokenizer.load import load_tokenizer
from tests.helpers import make_tiny_llama_dir

MAX_LEN = 96  # shorter than most BoolQ prompts: both left-truncate the same way


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, repo_root):
    import transformers

    texts = []
    for task in KOBEST_TASKS:
        texts += [" ".join(map(str, d.values())) for d in read_task(repo_root / "data/kobest", task, "dev")[:60]]
    d = make_tiny_llama_dir(tmp_path_factory.mktemp("kobest"), texts, max_position_embeddings=MAX_LEN)
    return (transformers.AutoModelForCausalLM.from_pretrained(d), load_tokenizer(d),
            transformers.AutoTokenizer.from_pretrained(d))


@pytest.mark.parametrize("num_fewshot,split", [(0, "test"), (2, "test"), (1, "dev")])
def test_scores_prompts_and_loglikelihoods_equal_lm_eval(tiny, repo_root, num_fewshot, split):
    pytest.importorskip("lm_eval")
    from kopretrain.eval.lmeval import lm_eval_kobest

    model, tok, hf = tiny
    cfg = KobestConfig(data_dir=str(repo_root / "data/kobest"), split=split, num_fewshot=num_fewshot, limit=5, batch_size=8)
    ours = score_kobest(model, tok, cfg, max_len=MAX_LEN)
    theirs, samples = lm_eval_kobest(model, hf, cfg, max_len=MAX_LEN)
    for task in KOBEST_TASKS:
        docs, requests = task_requests(tok, task, cfg)
        prompts = contexts(task, docs, read_task(cfg.data_dir, task, "dev") if num_fewshot else [], num_fewshot,
                           cfg.seed, same_split=split == "dev")
        assert prompts == [s["context"] for s in samples[task]], task
        flat = [r for per_doc in requests for r in per_doc]
        lls = iter(loglikelihoods(model, flat, max_len=MAX_LEN, batch_size=3, chunk_size=7))
        for per_doc, sample in zip(requests, samples[task]):
            mine = [next(lls).logprob for _ in per_doc]
            assert mine == pytest.approx(sample["logprobs"], abs=1e-3), task
        assert ours[task] == pytest.approx(theirs[task], abs=1e-9), task
        assert ours[task]["num_items"] == 5
    assert ours["mean"]["acc"] == pytest.approx(sum(ours[t]["acc"] for t in KOBEST_TASKS) / 5)
