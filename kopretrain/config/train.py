"""Schema of `kopretrain train` (conf/train.yaml and the groups model/ mix/ strategy/ optim/ scale/).

Every value is checked in `__post_init__`, so `kopretrain train optim.lr=-1` or mixing weights
that do not sum to 1 fail in about a second, before Ray starts. This module imports no torch:
the strategy names come from the torch-free table in `kopretrain.registry`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

from kopretrain.config.common import RayConfig, TrackingConfig, require, require_choice
from kopretrain.config.eval import TrainEvalConfig
from kopretrain.config.peft import PEFT_STRATEGIES, PeftConfig
from kopretrain.config.scale import ScaleGroupConfig, check_groups, sequences_per_pass
from kopretrain.plan.base_lr import base_peak_lr
from kopretrain.plan.hardware import PEAK_TFLOPS_BF16  # noqa: F401 (re-exported; torch-free table)
from kopretrain.registry import LOSSES, OPTIMIZERS, STRATEGIES

TRAINABLE = ("all", "new_embeddings")
LR_SCHEDULES = ("cosine", "linear", "constant", "wsd")  # keys of kopretrain.train.schedule.SCHEDULES
LR_DECAY_SHAPES = ("linear", "cosine", "1-sqrt")  # keys of kopretrain.train.schedule.DECAY_SHAPES
MIX_SCHEDULES = ("constant", "linear", "stages")  # keys of kopretrain.train.mix_schedule.MIX_SCHEDULES
MIXED_PRECISION = ("auto", "bf16", "fp32")
FAULT_KINDS = ("sigkill", "raise")
RESUME_POLICIES = ("auto", "never", "must")
OFFLOAD_STRATEGIES = ("deepspeed_zero2", "deepspeed_zero3")
OFFLOAD_PARAMS_STRATEGIES = ("fsdp", "deepspeed_zero3")
GRADIENT_CHECKPOINTING = ("auto", "true", "false")


@dataclass
class ModelConfig:
    """The model to continue pretraining: a Hugging Face checkpoint, or a tiny one built from `arch`."""

    name_or_path: str = ""
    """HF model directory or hub id to continue from ('' = build from `arch` with random weights)."""
    arch: dict[str, Any] = field(default_factory=dict)
    """HF config fields for a from-scratch model, incl. `model_type` (e.g. llama); vocab_size defaults to the tokenizer's."""
    num_base_rows: int = 0
    """Embedding rows of the base vocabulary, frozen by `new_embeddings` stages (0 = from the tokenizer metadata or the resize)."""
    pad_vocab_to_multiple_of: int = 64
    """When the tokenizer is bigger than the model, resize the embeddings to a multiple of this many rows."""
    new_rows_init: str = "mean"
    """How resizing initialises new output rows (passed to kopretrain.tokenizer.embeddings.resize_and_init)."""
    gradient_checkpointing: str = "auto"
    """Recompute each decoder layer's activations in backward: auto (on for a pretrained name_or_path, off for a from-scratch arch), true, false."""
    safetensors_dir: str = ""
    """Where a .bin-only checkpoint is converted to safetensors once, for the sharded load ('' = safetensors/ in the model directory; shared storage on multi-node)."""

    def __post_init__(self):
        self.gradient_checkpointing = str(self.gradient_checkpointing).lower()
        require_choice(self.gradient_checkpointing, GRADIENT_CHECKPOINTING, "gradient_checkpointing")
        require(self.num_base_rows >= 0, "num_base_rows", "must be >= 0")
        require(self.pad_vocab_to_multiple_of >= 1, "pad_vocab_to_multiple_of", "must be >= 1")

    def checkpointing_on(self) -> bool:
        """Whether activation checkpointing runs (`auto`: on when continuing a pretrained checkpoint)."""
        if self.gradient_checkpointing == "auto":
            return bool(self.name_or_path)
        return self.gradient_checkpointing == "true"


