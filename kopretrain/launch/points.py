"""A sweep point's identity: its swept values, the MLflow run name and tags they give, and the
failure summary of a sweep (pure: no Hydra, Ray or MLflow).

    swept = {"mix.replay_ratio": "0.2"}
    point_name(swept)             # "replay_ratio=0.2"  (the child run's name)
    point_tags(swept)             # {"sweep.mix.replay_ratio": "0.2"}
    encode_point(parent_id, swept, sweep_dir, 1)   # the env value a Ray job's CLI reads back
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass

POINT_ENV = "KOPRETRAIN_SWEEP_POINT"
"""Environment variable a launcher sets for a point run in another process (JSON, see `encode_point`)."""

TAG_PREFIX = "sweep."


def hydra_quoted(value: str) -> str:
    """`value` as one Hydra override value: as is when plain, else single-quoted (a path with spaces)."""
    if re.fullmatch(r"[\w\-./]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def override_key(text: str) -> str:
    """`+mix.replay_ratio=0.2` -> `mix.replay_ratio`; `model=tiny_llama` -> `model`."""
    return text.partition("=")[0].lstrip("+~").strip()


def override_value(text: str) -> str:
    return text.partition("=")[2].strip()


def swept_values(overrides: list[str], swept_keys: list[str]) -> dict[str, str]:
    """The values one point's overrides give the swept keys, in the sweep's key order."""
    given = {override_key(o): override_value(o) for o in overrides if "=" in o}
    return {k: given[k] for k in swept_keys if k in given}


def point_name(values: dict[str, str]) -> str:
    """`replay_ratio=0.2` (the last part of each key; the full key where two last parts meet)."""
    if not values:
        return ""
    short = [k.rsplit(".", 1)[-1] for k in values]
    keys = list(values) if len(set(short)) < len(short) else short
    return ", ".join(f"{k}={v}" for k, v in zip(keys, values.values()))[:250]


def point_tags(values: dict[str, str]) -> dict[str, str]:
    """One tag per swept key: `sweep.mix.replay_ratio` -> `0.2`."""
    return {f"{TAG_PREFIX}{k}"[:250]: str(v)[:5000] for k, v in values.items()}


def values_from_tags(tags: dict[str, str]) -> dict[str, str]:
    return {k[len(TAG_PREFIX):]: v for k, v in sorted(tags.items()) if k.startswith(TAG_PREFIX)}


def encode_point(parent_run_id: str, values: dict[str, str], sweep_dir: str, num: int) -> str:
    return json.dumps({"parent_run_id": parent_run_id, "values": values, "sweep_dir": str(sweep_dir), "num": num})


def decode_point(environ=None) -> dict | None:
    """The point a launcher described in POINT_ENV, or None."""
    text = (os.environ if environ is None else environ).get(POINT_ENV, "")
    return json.loads(text) if text else None


@dataclass
class PointFailure:
    num: int
    label: str
    """The point's swept values (`model_dir=x`), or all its overrides."""
    status: str
    """Ray's final job status (FAILED, STOPPED) or why it was never submitted."""
    message: str
    log: str

    def line(self) -> str:
        return f"#{self.num} {self.label or '(no overrides)'}: {self.status}" + (f" ({self.message})" if self.message else "") + f"; log: {self.log}"


class SweepFailed(BaseException):
    """Points of a sweep failed (the others ran to the end). A BaseException so that Hydra's
    `run_and_report` lets it through to the CLI, which lists the points and exits 1."""

    def __init__(self, failures: list[PointFailure], total: int):
        self.failures, self.total = failures, total
        super().__init__(self.summary())

    def summary(self) -> str:
        lines = [f"{len(self.failures)} of {self.total} sweep points failed:"]
        return "\n".join(lines + ["  " + f.line() for f in self.failures])


def error_line(log_text: str) -> str:
    """The CLI's own one-line error in a point's log (`kopretrain <cmd>: error: ...`), else the last
    line that names an error."""
    lines = [line.strip() for line in log_text.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("kopretrain ") and ": error: " in line:
            return line[:300]
    for line in reversed(lines):
        if "Error" in line or "error" in line:
            return line[:300]
    return ""


class LaunchRefused(BaseException):
    """The launcher cannot start the sweep (no cluster address, cluster unreachable, token refused):
    one line, the CLI exits 2. A BaseException for the same reason as SweepFailed."""
