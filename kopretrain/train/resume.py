"""Reruns on an existing run directory: resume, refuse, start fresh, or say the run is complete.

Ray Train restores the latest checkpoint it finds under `<checkpoint storage>/train/` (its
checkpoint manager snapshot), whatever configuration wrote it. So before Ray starts, the driver
looks there itself (`find_prior`), compares the fingerprint recorded with those checkpoints with
the new configuration's (kopretrain/train/fingerprint.py), and `decide`s by `resume`:

| checkpoints there                  | auto                    | must                    | never                  |
|------------------------------------|-------------------------|-------------------------|------------------------|
| none                               | fresh                   | refuse                  | fresh                  |
| same config, run finished + report | complete (nothing runs) | complete                | clear, fresh           |
| same config, not finished          | resume                  | resume                  | clear, fresh           |
| another config (or unknown)        | refuse, naming the keys | refuse, naming the keys | clear, fresh           |

Only the checkpoints Ray Train registered count: those listed in its snapshot
(`<storage>/train/checkpoint_manager_snapshot.json`), and Ray resumes from the snapshot's
`latest_checkpoint_result`. Ray Train V2 registers a checkpoint when its controller polls the
worker (about once a second), so a worker killed in between leaves a `checkpoint_*` directory
the snapshot does not list: such orphans are ignored here and removed (`remove_orphans`) before
Ray starts. The storage is read through pyarrow's filesystems, so `s3://` / `gs://` storage works the same
as a local directory. No Ray, Hydra or torch here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Optional

from kopretrain.errors import UserError
from kopretrain.train.fingerprint import RECORD_FILE, STATE_FILE, STATE_KEY, changed_keys

EXPERIMENT_NAME = "train"
"""RunConfig(name=...) of every training run: checkpoints live in <storage>/train/."""
SNAPSHOT_FILE = "checkpoint_manager_snapshot.json"
"""Ray Train V2's record of the checkpoints it registered (ray.train.v2 CHECKPOINT_MANAGER_SNAPSHOT_FILENAME)."""


@dataclass
class Prior:
    """What an earlier run left in the checkpoint storage."""

    experiment_dir: str
    """<storage>/train (a path or a URI), whether or not it exists."""
    checkpoints: list[tuple[int, str]] = field(default_factory=list)
    """(step, fingerprint or '') of every checkpoint, by step."""
    record: Optional[dict[str, Any]] = None
    """The driver's kopretrain_fingerprint.json: {"fingerprint": ..., "keys": {...}}."""
    exists: bool = False
    """Anything at all under experiment_dir (a snapshot Ray would load, checkpoints, the record)."""
    num_ranks: int = 0
    """Ranks that wrote the newest checkpoint (its rng-<rank>.pt files; 0 = unknown)."""
    latest_step: Optional[int] = None
    """Step of the checkpoint Ray Train resumes from (its snapshot's latest; None = the last by step)."""
    orphans: list[str] = field(default_factory=list)
    """checkpoint_* directories Ray Train's snapshot does not list (full paths in the filesystem)."""
    data_sizes: Optional[dict[str, int]] = None
    """Sequences per domain the resume checkpoint's sampler was drawing from (None = not recorded)."""

    @property
    def last_step(self) -> int:
        if self.latest_step is not None:
            return self.latest_step
        return self.checkpoints[-1][0] if self.checkpoints else 0


@dataclass
class Decision:
    action: str
    """fresh, resume, complete, or clear (remove experiment_dir, then fresh)."""
    message: str = ""
    """One line for the user ('' = nothing to say)."""


def _filesystem(storage: str):
    from pyarrow import fs as pafs

    return pafs.FileSystem.from_uri(storage)


def experiment_dir(storage: str) -> str:
    return storage.rstrip("/") + "/" + EXPERIMENT_NAME


def _read_json(fs, path: str) -> Optional[dict]:
    try:
        with fs.open_input_stream(path) as f:
            return json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        return None


