"""`run_train` on a real local Ray instance, 2 CPU workers (gloo), every strategy.

All runs share one config: the tiny base Llama (1,500 tokens) continued with the smoke
tokenizer (2,000 tokens, so resized to 2,048 rows before sharding), EEVE stages (2 steps of
new embedding rows only, then 4 steps of everything), Korean with 20% English replay. FSDP2 is
the reference; DDP and DeepSpeed ZeRO-2/3 (with activation checkpointing, which the reference runs
without) and HSDP on 4 workers must reproduce its losses (same math), and a run
killed at step 5 and restarted by Ray Train from its step-3 checkpoint must reproduce them
bitwise (losses and exported weights), as must one killed at step 1, before any checkpoint,
and restarted from scratch. Each Ray Train fit costs tens of seconds here, so each run is
checked for everything it can show.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import torch

from kopretrain.train.command import run_train
from kopretrain.train.model import build_model, plan_model
from tests.train.conftest import NUM_BASE_TOKENS, expanded_overrides, smoke_cfg

pytestmark = pytest.mark.ray

STAGED = ["num_steps=6", "stages=[{name:embed,num_steps:2,trainable:new_embeddings},{name:full,num_steps:4,trainable:all}]",
          "checkpoint.every_num_steps=3", "checkpoint.num_to_keep=10", "log_every_num_steps=2", "plan.num_tokens=1e6"]
# the tiny base resized to 2,048 rows: N without embeddings = 2 layers x (q 4096 + k 2048 + v 2048 + o 4096 +
# MLP 3 x 64 x 128 + norms 128) + final norm 64 = 74,048; FLOPs/token = 6N + 12 x 2 x 64 x 128 (seq_len) = 640,896
TINY_FLOPS_PER_TOKEN = 6 * 74_048 + 12 * 2 * 64 * 128
EMBEDDINGS = ("model.embed_tokens.weight", "lm_head.weight")


@pytest.fixture(scope="module")
def train_run(ray_local, base_model_dir, tmp_path_factory):
    """run(name, *overrides, tracking=False) -> (cfg, report); runs are cached by name."""
    root = tmp_path_factory.mktemp("train_runs")
    cache: dict = {}

    def run(name: str, *overrides: str, tracking: bool = False):
        if name not in cache:
            cfg = smoke_cfg(*expanded_overrides(base_model_dir), *STAGED, *overrides, tmp_path=root if tracking else None)
            cache[name] = (cfg, run_train(cfg, root / name))
        return cache[name]

    return run


def initial_weights(cfg) -> dict[str, torch.Tensor]:
    model, _ = build_model(plan_model(cfg), cfg.seed)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def checkpoint_weights(report: dict, step: int, tmp: Path) -> dict[str, torch.Tensor]:
    """The model weights in the run's checkpoint at `step`, whatever the strategy's format."""
    for ckpt in Path(report["ray_train_path"]).glob("checkpoint_*"):
        if ckpt.is_dir() and json.loads((ckpt / "train_state.json").read_text())["step"] == step:
            break
    else:
        raise AssertionError(f"no checkpoint at step {step}")
    if (ckpt / "model.pt").exists():
        return torch.load(ckpt / "model.pt")
    if (ckpt / "fsdp").exists():
        from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

        dcp_to_torch_save(ckpt / "fsdp", tmp / "full.pt")
        return torch.load(tmp / "full.pt")["model"]
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    return get_fp32_state_dict_from_zero_checkpoint(str(ckpt / "deepspeed"), tag="engine")


def exported_weights(report: dict) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(Path(report["model_path"]) / "model.safetensors")


def assert_stage_one_moved_only_new_rows(cfg, report, tmp):
    before, after = initial_weights(cfg), checkpoint_weights(report, 2, tmp)
    for name, value in before.items():
        if name in EMBEDDINGS:
            assert torch.equal(after[name][:NUM_BASE_TOKENS], value[:NUM_BASE_TOKENS]), f"{name}: base rows moved"
            assert (after[name][NUM_BASE_TOKENS:2000] - value[NUM_BASE_TOKENS:2000]).abs().max() > 1e-4, f"{name}: new rows idle"
        else:
            assert torch.equal(after[name], value), f"{name} must stay frozen in the new_embeddings stage"


def test_fsdp_trains_exports_reports_and_logs_to_mlflow(train_run, tmp_path):
    from mlflow.tracking import MlflowClient
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg, report = train_run("fsdp", tracking=True)
    assert report["strategy"] == "fsdp" and report["num_workers"] == 2 and report["num_resumes"] == 0
    losses = [r["loss"] for r in report["losses"]]
    assert [r["step"] for r in report["losses"]] == [1, 2, 3, 4, 5, 6]
    assert [r["stage"] for r in report["losses"]] == ["embed"] * 2 + ["full"] * 4
    assert losses[-1] < losses[0] - 0.2 and all(r["tokens"] == r["step"] * 8 * 128 for r in report["losses"])
    assert [(s["name"], s["trainable"], s["last_step"]) for s in report["stages"]] == [
        ("embed", "new_embeddings", 2), ("full", "all", 6)]
    assert report["weights"] == {"ko": 0.8, "en": 0.2}
    assert abs(report["token_share"]["en"] - 0.2) <= 1 / 48 and sum(report["token_share"].values()) == pytest.approx(1)
    assert report["resize"]["num_rows"] == 2048 and report["num_base_rows"] == NUM_BASE_TOKENS
    assert report["load"] == "in place"  # each rank read only its FSDP2 shards from the safetensors (train/model_init.py)
    assert report["tokens_per_second"] > 0 and report["mfu"] is None  # CPU: no peak FLOPs, no MFU
    assert report["flops_per_token"] == TINY_FLOPS_PER_TOKEN
    assert 0 < report["step_seconds"] < report["train_seconds"]  # median step, hooks included, checkpoints not
    memory = report["peak_memory_bytes"]  # per rank: the worker process's peak RSS on CPU
    assert len(memory) == 2 and all(isinstance(m, int) and 100 * 2**20 < m < 64 * 2**30 for m in memory)
    projected = report["projected"]  # plan.num_tokens=1e6 at the measured tokens/s on 2 workers
    assert projected["wall_seconds"] == pytest.approx(1e6 / report["tokens_per_second"])
    assert projected["gpu_hours"] == pytest.approx(projected["wall_seconds"] * 2 / 3600)

    model = AutoModelForCausalLM.from_pretrained(report["model_path"])
    tok = AutoTokenizer.from_pretrained(report["model_path"])
    ids = tok("안녕하세요, 오늘은 날씨가 좋네요", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], 2048) and torch.isfinite(logits).all()
    assert len(tok) == 2000

    client = MlflowClient(cfg.tracking.uri)
    run = client.get_run(report["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.params["mix.replay_ratio"] == "0.2"
    history = client.get_metric_history(report["mlflow_run_id"], "loss")
    assert [(m.step, m.value) for m in history] == [(r["step"], pytest.approx(r["loss"])) for r in report["losses"]]
    # the realized token share per domain at every step, from rank 0; the last one is the report's
    for domain in ("ko", "en"):
        shares = sorted((m.step, m.value) for m in client.get_metric_history(report["mlflow_run_id"], f"token_share_{domain}"))
        assert [step for step, _ in shares] == [1, 2, 3, 4, 5, 6]
        assert shares[-1][1] == pytest.approx(report["token_share"][domain])
    # the loss per domain at every step: report.json's losses[i].loss_by_domain and MLflow's loss/<domain>
    for domain in ("ko", "en"):
        logged = sorted((m.step, m.value) for m in client.get_metric_history(report["mlflow_run_id"], f"loss/{domain}"))
        assert logged == [(r["step"], pytest.approx(r["loss_by_domain"][domain])) for r in report["losses"]
                          if domain in r["loss_by_domain"]] and logged
    assert all(min(r["loss_by_domain"].values()) <= r["loss"] <= max(r["loss_by_domain"].values()) for r in report["losses"])
    en = [value for _, value in sorted((m.step, m.value) for m in client.get_metric_history(report["mlflow_run_id"], "token_share_en"))]
    assert len(set(en)) > 1, "the share is realized step by step, not logged once"
    # throughput and memory per step, sent in batches (log_every_num_steps=2, and at the step-3 checkpoint):
    # the steps of one log_batch share its timestamp
    for name in ("tokens_per_second", "peak_memory_bytes"):
        assert sorted(m.step for m in client.get_metric_history(report["mlflow_run_id"], name)) == [1, 2, 3, 4, 5, 6]
    assert client.get_metric_history(report["mlflow_run_id"], "mfu") == []  # CPU
    stamps = {m.step: m.timestamp for m in history}
    assert stamps[1] == stamps[2] and stamps[5] == stamps[6]
    assert run.data.metrics["run_tokens_per_second"] == pytest.approx(report["tokens_per_second"])
    # rank 0's step line every 2 steps: grad norm, tokens/s, peak memory, ETA (no MFU on CPU)
    log = console_log(report, "[train] step 6/6")
    line = next(x for x in log.splitlines() if "[train] step 4/6" in x)
    assert re.search(r"\[train\] step 4/6  loss \d+\.\d{4}  lr \S+  gnorm \S+  \S+ tok/s  mem [\d.]+ [MG]iB  ETA \S+$", line), line
    assert "[train] step 2/6" in log and "MFU" not in log
    assert {"report.json", "config.json"} <= {a.path for a in client.list_artifacts(report["mlflow_run_id"])}
    assert_stage_one_moved_only_new_rows(cfg, report, tmp_path)


CHECKPOINTING = "model.gradient_checkpointing=true"  # the reference runs without: the losses must not change


@pytest.mark.parametrize("strategy,rtol", [("ddp", 1e-6), ("deepspeed_zero2", 1e-5)])
def test_other_strategies_do_the_same_math(train_run, tmp_path, strategy, rtol):
    _, reference = train_run("fsdp", tracking=True)
    cfg, report = train_run(strategy, f"strategy={strategy}", CHECKPOINTING)
    assert report["strategy"] == strategy
    assert report["activation_checkpointing"] is True and reference["activation_checkpointing"] is False
    expected = torch.tensor([r["loss"] for r in reference["losses"]])
    got = torch.tensor([r["loss"] for r in report["losses"]])
    assert torch.allclose(got, expected, rtol=rtol, atol=0), (got, expected)
    assert report["token_share"] == reference["token_share"]
    assert_stage_one_moved_only_new_rows(cfg, report, tmp_path)
    mine, theirs = exported_weights(report), exported_weights(reference)
    assert mine.keys() == theirs.keys()
    for name in theirs:
        assert torch.allclose(mine[name], theirs[name], atol=1e-4), name


def test_zero3_new_embeddings_stage_matches_and_exports_gathered_weights(train_run, tmp_path):
    """ZeRO-3 trains one stage (the driver refuses more): the EEVE embedding stage on its own is
    the reference's first two steps, and its export is gathered from the parameter shards."""
    _, reference = train_run("fsdp", tracking=True)
    one_stage = ["num_steps=2", "stages=[{name:embed,num_steps:2,trainable:new_embeddings}]"]
    cfg, report = train_run("deepspeed_zero3", "strategy=deepspeed_zero3", *one_stage, CHECKPOINTING, "strategy.offload_params=true")
    assert report["activation_checkpointing"] is True and report["load"] == "partitioned"  # built under zero.Init
    got = torch.tensor([r["loss"] for r in report["losses"]])
    expected = torch.tensor([r["loss"] for r in reference["losses"][:2]])
    assert torch.allclose(got, expected, rtol=1e-5, atol=0), (got, expected)
    # eval.at_end's base, scored through the ZeRO-3 engine before step 1 (lm_head's weight registered
    # at the stage start, so the eval forward does not put the parameter trace out of step): FSDP2's
    for domain, base in reference["eval"]["base"].items():
        assert report["eval"]["base"][domain]["bpc"] == pytest.approx(base["bpc"], rel=1e-5), domain
    assert set(report["eval"]["retention"]["bpc_retained"]) == set(reference["eval"]["base"])
    assert_stage_one_moved_only_new_rows(cfg, report, tmp_path)
    exported, at_step_2 = exported_weights(report), checkpoint_weights(reference, 2, tmp_path)
    for name, value in at_step_2.items():
        assert torch.allclose(exported[name], value, atol=1e-5), name


