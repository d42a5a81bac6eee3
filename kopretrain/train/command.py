"""`kopretrain train`: continual pretraining on Ray Train (the driver).

    kopretrain train experiment=smoke                                  # a tiny CPU run on the shipped sample
    kopretrain train -m experiment=smoke mix.replay_ratio=0,0.2        # a sweep, one job after another
    kopretrain train model.name_or_path=<dir> tokenizer=<dir> data.tokens_dir=<dir> strategy=fsdp scale=h100x8

`run_train(cfg, run_dir)`: make every path key absolute (`resolve_train_paths`; relative
values are taken from the launch directory, URIs are kept); look at the checkpoints already in
the storage and resume, refuse, start fresh or report the run as complete by `resume` and the
configuration fingerprint (kopretrain/train/resume.py); check every input on the driver (model
config against tokenizer, packed tokens against tokenizer, stages against strategy) so mistakes
fail before Ray starts; open the MLflow run (params + config); run `TorchTrainer(train_worker)` with FailureConfig
restarts; write report.json (per-step losses, realized token share per domain, the exported
model's path, tokens/s and MFU) and log it as an artifact. The MLflow run ends FAILED on error.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from kopretrain.config.train import TrainConfig
from kopretrain.data.packed import read_index
from kopretrain.errors import UserError
from kopretrain.paths import resolve_config_paths, resolve_path
from kopretrain.train import resume
from kopretrain.train.fingerprint import STATE_KEY, fingerprint, math_keys
from kopretrain.train.model import ModelPlan, plan_model
from kopretrain.train.strategies import strategy_class

FAULT_MARKER = "fault_injected"


def check_tokens(cfg: TrainConfig, weights: dict[str, float], plan: ModelPlan) -> dict:
    """The packed domains the mix needs: present, one sequence length, made with this tokenizer."""
    root = resolve_path(cfg.data.tokens_dir)
    if not root.is_dir():
        raise UserError(f"data.tokens_dir: not a directory: {root}")
    indexes = {}
    for domain in weights:
        index_file = root / domain / "index.json"
        if not index_file.exists():
            have = sorted(p.name for p in root.iterdir() if (p / "index.json").exists())
            raise UserError(f"data.tokens_dir: no packed tokens for domain '{domain}' in {root} (found: {', '.join(have) or 'none'})")
        try:  # parses, well-typed, every shard file as long as the index says (os.stat): before Ray starts
            indexes[domain] = read_index(root / domain)
        except UserError as exc:
            raise UserError(f"data.tokens_dir: {exc}") from None
        if indexes[domain]["num_sequences"] < 1:
            raise UserError(f"data.tokens_dir: {root / domain} holds no sequences")
    seq_lens = {d: int(i["seq_len"]) for d, i in indexes.items()}
    if len(set(seq_lens.values())) > 1:
        raise UserError(f"data.tokens_dir: domains were packed with different seq_len {seq_lens}; pack them alike")
    if cfg.data.check_tokenizer_fingerprint:
        from kopretrain.tokenizer.load import load_tokenizer

        fingerprint = load_tokenizer(plan.tokenizer_dir).fingerprint
        for domain, index in indexes.items():
            if index.get("tokenizer_fingerprint") != fingerprint:
                raise UserError(
                    f"data.tokens_dir: {root / domain} was tokenized with tokenizer {index.get('tokenizer_fingerprint')}, "
                    f"not with {plan.tokenizer_dir} ({fingerprint}); re-run prepare or set data.check_tokenizer_fingerprint=false"
                )
    for domain, index in indexes.items():
        if int(index["vocab_size"]) > max(plan.tokenizer_len, plan.model_vocab_size):
            raise UserError(f"data.tokens_dir: {root / domain} has token ids up to {index['vocab_size']}, beyond the model's vocabulary")
    return {"tokens_dir": str(root.resolve()), "seq_len": next(iter(seq_lens.values())),
            "num_sequences": {d: int(i["num_sequences"]) for d, i in indexes.items()}}


def check_stages(cfg: TrainConfig, plan: ModelPlan) -> None:
    stages = cfg.resolved_stages()
    if any(s.trainable == "new_embeddings" for s in stages):
        vocab = max(plan.tokenizer_len, plan.model_vocab_size)
        if not plan.num_base_rows or plan.num_base_rows >= vocab:
            raise UserError(
                f"model.num_base_rows: a new_embeddings stage needs the base vocabulary size below {vocab} "
                f"(got {plan.num_base_rows}; set it, or use a tokenizer with kopretrain_tokenizer.json)"
            )
    if len(stages) > 1 and not strategy_class(cfg.strategy.name).supports_multiple_stages:
        raise UserError(f"stages: strategy '{cfg.strategy.name}' trains a single stage; run the stages as separate "
                        "runs (model.name_or_path = the previous run's model/) or use fsdp, ddp or deepspeed_zero2")


def scaling_config(cfg: TrainConfig):
    from ray.train import ScalingConfig

    s = cfg.scale
    resources = {"CPU": s.cpus_per_worker, **s.resources_per_worker}
    if s.groups:  # one resource shape for all workers (checked equal across groups)
        resources.update(s.groups[0].resources_per_worker)
    if s.use_gpu:
        resources.setdefault("GPU", 1)
    selector = dict(s.label_selector) or None
    if s.groups:  # Ray Train 2.60: one selector per worker; ranks need not follow this order (worker.find_group)
        per_worker = [g.selector() for g in s.groups for _ in range(g.num_workers)]
        selector = per_worker if any(per_worker) else None
    return ScalingConfig(
        num_workers=s.num_workers, use_gpu=s.use_gpu, resources_per_worker=resources,
        accelerator_type=s.accelerator_type or None, label_selector=selector,
    )


def resolve_train_paths(cfg: TrainConfig, run_dir: Path) -> TrainConfig:
    """`cfg` with every path key absolute (paths.PATH_KEYS["train"]), the defaults filled in:
    output_dir = the run dir, checkpoint.storage_path = <run dir>/ray (a URI stays a URI)."""
    cfg = resolve_config_paths("train", cfg)
    checkpoint = dataclasses.replace(cfg.checkpoint, storage_path=cfg.checkpoint.storage_path or str(run_dir / "ray"))
    return dataclasses.replace(cfg, output_dir=cfg.output_dir or str(run_dir), checkpoint=checkpoint)


def _finished_report(run_dir: Path, fp: str, model_dir: Path) -> dict | None:
    """The run dir's report.json if it is this configuration's, with its exported model in place."""
    try:
        report = json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    same = report.get(STATE_KEY) == fp and report.get("model_path") == str(model_dir)
    exported = (model_dir / "config.json").exists() or (model_dir / "adapter" / "adapter_config.json").exists()  # peft.export=adapter
    return report if same and exported else None


def _say(message: str) -> None:
    print(f"kopretrain train: {message}", flush=True)


def run_train(cfg: TrainConfig, run_dir: Path) -> dict:
    import ray

    from kopretrain.ray_session import init_ray
    from kopretrain.run_dir import write_report
    from kopretrain.tracking import start_run
    from kopretrain.train import preflight
    from kopretrain.train.worker import WorkerJob, train_worker

    run_dir = run_dir.resolve()
    elsewhere = "checkpoint.storage_path" if cfg.checkpoint.storage_path else "hydra.run.dir"
    cfg = resolve_train_paths(cfg, run_dir)
    storage, model_dir = cfg.checkpoint.storage_path, Path(cfg.output_dir) / "model"
    keys = math_keys(cfg)
    fp = fingerprint(keys)
    prior = resume.find_prior(storage)
    finished = _finished_report(run_dir, fp, model_dir)
    decision = resume.decide(cfg.resume, prior, fp, keys, cfg.num_steps, finished is not None, elsewhere,
                             cfg.scale.num_workers)
    if decision.action == "complete":
        _say(decision.message)
        return finished
    active = cfg.mix.active_domains()  # a mix schedule may read a domain whose first share is 0
    weights = {d: w for d, w in cfg.mix.resolved_weights(keep_zero=True).items() if d in active}
    plan = plan_model(cfg)
    check_stages(cfg, plan)
    from kopretrain.train.optimizers import check_available

    check_available(cfg.optim.name)
    data = check_tokens(cfg, weights, plan)
    changed_data = ""  # packed data re-prepared in place since the checkpoint: refused unless allowed
    if decision.action == "resume":
        changed_data = resume.check_data(prior, data["num_sequences"], cfg.data.allow_changed_data)
    context = preflight.model_context(plan.name_or_path, plan.arch)
    preflight.check_context(data["seq_len"], context)  # settings against model and machine
    from kopretrain.train.validate import check_heldout

    check_heldout(cfg.eval, context)  # eval.heldout read here, not in the workers
    from kopretrain.train.validate_kobest import check_kobest

    check_kobest(cfg.eval)  # eval.kobest_* files read here too
    preflight.check_resources_before_start(cfg)
    from kopretrain.train.convert_bin import describe, prepare_weights

    converted = prepare_weights(plan, cfg.model.safetensors_dir)  # a .bin-only checkpoint: safetensors once, then read sharded
    if converted is not None:
        _say(describe(converted))
    from kopretrain.train.base_checkpoint import check_base_checkpoint

    check_base_checkpoint(plan)  # every shard and every weight there, before Ray (train/base_checkpoint.py)
    init_ray(cfg.ray, log_dir=run_dir / "logs")
    preflight.check_cluster(cfg)  # before anything is written; a cluster without them fails unless it can autoscale
    if cfg.scale.groups:  # each group's nodes exist (a local instance has no labels)
        from kopretrain.train.groups import check_group_nodes

        check_group_nodes(cfg, ray.nodes(), preflight.is_local_instance())
    if decision.action == "clear":
        resume.clear(storage)
        (run_dir / FAULT_MARKER).unlink(missing_ok=True)
    elif prior.orphans:  # unregistered checkpoint dirs: Ray Train would ignore them and keep them past num_to_keep
        _say(resume.remove_orphans(storage, prior))
    if decision.message:
        _say(decision.message)
    if changed_data:
        _say(changed_data)
    resume.write_record(storage, fp, keys)

    tracker = start_run(cfg.tracking, run_name=f"train-{run_dir.name}", config=cfg)
    job = WorkerJob(cfg=cfg, model_plan=plan, weights=weights, tokens_dir=data["tokens_dir"], model_dir=str(model_dir),
                    tracking_uri=getattr(tracker, "uri", ""), mlflow_run_id=tracker.run_id,
                    fault_marker=str(run_dir / FAULT_MARKER), config_fingerprint=fp)
    try:
        result = _fit(cfg, job, train_worker, storage)
        summary = result.return_value
        assert summary is not None, "rank 0 returned no summary"
    except BaseException as exc:
        tracker.end("FAILED")
        from kopretrain.train.failure import raise_one_line  # Ray Train gave up: one line (exit 1), not its traceback

        raise_one_line(exc, cfg.scale.max_failures, storage, cfg.resume, run_dir / "logs" / "ray.log")
        raise
    report = _report(cfg, summary, data, plan, model_dir, tracker.run_id, str(result.path))
    report[STATE_KEY] = fp
    if converted is not None:  # the workers read the driver's conversion (train/convert_bin.py)
        report["load"], report["load_conversion"] = f"{report['load']}; {describe(converted)}", converted
    # the step rank 0 of the last attempt restored: a rerun's resume point, or after a restart within
    # the fit (num_resumes) the checkpoint that restart resumed from (0: none)
    report["resumed_from_step"] = summary.get("start_step", prior.last_step if decision.action == "resume" else 0)
    if summary.get("eval"):  # eval.at_end: `kopretrain eval`'s layout, against the base (train/eval_at_end.py)
        from kopretrain.train.eval_at_end import eval_report

        ev = summary["eval"]
        report["eval"] = eval_report(ev["domains"], ev.get("base"), cfg.num_steps, ev.get("base_exact") is not False)
        if ev.get("kobest"):  # eval.kobest_tasks: `kopretrain eval`'s kobest and kobest_settings (train/validate_kobest.py)
            report["eval"]["kobest"] = ev["kobest"]
            report["eval"]["kobest_settings"] = {"split": cfg.eval.kobest_split, "num_fewshot": cfg.eval.kobest_num_fewshot,
                                                 "seed": cfg.eval.kobest_config().seed, "limit": cfg.eval.kobest_max_items}
    report_file = run_dir / "report.json"
    write_report(report_file, report)  # first: tracking below only warns, it cannot lose the result
    # the whole run's figures (per-step tokens/s, MFU and memory come from rank 0, batched)
    tracker.log_metrics({f"run_{k}": report[k] for k in ("tokens_per_second", "mfu") if report[k] is not None}
                        | {"run_peak_memory_bytes": max(report["peak_memory_bytes"])})
    if report.get("eval"):  # ko_bpc, en_bpc, ..., en_bpc_delta, en_bpc_retained: what `kopretrain eval` logs
        from kopretrain.train.eval_at_end import metrics, retention_line, summary_line

        tracker.log_metrics(metrics(report["eval"]), step=cfg.num_steps)
        _say(summary_line(report["eval"]))
        if "retention" in report["eval"]:
            _say(retention_line(report["eval"]["retention"]))
    tracker.log_artifact(report_file)
    tracker.end()
    return report


def _fit(cfg: TrainConfig, job, train_worker, storage: str):
    from ray.train import CheckpointConfig, FailureConfig, RunConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"job": job},
        torch_config=TorchConfig(backend="nccl" if cfg.scale.use_gpu else "gloo"),
        scaling_config=scaling_config(cfg),
        run_config=RunConfig(
            name=resume.EXPERIMENT_NAME, storage_path=storage,
            failure_config=FailureConfig(max_failures=cfg.scale.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.checkpoint.num_to_keep),
        ),
    )
    return trainer.fit()


def _mix_knots(cfg: TrainConfig) -> list:
    from kopretrain.train.mix_schedule import build_mix_schedule

    return build_mix_schedule(cfg.mix, [(s.name, s.num_steps) for s in cfg.resolved_stages()]).to_state()


def _report(cfg: TrainConfig, summary: dict, data: dict, plan: ModelPlan, model_dir: Path,
            run_id: str, ray_path: str) -> dict:
    from kopretrain.train import throughput

    tps = summary["tokens_per_second"]
    # 6N (N without the embeddings) + the attention matmuls per token (LoRA: 4N + 6T + attention), measured
    # against the sum of the ranks' peaks: kopretrain/train/throughput.py
    mfu = throughput.mfu(summary["flops_per_token"], tps, summary["peak_flops_per_rank"])
    return {
        "model_path": str(model_dir),
        "losses": summary["losses"],
        # every configured domain, a zero-share one (mix.replay_ratio=0) as 0.0
        "token_share": {d: summary["token_share"].get(d, 0.0) for d in cfg.mix.resolved_weights(keep_zero=True)},
        "weights": cfg.mix.resolved_weights(keep_zero=True),
        "mix_schedule": _mix_knots(cfg),  # [[step, {domain: share}], ...]: piecewise linear over 0-based steps
        "tokens_per_domain": {d: summary["tokens_per_domain"].get(d, 0) for d in cfg.mix.resolved_weights(keep_zero=True)},
        "num_tokens": summary["num_tokens"],
        "stages": summary["stages"],
        "strategy": cfg.strategy.name,
        "num_workers": cfg.scale.num_workers,
        "scale_groups": summary.get("scale_groups"),  # scale.groups: each group's ranks, micro-batch sizes, node labels
        "device": summary["device"],
        "activation_checkpointing": summary.get("activation_checkpointing"),  # model.gradient_checkpointing, as run
        "device_mesh": summary.get("device_mesh"),  # FSDP2: {"shard": n} or {"replicate": r, "shard": n} (HSDP)
        "num_params": summary["num_params"],
        "num_trainable_params": summary.get("num_trainable_params", summary["num_params"]),
        "peft": cfg.peft.method,
        "vocab_size": summary["vocab_size"],
        "num_base_rows": plan.num_base_rows,
        "resize": summary["resize"],
        "load": summary.get("load"),  # how the workers loaded the weights (train/model_init.py): in place, partitioned, full (why)
        "seq_len": data["seq_len"],
        "num_sequences_per_step": cfg.batch.num_sequences_per_step,
        "num_accumulation_steps": cfg.num_accumulation_steps,
        "tokens_per_second": tps,
        "mfu": mfu,
        "flops_per_token": summary["flops_per_token"],
        "peak_memory_bytes": summary["peak_memory_bytes"],
        "projected": throughput.projected(cfg.plan.num_tokens, tps, cfg.scale.num_workers),
        "train_seconds": summary["train_seconds"],
        "step_seconds": summary["step_seconds"],
        "num_resumes": summary["num_resumes"],
        "final_loss": summary["losses"][-1]["loss"],
        "tokens_dir": data["tokens_dir"],
        "mlflow_run_id": run_id,
        "ray_train_path": ray_path,
    }
