"""PyTorch `.bin` checkpoints to safetensors, once, on the driver, so that the workers load them sharded.

    info = convert_bin(model_dir, out_dir, discard)    # out_dir: model-0000k-of-0000n.safetensors + index
    # {"source": "pytorch_model.bin (3 files)", "seconds": 12.3, "where": "/m/safetensors", "reused": False}

Workers read safetensors in place, each its own rows (kopretrain/train/model_init.py); a checkpoint
that ships only `pytorch_model.bin` (or `pytorch_model-0000k-of-0000n.bin` + its index) cannot be
read that way, and before this every rank loaded the whole model. Here each `.bin` shard is
opened with `torch.load(mmap=True, weights_only=True)` and written as one safetensors shard, one
at a time: the driver holds about one shard (its pages are mapped from the file, not copied).
`model.safetensors.index.json` maps every tensor to its file, as a safetensors checkpoint does.

Tensors that share storage (tied weights: an output layer that is the input embedding) cannot be
saved twice in safetensors. As `save_pretrained` does, a name the model re-ties (`discard`,
`model_init.retied_keys`) is dropped; any other alias is saved as its own copy.

A marker written last (`kopretrain_converted.json`: each source file's size and mtime, the
dropped names) makes a finished conversion reused; `.kopretrain_converting`, written before
anything else and removed after it, marks an interrupted one, whose shards are removed and
written again; runs that start together (a sweep) convert once, under a file lock in the folder.
A folder with neither marker that holds anything (another model's safetensors, a model directory)
is refused before anything is written there: its files are never removed. A `.bin` that is no
readable PyTorch checkpoint, one that `torch.load(weights_only=True)` refuses (a pickled class),
or a shard the index names but that is missing, is a one-line UserError naming the file.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import defaultdict
from pathlib import Path

from kopretrain.errors import UserError

BIN = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"
INDEX = "model.safetensors.index.json"
MARKER = "kopretrain_converted.json"
CONVERTING = ".kopretrain_converting"
LOCK = ".kopretrain_convert.lock"
KEY = "model.name_or_path"


def bin_files(directory: Path) -> list[Path] | None:
    """The `.bin` weight files of a model directory (the index's shards, or pytorch_model.bin); None without."""
    index = directory / BIN_INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (ValueError, KeyError, TypeError) as exc:
            raise UserError(f"{KEY}: {index} is not a weight index ({type(exc).__name__}: {exc})") from None
        files = [directory / name for name in sorted(set(weight_map.values()))]
        for f in files:
            if not f.is_file():
                raise UserError(f"{KEY}: {f} is named in {index.name} but missing")
        return files
    return [directory / BIN] if (directory / BIN).is_file() else None


def signature(files: list[Path], discard: list[str]) -> dict:
    """What a finished conversion of `files` records: each file's size and mtime, and the names it drops."""
    source = {}
    for f in files:
        st = f.stat()
        source[str(f.resolve())] = [st.st_size, st.st_mtime_ns]
    return {"source": source, "discard": sorted(discard)}


def load_shard(path: Path) -> dict:
    """The tensors of one `.bin` file, memory-mapped (read only as they are written)."""
    import torch

    try:
        try:
            state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            state = torch.load(path, map_location="cpu", weights_only=True)  # legacy (pre-zip) format: no mmap
    except OSError as exc:
        raise UserError(f"{KEY}: cannot read {path} ({exc.strerror or exc})") from None
    except Exception as exc:  # UnpicklingError (a disallowed global, or not a pickle), RuntimeError, EOFError
        raise UserError(_unreadable(path, exc)) from None
    if not isinstance(state, dict):
        raise UserError(f"{KEY}: {path} holds a {type(state).__name__}, not a state dict of tensors")
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def _unreadable(path: Path, exc: Exception) -> str:
    """One line for a `.bin` torch.load refused: a pickled class weights_only does not allow, or not a checkpoint.

    torch's own text suggests `weights_only=False` (which runs whatever the file pickles): never passed on."""
    text = str(exc)
    found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if found:
        return (f"{KEY}: torch.load(weights_only=True) refuses {path}: it pickles {found.group(1)}, "
                f"not only tensors (kopretrain loads no code from a checkpoint)")
    with open(path, "rb") as f:
        head = f.read(4)
    zipped = head.startswith(b"PK")
    if not head:
        why = "an empty file"
    elif "weights only" in text.lower() or "weights_only" in text:  # the weights_only unpickler met no pickle of torch's
        why = "a zip archive without torch's pickle" if zipped else "neither of the formats torch.save writes"
    else:  # e.g. a truncated file: torch's first sentence, which names what it lacks
        why = re.split(r"(?<=\.)\s", (text.strip() or type(exc).__name__).splitlines()[0])[0].rstrip(".")[:160]
    return f"{KEY}: {path} is not a readable PyTorch checkpoint ({why}{'; truncated or corrupt?' if zipped else ''})"


def _same_view(a, b) -> bool:
    return a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride() and a.dtype == b.dtype


def savable(tensors: dict, discard: set[str]) -> tuple[dict, list[str]]:
    """(tensors safetensors accepts: no two sharing storage, all contiguous; the names dropped as re-tied aliases)."""
    import torch

    groups: dict[int, list[str]] = defaultdict(list)
    for name, t in tensors.items():
        groups[t.untyped_storage().data_ptr() if t.numel() else -len(groups) - 1].append(name)
    out, dropped = {}, []
    for names in groups.values():
        names = sorted(names, key=lambda n: (n in discard, n))  # keep a name the model does not re-tie
        keep = tensors[names[0]]
        out[names[0]] = keep.contiguous()
        for name in names[1:]:
            t = tensors[name]
            if name in discard and _same_view(t, keep):
                dropped.append(name)
            else:  # another alias or a view into the same storage: its own copy
                out[name] = t.clone(memory_format=torch.contiguous_format)
    return out, dropped


def foreign_files(out_dir: Path) -> list[str]:
    """What `out_dir` holds that kopretrain's conversion did not write ([] when new, empty or marked as its own)."""
    try:
        names = sorted(p.name for p in out_dir.iterdir() if p.name != LOCK and not p.name.startswith(".write-test-"))
    except OSError:  # missing (made later), or not a readable folder: writable_dir says so
        return []
    return [] if MARKER in names or CONVERTING in names else names


def refuse_foreign(out_dir: Path) -> None:
    """A one-line UserError when `out_dir` holds files not written here (they would be replaced), before any write."""
    names = foreign_files(out_dir)
    if names:
        shown = ", ".join(names[:3]) + (f", ... ({len(names)} in all)" if len(names) > 3 else "")
        raise UserError(f"model.safetensors_dir: {out_dir} already holds files kopretrain's conversion did not write "
                        f"({shown}; no {MARKER}); set it to an empty or new folder")


def _clear(out_dir: Path) -> None:
    """Remove what an earlier (interrupted or outdated) conversion wrote."""
    (out_dir / CONVERTING).touch()  # first: the folder stays kopretrain's while neither marker is complete
    (out_dir / MARKER).unlink(missing_ok=True)
    (out_dir / INDEX).unlink(missing_ok=True)
    for f in out_dir.glob("model-*-of-*.safetensors*"):
        f.unlink()


def convert_bin(model_dir: Path, out_dir: Path, discard: tuple[str, ...] | list[str] = ()) -> dict | None:
    """Convert the `.bin` checkpoint of `model_dir` into `out_dir` (reused when done before); None without `.bin` files.

    Runs under an exclusive lock on `out_dir/.kopretrain_convert.lock`: sweep points started together
    convert once, the others wait and reuse it."""
    import fcntl

    files = bin_files(model_dir)
    if files is None:
        return None
    refuse_foreign(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        refuse_foreign(out_dir)  # again under the lock (the user may have put files there meanwhile)
        return _convert_locked(files, out_dir, list(discard))


def _convert_locked(files: list[Path], out_dir: Path, discard: list[str]) -> dict:
    from safetensors.torch import save_file

    sig = signature(files, discard)
    source = f"{files[0].name}" if len(files) == 1 else f"{files[0].name} ... ({len(files)} files)"
    info = {"source": source, "where": str(out_dir), "reused": True, "seconds": 0.0}
    try:
        done = json.loads((out_dir / MARKER).read_text(encoding="utf-8"))
        if {k: done.get(k) for k in sig} == sig and (out_dir / INDEX).is_file():
            return {**info, "dropped": done.get("dropped", [])}
    except (OSError, ValueError, AttributeError):
        pass
    start = time.perf_counter()
    _clear(out_dir)
    weight_map, dropped, total = {}, [], 0
    for i, f in enumerate(files):
        tensors, gone = savable(load_shard(f), set(discard))
        name = f"model-{i + 1:05d}-of-{len(files):05d}.safetensors"
        save_file(tensors, str(out_dir / f"{name}.part"), metadata={"format": "pt"})
        os.replace(out_dir / f"{name}.part", out_dir / name)
        total += sum(t.numel() * t.element_size() for t in tensors.values())
        weight_map.update({k: name for k in tensors})
        dropped += gone
        del tensors
    index = {"metadata": {"total_size": total, "converted_from": [f.name for f in files]}, "weight_map": dict(sorted(weight_map.items()))}
    (out_dir / INDEX).write_text(json.dumps(index, indent=2), encoding="utf-8")
    marker = {**sig, "dropped": sorted(dropped)}
    (out_dir / MARKER).write_text(json.dumps(marker, indent=1), encoding="utf-8")  # last: the conversion is complete
    (out_dir / CONVERTING).unlink(missing_ok=True)
    return {**info, "reused": False, "seconds": round(time.perf_counter() - start, 2), "dropped": marker["dropped"]}


def writable_dir(path: Path, key: str, default: bool) -> Path:
    """`path` created and writable, or a one-line UserError naming `key`."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        where = f"the default {path} (inside the model directory)" if default else str(path)
        raise UserError(f"{key}: cannot write the converted safetensors to {where} ({exc.strerror or exc}); "
                        f"set {key} to a writable directory the workers can read") from None
    return path


def _model_dir(name_or_path: str) -> Path | None:
    """The local directory of a model with `.bin` weights only (a hub id: downloaded, .bin and .json); else None."""
    directory = Path(name_or_path)
    if directory.is_dir():
        return directory
    from huggingface_hub import constants, list_repo_files, snapshot_download

    try:  # a hub id: only a repository without safetensors is converted (unreachable: the workers' own path stands)
        if constants.HF_HUB_OFFLINE:  # HF_HUB_OFFLINE=1: what the local HF cache holds
            names = [p.name for p in Path(snapshot_download(name_or_path, local_files_only=True)).iterdir()]
        else:
            names = list_repo_files(name_or_path)
        if any(n.endswith(".safetensors") for n in names) or not any(n.endswith(".bin") for n in names):
            return None
        return Path(snapshot_download(name_or_path, allow_patterns=["*.json", "pytorch_model*.bin"]))
    except Exception:
        return None


def prepare_weights(plan, safetensors_dir: str) -> dict | None:
    """Driver: convert a `.bin`-only checkpoint for the sharded load and point `plan.safetensors_dir` at it.

    None (nothing done) from scratch, with LoRA (the full load anyway) or when the model has safetensors.
    `safetensors_dir`: model.safetensors_dir ('' = `safetensors/` inside the model directory).
    """
    from kopretrain.paths import resolve_path
    from kopretrain.train import model_init

    if not plan.name_or_path or plan.lora is not None:
        return None
    directory = _model_dir(plan.name_or_path)
    if directory is None or (directory / model_init.INDEX).is_file() or (directory / model_init.SINGLE).is_file():
        return None
    if bin_files(directory) is None:
        return None
    out = resolve_path(safetensors_dir) if safetensors_dir else directory / "safetensors"
    refuse_foreign(out)  # before writable_dir's probe: nothing is written into another model's folder
    writable_dir(out, "model.safetensors_dir", not safetensors_dir)
    info = convert_bin(directory, out, model_init.retied_keys(plan))
    plan.safetensors_dir = str(out)
    return info


def describe(info: dict) -> str:
    """One line for report.json's `load`: what was converted, where, how long."""
    if info["reused"]:
        return f"{info['source']} converted to safetensors before, reused: {info['where']}"
    return f"{info['source']} converted to safetensors in {info['seconds']:.1f} s: {info['where']}"
