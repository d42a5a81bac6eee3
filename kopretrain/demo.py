"""`kopretrain demo` (`make demo`): the whole Korean continual-pretraining loop, end to end,
on the shipped sample, a local Ray instance and a tiny model. No internet, no pretrained weights.

What a user does to Llama-2 with kopretrain, the demo does to a base it builds itself:

1. prepare     clean + dedup the shipped Korean and English samples with Ray Data;
2. tokenizer   train a small English SentencePiece BPE (the "English base" tokenizer) and
               expand it with the Hangul pieces of a Korean SentencePiece BPE;
3. tokens      pack the clean text with the base and with the expanded tokenizer;
4. base        pretrain a tiny Llama on English only (the "English base" model);
5. sweep       `kopretrain train -m mix.replay_ratio=0,0.2` (a real Hydra multirun in a child
               process, joined to this Ray instance): resize + mean-initialise the new embeddings,
               continue pretraining on Korean with 0% and 20% English replay, FSDP on 2 workers;
6. eval        bits per character on held-out Korean and English for the base and each run,
               printed as a table (bpc, not loss, because the vocabularies differ).

Everything is filed in MLflow under one parent run; each step is a child run.

Before any work, every config the demo derives for its steps (prepare, tokenizer, the base's
train config, each sweep job's composed `kopretrain train` config, eval) is built and
validated through the same schema classes; an error names the demo key it came from
(`check_derived`). The console gets the stage lines; Ray's logs go to `<run dir>/logs/` and to
each step's directory (kopretrain/ray_session.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from kopretrain.config.demo import DemoConfig
from kopretrain.console import say
from kopretrain.errors import ConfigError, UserError
from kopretrain.paths import CONF_DIR, PROJECT_ROOT, resolve_path

_PLACEHOLDER_RUN_ID = "0" * 32  # stands for the parent MLflow run while checking the derived configs


def _say(message: str) -> None:
    say("demo", message)


def _child_tracking(cfg: DemoConfig, parent_run_id: str, name: str):
    return dataclasses.replace(cfg.tracking, parent_run_id=parent_run_id, run_name=f"demo-{name}")


# ------------------------------------------------------------------ the derived configs
def _prepare_config(cfg: DemoConfig, work: Path, tokenizer: str, tokens_dir: Path | None, tracking):
    from kopretrain.config.prepare import PrepareConfig, TokenizeConfig

    return PrepareConfig(
        sources=list(cfg.sources), output_dir=str(work / "prepared"), seq_len=cfg.seq_len,
        tokenizer=TokenizeConfig(path=tokenizer), tokens_dir=str(tokens_dir or ""),
        read_chunk_bytes=1 << 20, ray=cfg.ray, tracking=tracking,
    )


def _tokenizer_config(cfg: DemoConfig, work: Path, tracking):
    from kopretrain.config.tokenizer import BaseTrainConfig, SampleConfig, SpmTrainConfig, TokenizerCommandConfig

    prepared = str(work / "prepared")
    return TokenizerCommandConfig(
        base="", corpus=[prepared], output_dir=str(work / "tokenizer" / "expanded"),
        num_new_tokens=cfg.num_new_tokens, pad_to_multiple_of=64,
        sample=SampleConfig(domain="ko", seed=cfg.seed),
        spm=SpmTrainConfig(vocab_size=cfg.korean_vocab_size, seed=cfg.seed),
        train_base=BaseTrainConfig(corpus=prepared, domain="en", vocab_size=cfg.base_vocab_size),
        heldout=dict(cfg.heldout), max_heldout_docs=cfg.max_heldout_docs, tracking=tracking,
    )


def _base_train_config(cfg: DemoConfig, tokenizer: str, tokens_dir: Path, tracking):
    import dataclasses

    from kopretrain.config.train import (BatchConfig, CheckpointConfig, DataConfig, MixConfig, ModelConfig,
                                         OptimConfig, ScaleConfig, TrainConfig)

    t = cfg.base_train
    return TrainConfig(
        model=ModelConfig(arch=dict(cfg.model_arch)), tokenizer=tokenizer,
        data=DataConfig(tokens_dir=str(tokens_dir)), mix=MixConfig(replay_ratio=None, weights={"en": 1.0}),
        strategy=dataclasses.replace(cfg.strategy), scale=ScaleConfig(num_workers=cfg.num_workers),
        optim=OptimConfig(lr=t.lr, lr_warmup_steps=t.lr_warmup_steps),
        batch=BatchConfig(num_sequences_per_step=t.num_sequences_per_step, micro_batch_size=t.micro_batch_size),
        num_steps=t.num_steps, checkpoint=CheckpointConfig(every_num_steps=0), seed=cfg.seed,
        ray=cfg.ray, tracking=tracking,
    )


def _sweep_overrides(cfg: DemoConfig, base_model: str, tokenizer: str, tokens_dir: Path, parent_run_id: str,
                     ray_address: str) -> list[str]:
    """`kopretrain train` overrides of the sweep, less the swept `mix.replay_ratio` and `-m`."""
    t = cfg.cpt_train
    s = cfg.strategy
    # a strategy with an option file is chosen as a group, as the demo's own strategy= was; else by name
    group = f"strategy={s.name}" if (Path(CONF_DIR) / "strategy" / f"{s.name}.yaml").exists() else f"strategy.name={s.name}"
    return [
        "model=pretrained", f"model.name_or_path={base_model}", "model.gradient_checkpointing=false",
        f"tokenizer={tokenizer}", f"data.tokens_dir={tokens_dir}",
        group, f"strategy.mixed_precision={s.mixed_precision}",
        f"strategy.fsdp_reshard_after_forward={str(s.fsdp_reshard_after_forward).lower()}",
        f"scale.num_workers={cfg.num_workers}",
        f"num_steps={t.num_steps}", f"optim.lr={t.lr}", f"optim.lr_warmup_steps={t.lr_warmup_steps}",
        f"batch.num_sequences_per_step={t.num_sequences_per_step}", f"batch.micro_batch_size={t.micro_batch_size}",
        "checkpoint.every_num_steps=0", f"seed={cfg.seed}",
        f"tracking.enabled={str(cfg.tracking.enabled).lower()}", f"tracking.uri={_abs_uri(cfg)}",
        f"tracking.experiment_name={cfg.tracking.experiment_name}", f"tracking.parent_run_id={parent_run_id}",
        f"ray.address={ray_address}", f"ray.verbose={str(cfg.ray.verbose).lower()}",
    ]


def _eval_config(cfg: DemoConfig):
    from kopretrain.config.eval import EvalConfig

    return EvalConfig(model_dir="demo", heldout=dict(cfg.heldout), max_docs_per_domain=cfg.max_heldout_docs)


# derived key -> the demo key it comes from ({t}: base_train or cpt_train); leaf names are what a
# nested schema's own check raises before the parent adds its prefix
_DEMO_KEYS = {
    "strategy.name": "strategy.name", "name": "strategy.name", "scale.num_workers": "num_workers", "num_workers": "num_workers",
    "num_steps": "{t}.num_steps", "optim.lr": "{t}.lr", "lr": "{t}.lr",
    "optim.lr_warmup_steps": "{t}.lr_warmup_steps", "lr_warmup_steps": "{t}.lr_warmup_steps",
    "batch.micro_batch_size": "{t}.micro_batch_size", "micro_batch_size": "{t}.micro_batch_size",
    "batch.num_sequences_per_step": "{t}.num_sequences_per_step", "num_sequences_per_step": "{t}.num_sequences_per_step",
    "model.arch": "model_arch", "seed": "seed", "mix.replay_ratio": "replay_ratios", "replay_ratio": "replay_ratios",
    "seq_len": "seq_len", "sources": "sources", "num_new_tokens": "num_new_tokens",
    "spm.vocab_size": "korean_vocab_size", "vocab_size": "korean_vocab_size", "train_base.vocab_size": "base_vocab_size",
    "heldout": "heldout", "max_heldout_docs": "max_heldout_docs", "max_docs_per_domain": "max_heldout_docs",
}


def _demo_error(cfg: DemoConfig, step: str, t: str, exc: UserError) -> UserError:
    """An error in a derived config, said in the demo's own keys."""
    if not isinstance(exc, ConfigError):
        return UserError(f"{step}: {exc}")
    key, message = exc.key, exc.message
    if key.endswith("num_sequences_per_step") and "multiple" in message:
        tc = getattr(cfg, t)
        per_pass = tc.micro_batch_size * cfg.num_workers
        return UserError(f"{t}.num_sequences_per_step: {tc.num_sequences_per_step} is not a multiple of "
                         f"{t}.micro_batch_size x num_workers ({tc.micro_batch_size} x {cfg.num_workers} = {per_pass})")
    if key.endswith("name") and cfg.strategy.name == "local" and cfg.num_workers > 1:
        return UserError(f"strategy.name: 'local' trains on one worker; set num_workers=1 too, or use strategy=ddp, "
                         f"fsdp or deepspeed_* with num_workers={cfg.num_workers}")
    for prefix in ("tracking.", "ray."):
        if key.startswith(prefix):
            return UserError(f"{key}: {message}")
    demo_key = _DEMO_KEYS.get(key)
    if demo_key is None:
        return UserError(f"{step}: {key}: {message}")
    return UserError(f"{demo_key.format(t=t)}: {message}")