def find_prior(storage: str) -> Prior:
    """Read the checkpoints' steps and fingerprints and the driver's record under <storage>/train."""
    from pyarrow import fs as pafs

    prior = Prior(experiment_dir=experiment_dir(storage))
    try:  # an s3:// or gs:// storage without credentials or network fails here, before Ray starts
        fs, root = _filesystem(storage)
        exp = root.rstrip("/") + "/" + EXPERIMENT_NAME
        entries = fs.get_file_info(pafs.FileSelector(exp, allow_not_found=True))
    except (OSError, ValueError) as exc:
        raise UserError(f"checkpoint.storage_path: cannot read {storage} ({str(exc).splitlines()[0]})") from None
    prior.exists = bool(entries)
    registered, latest = registered_checkpoints(_read_json(fs, f"{exp}/{SNAPSHOT_FILE}"))
    newest, sizes = (-1, ""), {}
    for entry in entries:
        if entry.type == pafs.FileType.Directory and entry.base_name.startswith("checkpoint_"):
            if entry.base_name not in registered:
                prior.orphans.append(entry.path)
                continue
            state = _read_json(fs, f"{entry.path}/{STATE_FILE}")
            if state is not None:
                sizes[entry.path] = (state.get("sampler") or {}).get("sizes")
                prior.checkpoints.append((int(state["step"]), str(state.get(STATE_KEY, ""))))
                newest = max(newest, (int(state["step"]), entry.path))
                if entry.base_name == latest:
                    prior.latest_step = int(state["step"])
                    newest = (10**18, entry.path)  # the one Ray loads: its ranks are what resumes
    prior.checkpoints.sort()
    prior.orphans.sort()
    prior.data_sizes = sizes.get(newest[1])
    if prior.checkpoints:
        files = fs.get_file_info(pafs.FileSelector(newest[1]))
        prior.num_ranks = sum(1 for f in files if f.base_name.startswith("rng-") and f.base_name.endswith(".pt"))
    prior.record = _read_json(fs, f"{exp}/{RECORD_FILE}")
    return prior


def registered_checkpoints(snapshot: Optional[dict]) -> tuple[set[str], Optional[str]]:
    """(every checkpoint dir name Ray Train's snapshot lists, the latest one's) from its JSON.

    Ray 2.60's `_CheckpointManagerState`: checkpoint_results, latest_checkpoint_result and
    pending_training_results (awaiting validation), each {"checkpoint_dir_name": ..., "metrics": ...}."""
    if not snapshot:
        return set(), None
    results = [*(snapshot.get("checkpoint_results") or []), *(snapshot.get("pending_training_results") or [])]
    latest = (snapshot.get("latest_checkpoint_result") or {}).get("checkpoint_dir_name")
    names = {r["checkpoint_dir_name"] for r in results if r.get("checkpoint_dir_name")}
    return names | ({latest} if latest else set()), latest


def remove_orphans(storage: str, prior: Prior) -> str:
    """Delete the checkpoint directories Ray Train never registered; one line to say so ('' = none)."""
    if not prior.orphans:
        return ""
    fs, _ = _filesystem(storage)
    for path in prior.orphans:
        fs.delete_dir(path)
    n = len(prior.orphans)
    prior.orphans = []
    return (f"removed {n} checkpoint director{'y' if n == 1 else 'ies'} Ray Train never registered "
            f"(incomplete, or written just before the run was killed) from {prior.experiment_dir}")


def write_record(storage: str, fingerprint: str, keys: dict[str, Any]) -> None:
    """Record the configuration next to the checkpoints it is about to write."""
    fs, root = _filesystem(storage)
    exp = root.rstrip("/") + "/" + EXPERIMENT_NAME
    fs.create_dir(exp, recursive=True)
    text = json.dumps({"fingerprint": fingerprint, "keys": keys}, indent=1, ensure_ascii=False, default=str)
    with fs.open_output_stream(f"{exp}/{RECORD_FILE}") as f:
        f.write((text + "\n").encode("utf-8"))


