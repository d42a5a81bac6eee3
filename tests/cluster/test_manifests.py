"""Every `cluster/*.yaml` document is valid for KubeRay v1.7.0 and says what the project needs.

Validity (tests/cluster/kuberay_schema.py): the CRD OpenAPI schemas in ../shared/kuberay, made
strict like kubectl, plus the KubeRay operator's own checks. KubeRay's shipped samples are the
positive controls; broken copies of our manifests are the negative controls.
Meaning: the head takes no work, a CPU group exists for preprocessing, the GPU groups are told
apart by Ray resources, labels and node selectors, token auth is on, every pod mounts the
shared volume, images and Ray versions agree with pyproject.toml, and every RayJob entrypoint
(also the commented realistic ones) is a kopretrain command whose overrides compose against
the real config schema.

    .venv/bin/python -m pytest tests/cluster/test_manifests.py -q
"""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path

import pytest
import yaml

from tests.cluster.kuberay_schema import KUBERAY_DIR, SUBMISSION_MODES, validate_document

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
MANIFESTS = sorted(CLUSTER.glob("*.yaml"))
SAMPLES = sorted((KUBERAY_DIR / "samples").glob("*.yaml"))
GPU = "nvidia.com/gpu"
ACCELERATOR_LABEL = "ray.io/accelerator-type"


def documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def the(kind: str, name: str) -> dict:
    found = [d for p in MANIFESTS for d in documents(p) if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name!r} in cluster/, found {len(found)}"
    return found[0]


def rayjobs() -> list[dict]:
    return [d for p in MANIFESTS for d in documents(p) if d["kind"] == "RayJob"]


def cluster_specs() -> list[tuple[str, dict]]:
    specs = [(f"RayCluster/{d['metadata']['name']}", d["spec"]) for p in MANIFESTS for d in documents(p) if d["kind"] == "RayCluster"]
    return specs + [(f"RayJob/{j['metadata']['name']}", j["spec"]["rayClusterSpec"]) for j in rayjobs()]


def groups(spec: dict) -> list[dict]:
    return [spec["headGroupSpec"]] + spec["workerGroupSpecs"]


def containers(spec: dict) -> list[dict]:
    return [c for g in groups(spec) for c in g["template"]["spec"]["containers"]]


def gpus(group: dict) -> int:
    return sum(int(c["resources"].get("limits", {}).get(GPU, 0)) for c in group["template"]["spec"]["containers"])


def ray_pin() -> str:
    return re.search(r'"ray\[[^\]]*\]==([\d.]+)"', (REPO / "pyproject.toml").read_text()).group(1)


# ------------------------------------------------------------------ schema validity
def test_cluster_dir_ships_a_raycluster_rayjobs_and_the_volume():
    kinds = sorted(d["kind"] for p in MANIFESTS for d in documents(p))
    assert kinds.count("RayCluster") == 1 and kinds.count("RayJob") >= 2 and "PersistentVolumeClaim" in kinds


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_is_accepted_by_kuberay_v1_7(path, shared_dir):  # shared_dir: skip without ../shared (the CRDs)
    for doc in documents(path):
        assert validate_document(doc) == [], f"{path.name}: {doc['kind']} {doc['metadata'].get('name')}"


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_kuberay_samples_are_accepted(path):
    """Positive control: KubeRay's own samples pass the same validation."""
    for doc in documents(path):
        assert validate_document(doc) == []


def _worker(d, i=0):
    spec = d["spec"].get("rayClusterSpec", d["spec"])
    return spec["workerGroupSpecs"][i]


