"""Offline validation of Kubernetes manifests against KubeRay v1.7.0, without a cluster.

Two layers, each what a real cluster would do with `kubectl apply`:

1. The API server: each RayCluster / RayJob / RayService / RayCronJob document is validated
   against its CRD's OpenAPI v3 schema (`spec.versions[<version>].schema.openAPIV3Schema` in
   ../shared/kuberay/v1.7.0/crds). The schema is made strict the way kubectl's default field
   validation (Strict, since Kubernetes 1.27) behaves: a field the schema does not declare is an
   error instead of being silently pruned (except under `x-kubernetes-preserve-unknown-fields`).
   The core kinds a manifest carries beside them (Secret, ConfigMap, PersistentVolumeClaim) are
   checked against small schemas of their own fields.
2. The KubeRay operator, which rejects specs the schema accepts (ported from
   ray-operator/controllers/ray/utils/validation.go: ValidateRayClusterSpec/Metadata,
   ValidateRayJobSpec/Metadata): resources set both in `rayStartParams` and in a group's
   `resources`, `rayStartParams['labels']`, label keys/values that are not Kubernetes syntax,
   token auth without `rayVersion` >= 2.52.0, names that are not DNS-1035 labels or too long.

Not evaluated: CEL rules (`x-kubernetes-validations`: immutability on update, deletionStrategy
combinations, the managedBy value), which need the API server.

    from tests.cluster.kuberay_schema import validate_document
    assert validate_document(yaml.safe_load(text)) == []      # a list of error strings
"""

from __future__ import annotations

import copy
import functools
import re
from pathlib import Path

import jsonschema
import yaml

KUBERAY_DIR = Path(__file__).resolve().parents[3] / "shared" / "kuberay" / "v1.7.0"
CRD_FILES = {
    "RayCluster": "ray.io_rayclusters.yaml",
    "RayJob": "ray.io_rayjobs.yaml",
    "RayService": "ray.io_rayservices.yaml",
    "RayCronJob": "ray.io_raycronjobs.yaml",
}
MAX_NAME_LENGTH = {"RayCluster": 53, "RayJob": 47, "RayService": 47}  # KubeRay appends suffixes
SUBMISSION_MODES = {"K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"}  # rayv1.JobSubmissionMode

_QUANTITY = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_META = {
    "type": "object", "required": ["name"], "additionalProperties": False,
    "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}, "labels": _STRING_MAP, "annotations": _STRING_MAP},
}
CORE_SCHEMAS = {
    ("v1", "Secret"): {"properties": {"type": {"type": "string"}, "data": _STRING_MAP, "stringData": _STRING_MAP}},
    ("v1", "ConfigMap"): {"properties": {"data": _STRING_MAP, "binaryData": _STRING_MAP}},
    ("v1", "PersistentVolumeClaim"): {
        "required": ["spec"],
        "properties": {"spec": {
            "type": "object", "additionalProperties": False, "required": ["accessModes", "resources"],
            "properties": {
                "accessModes": {"type": "array", "minItems": 1, "items": {"enum": ["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"]}},
                "resources": {"type": "object", "additionalProperties": False, "required": ["requests"], "properties": {
                    "requests": {"type": "object", "additionalProperties": False, "required": ["storage"],
                                 "properties": {"storage": {"type": "string", "pattern": _QUANTITY}}}}},
                "storageClassName": {"type": "string"},
                "volumeMode": {"enum": ["Filesystem", "Block"]},
                "volumeName": {"type": "string"},
            },
        }},
    },
}

