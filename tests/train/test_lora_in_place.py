"""LoRA (peft=lora) loaded in place (kopretrain/train/model_init_lora.py): the model `Strategy.build`
builds equals the full path's (`build_model`: from_pretrained, resize, peft), bitwise, on the tiny
base Llama continued with the smoke tokenizer (1,500 -> 2,048 rows), with an untied and a tied
lm_head; the adapters' init is seeded; the host never holds the fp32 model (bench/lora_load_memory.py).
FSDP2 on 2 Ray Train workers: tests/train/test_model_init.py (the `lora` cases of its fit)."""

from __future__ import annotations

import copy
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from kopretrain.train.model import build_model, plan_model
from kopretrain.train.strategies import strategy_class
from kopretrain.train.strategies.base import StrategySettings
from tests.train.conftest import NUM_BASE_TOKENS, expanded_overrides, smoke_cfg

LORA = ["peft=lora", "strategy.name=local", "scale.num_workers=1"]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tied_base_dir(base_model_dir, tmp_path_factory) -> Path:
    """The tiny base with a tied lm_head (Gemma-style): no lm_head.weight in the checkpoint."""
    from safetensors.torch import load_file, save_file

    out = tmp_path_factory.mktemp("tied") / "base"
    shutil.copytree(base_model_dir, out)
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": True}))
    weights = load_file(out / "model.safetensors")
    del weights["lm_head.weight"]
    save_file(weights, out / "model.safetensors", metadata={"format": "pt"})
    return out


def _plan(base: Path, *overrides: str):
    return plan_model(smoke_cfg(*expanded_overrides(base), *LORA, *overrides))


@pytest.mark.parametrize("which", ["untied", "tied", "checkpointing"])
def test_lora_built_in_place_equals_the_full_paths_model(which, base_model_dir, tied_base_dir):
    extra = ["model.gradient_checkpointing=true"] if which == "checkpointing" else []  # + enable_input_require_grads
    plan = _plan(tied_base_dir if which == "tied" else base_model_dir, *extra)
    full_plan = copy.deepcopy(plan)
    ref, ref_info = build_model(full_plan, seed=3)
    strategy = strategy_class("local")(StrategySettings(device=torch.device("cpu")))
    info = strategy.build(plan, seed=3)
    model = strategy.module
    assert info["load"] == "in place"
    assert {k: v for k, v in info.items() if k != "load"} == ref_info
    assert plan.lora.new_rows == full_plan.lora.new_rows == list(range(NUM_BASE_TOKENS, 2048))  # the export reads them
    got, want = model.state_dict(), ref.state_dict()
    assert got.keys() == want.keys()
    assert [k for k, v in want.items() if not torch.equal(got[k], v)] == []
    buffers, ref_buffers = dict(model.named_buffers()), dict(ref.named_buffers())  # + trainable_tokens_original
    assert buffers.keys() == ref_buffers.keys() and all(torch.equal(buffers[k], v) for k, v in ref_buffers.items())
    assert [n for n, p in model.named_parameters() if p.requires_grad] == [n for n, p in ref.named_parameters() if p.requires_grad]

    deltas = {n: p for n, p in model.named_parameters() if "trainable_tokens_delta" in n}
    assert len(deltas) == (1 if which == "tied" else 2)  # tied: the output layer shares the input rows
    for name, delta in deltas.items():  # the new rows' initial values: the resized matrix's rows
        matrix = got[name.replace("trainable_tokens_delta.default", "base_layer.weight")]
        assert delta.shape == (548, 64) and torch.equal(delta, matrix[NUM_BASE_TOKENS:])
        assert torch.equal(buffers[name.replace("delta", "original")], matrix[NUM_BASE_TOKENS:])
    lora_a = [v for k, v in got.items() if "lora_A" in k]
    assert len(lora_a) == 14 and all(v.abs().max() > 0 for v in lora_a)
    assert all(not v.any() for k, v in got.items() if "lora_B" in k)

    x = torch.randint(0, 2000, (2, 32), generator=torch.Generator().manual_seed(0))
    losses = []
    for m in (model, ref):  # the first step's loss, then one AdamW step and the second loss
        assert m.is_gradient_checkpointing == bool(extra)
        opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2)
        torch.manual_seed(0)  # the same LoRA dropout masks
        first = m(input_ids=x, labels=x).loss
        first.backward()
        opt.step()
        with torch.no_grad():
            losses.append((float(first), float(m(input_ids=x, labels=x).loss)))
    assert losses[0] == losses[1]


def test_the_adapter_init_is_seeded_by_the_run_seed_not_the_rng_state(base_model_dir):
    def lora_a(seed: int, rng: int):
        torch.manual_seed(rng)
        torch.rand(rng)  # whatever ran before
        model, _ = build_model(_plan(base_model_dir), seed=seed)
        return [p.detach().clone() for n, p in model.named_parameters() if "lora_A" in n]

    a, again, other = lora_a(3, 1), lora_a(3, 5), lora_a(4, 1)
    assert all(torch.equal(x, y) for x, y in zip(a, again))
    assert all(not torch.equal(x, y) for x, y in zip(a, other))
    bound = 1 / 64 ** 0.5  # kaiming_uniform(a=sqrt(5)) on [16, in]: U(-1/sqrt(in), 1/sqrt(in)), as peft's default
    assert 0.9 * bound < float(a[0].abs().max()) <= bound


def test_in_place_lora_never_holds_the_fp32_model_on_the_host(tmp_path):
    """A rank whose model lives off the host (device meta stands for the GPU): the in-place build's
    peak RSS stays far below the fp32 model; the full path's (build_model) holds it all."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import lora_load_memory as bench
    finally:
        sys.path.remove(str(ROOT / "bench"))
    bench.make_model(tmp_path, hidden=512, layers=8, intermediate=2048)  # 35M parameters, 140 MB in fp32
    got = json.loads(__import__("subprocess").run(
        [sys.executable, str(ROOT / "bench/lora_load_memory.py"), "--measure", str(tmp_path / "base"), "--device", "meta",
         "--path", "in place"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
    assert got["load"] == "in place"
    assert got["fp32_bytes"] > 130e6
    assert got["peak_above"] < 0.4 * got["fp32_bytes"], got  # full path: 1.5x (bench/lora_load_memory.py)
