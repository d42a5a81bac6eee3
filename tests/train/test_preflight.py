"""Train settings against what they apply to (kopretrain/train/preflight.py), without Ray: the
packed sequence length against the model's context, worker resources against a local instance
(an error) or a cluster that may still grow (a warning line)."""

from __future__ import annotations

import pytest

from kopretrain.errors import UserError
from kopretrain.train.preflight import check_context, check_resources, model_context, worker_resources
from tests.train.conftest import smoke_cfg


def test_the_context_comes_from_the_arch_or_the_checkpoint(base_model_dir):
    arch = smoke_cfg().model.arch
    assert model_context("", dict(arch)) == arch["max_position_embeddings"] == 256
    assert model_context(str(base_model_dir), {}) == 256
    check_context(256, "", dict(arch))
    with pytest.raises(UserError, match=r"^data.tokens_dir: its sequences are 257 tokens, longer than the model's "
                                        r"context \(max_position_embeddings=256\)"):
        check_context(257, str(base_model_dir), {})


def test_worker_resources_follow_the_scaling_config():
    cfg = smoke_cfg("scale.use_gpu=true", "scale.accelerator_type=H100", "+scale.resources_per_worker.H100=1")
    assert worker_resources(cfg) == {"CPU": 1.0, "GPU": 1.0, "H100": 1.0, "accelerator_type:H100": 0.001}


def test_a_local_instance_without_them_is_an_error_a_cluster_a_warning(capsys):
    cfg = smoke_cfg("scale.use_gpu=true", "scale.accelerator_type=A100")
    with pytest.raises(UserError, match=r"^scale: 2 workers need 2 GPU in all, the local Ray instance has 1 "):
        check_resources(cfg, {"CPU": 8, "GPU": 1}, local=True)
    with pytest.raises(UserError, match=r"^scale.accelerator_type: the workers need A100 GPUs, the local Ray instance has 0"):
        check_resources(cfg, {"CPU": 8, "GPU": 2}, local=True)
    check_resources(cfg, {"CPU": 8, "GPU": 2, "accelerator_type:A100": 1}, local=True)
    check_resources(cfg, {"CPU": 2}, local=False)  # an autoscaler may still add GPU nodes
    assert capsys.readouterr().err.splitlines() == [
        "kopretrain: warning: scale: 2 workers need 2 GPU in all, the Ray cluster has 0 now; "
        "Ray Train waits until nodes provide them",
        "kopretrain: warning: scale.accelerator_type: the workers need A100 GPUs, the Ray cluster has 0 now; "
        "Ray Train waits until nodes provide them",
    ]