def test_hsdp_2x2_with_checkpointing_and_cpu_offload_matches_fsdp(train_run, tmp_path):
    """4 workers as 2 replicas x 2 shards (HSDP: a 2-D mesh, as 2 nodes of 2 GPUs), every decoder
    layer recomputed in backward, parameters offloaded (CPUOffloadPolicy): plain 2-worker FSDP's losses."""
    _, reference = train_run("fsdp", tracking=True)
    cfg, report = train_run("hsdp", "scale.num_workers=4", "strategy.hsdp_replicate_degree=2", CHECKPOINTING,
                            "strategy.offload_params=true")
    assert report["num_workers"] == 4 and report["device_mesh"] == {"replicate": 2, "shard": 2}
    assert reference["device_mesh"] == {"shard": 2} and report["activation_checkpointing"] is True
    expected = torch.tensor([r["loss"] for r in reference["losses"]])
    got = torch.tensor([r["loss"] for r in report["losses"]])
    assert torch.allclose(got, expected, rtol=1e-5, atol=0), (got, expected)
    assert_stage_one_moved_only_new_rows(cfg, report, tmp_path)
    mine, theirs = exported_weights(report), exported_weights(reference)
    for name in theirs:
        assert torch.allclose(mine[name], theirs[name], atol=1e-4), name