def _compose_train(overrides: list[str]):
    """`kopretrain train <overrides>` composed and typed, as the sweep's child process will."""
    from hydra.core.global_hydra import GlobalHydra

    from kopretrain.cli import compose_typed

    running = GlobalHydra.instance().hydra if GlobalHydra.instance().is_initialized() else None
    try:
        return compose_typed("train", overrides)
    finally:
        if running is not None:  # inside the demo's own Hydra app: give it its Hydra back
            GlobalHydra.instance().clear()
            GlobalHydra.instance().initialize(running)


def check_derived(cfg: DemoConfig, work: Path) -> None:
    """Build every config the demo derives, before any work; errors name the demo's keys."""
    import dataclasses

    tracking = dataclasses.replace(cfg.tracking, parent_run_id=_PLACEHOLDER_RUN_ID, run_name="demo-check")
    tok_dir, tokens = work / "tokenizer" / "expanded", work / "tokens" / "expanded"
    checks = [
        ("prepare", "", lambda: _prepare_config(cfg, work, "", None, tracking)),
        ("pack", "", lambda: _prepare_config(cfg, work, str(tok_dir), tokens, tracking)),
        ("tokenizer", "", lambda: _tokenizer_config(cfg, work, tracking)),
        ("base_model", "base_train", lambda: _base_train_config(cfg, str(tok_dir), tokens, tracking)),
        ("eval", "", lambda: _eval_config(cfg)),
    ]
    for ratio in cfg.replay_ratios:
        overrides = [f"mix.replay_ratio={ratio}", *_sweep_overrides(cfg, str(work / "base" / "model"), str(tok_dir),
                                                                    tokens, _PLACEHOLDER_RUN_ID, "127.0.0.1:6379")]
        checks.append(("replay_sweep", "cpt_train", lambda o=overrides: _compose_train(o)))
    for step, t, build in checks:
        try:
            build()
        except UserError as exc:
            raise _demo_error(cfg, step, t or "base_train", exc) from None


