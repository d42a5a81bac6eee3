"""`eval.at_end` (kopretrain/train/eval_at_end.py, validate.py), no Ray: the base scored inside the
expanded model (base tokenizer, logits cut to the base's rows) equals `kopretrain eval` of the base
checkpoint; scoring it before the first step changes no loss, and a resumed run keeps it without
scoring again; the report part has `kopretrain eval`'s layout and `kopretrain report`'s columns."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kopretrain.config.eval import TrainEvalConfig
from kopretrain.tokenizer.load import load_tokenizer
from kopretrain.train.eval_at_end import base_reference, eval_report, metrics, summary_line
from kopretrain.train.loop import StageSpec, TrainState, train
from kopretrain.train.validate import Validator
from tests.train.conftest import NUM_BASE_TOKENS, expanded_overrides, smoke_cfg
from tests.train.test_loop import Recorder, plan, setup

ROOT = Path(__file__).resolve().parents[2]
HELDOUT = {"ko": str(ROOT / "data/heldout/ko.txt"), "en": str(ROOT / "data/heldout/en.txt")}
EVAL = TrainEvalConfig(heldout=HELDOUT, max_docs_per_domain=4, max_len=32, batch_size=3)


def _validator(tokenizer_dir, num_rows=None) -> Validator:
    return Validator.from_config(EVAL, load_tokenizer(tokenizer_dir), 128, 0, 1, num_steps=1, num_rows=num_rows)


def test_base_scored_in_the_expanded_model_equals_kopretrain_eval_of_the_base(base_model_dir, tmp_path):
    from kopretrain.config.common import TrackingConfig
    from kopretrain.config.eval import EvalConfig, KobestConfig
    from kopretrain.eval.command import run_eval
    from kopretrain.train.model import build_model, plan_model
    from kopretrain.train.strategies.base import StrategySettings
    from kopretrain.train.strategies.local import LocalStrategy

    model_plan = plan_model(smoke_cfg(*expanded_overrides(base_model_dir)))
    ref = base_reference(model_plan)
    assert (Path(ref.tokenizer_dir), ref.num_rows, ref.exact) == (Path(base_model_dir), NUM_BASE_TOKENS, True)
    model, _ = build_model(model_plan, seed=0)  # resized to 2,048 rows, the new ones mean-initialised
    assert model.get_output_embeddings().weight.shape[0] == 2048
    strategy = LocalStrategy(StrategySettings(device=torch.device("cpu")))
    strategy.wrap(model)
    got = _validator(ref.tokenizer_dir, ref.num_rows).score(strategy)
    want = run_eval(EvalConfig(model_dir=str(base_model_dir), heldout=HELDOUT, max_docs_per_domain=4, max_len=32,
                               kobest=KobestConfig(enabled=False), tracking=TrackingConfig(enabled=False)),
                    tmp_path / "eval")["domains"]
    for d in HELDOUT:
        for key in ("bpc", "loss_per_token"):
            assert got[d][key] == pytest.approx(want[d][key], abs=1e-5), (d, key)
        assert got[d]["perplexity"] == pytest.approx(want[d]["perplexity"], rel=1e-5)
        for key in ("num_docs", "num_chars", "num_tokens", "tokens_per_char", "num_rejected", "rejected"):
            assert got[d][key] == want[d][key], (d, key)
    uncut = _validator(ref.tokenizer_dir).score(strategy)  # the new rows' softmax mass: not the base's figure
    assert all(uncut[d]["bpc"] > got[d]["bpc"] + 1e-4 for d in HELDOUT)
    assert model.training  # back in train mode after scoring


class StartScoring(Recorder):
    """The worker's on_start: the base's scores into state.base_eval, once."""

    def __init__(self, strategy, validator, ckpt_root=None):
        super().__init__(strategy, ckpt_root)
        self.validator, self.starts = validator, 0

    def on_start(self, state):
        self.starts += 1
        rng = torch.get_rng_state()
        state.base_eval = self.validator.score(self.strategy)
        assert torch.equal(rng, torch.get_rng_state())


def test_base_before_the_first_step_changes_no_loss_and_survives_resume(tmp_path):
    from kopretrain.train.checkpoint import load_train_state, restore_rng

    stages = [StageSpec("train", 4)]
    strategy, datasets, sampler = setup()
    plain = train(strategy, datasets, sampler, plan(stages), TrainState(), Recorder())
    strategy, datasets, sampler = setup()
    hooks = StartScoring(strategy, _validator(ROOT / "data/smoke/tokenizer", 2000), tmp_path)
    scored = train(strategy, datasets, sampler, plan(stages, checkpoint_every_num_steps=2), TrainState(), hooks)
    assert [r["loss"] for r in scored.losses] == [r["loss"] for r in plain.losses]  # bitwise
    assert hooks.starts == 1 and set(scored.base_eval) == {"ko", "en"} and scored.base_eval["ko"]["bpc"] > 0

    state = load_train_state(tmp_path / "step-2")  # the base's scores travel in train_state.json
    assert state.base_eval == scored.base_eval
    strategy, datasets, sampler = setup()
    sampler.load_state_dict(state.sampler)
    restore_rng(tmp_path / "step-2", 0)
    again = StartScoring(strategy, _validator(ROOT / "data/smoke/tokenizer", 2000))
    resumed = train(strategy, datasets, sampler, plan(stages), state, again, resume_dir=tmp_path / "step-2")
    assert again.starts == 0 and resumed.base_eval == scored.base_eval
    assert [r["loss"] for r in resumed.losses] == [r["loss"] for r in plain.losses]


def test_report_part_has_kopretrain_evals_layout_and_reports_retention():
    from kopretrain.report.rows import Run, row

    def domain(bpc):
        return {"bpc": bpc, "loss_per_token": bpc / 2, "perplexity": 2 ** bpc, "tokens_per_char": 0.5,
                "num_docs": 4, "num_chars": 100, "num_tokens": 50}

    part = eval_report({"ko": domain(3.0), "en": domain(2.5)}, {"ko": domain(4.0), "en": domain(2.0)}, step=6)
    assert part["step"] == 6 and part["base_exact"] is True
    assert part["delta_bpc"] == {"ko": -1.0, "en": 0.5}
    assert part["retention"]["bpc_retained"] == {"ko": 4.0 / 3.0, "en": 0.8}
    logged = metrics(part)
    assert logged["en_bpc"] == 2.5 and logged["ko_bpc"] == 3.0 and logged["en_bpc_retained"] == 0.8
    assert logged["en_bpc_delta"] == 0.5 and logged["ko_loss_per_token_delta"] == -0.5
    r = row(Run("replay_ratio=0.5", {"mix.replay_ratio": "0.5"}, {"eval": part, "losses": [{"step": 6, "loss": 3.1}]}))
    assert (r["ko_bpc"], r["en_bpc"], r["base_ko_bpc"], r["base_en_bpc"]) == (3.0, 2.5, 4.0, 2.0)
    assert (r["ko_change"], r["en_change"], r["en_retained"], r["ko_gained"]) == (-1.0, 0.5, 0.8, 1.0)

    scratch = eval_report({"ko": domain(3.0)}, None, step=6)  # from scratch: no base, no changes
    assert set(scratch) == {"domains", "step"} and set(metrics(scratch)) == {"ko_bpc", "ko_loss_per_token", "ko_perplexity"}


def test_the_console_line_at_the_end_carries_the_kobest_mean_as_the_step_lines_do():
    def domain(bpc):
        return {"bpc": bpc, "loss_per_token": bpc / 2, "perplexity": 2 ** bpc}

    part = eval_report({"ko": domain(6.10254), "en": domain(4.35741)}, {"ko": domain(6.10921), "en": domain(4.33111)}, step=3)
    line = "eval at step 3: ko bpc 6.1025 (base 6.1092), en bpc 4.3574 (base 4.3311)"
    assert summary_line(part) == line  # no eval.kobest_tasks: no KoBEST part
    part["kobest"] = {"COPA": {"acc": 0.2, "macro_f1": 0.18, "num_items": 10}, "mean": {"acc": 0.2, "macro_f1": 0.18}}
    assert summary_line(part) == line + ", KoBEST mean acc 0.2000"


def test_at_end_alone_reads_the_heldout_in_the_driver_and_needs_a_domain(tmp_path):
    from kopretrain.errors import ConfigError, UserError
    from kopretrain.train.validate import check_heldout

    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"^eval\.heldout\.xx: "):
        check_heldout(TrainEvalConfig(heldout={"xx": str(tmp_path / "empty")}), 256)  # at_end is on by default
    check_heldout(TrainEvalConfig(at_end=False, heldout={"xx": str(tmp_path / "empty")}), 256)
    with pytest.raises(ConfigError, match="give at least one domain"):
        TrainEvalConfig(heldout={})
    TrainEvalConfig(heldout={}, at_end=False)


def test_base_reference_none_from_scratch_and_not_exact_when_new_tokens_reuse_padding_rows(base_model_dir):
    from types import SimpleNamespace

    from kopretrain.train.model import plan_model

    assert base_reference(plan_model(smoke_cfg())) is None  # from scratch: no base part, no changes
    same = SimpleNamespace(name_or_path=str(base_model_dir), tokenizer_dir=str(base_model_dir), new_rows=None,
                           model_vocab_size=1500, num_rows=1500)
    assert base_reference(same) == type(base_reference(same))(str(base_model_dir), None, True)  # its own tokenizer: all rows
    # Polyglot-Ko-like: 30,003 tokens in 30,080 rows, the new ones from 30,000 on, then grown to 30,144
    padded = SimpleNamespace(name_or_path=str(base_model_dir), tokenizer_dir="/elsewhere", model_vocab_size=30080,
                             num_rows=30144, new_rows=SimpleNamespace(rows=list(range(30000, 30144))))
    ref = base_reference(padded)
    assert (ref.tokenizer_dir, ref.num_rows, ref.exact) == (str(base_model_dir), 30080, False)