def clear(storage: str) -> None:
    """Remove <storage>/train: Ray's snapshot, every checkpoint and the record."""
    fs, root = _filesystem(storage)
    fs.delete_dir(root.rstrip("/") + "/" + EXPERIMENT_NAME)


def decide(policy: str, prior: Prior, fingerprint: str, keys: dict[str, Any], num_steps: int,
           finished_report: bool, elsewhere: str = "hydra.run.dir", num_workers: int = 0) -> Decision:
    """What to do with `prior` for a run of `keys` (fingerprint `fingerprint`) under `policy`.

    `finished_report`: the run directory holds a report.json of this fingerprint with its model.
    `elsewhere`: the key that moves the checkpoints (hydra.run.dir, or checkpoint.storage_path when set).
    `num_workers`: of the new run; more than the ranks that wrote the checkpoint cannot resume it
    (the extra ranks have no RNG state; fewer can: the global batch and the math stay the same).
    Raises UserError (one line) where the run must not start.
    """
    where = prior.experiment_dir
    if policy == "never":
        if not prior.exists:
            return Decision("fresh")
        what = (f"{len(prior.checkpoints)} checkpoint(s), the last at step {prior.last_step}"
                if prior.checkpoints else "an earlier run's state")
        return Decision("clear", f"resume=never: removed {what} from {where}; starting fresh "
                                 "(model/ and report.json will be overwritten)")
    if not prior.checkpoints:
        if policy == "must":
            raise UserError(f"resume=must: no checkpoint to resume in {where}")
        return Decision("fresh")
    recorded = {fp for _, fp in prior.checkpoints}
    if recorded != {fingerprint}:
        old_keys = (prior.record or {}).get("keys")
        if "" in recorded or old_keys is None:
            raise UserError(f"{where} holds checkpoints of an unknown configuration (no fingerprint recorded); "
                            f"resume=never starts fresh (removes them), or choose another {elsewhere}")
        changes = changed_keys(old_keys, keys) or ["(the recorded keys match; the checkpoints do not)"]
        raise UserError(f"{where} holds checkpoints of another configuration (changed: {'; '.join(changes)}); "
                        f"resume=never starts fresh (removes them), or choose another {elsewhere}")
    if prior.last_step >= num_steps and finished_report:
        return Decision("complete", f"run already complete: {prior.last_step} of {num_steps} steps with this "
                                    f"configuration (checkpoints in {where}); nothing to do (resume=never retrains)")
    if prior.num_ranks and num_workers > prior.num_ranks:
        raise UserError(f"scale.num_workers: {num_workers} workers cannot resume the checkpoint at step {prior.last_step} "
                        f"written by {prior.num_ranks} (in {where}); resume with at most {prior.num_ranks}, or resume=never")
    return Decision("resume", f"resuming from the checkpoint at step {prior.last_step} of {num_steps} in {where}")


def check_data(prior: Prior, num_sequences: dict[str, int], allow_changed: bool) -> str:
    """Compare the packed data's sequences per domain with those the resume checkpoint recorded.

    Changed sizes (the data was re-prepared in place) raise one UserError naming the domains,
    unless `allow_changed` (data.allow_changed_data): then one line to say so, and the sampler
    starts each changed domain on a new epoch of its new size (kopretrain/train/mixing.py)."""
    from kopretrain.train.mixing import describe_size_changes

    changes = describe_size_changes(prior.data_sizes or {}, num_sequences)
    if not changes:
        return ""
    what = f"the checkpoint at step {prior.last_step} was drawing from other packed data ({'; '.join(changes)})"
    if not allow_changed:
        raise UserError(f"data.tokens_dir: {what}; set data.allow_changed_data=true to continue on the new data, "
                        "or resume=never to start fresh")
    return f"data.allow_changed_data: {what}; continuing, each changed domain from a new epoch"