def assert_same_exported_weights_bitwise(report: dict, reference: dict) -> None:
    mine, theirs = exported_weights(report), exported_weights(reference)
    assert mine.keys() == theirs.keys()
    for name in theirs:
        assert torch.equal(mine[name], theirs[name]), f"{name}: exported weights differ from the uninterrupted run"


def console_log(report: dict, needle: str, patience_s: float = 30.0) -> str:
    """The run's logs/ray.log once it holds `needle` (worker lines reach the driver asynchronously)."""
    log = Path(report["model_path"]).parent / "logs" / "ray.log"
    deadline = time.monotonic() + patience_s
    while time.monotonic() < deadline and not (log.exists() and needle in log.read_text(encoding="utf-8")):
        time.sleep(0.5)
    return log.read_text(encoding="utf-8") if log.exists() else ""


def test_fault_at_step_5_resumes_from_the_last_checkpoint_with_identical_losses_and_weights(train_run):
    from mlflow.tracking import MlflowClient

    _, reference = train_run("fsdp", tracking=True)
    # with held-out evals every 2 steps (kopretrain/train/validate.py): they change nothing and resume with the run
    # and KoBEST COPA items at the same evals (kopretrain/train/validate_kobest.py)
    cfg, report = train_run("fault", "fault.fail_at_step=5", "scale.max_failures=1", "eval.every_num_steps=2",
                            "eval.max_docs_per_domain=3", "eval.kobest_tasks=[copa]", "eval.kobest_max_items=4",
                            tracking=True)
    assert report["num_resumes"] == 1 and report["resumed_from_step"] == 3  # what the restart restored
    assert (Path(report["model_path"]).parent / "fault_injected").exists()
    # bitwise: same shards, same reduction order, optimizer and sampler state restored exactly
    assert [r["loss"] for r in report["losses"]] == [r["loss"] for r in reference["losses"]]
    assert report["stages"] == reference["stages"]
    assert_same_exported_weights_bitwise(report, reference)
    history = MlflowClient(cfg.tracking.uri).get_metric_history(report["mlflow_run_id"], "loss")
    assert [m.step for m in history] == [1, 2, 3, 4, 5, 6], "steps redone after the restart are not logged twice"
    for name in ("eval/ko_bpc", "eval/en_bpc", "eval/en_loss_per_token"):
        evals = MlflowClient(cfg.tracking.uri).get_metric_history(report["mlflow_run_id"], name)
        assert [m.step for m in evals] == [2, 4, 6] and all(0 < m.value < 30 for m in evals), name
    kobest = MlflowClient(cfg.tracking.uri).get_metric_history(report["mlflow_run_id"], "eval/kobest_copa_acc")
    assert [m.step for m in kobest] == [2, 4, 6] and all(m.value in (0, 0.25, 0.5, 0.75, 1) for m in kobest)
    assert kobest[-1].value == report["eval"]["kobest"]["COPA"]["acc"] == report["eval"]["kobest"]["mean"]["acc"]
    assert report["eval"]["kobest"]["COPA"]["num_items"] == 4 and report["eval"]["kobest_settings"]["limit"] == 4
    final = MlflowClient(cfg.tracking.uri).get_run(report["mlflow_run_id"]).data.metrics
    assert final["kobest_copa_acc"] == final["eval/kobest_copa_acc"] == kobest[-1].value  # and eval.at_end's
    # rank 0's console lines reach the driver, which files them with the workers' output
    log = console_log(report, "[train] step 6/6")
    assert "[train] step 6 eval: ko bpc " in log
    assert ", KoBEST mean acc " in log
    assert "[train] restart 1: resuming from the checkpoint at step 3" in log
    assert "[train] step 6/6  loss" in log


