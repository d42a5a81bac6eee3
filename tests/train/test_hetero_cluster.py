"""One training job across two labelled node groups of a real multi-node Ray cluster (CPU).

tests/train/hetero_cluster.py starts, in a child process with a private HOME and Ray temp dir (so
it never meets the session's `ray_local`), a `ray.cluster_utils.Cluster` whose two worker nodes
carry the labels of cluster/raycluster.yaml's GPU groups (`ray.io/accelerator-type=A100` and
`=H100`), and runs `kopretrain train` on it, one cluster start for every case:

- heterogeneous: the shipped preset `scale=hetero_a100_h100` cut to one worker per group on CPU,
  micro-batches 1 (A100 group) and 3 (H100 group), 2 micro-batches per step;
- homogeneous: 2 workers with micro-batch 2, the same global batch of 8 sequences.

The token-weighted loss makes the update independent of how the batch is cut, so per-step losses
and exported weights must agree within 1e-5, for FSDP2, DDP and DeepSpeed ZeRO-2; each rank must
have landed on the node its group selects, whatever its rank number. Five fits on one cluster: a
few minutes on 2 cores, hence slow.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.train.hetero_cluster import LABEL, run_in_subprocess

pytestmark = [pytest.mark.ray, pytest.mark.slow]

COMMON = ["num_steps=3", "checkpoint.every_num_steps=0", "batch.num_sequences_per_step=8", "batch.micro_batch_size=2"]
HETERO = ["scale=hetero_a100_h100", "scale.use_gpu=false", "scale.cpus_per_worker=1", "scale.max_failures=0",
          "scale.groups.0.num_workers=1", "scale.groups.0.micro_batch_size=1",
          "scale.groups.1.num_workers=1", "scale.groups.1.micro_batch_size=3"]
HOMOGENEOUS = ["scale=cpu2"]
STRATEGIES = ("fsdp", "ddp")
CASES = {f"{s}_{kind}": [f"strategy={s}", *COMMON, *overrides]
         for s in STRATEGIES for kind, overrides in (("hetero", HETERO), ("homo", HOMOGENEOUS))}
CASES["deepspeed_zero2_hetero"] = ["strategy=deepspeed_zero2", *COMMON, *HETERO]  # against ddp_homo (same math)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    return run_in_subprocess(CASES, tmp_path_factory.mktemp("hetero"))


def weights(report: dict) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(Path(report["model_path"]) / "model.safetensors")


@pytest.mark.parametrize("strategy,reference", [("fsdp", "fsdp"), ("ddp", "ddp"), ("deepspeed_zero2", "ddp")])
def test_heterogeneous_micro_batches_give_the_homogeneous_update(runs, strategy, reference):
    """ZeRO-2 takes unequal micro-batches too (each rank's DeepSpeed config is its own micro-batch x
    accumulation x world size); it is compared with the homogeneous DDP run, the same math."""
    het, hom = runs[f"{strategy}_hetero"], runs[f"{reference}_homo"]
    assert "report" in het, het.get("error")
    assert "report" in hom, hom.get("error")
    het, hom = het["report"], hom["report"]
    assert het["num_accumulation_steps"] == hom["num_accumulation_steps"] == 2
    assert het["num_tokens"] == hom["num_tokens"]
    het_losses, hom_losses = [r["loss"] for r in het["losses"]], [r["loss"] for r in hom["losses"]]
    assert len(het_losses) == 3
    assert het_losses == pytest.approx(hom_losses, abs=1e-5, rel=0)
    assert het_losses[-1] != het_losses[0], "training did not move"
    a, b = weights(het), weights(hom)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-5, rtol=0), f"{name}: max |diff| {(a[name] - b[name]).abs().max()}"


@pytest.mark.parametrize("strategy", (*STRATEGIES, "deepspeed_zero2"))
def test_each_group_ran_on_the_nodes_its_selector_names(runs, strategy):
    groups = runs[f"{strategy}_hetero"]["report"]["scale_groups"]
    assert sorted(groups) == ["a100", "h100"]
    for name, size in (("a100", 1), ("h100", 3)):
        assert groups[name]["micro_batch_sizes"] == [size]
        assert [labels[LABEL] for labels in groups[name]["node_labels"]] == [name.upper()]
    assert sorted(groups["a100"]["ranks"] + groups["h100"]["ranks"]) == [0, 1]
    assert runs["ddp_homo"]["report"]["scale_groups"] is None