# ------------------------------------------------------------------ the steps
def _prepare(cfg: DemoConfig, work: Path, tokenizer: str, tokens_dir: Path | None, tracking) -> dict:
    from kopretrain.data.command import run_prepare

    run_dir = work / ("prepare" if not tokenizer else f"pack-{Path(tokens_dir).name}")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_prepare(_prepare_config(cfg, work, tokenizer, tokens_dir, tracking), run_dir)


def _tokenizers(cfg: DemoConfig, work: Path, tracking) -> dict:
    from kopretrain.tokenizer.command import run_tokenizer

    return run_tokenizer(_tokenizer_config(cfg, work, tracking), work / "tokenizer")


def _train_base(cfg: DemoConfig, work: Path, tokenizer: str, tokens_dir: Path, tracking) -> dict:
    from kopretrain.train.command import run_train

    run_dir = work / "base"
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_train(_base_train_config(cfg, tokenizer, tokens_dir, tracking), run_dir)


def _sweep(cfg: DemoConfig, work: Path, base_model: str, tokenizer: str, tokens_dir: Path, parent_run_id: str) -> dict:
    """The continual-pretraining sweep as a user runs it: a Hydra multirun of `kopretrain train`."""
    import ray

    sweep_dir = work / "cpt"
    overrides = [
        "-m", f"mix.replay_ratio={','.join(str(r) for r in cfg.replay_ratios)}",
        *_sweep_overrides(cfg, base_model, tokenizer, tokens_dir, parent_run_id, ray.get_runtime_context().gcs_address),
        f"hydra.sweep.dir={sweep_dir}",
    ]
    cmd = [sys.executable, "-m", "kopretrain", "train", *overrides]
    _say("$ kopretrain train " + " ".join(overrides))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(cmd, cwd=PROJECT_ROOT, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"the continual-pretraining sweep failed (exit {proc.returncode}); see the output above")
    return json.loads((sweep_dir / "report.json").read_text(encoding="utf-8"))