def test_fault_before_the_first_checkpoint_restarts_from_scratch_and_counts(train_run):
    """Killed at step 1 (checkpoints every 3 steps): Ray Train restarts the group with no
    checkpoint; the run starts over and still ends exactly as the uninterrupted one."""
    _, reference = train_run("fsdp", tracking=True)
    _, report = train_run("fault_early", "fault.fail_at_step=1", "scale.max_failures=1")
    assert report["num_resumes"] == 1 and report["resumed_from_step"] == 0
    assert [r["loss"] for r in report["losses"]] == [r["loss"] for r in reference["losses"]]
    assert_same_exported_weights_bitwise(report, reference)
    assert "[train] restart 1: no checkpoint yet, starting again from step 0" in console_log(report, "restart 1")


@pytest.mark.slow
def test_zero2_worker_sigkilled_at_step_5_resumes_with_identical_losses_and_weights(train_run):
    """The same for DeepSpeed ZeRO-2: rank 0's process is SIGKILLed at step 5; Ray Train restarts the
    group, which loads the engine checkpoint of step 3 (each rank its partitions) and ends bitwise
    as the uninterrupted ZeRO-2 run."""
    zero2 = ["strategy=deepspeed_zero2", CHECKPOINTING]
    _, reference = train_run("deepspeed_zero2", *zero2)
    _, report = train_run("fault_zero2", *zero2, "fault.fail_at_step=5", "fault.kind=sigkill", "scale.max_failures=1")
    assert report["num_resumes"] == 1 and report["strategy"] == "deepspeed_zero2"
    assert (Path(report["model_path"]).parent / "fault_injected").exists()
    assert [r["loss"] for r in report["losses"]] == [r["loss"] for r in reference["losses"]]
    assert report["stages"] == reference["stages"]
    assert_same_exported_weights_bitwise(report, reference)
    assert "[train] restart 1: resuming from the checkpoint at step 3" in console_log(report, "restart 1")
