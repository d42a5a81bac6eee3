"""`scale.groups`: heterogeneous worker groups in one job (config, placement, rank discovery rules).

Pure: no Ray instance. The real multi-node run is tests/train/test_hetero_cluster.py.
"""

from __future__ import annotations

import random

import pytest

from kopretrain.cli import compose_typed
from kopretrain.config.scale import ScaleGroupConfig, assign_groups, selector_matches
from kopretrain.errors import UserError
from kopretrain.train.command import scaling_config
from kopretrain.train.groups import check_group_nodes, rank_micro_batch_sizes

REQUIRED = ["data.tokens_dir=unused", "tokenizer=unused", "model.name_or_path=unused"]
A100 = {"ray.io/accelerator-type": "A100"}
H100 = {"ray.io/accelerator-type": "H100"}


def groups_override(*groups: str) -> str:
    return "scale.groups=[" + ",".join(groups) + "]"


def test_hetero_preset_is_one_job_with_a_selector_per_worker():
    cfg = compose_typed("train", REQUIRED + ["scale=hetero_a100_h100"])
    assert cfg.scale.num_workers == 16 and [g.name for g in cfg.scale.groups] == ["a100", "h100"]
    sc = scaling_config(cfg)
    assert sc.num_workers == 16 and sc.use_gpu and sc.accelerator_type is None
    assert sc.label_selector == [A100] * 8 + [H100] * 8
    assert sc.resources_per_worker == {"CPU": 8, "GPU": 1}  # one shape for all workers (Ray Train 2.60)
    # MFU's peak: the mean over the 16 workers, so x num_workers = 8 x 312 + 8 x 989 TFLOPS
    assert cfg.scale.peak_flops() * 16 == pytest.approx((8 * 312 + 8 * 989) * 1e12)
    assert cfg.num_accumulation_steps == 2  # 64 sequences, a mean micro-batch of 2 over 16 workers


def test_groups_with_sizes_set_num_workers_and_accumulation():
    cfg = compose_typed("train", REQUIRED + [
        "batch.num_sequences_per_step=16",
        groups_override("{name:a,num_workers:1,micro_batch_size:1,label_selector:{ray.io/accelerator-type:A100}}",
                        "{name:h,num_workers:1,micro_batch_size:3,accelerator_type:H100}")])
    assert cfg.scale.num_workers == 2 and cfg.num_accumulation_steps == 4  # 16 / (1 + 3)
    assert scaling_config(cfg).label_selector == [A100, H100]  # accelerator_type alone selects by Ray's label
    assert rank_micro_batch_sizes(cfg, [1, 0]) == [3, 1]
    null_size = compose_typed("train", REQUIRED + [groups_override("{name:a,num_workers:2}", "{name:b,num_workers:2}")])
    assert scaling_config(null_size).label_selector is None  # no selector anywhere: any node
    assert rank_micro_batch_sizes(null_size, [0, 1, 1, 0]) == [2, 2, 2, 2]  # null = batch.micro_batch_size


def test_simple_form_is_unchanged():
    cfg = compose_typed("train", REQUIRED + ["scale=hetero_a100_group"])
    assert cfg.scale.groups == [] and scaling_config(cfg).label_selector == A100


@pytest.mark.parametrize("groups,message", [
    (["{name:a,micro_batch_size:0}", "{name:b}"], "scale.groups[0].micro_batch_size: must be >= 1 or 'auto' (got 0)"),
    (["{name:a}", "{name:b,micro_batch_size:big}"], "scale.groups[1].micro_batch_size: 'big' is not a positive integer or 'auto'"),
    (["{name:a,micro_batch_size:auto}", "{name:b,micro_batch_size:3}"], "scale.groups[1].micro_batch_size: 3 next to 'auto' in groups[0]"),
    (["{name:a}", "{name:a}"], "scale.groups[1].name: 'a' is also the name of groups[0]"),
    (["{name:a}", "{name:b,num_workers:0}"], "scale.groups[1].num_workers: must be >= 1 (got 0)"),
    (["{name:a,resources_per_worker:{A100:1}}", "{name:b,resources_per_worker:{H100:1}}"],
     "scale.groups[1].resources_per_worker: {'H100': 1.0} differs from groups[0]'s {'A100': 1.0}: Ray Train 2.60 reserves one"),
    (["{name:''}"], "scale.groups[0].name: must not be empty"),
])
def test_bad_groups_fail_as_one_line_naming_the_key(groups, message):
    with pytest.raises(UserError) as err:
        compose_typed("train", REQUIRED + [groups_override(*groups)])
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_num_workers_next_to_groups_must_be_their_sum():
    with pytest.raises(UserError, match=r"^scale.num_workers: 5, but scale.groups have 16 workers in all; set each group's num_workers$"):
        compose_typed("train", REQUIRED + ["scale=hetero_a100_h100", "scale.num_workers=5"])
    assert compose_typed("train", REQUIRED + ["scale=hetero_a100_h100", "scale.num_workers=16"]).scale.num_workers == 16


