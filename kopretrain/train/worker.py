"""Ray Train glue: `train_worker`, the function every training worker runs.

The driver (kopretrain/train/command.py) passes a `WorkerJob` in `train_loop_config`. Each
worker's strategy builds the model and loads only the part of a pretrained checkpoint that
its rank keeps (`Strategy.build`, kopretrain/train/model_init.py), opens the
packed datasets and the mixing sampler, resumes from `ray.train.get_checkpoint()` when Ray
Train restarted the group after a failure, runs the plain loop (kopretrain/train/loop.py)
with `RayHooks`, and finally exports the unsharded model from rank 0. Rank 0 returns the
run summary, which the driver receives as `Result.return_value`.

`RayHooks` is the only place the loop meets Ray and MLflow: per-step metrics (loss, lr,
grad norm, the realized token share per domain, tokens/s, MFU on GPU, peak memory) go to the
driver's MLflow run (re-attached by id on rank 0), batched: one `log_batch` every
`log_every_num_steps` steps, at each checkpoint and at the end (steps already logged before a
restart are not logged twice), rank 0 prints a step line every `log_every_num_steps` steps
(kopretrain/console.py; Ray forwards it to the driver's console),
checkpoints go through `ray.train.report`, and the fault-injection test hook
(`fault.fail_at_step`) kills rank 0's process once (SIGKILL; `fault.kind=raise` raises instead),
remembered by a marker file in the run directory.

Restarts: every start of the worker group leaves a file under the run's Ray Train storage
(`count_attempt`, rank 0), so `num_resumes` counts every restart this run survived, also one
before the first checkpoint (which restarts from step 0).
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from kopretrain.config.train import TrainConfig
from kopretrain.console import StepPrinter, emit, stage_line, step_line
from kopretrain.train.loop import LoopPlan, StageSpec, TrainState
from kopretrain.train.model import ModelPlan
from kopretrain.train.throughput import Meter, human_duration


@dataclass
class WorkerJob:
    """What the driver decided, for the workers (picklable; absolute paths)."""

    cfg: TrainConfig
    model_plan: ModelPlan
    weights: dict[str, float]
    tokens_dir: str
    model_dir: str
    tracking_uri: str = ""
    mlflow_run_id: str = ""
    fault_marker: str = ""
    config_fingerprint: str = ""
    job_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    """Made on the driver once per fit: tells this run's worker-group starts from others'."""


class RayHooks:
    """Per-step logging, checkpoints through Ray Train, and the fault-injection hook."""

    def __init__(self, job: WorkerJob, strategy, tracker, rank: int, sampler=None, printer: StepPrinter | None = None,
                 meter: Meter | None = None, validator=None, base_validator=None):
        self.job, self.strategy, self.tracker, self.rank = job, strategy, tracker, rank
        self.sampler, self.printer, self.meter = sampler, printer, meter
        self.validator = validator  # kopretrain.train.validate.Validator: held-out bpc every eval.every_num_steps / at the end
        self.base_validator = base_validator  # the same windows with the base's tokenizer and rows (eval.at_end)
        self.final_eval: dict | None = None  # the last step's scores per domain (eval.at_end)
        self.final_kobest: dict | None = None  # the last step's KoBEST scores (eval.kobest_tasks)
        self.pending: list[tuple[int, dict]] = []  # steps' metrics not yet sent: one log_batch per flush
        self.step_seconds: list[float] = []  # wall time between steps' ends, checkpoints left out
        self._last_end: float | None = None
        self._checkpoint_seconds = 0.0
        self.logged_up_to = 0
        if rank == 0 and job.mlflow_run_id:
            self.logged_up_to = tracker.last_step("loss")  # a restart does not log its steps twice

    def on_step(self, state: TrainState, record: dict) -> None:
        now = time.perf_counter()  # a whole step: data, forward/backward, optimizer and the previous step's hooks
        if self._last_end is not None:
            self.step_seconds.append(now - self._last_end - self._checkpoint_seconds)
        self._last_end, self._checkpoint_seconds = now, 0.0
        evals = self._evaluate(record["step"])  # every rank (collective); {} when not due
        rates = self.meter.update(record["step"], record["tokens"], state.train_seconds) if self.meter else {}
        if self.rank == 0 and record["step"] > self.logged_up_to:
            metrics = {k: v for k, v in record.items() if k not in ("stage", "loss_by_domain")}
            metrics.update({f"loss/{d}": v for d, v in record.get("loss_by_domain", {}).items()})  # domains in this step
            if self.sampler is not None:  # realized so far, over the global batch (every rank draws it)
                metrics.update({f"token_share_{d}": v for d, v in self.sampler.token_share().items()})
                metrics.update({f"mix_weight_{d}": v for d, v in self.sampler.scheduled_weights().items()})  # this step's
            metrics.update({k: v for k, v in rates.items() if v is not None})  # this step's tokens/s, MFU on GPU
            metrics["peak_memory_bytes"] = peak_memory_bytes(self.strategy.s.device)
            metrics.update(evals)  # eval/<domain>_bpc, eval/<domain>_loss_per_token
            self.pending.append((record["step"], metrics))
            if record["step"] % self.job.cfg.log_every_num_steps == 0:
                self.flush()
        if self.rank == 0 and self.printer is not None and self.printer.due(record):
            window = self.meter.window() if self.meter else {}
            eta = window.get("eta_seconds")
            emit(step_line(record, self.job.cfg.num_steps, window.get("tokens_per_second"), window.get("mfu"),
                           peak_memory_bytes(self.strategy.s.device), None if eta is None else human_duration(eta)))
        fail_at = self.job.cfg.fault.fail_at_step
        if self.rank == 0 and record["step"] == fail_at and not os.path.exists(self.job.fault_marker):
            Path(self.job.fault_marker).write_text(f"failed once at step {fail_at}\n")
            if self.job.cfg.fault.kind == "sigkill":  # no exception, no cleanup: the process is gone
                _wait_until_reports_collected()
                sys.stdout.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError(f"fault.fail_at_step={fail_at}: injected worker failure (Ray Train restarts from the last checkpoint)")

    def on_start(self, state: TrainState) -> None:
        """Before the first step (all ranks): the base's held-out scores into `state.base_eval` (eval.at_end)."""
        if self.base_validator is None or state.base_eval:
            return
        state.base_eval = self.base_validator.score(self.strategy)
        if self.rank == 0:
            emit(stage_line("train", "base eval (base tokenizer and rows): " + ", ".join(
                f"{d} bpc {v['bpc']:.4f}" for d, v in state.base_eval.items())))

    def _evaluate(self, step: int) -> dict:
        """Held-out bpc at this step if due (all ranks take part); its time is left out of step_seconds."""
        if self.validator is None or not self.validator.due(step):
            return {}
        from kopretrain.train.validate import step_metrics

        started = time.perf_counter()
        scores = self.validator.score(self.strategy)
        kobest = self.validator.kobest.score(self.strategy) if self.validator.kobest is not None else {}  # all ranks
        if step == self.job.cfg.num_steps:
            self.final_eval, self.final_kobest = scores, kobest
        if self.rank == 0:
            emit(stage_line("train", f"step {step} eval: " + ", ".join(f"{d} bpc {v['bpc']:.4f}" for d, v in scores.items())
                            + (f", KoBEST mean acc {kobest['mean']['acc']:.4f}" if kobest else "")))
        self._checkpoint_seconds += time.perf_counter() - started
        from kopretrain.train.validate_kobest import step_metrics as kobest_metrics

        # at_end alone: the driver logs ko_bpc, ...; eval/kobest_* at every eval (kopretrain/train/validate_kobest.py)
        return (step_metrics(scores) if self.validator.every_num_steps else {}) | kobest_metrics(kobest)

    def flush(self) -> None:
        """Send the pending steps' metrics (every log_every_num_steps steps, at checkpoints and at the end)."""
        if self.pending:
            self.tracker.log_steps(self.pending)
            self.logged_up_to, self.pending = self.pending[-1][0], []

    def save_checkpoint(self, state: TrainState) -> None:
        import ray.train

        from kopretrain.train.checkpoint import save_checkpoint

        started = time.perf_counter()
        self.flush()  # before the checkpoint: a restart from it finds these steps logged
        with tempfile.TemporaryDirectory(prefix="kopretrain-ckpt-") as tmp:
            save_checkpoint(tmp, self.strategy, state, fingerprint=self.job.config_fingerprint)
            last = state.losses[-1]
            ray.train.report({"step": state.step, "loss": last["loss"]}, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        self._checkpoint_seconds += time.perf_counter() - started


def peak_memory_bytes(device) -> int:
    """This process's peak memory: the GPU's max allocated bytes, or on CPU the peak resident set."""
    import torch

    if getattr(device, "type", "cpu") == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux: KiB


def rank_peak_flops(cfg: TrainConfig, groups, world_size: int) -> list[float]:
    """Each rank's peak FLOP/s for MFU: its group's (scale.groups), else scale's; 0 on CPU or when unknown."""
    if groups is not None:
        return [t * 1e12 if cfg.scale.use_gpu else 0.0 for t in groups.peak_tflops]
    return [cfg.scale.peak_flops()] * world_size


def gather_from_ranks(value, world_size: int) -> list:
    """Every rank's `value`, in rank order (a collective: every rank calls it)."""
    import torch.distributed as dist

    if world_size == 1 or not (dist.is_available() and dist.is_initialized()):
        return [value]
    out = [None] * world_size
    dist.all_gather_object(out, value)
    return out


def _wait_until_reports_collected(timeout_s: float = 60.0) -> None:
    """Let Ray Train's controller take this worker's reported checkpoints before a SIGKILL fault.

    Ray Train V2 learns of a checkpoint when its controller polls the worker's result queue (about
    once a second); a worker killed before that poll loses its newest checkpoint (the run still
    resumes exactly, from the one before). A real failure comes minutes after the last report, so
    the fault waits for the queue to drain to model that. Uses Ray 2.60's internal train context.
    """
    from ray.train.v2._internal.execution.context import get_train_context

    queue = get_train_context().get_result_queue()
    deadline = time.monotonic() + timeout_s
    while not queue.empty() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)  # the other ranks' queues are drained in the same poll