@dataclass
class DataConfig:
    """Packed training tokens (the output of `kopretrain prepare`)."""

    tokens_dir: str = ""
    """Directory with one packed-token subdirectory per domain (`<tokens_dir>/ko`, `<tokens_dir>/en`)."""
    check_tokenizer_fingerprint: bool = True
    """Refuse tokens whose index.json fingerprint differs from the training tokenizer's."""
    allow_changed_data: bool = False
    """Resume a checkpoint although a domain's number of packed sequences changed (that domain starts a new epoch)."""


@dataclass
class MixConfig:
    """Korean:English mixing. `replay_ratio` is the one-scalar form; `weights` the general one."""

    replay_ratio: Optional[float] = None
    """Share of replay_domain sequences in [0, 1] (None = use `weights`)."""
    target_domain: str = "ko"
    """The domain being learned; gets 1 - replay_ratio."""
    replay_domain: str = "en"
    """The domain replayed against forgetting; gets replay_ratio."""
    weights: dict[str, float] = field(default_factory=lambda: {"ko": 0.8, "en": 0.2})
    """Domain -> share of sequences, summing to 1 (used when replay_ratio is None; add a domain with +mix.weights.code=0.1)."""
    schedule: str = "constant"
    """How the shares move: constant, linear (the shares above at step 0 to final_weights at the last step), stages (stage_weights)."""
    final_weights: dict[str, float] = field(default_factory=dict)
    """schedule=linear: domain -> share at the run's last step, summing to 1 (the mix's domains; 0 allowed)."""
    stage_weights: dict[str, dict[str, float]] = field(default_factory=dict)
    """schedule=stages: stage name -> {domain: share} for its steps (a stage not named keeps the shares above)."""

    def __post_init__(self):
        require_choice(self.schedule, MIX_SCHEDULES, "schedule")
        require(self.schedule == "linear" or not self.final_weights, "final_weights", "is for schedule=linear")
        require(self.schedule == "stages" or not self.stage_weights, "stage_weights", "is for schedule=stages")
        require(self.schedule != "linear" or bool(self.final_weights), "final_weights",
                "schedule=linear needs the shares at the last step, e.g. {ko: 0.9, en: 0.1}")
        require(self.schedule != "stages" or bool(self.stage_weights), "stage_weights",
                "schedule=stages needs shares per stage name, e.g. {embed: {ko: 1.0}, full: {ko: 0.8, en: 0.2}}")
        self._check_start()
        domains = set(self.resolved_weights(keep_zero=True))
        named = {f"stage_weights.{k}": v for k, v in (self.stage_weights or {}).items()}
        if self.final_weights:
            named["final_weights"] = self.final_weights
        for key, shares in named.items():
            require(bool(shares) and set(shares) <= domains, key,
                    f"{sorted(shares)}: name the mix's domains {sorted(domains)} (a share may be 0)")
            require(all(w >= 0 for w in shares.values()), key, "shares must be >= 0")
            total = sum(shares.values())
            require(abs(total - 1.0) <= 1e-6, key, f"shares must sum to 1 (they sum to {total:.6g})")

    def active_domains(self) -> list[str]:
        """Domains with a positive share at some step of the schedule (the ones read)."""
        shares = [self.resolved_weights(keep_zero=True), self.final_weights or {}, *(self.stage_weights or {}).values()]
        return sorted({d for s in shares for d, w in s.items() if w > 0})

    def _check_start(self):
        if self.replay_ratio is not None:
            require(0.0 <= self.replay_ratio <= 1.0, "replay_ratio", f"{self.replay_ratio} is not in [0, 1]")
            require(self.target_domain != self.replay_domain, "replay_domain", "must differ from target_domain")
        else:
            require(bool(self.weights), "weights", "give at least one domain: share")
            require(all(w >= 0 for w in self.weights.values()), "weights", "shares must be >= 0")
            total = sum(self.weights.values())
            require(abs(total - 1.0) <= 1e-6, "weights", f"shares must sum to 1 (they sum to {total:.6g})")

    def resolved_weights(self, keep_zero: bool = False) -> dict[str, float]:
        """Domain -> share. Zero-share domains are dropped (never read) unless keep_zero (for reports)."""
        if self.replay_ratio is not None:
            w = {self.target_domain: 1.0 - self.replay_ratio, self.replay_domain: self.replay_ratio}
        else:
            w = dict(self.weights)
        return {d: float(s) for d, s in w.items() if s > 0 or keep_zero}


