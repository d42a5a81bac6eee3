"""`peft=lora` through `run_train` on a real local Ray instance, 2 CPU workers (gloo): the tiny base
Llama continued with the smoke tokenizer (resized to 2,048 rows), EEVE stages (2 steps of new rows
only, then 4 of adapters + new rows). FSDP2 shards the PeftModel (frozen and trainable parameters
in the same units); every base weight stays bit-identical in the checkpoints, the merged export
loads with from_pretrained and matches the exported adapter's logits, a worker killed at step 5
resumes from the step-3 checkpoint with bitwise-identical losses and weights, and DDP and
DeepSpeed ZeRO-2 do the same math. Four Ray Train fits."""

from __future__ import annotations

import pytest
import torch

from kopretrain.train.adapters import is_adapter, is_new_rows, load_adapter
from kopretrain.train.command import run_train
from tests.train.conftest import expanded_overrides, smoke_cfg
from tests.train.test_ray_train import checkpoint_weights, exported_weights, initial_weights

pytestmark = pytest.mark.ray

LORA_STAGED = ["peft=lora", "peft.export=both", "num_steps=6",
               "stages=[{name:embed,num_steps:2,trainable:new_embeddings},{name:full,num_steps:4,trainable:all}]",
               "checkpoint.every_num_steps=3", "checkpoint.num_to_keep=10"]


@pytest.fixture(scope="module")
def lora_run(ray_local, base_model_dir, tmp_path_factory):
    """run(name, *overrides) -> (cfg, report); runs are cached by name."""
    root = tmp_path_factory.mktemp("lora_runs")
    cache: dict = {}

    def run(name: str, *overrides: str):
        if name not in cache:
            cfg = smoke_cfg(*expanded_overrides(base_model_dir), *LORA_STAGED, *overrides)
            cache[name] = (cfg, run_train(cfg, root / name))
        return cache[name]

    return run


def test_fsdp_lora_freezes_the_base_trains_adapters_and_rows_and_exports_both(lora_run, tmp_path):
    from transformers import AutoModelForCausalLM

    cfg, report = lora_run("fsdp")
    assert report["peft"] == "lora" and report["strategy"] == "fsdp" and report["num_trainable_params"] == 102_912
    assert report["load"] == "in place"  # each rank read its shards (train/model_init_lora.py), adapters as build_model's
    assert [(s["name"], s["num_trainable_params"]) for s in report["stages"]] == [("embed", 2 * 548 * 64), ("full", 102_912)]
    losses = [r["loss"] for r in report["losses"]]
    assert losses[-1] < losses[0] - 0.1, losses

    initial = initial_weights(cfg)
    at_2, at_6 = checkpoint_weights(report, 2, tmp_path), checkpoint_weights(report, 6, tmp_path)
    assert at_6.keys() >= initial.keys()
    for name, value in initial.items():
        if is_new_rows(name):
            assert (at_2[name] - value).abs().max() > 1e-4, f"{name}: new rows idle in the embed stage"
        elif is_adapter(name):
            assert torch.equal(at_2[name], value), f"{name}: adapters move only in the `all` stage"
            if "lora_B" in name:
                assert (at_6[name] - value).abs().max() > 1e-5, f"{name} did not train"
        else:
            assert torch.equal(at_6[name], value), f"{name}: a frozen base weight changed"

    model_dir = report["model_path"]
    merged = AutoModelForCausalLM.from_pretrained(model_dir)
    adapter = load_adapter(f"{model_dir}/adapter").eval()
    ids = torch.randint(0, 2000, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        diff = (merged(input_ids=ids).logits - adapter(input_ids=ids).logits).abs().max()
    assert diff < 1e-4, diff


def test_killed_worker_resumes_lora_bitwise(lora_run):
    from safetensors.torch import load_file

    _, reference = lora_run("fsdp")
    _, report = lora_run("fault", "fault.fail_at_step=5", "scale.max_failures=1")
    assert report["num_resumes"] == 1 and report["resumed_from_step"] == 3  # the checkpoint the restart restored
    assert [r["loss"] for r in report["losses"]] == [r["loss"] for r in reference["losses"]]
    mine, theirs = exported_weights(report), exported_weights(reference)
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in theirs)
    a = load_file(f"{report['model_path']}/adapter/adapter_model.safetensors")
    b = load_file(f"{reference['model_path']}/adapter/adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in b)


@pytest.mark.parametrize("strategy,rtol", [("ddp", 1e-6), ("deepspeed_zero2", 1e-5)])
def test_other_strategies_do_the_same_lora_math(lora_run, strategy, rtol):
    _, reference = lora_run("fsdp")
    _, report = lora_run(strategy, f"strategy={strategy}")
    expected = torch.tensor([r["loss"] for r in reference["losses"]])
    got = torch.tensor([r["loss"] for r in report["losses"]])
    assert torch.allclose(got, expected, rtol=rtol, atol=0), (got, expected)
    mine, theirs = exported_weights(report), exported_weights(reference)
    for name in theirs:
        assert torch.allclose(mine[name], theirs[name], atol=1e-5), name
