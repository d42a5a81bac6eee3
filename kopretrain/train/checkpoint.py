"""Checkpoints for exact resume: one directory per checkpoint, written by every rank.

    save_checkpoint(directory, strategy, state)      # collective (all ranks call it)
    state = load_train_state(directory); restore_rng(directory, rank)

Layout (Ray Train merges the ranks' directories into one):

    train_state.json     rank 0: step, sampler counters, loss history, stage summaries, and the
                         fingerprint of the configuration that wrote it (train/fingerprint.py)
    rng-<rank>.pt        every rank: torch (CPU and CUDA), numpy and Python RNG states, as tensors
                         and plain values (loads with torch.load(weights_only=True))
    model.pt, optimizer.pt | fsdp/ (DCP shards) | deepspeed/ (engine)   -- the strategy's own

The learning-rate schedule is a function of the step (kopretrain/train/schedule.py), so the
step in train_state.json is its whole state. Pure torch: no Ray.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
from pathlib import Path

import numpy as np
import torch

from kopretrain.train.fingerprint import STATE_FILE, STATE_KEY
from kopretrain.train.loop import TrainState
from kopretrain.train.strategies.base import Strategy


def save_checkpoint(directory: str | Path, strategy: Strategy, state: TrainState, fingerprint: str = "") -> None:
    """Collective. `fingerprint`: the run's configuration fingerprint, recorded for the resume check."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    strategy.save(directory)
    rank = strategy.s.rank
    torch.save(_rng_state(), directory / f"rng-{rank}.pt")
    if rank == 0:
        tmp = directory / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps({**dataclasses.asdict(state), STATE_KEY: fingerprint}) + "\n")
        os.replace(tmp, directory / STATE_FILE)


def load_train_state(directory: str | Path) -> TrainState:
    data = json.loads((Path(directory) / STATE_FILE).read_text())
    data.pop(STATE_KEY, None)
    return TrainState(**data)


def _rng_state() -> dict:
    """Every RNG's state as tensors and plain Python values, so it loads with `weights_only=True` (no pickle)."""
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "python": {"version": int(version), "internal": list(internal), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(directory: str | Path, rank: int) -> None:
    """Restore this rank's RNG states (dropout and anything else that draws random numbers)."""
    state = torch.load(Path(directory) / f"rng-{rank}.pt", weights_only=True)
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
