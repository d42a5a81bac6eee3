"""Loading a pretrained checkpoint the way each strategy holds it (kopretrain/train/model_init.py,
`Strategy.build`): the same weights, new vocabulary rows and first loss as the full-model path
(`build_model`, which every rank ran before), for a full replica in one process and for FSDP2 and
ZeRO-3 on 2 Ray Train workers, where each rank holds only its shard (also from the same weights
shipped as .bin shards, converted on the driver: train/convert_bin.py); and the
padded-checkpoint bug: new tokens that fit in a padded embedding matrix get initialised rows."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from kopretrain.train.model import build_model, plan_model
from kopretrain.train.convert_bin import prepare_weights
from tests.train.conftest import NUM_BASE_TOKENS, SMOKE_TOKENIZER, expanded_overrides, save_as_bin, smoke_cfg

PADDED_ROWS = 2048
EMBEDDINGS = ("model.embed_tokens.weight", "lm_head.weight")


@pytest.fixture(scope="module")
def padded_base_dir(base_model_dir, tmp_path_factory) -> Path:
    """The tiny base (1,500 tokens) with its matrices padded to 2,048 rows of random values, as
    Polyglot-Ko (30,003 tokens in 30,080 rows) or Qwen2 ship: the smoke tokenizer's 2,000 tokens fit."""
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("padded") / "base"
    model = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32)
    model.resize_token_embeddings(PADDED_ROWS, mean_resizing=False)
    torch.manual_seed(11)
    with torch.no_grad():
        for w in (model.get_input_embeddings().weight, model.get_output_embeddings().weight):
            w[NUM_BASE_TOKENS:] = torch.randn(PADDED_ROWS - NUM_BASE_TOKENS, w.shape[1])
    model.save_pretrained(out)
    for f in base_model_dir.iterdir():
        if f.name.startswith("tokenizer") or f.name == "special_tokens_map.json":
            shutil.copy(f, out / f.name)
    return out


def _cfg(base: Path):
    return smoke_cfg(*expanded_overrides(base))


def test_new_tokens_inside_a_padded_matrix_get_the_rows_of_an_unpadded_resize(base_model_dir, padded_base_dir):
    from safetensors.torch import load_file

    plan = plan_model(_cfg(padded_base_dir))
    assert (plan.model_vocab_size, plan.num_rows, plan.needs_resize) == (PADDED_ROWS, PADDED_ROWS, False)
    assert plan.new_rows.num_base == plan.num_base_rows == NUM_BASE_TOKENS
    model, info = build_model(plan, seed=0)
    assert info["resize"]["num_new_tokens"] == 500 and info["vocab_size"] == PADDED_ROWS
    unpadded, _ = build_model(plan_model(_cfg(base_model_dir)), seed=0)  # resized 1,500 -> 2,048 rows
    saved = load_file(padded_base_dir / "model.safetensors")
    for name in EMBEDDINGS:
        got, ref = model.state_dict()[name], unpadded.state_dict()[name]
        assert torch.equal(got[:2000], ref[:2000]), f"{name}: the new tokens' rows differ from a real resize"
        assert (got[NUM_BASE_TOKENS:2000] - saved[name][NUM_BASE_TOKENS:2000]).abs().min() > 0, f"{name}: padding values kept"
        assert torch.equal(got[2000:], saved[name][2000:]), f"{name}: padding rows no token uses are the checkpoint's"


