"""The ray_jobs launcher's fit check without a cluster (kopretrain/launch/fit.py): a point's needs
from its own config, the refusal of a point that can never fit, the packing of points beside the
running ones, the autoscaler report, and the launcher's own numbers (one line, exit 2).
tests/cluster/test_ray_jobs_launcher.py runs the same against a real cluster."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from kopretrain.config.scale import ScaleGroupConfig
from kopretrain.config.train import ScaleConfig
from kopretrain.launch.fit import (Needs, autoscaler_kind, check_params, check_points, fits, point_needs, refusal,
                                   waits_line)
from kopretrain.launch.points import LaunchRefused


@pytest.mark.parametrize("params, line", [
    ({"max_concurrent": 0}, "hydra.launcher.max_concurrent: must be an integer >= 1, got 0"),
    ({"max_concurrent": -2}, "hydra.launcher.max_concurrent: must be an integer >= 1, got -2"),
    ({"entrypoint_num_cpus": -1.0}, "hydra.launcher.entrypoint_num_cpus: must be >= 0, got -1.0"),
    ({"entrypoint_num_gpus": -0.5}, "hydra.launcher.entrypoint_num_gpus: must be >= 0, got -0.5"),
    ({"entrypoint_resources": {"head": -0.01}}, "hydra.launcher.entrypoint_resources.head: must be >= 0, got -0.01"),
])
def test_the_launchers_own_numbers_are_checked_in_one_line(params, line):
    with pytest.raises(LaunchRefused) as err:
        check_params(params)
    assert str(err.value) == line


def test_max_concurrent_defaults_to_four_and_is_kept():
    assert check_params({}) == 4 and check_params({"max_concurrent": 1, "entrypoint_num_cpus": 0.5}) == 1


def test_a_train_points_needs_are_its_driver_plus_its_workers():
    needs = point_needs({"entrypoint_num_cpus": 1}, ScaleConfig())  # the smoke scale: 2 one-CPU workers
    assert needs.total() == {"CPU": 3.0}
    assert needs.explain("CPU") == "hydra.launcher.entrypoint_num_cpus=1 + scale.num_workers=2 x scale.cpus_per_worker=1"
    gpu = point_needs({"entrypoint_resources": {"head": 0.01}},
                      ScaleConfig(num_workers=8, use_gpu=True, cpus_per_worker=4, accelerator_type="H100"))
    assert gpu.total() == {"head": 0.01, "CPU": 32.0, "GPU": 8.0, "accelerator_type:H100": pytest.approx(0.008)}
    assert gpu.explain("GPU") == "scale.num_workers=8 x scale.use_gpu=1"
    assert gpu.explain("head") == "hydra.launcher.entrypoint_resources.head=0.01"
    assert point_needs({"entrypoint_num_gpus": 1}, None).total() == {"GPU": 1.0}  # eval: the driver only


def test_heterogeneous_groups_reserve_one_shape_for_all_their_workers():
    groups = [ScaleGroupConfig(name="a100", num_workers=2, resources_per_worker={"fast_nic": 1}),
              ScaleGroupConfig(name="h100", num_workers=3, resources_per_worker={"fast_nic": 1})]
    needs = point_needs({}, ScaleConfig(use_gpu=True, groups=groups))
    assert needs.workers == 5 and needs.total() == {"CPU": 5.0, "GPU": 5.0, "fast_nic": 5.0}
    assert needs.explain("fast_nic") == "scale.num_workers=5 x scale.groups[0].resources_per_worker.fast_nic=1"


def test_a_point_that_never_fits_a_fixed_cluster_is_refused_and_an_autoscaling_one_is_told():
    needs = point_needs({"entrypoint_num_cpus": 1}, ScaleConfig())
    assert refusal(0, "x=1", needs, {"CPU": 3.0}) == ""
    assert check_points([(0, "x=1", needs)], {"CPU": 3.0}, None) == ""
    with pytest.raises(LaunchRefused) as err:
        check_points([(0, "x=1", needs), (1, "x=2", needs)], {"CPU": 2.0, "GPU": 1.0}, None)
    assert str(err.value) == (
        "#0 x=1: needs 3 CPU (hydra.launcher.entrypoint_num_cpus=1 + scale.num_workers=2 x scale.cpus_per_worker=1), "
        "the cluster has 2 CPU in all (and 1 more point); no autoscaler can add nodes, so its job would wait forever: "
        "lower them, or add nodes (hydra.launcher.fit_check=false submits anyway)")
    line = check_points([(0, "x=1", needs)], {"CPU": 2.0}, "autoscaler v1")
    assert line.endswith("the cluster has 2 CPU in all; submitted anyway: it waits for nodes to join (its autoscaler v1 adds them)")


def test_points_are_packed_beside_the_running_ones():
    three = point_needs({"entrypoint_num_cpus": 1}, ScaleConfig())
    one = Needs(driver={"CPU": 1.0})
    assert fits(three, [], {"CPU": 6.0}) == []
    assert fits(three, [three], {"CPU": 6.0}) == []
    assert fits(three, [three, three], {"CPU": 6.0}) == ["CPU"]
    assert fits(one, [three], {"CPU": 4.0}) == []
    assert fits(Needs(driver={"GPU": 1.0}), [three], {"CPU": 6.0}) == ["GPU"]  # a resource the cluster lacks
    assert waits_line(2, three, [(0, three), (1, three)], {"CPU": 6.0}, ["CPU"]) == (
        "#2 waits: needs 3 CPU beside 6 CPU of the running points, the cluster has 6 (running: #0, #1; submitted when they leave room)")


def test_the_autoscaler_is_read_from_the_monitors_report():
    node_id = "553a83a7f16562ec35c2a63d4b5870107ec551be5b393f9f7069e54d"
    # a `ray start --head` cluster's report as the dashboard gives it (camel-cased keys)
    hand_started = {"activeNodes": {"node553A83A7F16562Ec35C2A63D4B5870107Ec551Be5B393F9F7069E54D": 1}, "idleNodes": None,
                    "pendingLaunches": {}, "nodeTypeMapping": {node_id: f"node_{node_id}"}, "legacy": True}
    assert autoscaler_kind(hand_started) is None
    assert autoscaler_kind({**hand_started, "pendingLaunches": {"gpuGroup": 2}}) == "autoscaler v1"
    assert autoscaler_kind({"active_nodes": {"cpu-group": 1}}) == "autoscaler v1"  # as the GCS keeps it
    assert autoscaler_kind(None) == "unknown"  # autoscaler v2 writes no v1 report


def test_max_concurrent_zero_is_refused_before_the_cluster_is_asked(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run([sys.executable, "-m", "kopretrain", "eval", "-m", "experiment=smoke", "max_docs_per_domain=2,3",
                          "hydra/launcher=ray_jobs", "hydra.launcher.max_concurrent=0", "tracking.enabled=false",
                          f"hydra.sweep.dir={tmp_path / 'sweep'}"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == "kopretrain eval: error: hydra.launcher.max_concurrent: must be an integer >= 1, got 0"
    assert "Traceback" not in out.stderr