BROKEN = {  # name -> (manifest, how to break it, what the error must mention)
    "typo in a field": ("RayCluster", lambda d: _worker(d).update(replica=1), "'replica' was unexpected"),
    "string for an integer": ("RayCluster", lambda d: _worker(d).update(minReplicas="one"), "is not of type 'integer'"),
    "auth mode outside the enum": ("RayCluster", lambda d: d["spec"]["authOptions"].update(mode="password"), "'password' is not one of"),
    "worker group without groupName": ("RayCluster", lambda d: _worker(d).pop("groupName"), "'groupName' is a required property"),
    "container without a name": ("RayCluster", lambda d: _worker(d)["template"]["spec"]["containers"][0].pop("name"), "'name' is a required property"),
    "memory that is no quantity": ("RayCluster", lambda d: _worker(d)["template"]["spec"]["containers"][0]["resources"]["limits"].update(memory="lots"), "memory"),
    "unserved apiVersion": ("RayCluster", lambda d: d.update(apiVersion="ray.io/v2"), "served as"),
    "resources in rayStartParams and resources": ("RayCluster", lambda d: _worker(d, 1).update(rayStartParams={"num-gpus": "8"}), "in both rayStartParams and Resources"),
    "labels in rayStartParams": ("RayCluster", lambda d: _worker(d).update(rayStartParams={"labels": "a=b"}), "rayStartParams['labels']"),
    "label value with a space": ("RayCluster", lambda d: _worker(d)["labels"].update({"kopretrain.io/pool": "cpu pool"}), "invalid label value"),
    "token auth on Ray 2.46": ("RayCluster", lambda d: d["spec"].update(rayVersion="2.46.0"), "minimum Ray version is 2.52.0"),
    "RayJob name not DNS-1035": ("RayJob", lambda d: d["metadata"].update(name="Kopretrain_Train"), "DNS-1035"),
    "negative ttl": ("RayJob", lambda d: d["spec"].update(ttlSecondsAfterFinished=-1), "non-negative"),
    "unknown submission mode": ("RayJob", lambda d: d["spec"].update(submissionMode="SSHMode"), "submissionMode"),
    "no cluster at all": ("RayJob", lambda d: d["spec"].pop("rayClusterSpec"), "rayClusterSpec or clusterSelector"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_manifest_is_rejected(case, shared_dir):  # shared_dir: skip without ../shared (the CRDs)
    """Negative control: each deliberate mistake is caught, with an error naming it."""
    kind, breaks, expected = BROKEN[case]
    doc = copy.deepcopy(the(kind, "kopretrain" if kind == "RayCluster" else "kopretrain-train"))
    assert validate_document(doc) == []
    breaks(doc)
    errors = validate_document(doc)
    assert any(expected in e for e in errors), errors


# ------------------------------------------------------------------ what the manifests mean
@pytest.mark.parametrize("name,spec", cluster_specs(), ids=lambda v: v if isinstance(v, str) else "")
def test_cluster_shape(name, spec):
    head = spec["headGroupSpec"]
    assert head.get("resources", {}).get("CPU") == "0" or head.get("rayStartParams", {}).get("num-cpus") == "0", "work would land on the head"
    assert gpus(head) == 0
    assert any(gpus(g) == 0 for g in spec["workerGroupSpecs"]), "no CPU group for Ray Data preprocessing"
    assert spec["authOptions"]["mode"] == "token"
    assert spec["rayVersion"] == ray_pin()
    names = [g["groupName"] for g in spec["workerGroupSpecs"]]
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("name,spec", [(n, s) for n, s in cluster_specs() if any(gpus(g) for g in s["workerGroupSpecs"])],
                         ids=lambda v: v if isinstance(v, str) else "")
def test_gpu_groups_are_told_apart(name, spec):
    """Each GPU group advertises its accelerator as a Ray resource, Ray's accelerator_type
    resource and a Ray node label, and lands on matching Kubernetes nodes."""
    types = []
    for g in (g for g in spec["workerGroupSpecs"] if gpus(g)):
        acc = g["labels"][ACCELERATOR_LABEL]
        types.append(acc)
        assert int(g["resources"]["GPU"]) == gpus(g)
        assert int(g["resources"][acc]) == gpus(g)  # scale.resources_per_worker={A100: 1} per GPU worker
        assert g["resources"][f"accelerator_type:{acc}"] == "1"  # scale.accelerator_type=A100
        assert acc in g["template"]["spec"]["nodeSelector"]["nvidia.com/gpu.product"]
        assert any(t["key"] == GPU for t in g["template"]["spec"]["tolerations"])
    assert sorted(types) == ["A100", "H100"]


def test_raycluster_token_comes_from_a_named_secret():
    assert the("RayCluster", "kopretrain")["spec"]["authOptions"]["secretName"] == "kopretrain-ray-token"


@pytest.mark.parametrize("name,spec", cluster_specs(), ids=lambda v: v if isinstance(v, str) else "")
def test_one_image_and_the_shared_volume_everywhere(name, spec):
    pvc = the("PersistentVolumeClaim", "kopretrain-data")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert len({c["image"] for c in containers(spec)}) == 1
    for g in groups(spec):
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in g["template"]["spec"]["volumes"] if "persistentVolumeClaim" in v}
        for c in g["template"]["spec"]["containers"]:
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            assert claims[mounts["/mnt/data"]] == "kopretrain-data"


def test_train_rayjob_cluster_matches_the_raycluster():
    """The RayJob repeats the RayCluster's groups inline; they must not drift apart."""
    def shape(spec):
        return {g["groupName"]: (g.get("labels"), g.get("resources"), g["template"]["spec"].get("nodeSelector"),
                                 g["template"]["spec"]["containers"][0]["resources"]) for g in spec["workerGroupSpecs"]}

    assert shape(the("RayJob", "kopretrain-train")["spec"]["rayClusterSpec"]) == shape(the("RayCluster", "kopretrain")["spec"])


@pytest.mark.parametrize("job", rayjobs(), ids=lambda j: j["metadata"]["name"])
def test_rayjob_cleans_up_after_itself(job):
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0
    assert spec["submissionMode"] in SUBMISSION_MODES


def entrypoints(job: dict) -> list[str]:
    """The entrypoint and any commented-out alternative (`# entrypoint: >-` + `#   ...` lines)."""
    name = job["metadata"]["name"]
    path = next(p for p in MANIFESTS if any(d["kind"] == "RayJob" and d["metadata"]["name"] == name for d in documents(p)))
    found, block = [job["spec"]["entrypoint"]], None
    for line in path.read_text().splitlines():
        if re.match(r"^\s*#\s*entrypoint:\s*>-\s*$", line):
            block = []
            found.append(block)
        elif block is not None and (m := re.match(r"^\s*#\s{3}(\S.*)$", line)):
            block.append(m.group(1))
        else:
            block = None
    return [e if isinstance(e, str) else " ".join(e) for e in found]


@pytest.mark.parametrize("job", rayjobs(), ids=lambda j: j["metadata"]["name"])
def test_rayjob_entrypoints_are_kopretrain_commands_that_compose(job):
    from kopretrain.cli import COMMANDS, compose_typed

    spec = job["spec"]["rayClusterSpec"]
    commented = entrypoints(job)
    assert len(commented) == 2, "each RayJob shows a realistic entrypoint in a comment"
    for entrypoint in commented:
        program, command, *overrides = shlex.split(entrypoint)
        assert program == "kopretrain" and command in COMMANDS
        assert any(o.startswith("hydra.run.dir=/mnt/data/") for o in overrides), "the run dir must outlive the cluster"
        cfg = compose_typed(command, [o for o in overrides if not o.startswith("hydra.")])
        scale = getattr(cfg, "scale", None)
        if scale is not None and scale.use_gpu:  # it must name a GPU group, and fit in it
            by_type = {g["labels"][ACCELERATOR_LABEL]: g for g in spec["workerGroupSpecs"] if gpus(g)}
            wanted = scale.accelerator_type or scale.label_selector.get(ACCELERATOR_LABEL, "")
            wanted = wanted or next((r for r in scale.resources_per_worker if r in by_type), "")
            assert wanted in by_type, f"{entrypoint!r} targets no GPU group of this cluster ({sorted(by_type)})"
            group = by_type[wanted]
            assert scale.num_workers <= group["maxReplicas"] * gpus(group), "more GPU workers than the group can hold"


SCALE_DIR = REPO / "conf" / "scale"
GROUP_PRESETS = [p.stem for p in sorted(SCALE_DIR.glob("*.yaml")) if "groups" in (yaml.safe_load(p.read_text()) or {})]


def test_a_scale_preset_uses_both_gpu_groups():
    assert "hetero_a100_h100" in GROUP_PRESETS


@pytest.mark.parametrize("preset", GROUP_PRESETS)
def test_scale_group_presets_fit_the_raycluster_gpu_groups(preset):
    """Each group of a `scale.groups` preset selects exactly one GPU group of cluster/raycluster.yaml
    (by the Ray node labels the pods carry), fits in it, and every GPU group is used."""
    from kopretrain.cli import compose_typed
    from kopretrain.config.scale import selector_matches
    from kopretrain.train.command import scaling_config

    cfg = compose_typed("train", [f"scale={preset}", "data.tokens_dir=unused", "tokenizer=unused", "model.name_or_path=unused"])
    spec = the("RayCluster", "kopretrain")["spec"]
    gpu_groups = [g for g in spec["workerGroupSpecs"] if gpus(g)]
    used = []
    for group in cfg.scale.groups:
        hits = [g for g in spec["workerGroupSpecs"] if selector_matches(group.selector(), g.get("labels", {}))]
        assert len(hits) == 1 and gpus(hits[0]), f"group {group.name} selects {[g['groupName'] for g in hits]}, not one GPU group"
        pod = hits[0]
        used.append(pod["groupName"])
        assert group.accelerator_type == pod["labels"][ACCELERATOR_LABEL]
        assert group.num_workers <= pod["maxReplicas"] * gpus(pod), "more GPU workers than the group can hold"
        assert all(r in pod["resources"] for r in group.resources_per_worker), "a resource the pods do not advertise"
        cpus = int(pod["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"])
        assert cfg.scale.cpus_per_worker * gpus(pod) <= cpus, "a full pod's workers need more CPUs than it has"
    assert sorted(used) == sorted(g["groupName"] for g in gpu_groups)
    assert scaling_config(cfg).label_selector == [g.selector() for g in cfg.scale.groups for _ in range(g.num_workers)]


def test_dockerfile_builds_this_project_on_the_pinned_ray():
    text = (CLUSTER / "Dockerfile").read_text()
    assert re.search(rf"^ARG RAY_IMAGE=rayproject/ray:{re.escape(ray_pin())}-py\d+-cu\d+$", text, re.M)
    torch = re.search(r"TORCH_SPEC \?= torch==([\d.]+)", (REPO / "Makefile").read_text()).group(1)
    assert f"ARG TORCH_VERSION={torch}" in text
    assert "pip install --no-cache-dir -e ." in text
    readme = re.search(r'^readme = "(.+)"$', (REPO / "pyproject.toml").read_text(), re.M).group(1)
    for line in re.findall(r"^COPY (?:--\S+ )*(.+) \S+$", text, re.M):
        for source in line.split():  # the readme is pyproject's to require (the lead's README.md)
            assert (REPO / source).exists() or source == readme, f"COPY {source}: not in the repository"