_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _strict(schema):
    """Copy of an OpenAPI v3 schema in which undeclared object fields are errors."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if "properties" in out and "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    if out.pop("nullable", False) and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


@functools.lru_cache(maxsize=None)
def _crd(kind: str) -> dict:
    # The CRDs are ~1 MB of YAML each: parse them with libyaml when PyYAML has it.
    crd = yaml.load((KUBERAY_DIR / "crds" / CRD_FILES[kind]).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    assert crd["spec"]["names"]["kind"] == kind
    return crd


def crd_versions(kind: str) -> list[str]:
    """Versions of `kind` the API server serves."""
    return [v["name"] for v in _crd(kind)["spec"]["versions"] if v.get("served")]


@functools.lru_cache(maxsize=None)
def crd_validator(kind: str, version: str) -> jsonschema.Draft4Validator:
    (entry,) = [v for v in _crd(kind)["spec"]["versions"] if v["name"] == version]
    return jsonschema.Draft4Validator(_strict(entry["schema"]["openAPIV3Schema"]))


def _core_validator(api_version: str, kind: str) -> jsonschema.Draft4Validator:
    own = copy.deepcopy(CORE_SCHEMAS[(api_version, kind)])
    own["properties"].update(apiVersion={"const": api_version}, kind={"const": kind}, metadata=_META)
    return jsonschema.Draft4Validator({"type": "object", "additionalProperties": False, "required": ["metadata"], **own})


def validate_document(doc: dict) -> list[str]:
    """Every reason the API server or the KubeRay operator would reject `doc` ([] = accepted)."""
    if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
        return ["not a Kubernetes object (apiVersion and kind are required)"]
    api_version, kind = doc["apiVersion"], doc["kind"]
    if kind in CRD_FILES:
        group, _, version = api_version.partition("/")
        if group != "ray.io" or version not in crd_versions(kind):
            return [f"apiVersion: {kind} is served as ray.io/{{{','.join(crd_versions(kind))}}}, not {api_version}"]
        validator = crd_validator(kind, version)
    elif (api_version, kind) in CORE_SCHEMAS:
        validator = _core_validator(api_version, kind)
    else:
        return [f"unsupported kind {api_version}/{kind}"]
    errors = [f"{e.json_path}: {e.message}" for e in sorted(validator.iter_errors(doc), key=lambda e: e.json_path)]
    if errors:
        return errors
    return _metadata_errors(kind, doc.get("metadata", {})) + _operator_errors(kind, doc.get("spec", {}))


def _metadata_errors(kind: str, meta: dict) -> list[str]:
    name = meta.get("name") or meta.get("generateName", "").rstrip("-") or ""
    if not name:
        return ["metadata: name (or generateName) is required"]
    if kind in MAX_NAME_LENGTH and len(name) > MAX_NAME_LENGTH[kind]:
        return [f"metadata.name: {kind} name should be no more than {MAX_NAME_LENGTH[kind]} characters"]
    if kind in MAX_NAME_LENGTH and not _DNS1035.match(name):
        return [f"metadata.name: {kind} name {name!r} should be a valid DNS-1035 label"]
    return []


def _operator_errors(kind: str, spec: dict) -> list[str]:
    if kind == "RayCluster":
        return cluster_spec_errors(spec, "spec")
    if kind == "RayJob":
        return job_spec_errors(spec)
    if kind == "RayService":
        return cluster_spec_errors(spec.get("rayClusterConfig", {}), "spec.rayClusterConfig")
    return []


def _groups(cluster_spec: dict) -> list[tuple[str, dict]]:
    head = [("Head", cluster_spec.get("headGroupSpec", {}))]
    return head + [(g.get("groupName", "?"), g) for g in cluster_spec.get("workerGroupSpecs", [])]


def cluster_spec_errors(spec: dict, where: str) -> list[str]:
    errors = []
    for name, group in _groups(spec):
        params, resources = group.get("rayStartParams", {}), group.get("resources", {})
        if not group.get("template", {}).get("spec", {}).get("containers"):
            errors.append(f"{where}: {name} group should have at least one container")
        if any(params.get(k) for k in ("num-cpus", "num-gpus", "memory", "resources")) and resources:
            errors.append(f"{where}: resource fields should not be set in both rayStartParams and Resources for {name} group")
        if "labels" in params:
            errors.append(f"{where}: rayStartParams['labels'] is not supported for {name} group; use the top-level labels field")
        for key, value in group.get("labels", {}).items():
            if not _qualified_name(key):
                errors.append(f"{where}: invalid label key for {name} group: {key!r}")
            if value and (len(value) > 63 or not _LABEL_NAME.match(value)):
                errors.append(f"{where}: invalid label value for key {key!r} in {name} group: {value!r}")
    if spec.get("authOptions", {}).get("mode", "token" if "authOptions" in spec else "disabled") == "token":
        version = spec.get("rayVersion", "")
        if not re.match(r"^\d+\.\d+\.\d+", version):
            errors.append(f"{where}: authOptions.mode is 'token' but rayVersion {version!r} is missing or invalid")
        elif tuple(int(x) for x in version.split(".")[:3]) < (2, 52, 0):
            errors.append(f"{where}: authOptions.mode is 'token' but minimum Ray version is 2.52.0, got {version}")
    return errors


def job_spec_errors(spec: dict) -> list[str]:
    errors = []
    if spec.get("suspend") and not spec.get("shutdownAfterJobFinishes"):
        errors.append("spec: a RayJob with shutdownAfterJobFinishes false is not allowed to be suspended")
    if spec.get("ttlSecondsAfterFinished", 0) < 0:
        errors.append("spec.ttlSecondsAfterFinished: must be a non-negative integer")
    if spec.get("activeDeadlineSeconds") is not None and spec["activeDeadlineSeconds"] <= 0:
        errors.append("spec.activeDeadlineSeconds: must be a positive integer")
    if spec.get("backoffLimit") is not None and spec["backoffLimit"] < 0:
        errors.append("spec.backoffLimit: must be >= 0")
    mode = spec.get("submissionMode", "K8sJobMode")
    if mode not in SUBMISSION_MODES:
        errors.append(f"spec.submissionMode: {mode!r} is not one of {sorted(SUBMISSION_MODES)}")
    if mode == "SidecarMode" and ("submitterPodTemplate" in spec or "submitterConfig" in spec):
        errors.append("spec: SidecarMode supports neither submitterPodTemplate nor submitterConfig")
    selector = spec.get("clusterSelector", {})
    if not spec.get("rayClusterSpec") and not selector:
        errors.append("spec: one of rayClusterSpec or clusterSelector must be set")
    if selector and not selector.get("ray.io/cluster"):
        errors.append("spec.clusterSelector: cluster name (ray.io/cluster) should not be empty")
    try:
        yaml.safe_load(spec.get("runtimeEnvYAML", "") or "{}")
    except yaml.YAMLError as exc:
        errors.append(f"spec.runtimeEnvYAML: not valid YAML: {exc}")
    if spec.get("rayClusterSpec"):
        errors += cluster_spec_errors(spec["rayClusterSpec"], "spec.rayClusterSpec")
    return errors


def _qualified_name(key: str) -> bool:
    """Kubernetes label key: optional DNS-1123 subdomain prefix + '/' + a name of <= 63 chars."""
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix)):
        return False
    return 0 < len(name) <= 63 and bool(_LABEL_NAME.match(name))