def _settings(job: WorkerJob, rank: int, world_size: int, groups=None):
    import torch

    from kopretrain.train.strategies.base import StrategySettings

    cfg = job.cfg
    if cfg.scale.use_gpu:
        import ray.train.torch

        device = ray.train.torch.get_device()
    else:
        device = torch.device("cpu")
    bf16 = cfg.strategy.mixed_precision == "bf16" or (cfg.strategy.mixed_precision == "auto" and cfg.scale.use_gpu)
    return StrategySettings(
        device=device, rank=rank, world_size=world_size, num_accumulation_steps=cfg.num_accumulation_steps,
        micro_batch_size=groups.micro_batch_sizes[rank] if groups else cfg.batch.micro_batch_size,
        autocast_dtype=torch.bfloat16 if bf16 else None,
        max_grad_norm=cfg.optim.max_grad_norm, betas=(cfg.optim.beta1, cfg.optim.beta2), eps=cfg.optim.eps,
        reshard_after_forward=cfg.strategy.fsdp_reshard_after_forward,
        optimizer=cfg.optim.name, offload_optimizer=cfg.strategy.offload_optimizer,
        loss=cfg.loss.name, loss_chunk_size=cfg.loss.chunk_size,
        offload_params=cfg.strategy.offload_params, hsdp_replicate_degree=cfg.strategy.hsdp_replicate_degree,
    )