def _abs_uri(cfg: DemoConfig) -> str:
    from kopretrain.tracking import resolve_tracking_uri

    return resolve_tracking_uri(cfg.tracking.uri)


def _evaluate(cfg: DemoConfig, models: dict[str, str]) -> dict[str, dict]:
    """bpc per domain for each {name: model dir} (each dir holds its own tokenizer)."""
    from kopretrain.eval.command import evaluate_model
    from kopretrain.eval.heldout import read_heldout

    texts = {d: read_heldout(p, cfg.max_heldout_docs) for d, p in cfg.heldout.items()}
    ecfg = _eval_config(cfg)
    return {name: evaluate_model(path, "", texts, ecfg) for name, path in models.items()}


def format_table(report: dict) -> str:
    base = report["base"]
    lines = [
        f"{'replay_ratio':>12}  {'ko_bpc':>7}  {'en_bpc':>7}  {'ko vs base':>10}  {'en vs base':>10}",
        f"{'base':>12}  {base['ko_bpc']:>7.3f}  {base['en_bpc']:>7.3f}  {'':>10}  {'':>10}",
    ]
    for row in report["rows"]:
        lines.append(f"{row['replay_ratio']:>12.2f}  {row['ko_bpc']:>7.3f}  {row['en_bpc']:>7.3f}  "
                     f"{row['ko_bpc_change']:>+10.3f}  {row['en_bpc_change']:>+10.3f}")
    return "\n".join(lines)