@dataclass
class StrategyConfig:
    """How the model is distributed over the workers (table STRATEGIES in kopretrain.registry)."""

    name: str = "fsdp"
    """One of local, ddp, fsdp (FSDP2), deepspeed_zero2, deepspeed_zero3."""
    mixed_precision: str = "auto"
    """auto (bf16 on GPU, fp32 on CPU), bf16 or fp32. Master weights and optimizer state stay fp32."""
    fsdp_reshard_after_forward: bool = True
    """FSDP2: free gathered parameters after forward (ZeRO-3 like); false keeps them (ZeRO-2 like, faster)."""
    offload_optimizer: bool = False
    """DeepSpeed ZeRO: keep the optimizer state (and its step) in CPU memory (zero_optimization.offload_optimizer)."""
    offload_params: bool = False
    """Parameters in CPU memory: FSDP2 CPUOffloadPolicy (with gradients and optimizer step), DeepSpeed ZeRO-3 offload_param."""
    compile: bool = False
    """torch.compile each decoder layer (Module.compile: names and checkpoints unchanged); local, ddp, fsdp, deepspeed_zero2."""
    hsdp_replicate_degree: int = 1
    """FSDP2 as HSDP: shard within groups of num_workers / this many consecutive ranks (a node), replicate across them (1 = plain FSDP)."""

    def __post_init__(self):
        require_choice(self.name, STRATEGIES, "name")
        require_choice(self.mixed_precision, MIXED_PRECISION, "mixed_precision")
        require(not self.offload_optimizer or self.name in OFFLOAD_STRATEGIES, "offload_optimizer",
                f"is a DeepSpeed ZeRO option; use strategy=deepspeed_zero2|deepspeed_zero3 (got {self.name})")
        require(not self.offload_params or self.name in OFFLOAD_PARAMS_STRATEGIES, "offload_params",
                f"applies to sharded parameters: strategy=fsdp|deepspeed_zero3 (got {self.name}; ZeRO-2: offload_optimizer)")
        require(not self.compile or self.name != "deepspeed_zero3", "compile",
                "compiles decoder layers for strategy=local|ddp|fsdp|deepspeed_zero2 (ZeRO-3's parameter hooks run inside them)")
        require(self.hsdp_replicate_degree >= 1, "hsdp_replicate_degree", "must be >= 1")
        require(self.hsdp_replicate_degree == 1 or self.name == "fsdp", "hsdp_replicate_degree",
                f"HSDP is FSDP2's: use strategy=fsdp (got {self.name})")


@dataclass
class ScaleConfig:
    """Ray Train workers and where they land on a (heterogeneous) cluster."""

    num_workers: int = 2
    """Training workers (one process each; one GPU each when use_gpu)."""
    use_gpu: bool = False
    """One GPU per worker, nccl and bf16; false = CPU workers with gloo."""
    cpus_per_worker: float = 1.0
    """Logical CPUs reserved per worker."""
    accelerator_type: str = ""
    """Ray accelerator type to land on (e.g. A100, H100); '' = any."""
    resources_per_worker: dict[str, float] = field(default_factory=dict)
    """Extra Ray resources per worker, e.g. {A100: 1} to pin a job to the node group advertising it."""
    label_selector: dict[str, str] = field(default_factory=dict)
    """Ray node labels every worker must match, e.g. {ray.io/accelerator-type: H100}."""
    peak_tflops_per_gpu: float = 0.0
    """Peak dense bf16 TFLOPS of one GPU for MFU (0 = by accelerator_type from PEAK_TFLOPS_BF16)."""
    max_failures: int = 0
    """Restarts from the last checkpoint that Ray Train may make after a worker fails."""
    groups: list[ScaleGroupConfig] = field(default_factory=list)
    """Heterogeneous worker groups of one job (kopretrain/config/scale.py); [] = num_workers alike; with groups num_workers is their sum."""

    def __post_init__(self):
        if self.groups:
            check_groups(self.groups)
            require(not self.label_selector and not self.accelerator_type, "label_selector" if self.label_selector else "accelerator_type",
                    "with scale.groups each group places its own workers (groups[i].label_selector / accelerator_type)")
            total, default = sum(g.num_workers for g in self.groups), type(self).__dataclass_fields__["num_workers"].default
            require(self.num_workers in (total, default), "num_workers",
                    f"{self.num_workers}, but scale.groups have {total} workers in all; set each group's num_workers")
            self.num_workers = total
        require(self.num_workers >= 1, "num_workers", "must be >= 1")
        require(self.cpus_per_worker > 0, "cpus_per_worker", "must be > 0")
        require(self.peak_tflops_per_gpu >= 0, "peak_tflops_per_gpu", "must be >= 0")
        require(self.max_failures >= 0, "max_failures", "must be >= 0")
        require(all(v >= 0 for v in self.resources_per_worker.values()), "resources_per_worker", "amounts must be >= 0")

    def peak_flops(self) -> float:
        """Peak FLOP/s of one GPU (0 when unknown or on CPU)."""
        tflops = self.peak_tflops_per_gpu or PEAK_TFLOPS_BF16.get(self.accelerator_type, 0.0)
        if self.groups and not self.peak_tflops_per_gpu:  # the mean over workers: x num_workers = the job's peak
            peaks = [g.peak() for g in self.groups]
            tflops = 0.0 if 0.0 in peaks else sum(g.num_workers * p for g, p in zip(self.groups, peaks)) / self.num_workers
        return tflops * 1e12 if self.use_gpu else 0.0


