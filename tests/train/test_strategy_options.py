"""Device-memory options of `kopretrain train`, without Ray: activation checkpointing (on by default
for a pretrained model, and really recomputing: same loss and gradients), CPU offload, compile and
HSDP keys refused in one line where they do not apply, DeepSpeed's offload_param, and the RNG state
saved without pickle (loads with weights_only=True)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from kopretrain.errors import UserError
from kopretrain.train.model import build_model, compile_layers, plan_model
from kopretrain.train.strategies.base import StrategySettings
from kopretrain.train.strategies.local import LocalStrategy
from tests.train.conftest import SMOKE_TOKENIZER, smoke_cfg


def test_checkpointing_is_on_by_default_for_a_pretrained_model_only(base_model_dir):
    assert smoke_cfg().model.gradient_checkpointing == "auto"
    assert not smoke_cfg().model.checkpointing_on()  # from-scratch tiny arch
    pretrained = [f"model.name_or_path={base_model_dir}", f"tokenizer={SMOKE_TOKENIZER}"]
    assert smoke_cfg(*pretrained).model.checkpointing_on()  # auto, model.name_or_path set
    assert smoke_cfg("model=pretrained", *pretrained).model.checkpointing_on()
    assert not smoke_cfg(*pretrained, "model.gradient_checkpointing=false").model.checkpointing_on()
    assert smoke_cfg("model.gradient_checkpointing=true").model.checkpointing_on()
    with pytest.raises(UserError, match=r"^model.gradient_checkpointing: "):
        smoke_cfg("model.gradient_checkpointing=sometimes")


def _local_step(cfg, input_ids):
    """One forward/backward of the LocalStrategy: gradients by name, attention calls, loss, model."""
    model, _ = build_model(plan_model(cfg), cfg.seed)
    strategy = LocalStrategy(StrategySettings(device=torch.device("cpu")))
    strategy.wrap(model)
    calls = []
    for layer in model.model.layers:  # inside the checkpointed forward: called again in backward when recomputed
        layer.self_attn.register_forward_pre_hook(lambda *_: calls.append(1))
    strategy.forward_backward(input_ids, last=True)
    with torch.no_grad():
        loss = float(model(input_ids=input_ids, labels=input_ids).loss)
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, len(calls), loss, model


def test_local_checkpointing_recomputes_every_layer_with_the_same_loss_and_gradients(base_model_dir):
    input_ids = torch.randint(0, 2000, (2, 64), generator=torch.Generator().manual_seed(0))
    base = ["model=pretrained", f"model.name_or_path={base_model_dir}", f"tokenizer={SMOKE_TOKENIZER}", "strategy.name=local",
            "scale.num_workers=1", "batch.num_sequences_per_step=8"]
    off_grads, off_calls, off_loss, off_model = _local_step(smoke_cfg(*base, "model.gradient_checkpointing=false"), input_ids)
    on_grads, on_calls, on_loss, on_model = _local_step(smoke_cfg(*base), input_ids)  # auto: pretrained -> on
    assert on_model.training and on_model.is_activation_checkpointing and not off_model.is_activation_checkpointing
    num_layers = len(on_model.model.layers)
    assert off_calls == num_layers + num_layers  # the forward above, and the no-grad loss
    assert on_calls == 3 * num_layers  # + one recompute per layer in backward
    assert on_loss == pytest.approx(off_loss, rel=1e-5)
    assert on_grads.keys() == off_grads.keys()
    for name, grad in off_grads.items():
        assert torch.allclose(on_grads[name], grad, rtol=1e-5, atol=1e-7), name


@pytest.mark.slow
def test_compile_of_the_decoder_layers_runs_on_cpu_with_the_same_loss():
    """Inductor on CPU (needs a C++ compiler): tens of seconds for the first compile."""
    cfg = smoke_cfg()
    input_ids = torch.randint(0, 2000, (2, 64), generator=torch.Generator().manual_seed(0))
    losses, grads = [], []
    for compiled in (False, True):
        model, _ = build_model(plan_model(cfg), cfg.seed)
        if compiled:
            assert compile_layers(model) == len(model.model.layers) == 2
            assert all(layer._compiled_call_impl is not None for layer in model.model.layers)
        loss = model(input_ids=input_ids, labels=input_ids).loss
        loss.backward()
        losses.append(float(loss))
        grads.append(model.model.layers[0].mlp.up_proj.weight.grad.clone())
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    assert torch.allclose(grads[1], grads[0], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("overrides,message", [
    (["strategy=ddp", "strategy.offload_params=true"], r"^strategy.offload_params: applies to sharded parameters: strategy=fsdp\|deepspeed_zero3 \(got ddp"),
    (["strategy=deepspeed_zero2", "strategy.offload_params=true"], r"^strategy.offload_params: .*\(got deepspeed_zero2; ZeRO-2: offload_optimizer\)"),
    (["strategy=fsdp", "strategy.offload_optimizer=true"], r"^strategy.offload_optimizer: is a DeepSpeed ZeRO option"),
    (["strategy=deepspeed_zero3", "strategy.compile=true"], r"^strategy.compile: compiles decoder layers for strategy=local\|ddp\|fsdp\|deepspeed_zero2"),
    (["strategy=ddp", "strategy.hsdp_replicate_degree=2"], r"^strategy.hsdp_replicate_degree: HSDP is FSDP2's: use strategy=fsdp \(got ddp\)"),
    (["strategy.hsdp_replicate_degree=0"], r"^strategy.hsdp_replicate_degree: must be >= 1"),
    (["scale.num_workers=4", "strategy.hsdp_replicate_degree=3", "batch.num_sequences_per_step=24"],
     r"^strategy.hsdp_replicate_degree: 3 does not divide scale.num_workers=4"),
])
def test_memory_options_are_refused_in_one_line_where_they_do_not_apply(overrides, message):
    with pytest.raises(UserError, match=message) as info:
        smoke_cfg(*overrides)
    assert "\n" not in str(info.value)


def test_the_options_are_accepted_where_they_apply():
    assert smoke_cfg("strategy=fsdp", "strategy.offload_params=true", "strategy.compile=true").strategy.offload_params
    cfg = smoke_cfg("scale.num_workers=4", "strategy.hsdp_replicate_degree=2")
    assert cfg.strategy.hsdp_replicate_degree == 2
    assert smoke_cfg("strategy=deepspeed_zero3", "strategy.offload_params=true").strategy.offload_params


def test_zero3_offload_params_is_deepspeed_offload_param():
    from kopretrain.train.strategies.deepspeed import DeepSpeedZero3Strategy

    settings = StrategySettings(device=torch.device("cpu"), offload_params=True, offload_optimizer=True)
    zero = DeepSpeedZero3Strategy(settings)._config()["zero_optimization"]
    assert zero["stage"] == 3
    assert zero["offload_param"] == {"device": "cpu", "pin_memory": False}
    assert zero["offload_optimizer"] == {"device": "cpu", "pin_memory": False}
    settings.offload_params = False
    assert "offload_param" not in DeepSpeedZero3Strategy(settings)._config()["zero_optimization"]


def test_the_rng_state_loads_without_pickle_and_restores_every_generator(tmp_path):
    from kopretrain.train.checkpoint import _rng_state, restore_rng

    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    np.random.normal()  # a cached Gaussian in numpy's state
    torch.save(_rng_state(), tmp_path / "rng-0.pt")
    state = torch.load(tmp_path / "rng-0.pt", weights_only=True)  # raises on any pickled object
    assert isinstance(state["torch"], torch.Tensor) and isinstance(state["numpy"]["keys"], torch.Tensor)
    expected = (torch.rand(3), np.random.rand(3), np.random.normal(), random.random(), random.gauss(0, 1))
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    restore_rng(tmp_path, 0)
    got = (torch.rand(3), np.random.rand(3), np.random.normal(), random.random(), random.gauss(0, 1))
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2:] == expected[2:]


def test_hsdp_warns_when_a_shard_group_spans_nodes():
    from kopretrain.train.strategies.fsdp import hsdp_node_warning

    assert hsdp_node_warning([0, 0, 0, 0, 1, 1, 1, 1], 2) is None  # 2 nodes x 4: one group per node
    assert hsdp_node_warning([0, 0, 0, 0, 0, 0, 0, 0], 2) is None  # both groups in one node: no traffic across nodes
    assert hsdp_node_warning([0, 0, 1, 1, 2, 2, 3, 3], 4) is None
    line = hsdp_node_warning([0, 0, 0, 1, 1, 1], 2)  # 3 + 3 workers but shard groups of 3: fine
    assert line is None
    line = hsdp_node_warning([0, 0, 0, 0, 0, 1, 1, 1], 2)  # a 5 + 3 placement
    assert line == ("strategy.hsdp_replicate_degree=2: shard group 1 (ranks 4-7) spans nodes 0, 1: its parameter "
                    "all-gathers cross nodes (workers per node: 0: 5, 1: 3); for HSDP as meant, set it to the number "
                    "of nodes (2) with as many workers on each")
    line = hsdp_node_warning([0, 1, 0, 1], 2)
    assert "shard group 0 (ranks 0-1) spans nodes 0, 1; shard group 1 (ranks 2-3) spans nodes 0, 1" in line
