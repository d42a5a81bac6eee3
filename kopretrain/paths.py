"""Where the project's own files are (`conf/`, the shipped sample `data/`), and every path key.

Relative paths in configs are taken from the launch directory first; a relative input that
does not exist there but does under the project root (e.g. the default `data/heldout/ko.txt`
when launched from elsewhere) resolves there. Outputs are always relative to the launch
directory. URIs (`s3://`, `gs://`, `hdfs://`, `file://`, ...) are left as they are.

`PATH_KEYS` lists every path key of every command with its kind; the CLI calls
`resolve_config_paths(command, cfg)` right after composing the config, before any work (and
before Ray starts), so every command and every Ray worker sees absolute paths, and a missing
input or an output that cannot be written (under a file, in a read-only directory) fails as one
line naming its key (`train` also calls it itself, for direct callers).
"""

from __future__ import annotations

import copy
import glob
import os
import re
from pathlib import Path

from kopretrain.errors import UserError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = PROJECT_ROOT / "conf"
DATA_DIR = PROJECT_ROOT / "data"

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")

# command -> {dotted key: kind}; `[]` = every list item, `*` = every dict value.
#   required an input that must exist (file, directory, or a glob where the command reads globs);
#            missing -> UserError naming the key, here, before any work
#   input    an input the command checks itself with its own message: made absolute when found,
#            left as given when missing (so that the command's check reports it)
#   output   written by the command: made absolute from the launch directory
#   storage  an output that may also be a URI (Ray Train storage)
#   model    a local directory if one exists (launch dir, then project root), else a hub id, kept as is
# tracking.uri is resolved by kopretrain.tracking (relative sqlite stores are made absolute).
PATH_KEYS: dict[str, dict[str, str]] = {
    "prepare": {"sources[].path": "input", "output_dir": "output", "tokens_dir": "output",
                "tokenizer.path": "input", "clean.filter.bad_words_path": "required"},
    "tokenizer": {"base": "input", "corpus[]": "required", "output_dir": "output", "extra_model": "required",
                  "train_base.corpus": "required", "heldout.*": "required", "reference": "required",
                  "model_dir": "required"},
    "train": {"model.name_or_path": "model", "tokenizer": "required", "data.tokens_dir": "required",
              "output_dir": "output", "checkpoint.storage_path": "storage", "eval.heldout.*": "required",
              "model.safetensors_dir": "output", "eval.kobest_data_dir": "input"},
    "eval": {"model_dir": "required", "tokenizer_dir": "required", "base_model_dir": "required",
             "base_tokenizer_dir": "required", "heldout.*": "required", "kobest.data_dir": "input"},
    "demo": {"sources[].path": "input", "work_dir": "output", "heldout.*": "input"},
    "plan": {},  # base_model and from_report are resolved by kopretrain.plan.command (a known name is no path)
    "report": {"output_dir": "output"},  # source (a sweep dir or an MLflow run id) is resolved by kopretrain.report
}


def is_uri(value: str) -> bool:
    """`s3://bucket/x`, `gs://...`, `file:///...`: anything with a scheme."""
    return bool(_URI.match(str(value)))


def _absolute(p: Path) -> Path:
    return Path(os.path.abspath(p))


