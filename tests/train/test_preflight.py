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
    check_context(256, model_context("", dict(arch)))
    with pytest.raises(UserError, match=r"^data.tokens_dir: its sequences are 257 tokens, longer than the model's "
                                        r"context \(max_position_embeddings=256\)"):
        check_context(257, model_context(str(base_model_dir), {}))


def test_worker_resources_follow_the_scaling_config():
    cfg = smoke_cfg("scale.use_gpu=true", "scale.accelerator_type=H100", "+scale.resources_per_worker.H100=1")
    assert worker_resources(cfg) == {"CPU": 1.0, "GPU": 1.0, "H100": 1.0, "accelerator_type:H100": 0.001}


def test_a_local_instance_or_a_fixed_cluster_without_them_is_an_error(capsys):
    cfg = smoke_cfg("scale.use_gpu=true", "scale.accelerator_type=A100")
    with pytest.raises(UserError, match=r"^scale: 2 workers need 2 GPU in all, the local Ray instance has 1 "):
        check_resources(cfg, {"CPU": 8, "GPU": 1}, local=True)
    with pytest.raises(UserError, match=r"^scale.accelerator_type: the workers need A100 GPUs, the local Ray instance has 0"):
        check_resources(cfg, {"CPU": 8, "GPU": 2}, local=True)
    check_resources(cfg, {"CPU": 8, "GPU": 2, "accelerator_type:A100": 1}, local=True)
    with pytest.raises(UserError, match=r"^scale: 2 workers need 2 GPU in all, the Ray cluster has 0 and no autoscaler "
                                        r"to add nodes \(Ray Train would wait forever\); lower scale\.\*, or add nodes that provide GPU$"):
        check_resources(cfg, {"CPU": 2}, local=False)
    custom = smoke_cfg("+scale.resources_per_worker.H100=1")
    with pytest.raises(UserError, match=r"^scale.resources_per_worker: 2 workers need 2 H100 in all, the Ray cluster has 1 "
                                        r"and no autoscaler to add nodes"):
        check_resources(custom, {"CPU": 8, "H100": 1}, local=False)
    assert capsys.readouterr().err == ""


def test_an_autoscaling_cluster_is_waited_for_up_to_its_largest_size(capsys):
    cfg = smoke_cfg("scale.use_gpu=true", "scale.accelerator_type=A100")
    check_resources(cfg, {"CPU": 2}, local=False, scaler={"kind": "autoscaler v2", "max": None})
    assert capsys.readouterr().err.splitlines() == [
        "kopretrain: warning: scale: 2 workers need 2 GPU in all, the Ray cluster has 0 now; "
        "waiting for its autoscaler (autoscaler v2) to add nodes with GPU (Ray Train starts when they join)",
        "kopretrain: warning: scale.accelerator_type: the workers need A100 GPUs, the Ray cluster has 0 now; "
        "waiting for its autoscaler (autoscaler v2) to add nodes with accelerator_type:A100 (Ray Train starts when they join)",
    ]
    enough = {"CPU": 64, "GPU": 8, "accelerator_type:A100": 1}
    check_resources(cfg, {"CPU": 2}, local=False, scaler={"kind": "cluster config", "max": enough})
    with pytest.raises(UserError, match=r"^scale: 2 workers need 2 GPU in all, the Ray cluster has 0 and at most 1 when "
                                        r"its autoscaler has started every node it may"):
        check_resources(cfg, {"CPU": 2}, local=False, scaler={"kind": "cluster config", "max": {**enough, "GPU": 1}})


@pytest.mark.ray
def test_the_autoscaler_is_read_from_the_clusters_gcs(ray_local):
    """A local instance has only Ray's anonymous node types: no autoscaler. The flag KubeRay's
    autoscaler v2 sets and a reported cluster config (node groups x max replicas) are found."""
    import ray
    from ray.core.generated import autoscaler_pb2
    from ray.experimental.internal_kv import _internal_kv_del, _internal_kv_put

    from kopretrain.train.preflight import autoscaler, check_cluster

    namespace = ray._raylet.GCS_AUTOSCALER_STATE_NAMESPACE
    assert autoscaler() is None
    with pytest.raises(UserError, match=r"^scale: 2 workers need 2 GPU in all, the local Ray instance has 0 "):
        check_cluster(smoke_cfg("scale.use_gpu=true"))
    try:
        _internal_kv_put(ray._raylet.GCS_AUTOSCALER_V2_ENABLED_KEY, b"1", overwrite=True, namespace=namespace)
        assert autoscaler() == {"kind": "autoscaler v2", "max": None}
        config = autoscaler_pb2.ClusterConfig()
        group = config.node_group_configs.add(name="gpu-h100", max_count=2)
        group.resources.update({"CPU": 16, "GPU": 8, "H100": 8})
        _internal_kv_put(ray._raylet.GCS_AUTOSCALER_CLUSTER_CONFIG_KEY, config.SerializeToString(), overwrite=True,
                         namespace=namespace)
        assert autoscaler() == {"kind": "cluster config", "max": {"CPU": 32.0, "GPU": 16.0, "H100": 16.0}}
    finally:
        _internal_kv_del(ray._raylet.GCS_AUTOSCALER_V2_ENABLED_KEY, namespace=namespace)
        _internal_kv_del(ray._raylet.GCS_AUTOSCALER_CLUSTER_CONFIG_KEY, namespace=namespace)
    assert autoscaler() is None