def loop_plan(cfg: TrainConfig, num_base_rows: int | None, rank: int, world_size: int,
              micro_batch_sizes: list[int] | None = None) -> LoopPlan:
    from kopretrain.plan.base_lr import lr_scale

    o = cfg.optim
    unit = lr_scale(o.lr_relative_to_base, o.base_peak_lr, cfg.model.name_or_path)  # 1, or the base's peak LR
    return LoopPlan(
        stages=[StageSpec(s.name, s.num_steps, s.trainable, None if s.lr is None else s.lr * unit)
                for s in cfg.resolved_stages()], lr=o.lr * unit,
        lr_warmup_steps=o.lr_warmup_steps, lr_schedule=o.lr_schedule, lr_min_ratio=o.lr_min_ratio,
        lr_warmup_start=o.lr_warmup_start * unit, lr_decay_fraction=o.lr_decay_fraction, lr_decay_shape=o.lr_decay_shape,
        weight_decay=o.weight_decay, num_sequences_per_step=cfg.batch.num_sequences_per_step,
        micro_batch_size=cfg.batch.micro_batch_size, micro_batch_sizes=micro_batch_sizes, num_base_rows=num_base_rows,
        checkpoint_every_num_steps=cfg.checkpoint.every_num_steps, rank=rank, world_size=world_size,
    )


def count_attempt(job_id: str) -> int:
    """This start of the worker group, numbered from 1 (rank 0; one empty file per start in the
    run's Ray Train storage, which every node of a multi-node run shares, s3:// included)."""
    import ray.train
    from pyarrow.fs import FileSelector

    storage = ray.train.get_context().get_storage()
    fs, root = storage.storage_filesystem, f"{storage.experiment_fs_path}/kopretrain_attempts"
    fs.create_dir(root)
    with fs.open_output_stream(f"{root}/{job_id}-{time.time_ns()}"):
        pass
    return sum(1 for info in fs.get_file_info(FileSelector(root)) if os.path.basename(info.path).startswith(job_id))