def resolve_path(path: str | Path) -> Path:
    """Absolute `path`: from the launch directory if it exists there (or nowhere), else from the project root."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return _absolute(p)
    candidate = PROJECT_ROOT / p
    return candidate if candidate.exists() else _absolute(p)


def resolve_glob(pattern: str) -> str:
    """A glob made absolute where it matches: the launch directory first, then the project root."""
    p = os.path.expanduser(pattern)
    if os.path.isabs(p):
        return p
    for base in (Path.cwd(), PROJECT_ROOT):
        if glob.glob(str(base / p), recursive=True):
            return str(base / p)
    return str(_absolute(Path(p)))


def output_path(value: str) -> str:
    """An output location: a URI as is, a path made absolute from the launch directory ('' stays '')."""
    if not value or is_uri(value):
        return value
    return str(_absolute(Path(value).expanduser()))


def input_path(value: str, key: str, required: bool = True) -> str:
    """An existing input (file, directory or matching glob), made absolute.

    Missing: UserError naming `key` if `required`, else `value` as given (the caller checks it)."""
    if not value or is_uri(value):
        return value
    if glob.has_magic(value):
        resolved = resolve_glob(value)
        if glob.glob(resolved, recursive=True):
            return resolved
        if required:
            raise UserError(f"{key}: no files match {value!r}")
        return value
    resolved = resolve_path(value)
    if resolved.exists():
        return str(resolved)
    if required:
        raise UserError(f"{key}: {value!r} does not exist (relative paths are taken from the launch directory, "
                        "then from the project root)")
    return value


def looks_like_path(value: str) -> bool:
    """A value that cannot be a Hugging Face hub id ('name' or 'org/name'): it starts with / . or ~,
    or has more than one slash (a backslash counts)."""
    v = str(value).replace("\\", "/")
    return v.startswith(("/", ".", "~")) or v.count("/") > 1


def model_path(value: str, key: str = "model.name_or_path") -> str:
    """A local model directory, absolute, if it exists; otherwise the value itself (a hub id).

    A path-like value (`looks_like_path`) that exists nowhere: UserError naming `key`, rather
    than the hub's "Repo id must be in the form ..." later."""
    if not value or is_uri(value):
        return value
    resolved = resolve_path(value)
    if resolved.exists():
        return str(resolved)
    if looks_like_path(value):
        where = "" if Path(value).expanduser().is_absolute() else (
            " (relative paths are taken from the launch directory, then from the project root)")
        raise UserError(f"{key}: {value}: no such directory{where}, and not a Hugging Face hub id")
    return value


def check_writable(value: str, key: str) -> None:
    """UserError naming `key` unless the output `value` (a local path) can be created and written.

    The nearest existing ancestor must be a writable directory; a URI is left to its filesystem."""
    if not value or is_uri(value):
        return
    given = Path(value).expanduser()
    target = _absolute(given)
    probe, shown = target, given
    while not probe.exists() and not probe.is_symlink() and probe != probe.parent:
        probe, shown = probe.parent, shown.parent
    reason = ""
    if probe.exists() and not probe.is_dir():
        reason = f"{shown} is a file" if probe.is_file() else f"{shown} is not a directory"
    elif not os.access(probe, os.W_OK | os.X_OK):
        reason = f"{shown} is not writable"
    if reason:
        raise UserError(f"{key}: cannot write to {value} ({reason})")


def _resolve(value: str, kind: str, key: str) -> str:
    if kind in ("required", "input"):
        return input_path(value, key, required=kind == "required")
    if kind == "model":
        return model_path(value, key)
    assert kind in ("output", "storage"), kind
    check_writable(value, key)
    return output_path(value)


def _apply(node, parts: list[str], kind: str, key: str):
    """`node` with the value(s) at `parts` resolved; `key` is the dotted name so far, for messages."""
    if not parts:
        return _resolve(node, kind, key) if isinstance(node, str) else node
    head, rest = parts[0], parts[1:]

    def join(name) -> str:
        return f"{key}.{name}" if key else str(name)

    if head == "*":
        for k in list(node):
            node[k] = _apply(node[k], rest, kind, join(k))
        return node
    name = head.removesuffix("[]")
    value = getattr(node, name)
    if head.endswith("[]"):
        for i in range(len(value)):
            value[i] = _apply(value[i], rest, kind, f"{join(name)}[{i}]")
    else:
        setattr(node, name, _apply(value, rest, kind, join(name)))
    return node


def resolve_config_paths(command: str, cfg):
    """A copy of the typed config `cfg` with every path key of `command` resolved (see PATH_KEYS)."""
    cfg = copy.deepcopy(cfg)
    for dotted, kind in PATH_KEYS[command].items():
        _apply(cfg, dotted.split("."), kind, "")
    return cfg