def run_demo(cfg: DemoConfig, run_dir: Path) -> dict:
    from kopretrain.ray_session import init_ray, route_logs
    from kopretrain.tracking import start_run

    for domain, path in cfg.heldout.items():
        if not resolve_path(path).is_file():
            raise UserError(f"heldout.{domain}: file not found: {path}")
    work = (resolve_path(cfg.work_dir) if cfg.work_dir else run_dir).resolve()
    check_derived(cfg, work)
    work.mkdir(parents=True, exist_ok=True)
    route_logs(run_dir / "logs", cfg.ray.verbose)
    parent = start_run(cfg.tracking, run_name=f"demo-{run_dir.name}", config=cfg)
    timings: dict[str, float] = {}
    report: dict = {"work_dir": str(work), "mlflow_run_id": parent.run_id}

    def step(name: str, fn, *args):
        _say(f"--- {name}")
        t0 = time.perf_counter()
        out = fn(*args)
        timings[name] = round(time.perf_counter() - t0, 1)
        _say(f"{name}: {timings[name]} s")
        return out

    try:
        init_ray(cfg.ray, log_dir=run_dir / "logs")
        child = lambda name: _child_tracking(cfg, parent.run_id, name)  # noqa: E731
        prep = step("prepare", _prepare, cfg, work, "", None, child("prepare"))
        tok = step("tokenizer", _tokenizers, cfg, work, child("tokenizer"))
        base_tok, expanded_tok = tok["trained_base"], tok["output_dir"]
        tokens_base, tokens_expanded = work / "tokens" / "base", work / "tokens" / "expanded"
        step("pack_base", _prepare, cfg, work, base_tok, tokens_base, child("pack-base"))
        step("pack_expanded", _prepare, cfg, work, expanded_tok, tokens_expanded, child("pack-expanded"))
        base = step("base_model", _train_base, cfg, work, base_tok, tokens_base, child("base"))
        sweep = step("replay_sweep", _sweep, cfg, work, base["model_path"], expanded_tok, tokens_expanded, parent.run_id)
        models = {"base": base["model_path"]}
        models.update({str(i): job["report"]["model_path"] for i, job in enumerate(sweep["jobs"])})
        bpc = step("eval", _evaluate, cfg, models)
    except BaseException:
        parent.end("FAILED")
        raise

    report["base"] = {"ko_bpc": bpc["base"]["ko"]["bpc"], "en_bpc": bpc["base"]["en"]["bpc"],
                      "model_path": base["model_path"], "vocab_size": tok["base_vocab_size"],
                      "final_loss": base["losses"][-1]["loss"]}
    report["rows"] = []
    for i, job in enumerate(sweep["jobs"]):
        r = bpc[str(i)]
        report["rows"].append({
            "replay_ratio": job["report"]["weights"].get("en", 0.0),
            "ko_bpc": r["ko"]["bpc"], "en_bpc": r["en"]["bpc"],
            "ko_bpc_change": r["ko"]["bpc"] - report["base"]["ko_bpc"],
            "en_bpc_change": r["en"]["bpc"] - report["base"]["en_bpc"],
            "token_share": job["report"]["token_share"], "model_path": job["report"]["model_path"],
            "run_dir": job["run_dir"], "mlflow_run_id": job["report"].get("mlflow_run_id", ""),
        })
    report["rows"].sort(key=lambda row: row["replay_ratio"])
    report["tokenizer"] = {"base_vocab_size": tok["base_vocab_size"], "vocab_size": tok["vocab_size"],
                           "num_added": tok["num_added"], "tokens_ratio_base_to_expanded": tok["tokens_ratio_base_to_expanded"]}
    report["prepare"] = {k: prep[k] for k in ("docs_in", "docs_out") if k in prep}
    report["timings_s"] = timings
    report["total_s"] = round(sum(timings.values()), 1)

    print()
    print(format_table(report))
    print(f"(bits per character on held-out text; lower is better; {report['total_s']} s in all)")
    parent.log_metrics({"base_ko_bpc": report["base"]["ko_bpc"], "base_en_bpc": report["base"]["en_bpc"]})
    for row in report["rows"]:
        tag = f"replay_{row['replay_ratio']:g}"
        parent.log_metrics({f"{tag}_ko_bpc": row["ko_bpc"], f"{tag}_en_bpc": row["en_bpc"]})
    parent.log_metrics({f"time_{k}_s": v for k, v in timings.items()})
    parent.log_dict(report, "report.json")
    parent.end()
    return report