@dataclass
class OptimConfig:
    """AdamW with linear warmup and a decay schedule (per stage)."""

    name: str = "adamw"
    """adamw (torch), or adamw_8bit (bitsandbytes AdamW8bit: 8-bit moments; local, ddp only)."""
    lr: float = 3e-4
    """Peak learning rate (with lr_relative_to_base: a multiple of the base model's peak LR)."""
    lr_warmup_steps: int = 0
    """Steps of linear warmup from lr_warmup_start to lr at the start of each stage (at most the stage's steps)."""
    lr_warmup_start: float = 0.0
    """Learning rate the warmup starts from: 0, or a re-warm from where the base's schedule ended (same units as lr)."""
    lr_schedule: str = "cosine"
    """After warmup: cosine, linear (to lr * lr_min_ratio), constant, or wsd (stable at lr, then decay over lr_decay_fraction)."""
    lr_min_ratio: float = 0.1
    """Final learning rate as a fraction of lr."""
    lr_decay_fraction: float = 0.2
    """wsd: share of each stage's steps spent decaying at its end (Hägele et al. 2024: 0.1-0.2)."""
    lr_decay_shape: str = "1-sqrt"
    """wsd: shape of the decay: 1-sqrt (Hägele et al. 2024's best), linear or cosine."""
    lr_relative_to_base: bool = False
    """Read lr, lr_warmup_start and stages[].lr as multiples of the base model's peak LR (base_peak_lr or a known base)."""
    base_peak_lr: float = 0.0
    """The base model's pretraining peak LR for lr_relative_to_base (0 = look model.name_or_path up in plan/base_lr.py)."""
    weight_decay: float = 0.1
    """Decoupled weight decay on matrices (not on norms and biases)."""
    beta1: float = 0.9
    """Adam beta1."""
    beta2: float = 0.95
    """Adam beta2."""
    eps: float = 1e-8
    """Adam epsilon."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this (0 = no clipping)."""

    def __post_init__(self):
        require_choice(self.name, OPTIMIZERS, "name")
        require(self.lr > 0, "lr", f"must be > 0 (got {self.lr})")
        require(math.isfinite(self.lr), "lr", f"must be a finite number (got {self.lr})")
        require(self.lr_warmup_steps >= 0, "lr_warmup_steps", "must be >= 0")
        require(0.0 <= self.lr_warmup_start <= self.lr, "lr_warmup_start", f"must be in [0, lr={self.lr}] (got {self.lr_warmup_start})")
        require_choice(self.lr_schedule, LR_SCHEDULES, "lr_schedule")
        require(0.0 <= self.lr_min_ratio <= 1.0, "lr_min_ratio", "must be in [0, 1]")
        require(0.0 < self.lr_decay_fraction <= 1.0, "lr_decay_fraction", f"must be in (0, 1] (got {self.lr_decay_fraction})")
        require_choice(self.lr_decay_shape, LR_DECAY_SHAPES, "lr_decay_shape")
        require(math.isfinite(self.base_peak_lr) and self.base_peak_lr >= 0, "base_peak_lr", "must be a finite number >= 0")
        require(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        require(0.0 <= self.beta1 < 1.0, "beta1", "must be in [0, 1)")
        require(0.0 <= self.beta2 < 1.0, "beta2", "must be in [0, 1)")
        require(self.eps > 0, "eps", "must be > 0")
        require(self.max_grad_norm >= 0, "max_grad_norm", "must be >= 0")


@dataclass
class BatchConfig:
    """Batch sizes in sequences; gradient accumulation is derived from them."""

    num_sequences_per_step: int = 8
    """Global batch: sequences per optimizer step over all workers."""
    micro_batch_size: int = 2
    """Sequences per forward/backward on one worker."""

    def __post_init__(self):
        require(self.num_sequences_per_step >= 1, "num_sequences_per_step", "must be >= 1")
        require(self.micro_batch_size >= 1, "micro_batch_size", "must be >= 1")


@dataclass
class LossConfig:
    """The training loss: cross-entropy summed over target tokens, divided by the step's global token count."""

    name: str = "chunked"
    """chunked (plain torch, CPU and GPU, no full [tokens, vocab] logits) or fused (liger-kernel, GPU only)."""
    chunk_size: int = 0
    """chunked: positions per chunk (0 = auto: one chunk's fp32 logits stay under 256 MiB)."""

    def __post_init__(self):
        require_choice(self.name, LOSSES, "name")
        require(self.chunk_size >= 0, "chunk_size", "must be >= 0")


@dataclass
class CheckpointConfig:
    """Checkpoints for exact resume (kept in Ray Train's storage under the run directory)."""

    every_num_steps: int = 50
    """Save a checkpoint every this many steps (0 = only at the end of each stage)."""
    num_to_keep: int = 2
    """Most recent checkpoints kept."""
    storage_path: str = ""
    """Ray Train storage for checkpoints ('' = <run dir>/ray; relative = from the launch dir; multi-node: a shared path or s3://...)."""

    def __post_init__(self):
        require(self.every_num_steps >= 0, "every_num_steps", "must be >= 0")
        require(self.num_to_keep >= 1, "num_to_keep", "must be >= 1")


@dataclass
class FaultConfig:
    """Fault injection, to test exact resume."""

    fail_at_step: int = 0
    """Rank 0 fails once when it reaches this step (0 = never); Ray Train restarts from the last checkpoint."""
    kind: str = "sigkill"
    """How it fails: sigkill (the worker process kills itself, as an OOM kill or a lost node would) or raise (an exception)."""

    def __post_init__(self):
        require(self.fail_at_step >= 0, "fail_at_step", "must be >= 0")
        require_choice(self.kind, FAULT_KINDS, "kind")


@dataclass
class StageConfig:
    """One training stage (EEVE style: first the new embedding rows only, then everything)."""

    name: str = "stage"
    """Stage name (in the report and MLflow)."""
    num_steps: int = 1
    """Optimizer steps in this stage."""
    trainable: str = "all"
    """all, or new_embeddings (only embedding/output rows beyond the base vocabulary; the rest frozen)."""
    lr: Optional[float] = None
    """Peak learning rate of this stage (None = optim.lr)."""

    def __post_init__(self):
        require(bool(self.name), "name", "must not be empty")
        require(self.num_steps >= 1, "num_steps", "must be >= 1")
        require_choice(self.trainable, TRAINABLE, "trainable")
        require(self.lr is None or (math.isfinite(self.lr) and self.lr > 0), "lr", "must be a finite number > 0")


@dataclass
class RunPlanConfig:
    """The whole run this (short) run measures, for report.json's `projected` time and GPU-hours."""

    num_tokens: float = 0.0
    """Tokens of the whole planned run, e.g. 15e9 (0 = no projection)."""

    def __post_init__(self):
        require(math.isfinite(self.num_tokens) and self.num_tokens >= 0, "num_tokens", "must be a finite number >= 0 (e.g. 15e9)")


@dataclass
class TrainConfig:
    """Continual pretraining on Ray Train."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """The model (model=tiny_llama, or model.name_or_path=...)."""
    tokenizer: str = ""
    """Tokenizer directory ('' = the tokenizer in model.name_or_path)."""
    data: DataConfig = field(default_factory=DataConfig)
    """Packed training tokens."""
    mix: MixConfig = field(default_factory=MixConfig)
    """Domain mixing (mix.replay_ratio=0.2)."""
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    """Distribution strategy (strategy=fsdp|ddp|deepspeed_zero2|deepspeed_zero3|local)."""
    scale: ScaleConfig = field(default_factory=ScaleConfig)
    """Workers and placement (scale=cpu2|a100x8|h100x8|...)."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimizer and learning-rate schedule."""
    batch: BatchConfig = field(default_factory=BatchConfig)
    """Batch sizes."""
    loss: LossConfig = field(default_factory=LossConfig)
    """The loss (loss.name=chunked|fused, loss.chunk_size)."""
    num_steps: int = 100
    """Optimizer steps in total (with stages: must equal the sum of their num_steps)."""
    stages: list[StageConfig] = field(default_factory=list)
    """Training stages in order ([] = one stage training everything for num_steps)."""
    peft: PeftConfig = field(default_factory=PeftConfig)
    """LoRA instead of full training (peft=lora)."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """Checkpointing."""
    fault: FaultConfig = field(default_factory=FaultConfig)
    """Fault injection (tests)."""
    eval: TrainEvalConfig = field(default_factory=TrainEvalConfig)
    """Held-out bpc per domain on all ranks: every `eval.every_num_steps` steps (step metrics eval/<d>_bpc) and at the end against the base (`eval.at_end`)."""
    seed: int = 0
    """Seeds model init, the mixing sampler and dropout: same seed + config = same losses."""
    log_every_num_steps: int = 10
    """A console step line and one batched MLflow write every this many steps (and at checkpoints and the end)."""
    plan: RunPlanConfig = field(default_factory=RunPlanConfig)
    """The whole run to project from this run's measured throughput (plan.num_tokens=15e9)."""
    output_dir: str = ""
    """Where model/ is exported ('' = the run directory)."""
    resume: str = "auto"
    """Checkpoints already in the storage: auto (resume those of this configuration, refuse others), never (remove them, start fresh), must (fail without one)."""
    ray: RayConfig = field(default_factory=RayConfig)
    """Ray connection."""
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    """MLflow tracking."""

    def __post_init__(self):
        # Required values are checked here, not in the parts: Hydra builds the parts' defaults.
        require(bool(self.model.name_or_path) or bool(self.model.arch), "model.name_or_path",
                "set the model to continue (an HF directory or hub id), or model=tiny_llama to build one from model.arch")
        require(bool(self.model.name_or_path) or "model_type" in self.model.arch, "model.arch", "needs a model_type (e.g. llama)")
        require(bool(self.data.tokens_dir), "data.tokens_dir",
                "set the packed tokens directory (e.g. data.tokens_dir=outputs/prepare/.../tokens)")
        require(self.num_steps >= 1, "num_steps", "must be >= 1")
        require(self.log_every_num_steps >= 1, "log_every_num_steps", "must be >= 1")
        require_choice(self.resume, RESUME_POLICIES, "resume")
        require(bool(self.tokenizer) or bool(self.model.name_or_path), "tokenizer",
                "a from-scratch model needs a tokenizer directory (tokenizer=...)")
        if self.stages:
            total = sum(s.num_steps for s in self.stages)
            require(self.num_steps == total, "num_steps", f"{self.num_steps} != the sum of stages' num_steps ({total}); set num_steps={total}")
        per_pass = sequences_per_pass(self.scale.groups, self.batch.micro_batch_size, self.scale.num_workers)
        require(self.batch.num_sequences_per_step % per_pass == 0, "batch.num_sequences_per_step",
                f"{self.batch.num_sequences_per_step} is not a multiple of micro_batch_size x num_workers ({per_pass})"
                if not self.scale.groups else f"{self.batch.num_sequences_per_step} is not a multiple of the "
                f"sequences of one micro-batch on every worker of scale.groups ({per_pass})")
        hsdp = self.strategy.hsdp_replicate_degree
        require(self.scale.num_workers % hsdp == 0, "strategy.hsdp_replicate_degree",
                f"{hsdp} does not divide scale.num_workers={self.scale.num_workers} (replicas x shards = workers)")
        require(not (self.strategy.name == "local" and self.scale.num_workers > 1), "strategy.name",
                "'local' trains on one worker; use ddp/fsdp/deepspeed_* with scale.num_workers > 1")
        if self.peft.method == "lora":
            require(bool(self.model.name_or_path), "peft.method", "LoRA adapts a pretrained model: set model.name_or_path")
            require(self.strategy.name in PEFT_STRATEGIES, "peft.method",
                    f"LoRA runs with strategy={'|'.join(PEFT_STRATEGIES)} (got {self.strategy.name})")
        self._check_lr_schedule()
        if self.loss.name == "fused":
            import importlib.util

            require(self.scale.use_gpu, "loss.name", "fused (liger-kernel) runs on GPU only (scale.use_gpu=true); use loss.name=chunked")
            require(importlib.util.find_spec("liger_kernel") is not None, "loss.name",
                    "fused needs liger-kernel installed (pip install liger-kernel); or use loss.name=chunked")
        if self.optim.name == "adamw_8bit":
            require(self.strategy.name in ("local", "ddp"), "optim.name",
                    f"adamw_8bit runs with strategy=local|ddp (got {self.strategy.name}; DeepSpeed: strategy.offload_optimizer=true)")

    def _check_lr_schedule(self) -> None:
        """Warmup (and wsd's decay) within every stage; a relative lr needs the base's peak; mix stages exist."""
        o = self.optim
        for i, stage in enumerate(self.resolved_stages()):
            where = f"stage '{stage.name}' ({stage.num_steps} steps)" if self.stages else f"num_steps={stage.num_steps}"
            require(o.lr_warmup_steps <= stage.num_steps, "optim.lr_warmup_steps", f"{o.lr_warmup_steps} is longer than {where}")
            if o.lr_schedule == "wsd":  # the decay steps as kopretrain.train.schedule.decay_steps counts them
                decay = min(stage.num_steps, max(1, math.floor(o.lr_decay_fraction * stage.num_steps + 0.5)))
                require(o.lr_warmup_steps + decay <= stage.num_steps, "optim.lr_decay_fraction",
                        f"{o.lr_decay_fraction} decays over {decay} steps, which with lr_warmup_steps={o.lr_warmup_steps} "
                        f"is longer than {where}")
            require(stage.lr is None or o.lr_warmup_start <= stage.lr, f"stages[{i}].lr",
                    f"{stage.lr} is below optim.lr_warmup_start={o.lr_warmup_start}")
        if o.lr_relative_to_base and not o.base_peak_lr:
            require(base_peak_lr(self.model.name_or_path) is not None, "optim.base_peak_lr",
                    f"the peak LR of '{self.model.name_or_path or self.model.arch.get('model_type', '')}' is not known "
                    "(kopretrain/plan/base_lr.py): set optim.base_peak_lr=<its pretraining peak LR>")
        if self.mix.schedule == "stages":
            names = {s.name for s in self.resolved_stages()}
            unknown = sorted(set(self.mix.stage_weights or {}) - names)
            require(not unknown, "mix.stage_weights", f"{unknown}: no such stage (stages: {sorted(names)})")

    @property
    def num_accumulation_steps(self) -> int:
        """Micro-batches per worker per optimizer step."""
        per_pass = sequences_per_pass(self.scale.groups, self.batch.micro_batch_size, self.scale.num_workers)
        return self.batch.num_sequences_per_step // per_pass

    def resolved_stages(self) -> list[StageConfig]:
        """The stages to run: `stages`, or one stage training everything for num_steps."""
        return list(self.stages) or [StageConfig(name="train", num_steps=self.num_steps, trainable="all")]