@pytest.mark.parametrize("which", ["resized", "padded"])
def test_a_replica_is_read_in_place_with_the_weights_rows_and_loss_of_build_model(which, base_model_dir, padded_base_dir):
    from kopretrain.train.strategies import strategy_class
    from kopretrain.train.strategies.base import StrategySettings

    plan = plan_model(_cfg(base_model_dir if which == "resized" else padded_base_dir))
    ref, _ = build_model(plan, seed=0)
    strategy = strategy_class("local")(StrategySettings(device=torch.device("cpu")))
    info = strategy.build(plan, seed=0)
    assert info["load"] == "in place" and info["vocab_size"] == 2048 and info["resize"]["num_base_rows"] == NUM_BASE_TOKENS
    got = strategy.module.state_dict()
    assert got.keys() == ref.state_dict().keys()
    assert all(torch.equal(got[k], v) for k, v in ref.state_dict().items())
    x = torch.randint(0, 2000, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert float(strategy.module(input_ids=x, labels=x).loss) == float(ref(input_ids=x, labels=x).loss)


def test_a_checkpoint_without_safetensors_takes_the_full_path(base_model_dir, tmp_path):
    from kopretrain.train.model_init import sharded_checkpoint

    plan = plan_model(_cfg(base_model_dir))
    assert sharded_checkpoint(plan)[1] == ""
    empty = tmp_path / "bin"
    shutil.copytree(base_model_dir, empty)
    (empty / "model.safetensors").unlink()
    plan.name_or_path = str(empty)
    assert sharded_checkpoint(plan) == (None, "no safetensors")


def _old_and_new(config: dict) -> dict | None:
    """Ray Train worker: per strategy, the full path (build_model + wrap) and Strategy.build (also
    from the converted .bin; FSDP2 also with LoRA, tests/train/test_lora_in_place.py); their gathered
    weights, first-batch loss, what this rank holds of the input embedding and how it loaded."""
    import ray.train

    from kopretrain.train.model import build_model
    from kopretrain.train.strategies import strategy_class
    from kopretrain.train.strategies.base import RowFreeze, StrategySettings

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    plan, x = config["plan"], config["x"]
    out = {}
    for name, path in (("fsdp", "old"), ("fsdp", "new"), ("fsdp", "bin"), ("fsdp", "lora_old"), ("fsdp", "lora_new"),
                       ("deepspeed_zero3", "old"), ("deepspeed_zero3", "new"), ("deepspeed_zero3", "bin")):
        torch.manual_seed(0)
        s = strategy_class(name)(StrategySettings(device=torch.device("cpu"), rank=rank, world_size=world))
        path_plan = config["lora_plan"] if path.startswith("lora") else config["bin_plan"] if path == "bin" else plan
        if path.endswith("old"):
            model, _ = build_model(path_plan, 0)
            s.wrap(model)
            load = "full"
        else:  # bin: the same weights as .bin files, converted on the driver (train/convert_bin.py)
            load = s.build(path_plan, 0)["load"]
        emb = s.module.get_input_embeddings()
        emb = getattr(emb, "original_module", emb).weight  # LoRA: the matrix peft's trainable tokens wrap
        if name == "fsdp":  # the rows of the input embedding this rank holds once built
            held = int(emb.to_local().shape[0])
        else:  # the old path partitions only in deepspeed.initialize (start_stage)
            held = int(emb.ds_tensor.numel()) // emb.ds_shape[1] if hasattr(emb, "ds_tensor") else int(emb.shape[0])
        s.start_stage([{"params": list(s.module.parameters()), "weight_decay": 0.0}], RowFreeze())
        s.model.eval()  # no LoRA dropout
        with torch.no_grad():
            loss = float(s.model(input_ids=x, labels=x).loss)
        sd = s.full_state_dict()
        if name != "fsdp":
            s.engine.destroy()
        sd = {k: v.float().numpy() for k, v in sd.items()} if sd is not None else None  # Ray returns no tensors
        out[f"{name}/{path}"] = {"loss": loss, "held": held, "sd": sd, "load": load}
    return out if rank == 0 else None


@pytest.mark.ray
@pytest.mark.slow
def test_fsdp_and_zero3_ranks_load_their_shards_with_the_rows_and_loss_of_the_full_path(ray_local, base_model_dir, tmp_path):
    import sys

    import cloudpickle
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    plan = plan_model(_cfg(base_model_dir))
    bin_plan = plan_model(_cfg(save_as_bin(base_model_dir, tmp_path / "bin")))  # several .bin shards, no safetensors
    assert prepare_weights(bin_plan, "")["reused"] is False and bin_plan.safetensors_dir == str(tmp_path / "bin" / "safetensors")
    x = torch.randint(0, 2000, (2, 32), generator=torch.Generator().manual_seed(0))
    lora_plan = plan_model(smoke_cfg(*expanded_overrides(base_model_dir), "peft=lora"))
    trainer = TorchTrainer(_old_and_new, train_loop_config={"plan": plan, "bin_plan": bin_plan, "lora_plan": lora_plan, "x": x},
                           scaling_config=ScalingConfig(num_workers=2, use_gpu=False),
                           torch_config=TorchConfig(backend="gloo"),
                           run_config=RunConfig(name="model_init", storage_path=str(tmp_path / "ray")))
    out = trainer.fit().return_value
    for name, path in (("fsdp", "new"), ("fsdp", "bin"), ("fsdp", "lora_new"), ("deepspeed_zero3", "new"), ("deepspeed_zero3", "bin")):
        old, new = out[f"{name}/{'lora_old' if path == 'lora_new' else 'old'}"], out[f"{name}/{path}"]
        assert new["load"] == ("in place" if name == "fsdp" else "partitioned"), (name, path, new["load"])
        assert new["loss"] == old["loss"], name
        assert new["sd"].keys() == old["sd"].keys()
        bad = [k for k, v in old["sd"].items() if not np.array_equal(new["sd"][k], v)]
        assert not bad, f"{name}/{path}: {bad}"
        assert new["held"] == 1024, f"{name}/{path}: rank 0 holds {new['held']} of 2,048 embedding rows"
    assert sum("lora_A" in k for k in out["fsdp/lora_new"]["sd"]) == 14 and sum("trainable_tokens_delta" in k for k in out["fsdp/lora_new"]["sd"]) == 2
    assert out["deepspeed_zero3/old"]["held"] == 2048  # before: the whole matrix on every rank until initialize
    ref, _ = build_model(plan, 0)
    assert np.array_equal(out["fsdp/new"]["sd"]["lm_head.weight"], ref.lm_head.weight.detach().numpy())