def test_batch_must_split_over_the_groups_and_top_level_placement_is_refused():
    with pytest.raises(UserError, match=r"^batch.num_sequences_per_step: 10 is not a multiple of the sequences of one "
                                        r"micro-batch on every worker of scale.groups \(4\)$"):
        compose_typed("train", REQUIRED + ["batch.num_sequences_per_step=10",
                                           groups_override("{name:a,micro_batch_size:1}", "{name:b,micro_batch_size:3}")])
    with pytest.raises(UserError, match=r"^scale.label_selector: with scale.groups each group places its own workers"):
        compose_typed("train", REQUIRED + ["+scale.label_selector={x:y}", groups_override("{name:a}", "{name:b}")])


def test_selector_matches_ray_operators():
    labels = {"ray.io/accelerator-type": "H100", "pool": "gpu"}
    assert selector_matches({}, labels) and selector_matches(H100, labels) and not selector_matches(A100, labels)
    assert selector_matches({"ray.io/accelerator-type": "!A100"}, labels)
    assert selector_matches({"ray.io/accelerator-type": "in(A100,H100)", "pool": "gpu"}, labels)
    assert not selector_matches({"ray.io/accelerator-type": "!in(H100, H200)"}, labels)
    assert not selector_matches({"zone": "a"}, labels) and selector_matches({"zone": "!a"}, labels)


def test_ranks_find_their_group_whatever_the_rank_order():
    groups = [ScaleGroupConfig(name="a100", num_workers=3, label_selector=A100),
              ScaleGroupConfig(name="h100", num_workers=5, label_selector=H100)]
    labels = [A100] * 3 + [H100] * 5
    for seed in range(5):
        random.Random(seed).shuffle(labels)
        assert [["a100", "h100"][g] for g in assign_groups(groups, labels)] == [
            "a100" if lab == A100 else "h100" for lab in labels]


def test_overlapping_selectors_are_matched_by_counts():
    """A group that takes any GPU node next to one that needs H100: the H100 ranks are not taken first."""
    groups = [ScaleGroupConfig(name="any", num_workers=2, label_selector={"pool": "gpu"}),
              ScaleGroupConfig(name="h100", num_workers=2, label_selector=H100)]
    labels = [{"pool": "gpu", **H100}, {"pool": "gpu", **H100}, {"pool": "gpu", **A100}, {"pool": "gpu", **A100}]
    assert assign_groups(groups, labels) == [1, 1, 0, 0]
    with pytest.raises(ValueError, match="rank 2 on a node labelled .* fits no free group"):
        assign_groups(groups, labels[:2] + [{"pool": "cpu"}] * 2)


def test_auto_sizes_follow_the_peaks_and_meet_the_global_batch_exactly():
    cfg = compose_typed("train", REQUIRED + ["scale=hetero_a100_h100"])  # 64 sequences, mean micro-batch 2
    sizes = rank_micro_batch_sizes(cfg, [1, 0] * 8)  # ranks interleaved over the groups
    assert sizes == [3, 1] * 8  # 32 per pass in proportion to 989 : 312
    assert sum(sizes) * cfg.num_accumulation_steps == 64
    odd = compose_typed("train", REQUIRED + ["batch.num_sequences_per_step=6", "batch.micro_batch_size=2", groups_override(
        "{name:a,num_workers:1,accelerator_type:A100,micro_batch_size:auto}",
        "{name:h,num_workers:2,accelerator_type:H100,micro_batch_size:auto}")])
    assert rank_micro_batch_sizes(odd, [0, 1, 1]) == [1, 3, 2]  # 6 x (312, 989, 989) / 2290, largest remainder
    unknown = compose_typed("train", REQUIRED + [groups_override(
        "{name:a,num_workers:2,accelerator_type:A100,micro_batch_size:auto}",
        "{name:x,num_workers:2,label_selector:{pool:other},micro_batch_size:auto}")])
    assert rank_micro_batch_sizes(unknown, [0, 1, 0, 1]) == [2, 2, 2, 2]  # a peak unknown: equal shares
    explicit = compose_typed("train", REQUIRED + [groups_override(
        "{name:a,num_workers:2,peak_tflops:100,micro_batch_size:auto}", "{name:b,num_workers:2,peak_tflops:300,micro_batch_size:auto}")])
    assert rank_micro_batch_sizes(explicit, [0, 0, 1, 1]) == [1, 1, 3, 3]


def test_a_group_without_nodes_fails_on_a_local_instance_and_warns_on_a_cluster(capsys):
    cfg = compose_typed("train", REQUIRED + ["scale=hetero_a100_h100"])
    plain = {"Alive": True, "Labels": {"ray.io/node-id": "n0"}}
    with pytest.raises(UserError, match=r"^scale.groups\[0\].label_selector: no node of the Ray instance has labels "
                                        r"\{'ray.io/accelerator-type': 'A100'\} \(a local instance has none; Ray Train would wait forever\)"):
        check_group_nodes(cfg, [plain], local=True)
    check_group_nodes(cfg, [plain, {"Alive": True, "Labels": A100}, {"Alive": False, "Labels": H100}], local=False)
    err = capsys.readouterr().err.splitlines()
    assert err == ["kopretrain: warning: scale.groups[1].label_selector: no node of the Ray cluster has labels "
                   "{'ray.io/accelerator-type': 'H100'} now; Ray Train waits until such nodes join"]
    check_group_nodes(cfg, [{"Alive": True, "Labels": A100}, {"Alive": True, "Labels": H100}], local=True)  # both there
