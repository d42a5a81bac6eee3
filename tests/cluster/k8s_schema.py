"""Offline validation of core Kubernetes manifests against the API's own models.

The official Kubernetes Python client (`kubernetes`, a dev dependency) ships one generated model
class per API type (`V1Deployment`, `V1Container`, ...), each with `openapi_types` (attribute ->
type) and `attribute_map` (attribute -> JSON field name), generated from the API server's OpenAPI
spec. `validate_core` walks a manifest against them, strictly like `kubectl apply` (field
validation Strict): a field the type does not have, a value of the wrong JSON type, and a
required field that is missing (the models' own client-side validation, through the client's
deserializer) are errors. Not checked: enum values and formats (quantities, names), which only
the API server knows; tests/cluster/test_mlflow_manifests.py checks the ones that matter.

    from tests.cluster.k8s_schema import validate_core
    assert validate_core(yaml.safe_load(text)) == []      # a list of error strings
"""

from __future__ import annotations

import re

from kubernetes import client

KINDS = {  # (apiVersion, kind) -> model
    ("v1", "Service"): "V1Service",
    ("v1", "Secret"): "V1Secret",
    ("v1", "ConfigMap"): "V1ConfigMap",
    ("v1", "PersistentVolumeClaim"): "V1PersistentVolumeClaim",
    ("apps/v1", "Deployment"): "V1Deployment",
    ("apps/v1", "StatefulSet"): "V1StatefulSet",
    ("batch/v1", "CronJob"): "V1CronJob",
    ("batch/v1", "Job"): "V1Job",
}
_PRIMITIVES = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "object": (object,),
               "datetime": (str,), "date": (str,)}
_JSON_NAMES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}


def _check(value, type_name: str, where: str, errors: list[str]) -> None:
    if m := re.fullmatch(r"list\[(.+)\]", type_name):
        if not isinstance(value, list):
            errors.append(f"{where}: expected a list, got {type(value).__name__}")
            return
        for i, item in enumerate(value):
            _check(item, m.group(1), f"{where}[{i}]", errors)
    elif m := re.fullmatch(r"dict\[(\w+), (.+)\]", type_name):
        if not isinstance(value, dict):
            errors.append(f"{where}: expected a map, got {type(value).__name__}")
            return
        for key, item in value.items():
            _check(item, m.group(2), f"{where}.{key}", errors)
    elif type_name in _PRIMITIVES:
        ok = isinstance(value, _PRIMITIVES[type_name]) and not (type_name in ("int", "float") and isinstance(value, bool))
        if not ok:
            errors.append(f"{where}: {value!r} is not of type {_JSON_NAMES.get(type_name, type_name)}")
    else:
        model = getattr(client.models, type_name)
        if not isinstance(value, dict):
            errors.append(f"{where}: expected an object ({type_name}), got {type(value).__name__}")
            return
        attribute = {json_name: attr for attr, json_name in model.attribute_map.items()}
        for key, item in value.items():
            if key not in attribute:
                errors.append(f"{where}: unknown field {key!r} in {type_name}")
            else:
                _check(item, model.openapi_types[attribute[key]], f"{where}.{key}", errors)


def validate_core(doc: dict) -> list[str]:
    """Errors of a core Kubernetes object (empty when kubectl's strict validation would accept it)."""
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key not in KINDS:
        return [f"unsupported kind {key[0]}/{key[1]}"]
    errors: list[str] = []
    _check(doc, KINDS[key], doc["kind"], errors)
    if not errors:  # required fields: the models refuse None for them when they are built
        try:
            client.ApiClient()._ApiClient__deserialize(doc, KINDS[key])
        except ValueError as exc:
            errors.append(f"{doc['kind']}: {exc}")
    if not doc.get("metadata", {}).get("name"):
        errors.append(f"{doc['kind']}: metadata.name is required")
    return errors
