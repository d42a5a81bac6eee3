"""The configs `kopretrain demo` derives for its steps, and their check before any work.

Each step of the demo (kopretrain/demo.py) runs a command with a config built here from the
demo's own keys: prepare and packing (`prepare_config`), the tokenizers (`tokenizer_config`),
the English base (`base_train_config`), the replay sweep (`sweep_overrides`: a `kopretrain train`
multirun in a child process) and eval (`eval_config`). `check_derived` builds all of them
first, through the same schema classes (the sweep's through Hydra, as its child process will
compose it), with stand-ins for what earlier steps produce, builds the base model's HF config
from `model_arch` (and checks `seq_len` against its context), and says an error in the demo's keys:

    $ kopretrain demo num_workers=3
    kopretrain demo: error: base_train.num_sequences_per_step: 16 is not a multiple of base_train.micro_batch_size x num_workers (8 x 3 = 24)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from kopretrain.config.demo import DemoConfig
from kopretrain.errors import ConfigError, UserError
from kopretrain.paths import CONF_DIR

_PLACEHOLDER_RUN_ID = "0" * 32  # stands for the parent MLflow run while checking the derived configs


def prepare_config(cfg: DemoConfig, work: Path, tokenizer: str, tokens_dir: Path | None, tracking):
    from kopretrain.config.prepare import PrepareConfig, TokenizeConfig

    return PrepareConfig(
        sources=list(cfg.sources), output_dir=str(work / "prepared"), seq_len=cfg.seq_len,
        tokenizer=TokenizeConfig(path=tokenizer), tokens_dir=str(tokens_dir or ""),
        read_chunk_bytes=1 << 20, ray=cfg.ray, tracking=tracking,
    )


def tokenizer_config(cfg: DemoConfig, work: Path, tracking):
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


def base_train_config(cfg: DemoConfig, tokenizer: str, tokens_dir: Path, tracking):
    from kopretrain.config.eval import TrainEvalConfig
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
        eval=TrainEvalConfig(at_end=False),  # the demo scores every model itself (demo.py `_evaluate`)
        ray=cfg.ray, tracking=tracking,
    )


def sweep_overrides(cfg: DemoConfig, base_model: str, tokenizer: str, tokens_dir: Path, parent_run_id: str,
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
        "checkpoint.every_num_steps=0", f"seed={cfg.seed}", "eval.at_end=false",  # the demo scores the runs itself
        f"tracking.enabled={str(cfg.tracking.enabled).lower()}", f"tracking.uri={abs_tracking_uri(cfg)}",
        f"tracking.experiment_name={cfg.tracking.experiment_name}", f"tracking.parent_run_id={parent_run_id}",
        f"ray.address={ray_address}", f"ray.verbose={str(cfg.ray.verbose).lower()}",
    ]


def eval_config(cfg: DemoConfig):
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


def check_base_model(cfg: DemoConfig) -> None:
    """The base model's HF config as transformers builds it, and seq_len against its context."""
    from kopretrain.train.model import arch_config

    config = arch_config(cfg.model_arch, vocab_size=cfg.base_vocab_size, key="model_arch")
    context = getattr(config, "max_position_embeddings", None)
    if context and cfg.seq_len > context:
        raise UserError(f"seq_len: {cfg.seq_len} is longer than the base model's context "
                        f"(model_arch.max_position_embeddings={context})")


def check_derived(cfg: DemoConfig, work: Path) -> None:
    """Build every config the demo derives, before any work; errors name the demo's keys."""
    check_base_model(cfg)
    tracking = dataclasses.replace(cfg.tracking, parent_run_id=_PLACEHOLDER_RUN_ID, run_name="demo-check")
    tok_dir, tokens = work / "tokenizer" / "expanded", work / "tokens" / "expanded"
    checks = [
        ("prepare", "", lambda: prepare_config(cfg, work, "", None, tracking)),
        ("pack", "", lambda: prepare_config(cfg, work, str(tok_dir), tokens, tracking)),
        ("tokenizer", "", lambda: tokenizer_config(cfg, work, tracking)),
        ("base_model", "base_train", lambda: base_train_config(cfg, str(tok_dir), tokens, tracking)),
        ("eval", "", lambda: eval_config(cfg)),
    ]
    for ratio in cfg.replay_ratios:
        overrides = [f"mix.replay_ratio={ratio}", *sweep_overrides(cfg, str(work / "base" / "model"), str(tok_dir),
                                                                    tokens, _PLACEHOLDER_RUN_ID, "127.0.0.1:6379")]
        checks.append(("replay_sweep", "cpt_train", lambda o=overrides: _compose_train(o)))
    for step, t, build in checks:
        try:
            build()
        except UserError as exc:
            raise _demo_error(cfg, step, t or "base_train", exc) from None


def abs_tracking_uri(cfg: DemoConfig) -> str:
    from kopretrain.tracking import resolve_tracking_uri

    return resolve_tracking_uri(cfg.tracking.uri)
