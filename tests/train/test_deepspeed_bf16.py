"""DeepSpeed with bf16 exports the fp32 master weights, not a bf16 rounding of them.

Under `strategy.mixed_precision=bf16` DeepSpeed keeps the module's parameters in bf16 and the
fp32 master copy in the optimizer. The exported `model/` must be that fp32 state: every tensor
equal, bit for bit, to what DeepSpeed's own `zero_to_fp32` reconstructs from the final
checkpoint, and (a control that the comparison can fail) not representable in bf16. Runs on CPU
workers with gloo: DeepSpeed's bf16 path works there too.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kopretrain.train.command import run_train
from tests.train.conftest import expanded_overrides, smoke_cfg

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_bf16_export_is_the_fp32_master(stage, ray_local, base_model_dir, tmp_path):
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from safetensors.torch import load_file

    cfg = smoke_cfg(*expanded_overrides(base_model_dir), "num_steps=2", f"strategy=deepspeed_{stage}",
                    "strategy.mixed_precision=bf16", "checkpoint.every_num_steps=2")
    report = run_train(cfg, tmp_path / "run")
    exported = load_file(Path(report["model_path"]) / "model.safetensors")
    (ckpt,) = [c for c in Path(report["ray_train_path"]).glob("checkpoint_*") if c.is_dir()]
    master = get_fp32_state_dict_from_zero_checkpoint(str(ckpt / "deepspeed"), tag="engine")

    assert set(exported) == set(master)
    for name, value in exported.items():
        assert value.dtype == torch.float32, name
        assert torch.equal(value, master[name].float()), f"{name}: export differs from the fp32 master"
    up = exported["model.layers.0.mlp.up_proj.weight"]
    assert not torch.equal(up, up.to(torch.bfloat16).float()), "the export is only bf16 precision"