def train_worker(config: dict) -> dict | None:
    """Ray Train's per-worker function: train, checkpoint, export; rank 0 returns the summary."""
    import ray.train
    import torch

    from kopretrain.data.packed import PackedDataset
    from kopretrain.tracking import MlflowTracker, NullTracker
    from kopretrain.train.checkpoint import load_train_state, restore_rng
    from kopretrain.train.groups import find_groups
    from kopretrain.train.loop import train
    from kopretrain.train.mix_schedule import build_mix_schedule
    from kopretrain.train.mixing import MixingSampler
    from kopretrain.train.model import export_model
    from kopretrain.train.strategies import strategy_class
    from kopretrain.train.throughput import flops_per_token, shape_of_model

    job: WorkerJob = config["job"]
    cfg = job.cfg
    ctx = ray.train.get_context()
    rank, world_size = ctx.get_world_rank(), ctx.get_world_size()
    groups = find_groups(cfg, rank, world_size)  # scale.groups: every rank's group and micro-batch size (collective)
    if rank == 0 and groups is not None:
        emit(stage_line("train", f"worker groups: {groups.describe()}"))

    if cfg.strategy.hsdp_replicate_degree > 1:  # each shard group should lie in one node (collective)
        from kopretrain.train.strategies.fsdp import hsdp_node_warning

        warning = hsdp_node_warning(gather_from_ranks(ctx.get_node_rank(), world_size), cfg.strategy.hsdp_replicate_degree)
        if rank == 0 and warning:
            emit(stage_line("train", f"warning: {warning}"))
    strategy = strategy_class(cfg.strategy.name)(_settings(job, rank, world_size, groups))
    prepare = None
    if cfg.strategy.compile:  # before wrapping: FSDP2's hooks stay outside the compiled layers' forward
        from kopretrain.train.model import compile_layers

        prepare = compile_layers
    # each strategy builds and loads its own way, every rank reading only what it keeps (train/model_init.py);
    # from-scratch models are seeded: the same weights on every rank
    info = strategy.build(job.model_plan, cfg.seed, prepare=prepare)
    datasets = {d: PackedDataset(Path(job.tokens_dir) / d) for d in job.weights}
    schedule = build_mix_schedule(cfg.mix, [(s.name, s.num_steps) for s in cfg.resolved_stages()])
    sampler = MixingSampler({d: len(ds) for d, ds in datasets.items()}, schedule, cfg.seed,
                            seq_lens={d: ds.seq_len for d, ds in datasets.items()})
    torch.manual_seed(cfg.seed + 1 + rank)  # dropout and other in-step randomness, per rank
    tracker = NullTracker()
    if rank == 0 and job.mlflow_run_id:
        tracker = MlflowTracker(job.tracking_uri, cfg.tracking.experiment_name, "", run_id=job.mlflow_run_id)

    state, resume_dir = TrainState(), None
    attempt = count_attempt(job.job_id) if rank == 0 else 0
    checkpoint = ray.train.get_checkpoint()
    with checkpoint.as_directory() if checkpoint else contextlib.nullcontext(None) as ckpt_dir:
        if ckpt_dir is not None:
            state = load_train_state(ckpt_dir)
            sampler.load_state_dict(state.sampler, allow_changed_sizes=cfg.data.allow_changed_data)
            restore_rng(ckpt_dir, rank)
            resume_dir = Path(ckpt_dir)
        start_step = state.step  # the checkpoint Ray Train restored (0: none); the report's resumed_from_step
        state.num_resumes = max(attempt - 1, 0)  # restarts of this run survived (rank 0 reports it)
        if rank == 0 and (attempt > 1 or ckpt_dir is not None):
            restart = f"restart {attempt - 1}: " if attempt > 1 else ""
            emit(stage_line("train", f"{restart}resuming from the checkpoint at step {state.step}" if ckpt_dir is not None
                            else f"{restart}no checkpoint yet, starting again from step 0"))
        printer = StepPrinter(cfg.num_steps, every_num_steps=cfg.log_every_num_steps)
        printer.start(sum(sampler.tokens_drawn().values()))
        lora_trainable = info.get("num_trainable_params") if job.model_plan.lora is not None else None
        flops = flops_per_token(shape_of_model(strategy.module), next(iter(datasets.values())).seq_len, lora_trainable)
        meter = Meter(cfg.num_steps, flops, rank_peak_flops(cfg, groups, world_size))
        meter.start(state.step, sum(sampler.tokens_drawn().values()), state.train_seconds)
        validator = base_validator = base = None
        seq_len = next(iter(datasets.values())).seq_len
        if cfg.eval.every_num_steps or cfg.eval.at_end:  # held-out bpc during training (kopretrain/train/validate.py)
            from kopretrain.tokenizer.load import load_tokenizer
            from kopretrain.train.validate import Validator

            validator = Validator.from_config(cfg.eval, load_tokenizer(job.model_plan.tokenizer_dir), seq_len, rank,
                                              world_size, cfg.num_steps)
            if cfg.eval.kobest_tasks:  # KoBEST items at every eval too (kopretrain/train/validate_kobest.py)
                from kopretrain.train.validate_kobest import KobestValidator

                validator.kobest = KobestValidator.from_config(cfg.eval, load_tokenizer(job.model_plan.tokenizer_dir),
                                                               validator.max_len, rank, world_size)
        if cfg.eval.at_end:  # the base it started from (kopretrain/train/eval_at_end.py); a resumed state has it
            from kopretrain.train.eval_at_end import base_reference

            base = base_reference(job.model_plan)
            if base is not None and not state.base_eval:
                base_validator = Validator.from_config(cfg.eval, load_tokenizer(base.tokenizer_dir), seq_len, rank,
                                                       world_size, cfg.num_steps, num_rows=base.num_rows)
        hooks = RayHooks(job, strategy, tracker, rank, sampler=sampler, printer=printer, meter=meter, validator=validator,
                         base_validator=base_validator)
        plan = loop_plan(cfg, job.model_plan.num_base_rows, rank, world_size, groups.micro_batch_sizes if groups else None)
        from kopretrain.train.host_memory import steady_host_allocator

        steady_host_allocator()  # every strategy: a step's freed host memory is reused, not faulted in again
        state = train(strategy, datasets, sampler, plan, state, hooks, resume_dir)
        hooks.flush()
        final_eval = final_kobest = None
        if cfg.eval.at_end:  # resumed from the last checkpoint: no step ran, score the same weights now (all ranks)
            final_eval = hooks.final_eval if hooks.final_eval is not None else validator.score(strategy)
            final_kobest = hooks.final_kobest if hooks.final_eval is not None else (
                validator.kobest.score(strategy) if validator.kobest is not None else {})

    memory = gather_from_ranks(peak_memory_bytes(strategy.s.device), world_size)  # collective

    full = strategy.full_state_dict()  # collective: every rank takes part in the gather
    if rank != 0:
        return None
    plan = job.model_plan
    if plan.lora is not None:
        from kopretrain.train.adapters import export_adapted

        export_adapted(full, plan.lora, plan.name_or_path, strategy.module.config, plan.tokenizer_dir, Path(job.model_dir))
    else:
        export_model(full, plan, strategy.module.config, Path(job.model_dir))
    tokens = sum(sampler.tokens_drawn().values())
    return {
        "losses": state.losses,
        "stages": state.stages,
        "token_share": sampler.token_share(),
        "tokens_per_domain": sampler.tokens_drawn(),
        "num_tokens": tokens,
        "num_resumes": state.num_resumes,
        "scale_groups": groups.summary() if groups is not None else None,
        "start_step": start_step,
        "train_seconds": state.train_seconds,
        "tokens_per_second": tokens / state.train_seconds if state.train_seconds else 0.0,
        "flops_per_token": flops,
        "peak_flops_per_rank": meter.peaks,
        "peak_memory_bytes": memory,
        "step_seconds": statistics.median(hooks.step_seconds) if hooks.step_seconds else None,
        "num_params": info["num_params"],
        "num_trainable_params": info.get("num_trainable_params", info["num_params"]),
        "vocab_size": info["vocab_size"],
        "resize": info.get("resize"),
        "load": info.get("load"),
        "device": str(strategy.s.device),
        "activation_checkpointing": bool(getattr(strategy.module, "is_activation_checkpointing", False) and strategy.module.training),
        "device_mesh": getattr(strategy, "mesh_shape", None),
        "eval": None if final_eval is None else {"domains": final_eval, "base": state.base_eval or None,
                                                 "base_exact": base.exact if base is not None else None,
                                                 "kobest": final_kobest or None},
    }
