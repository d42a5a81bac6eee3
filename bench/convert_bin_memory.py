"""Peak host memory of the driver while it converts a `.bin` checkpoint to safetensors
(kopretrain/train/convert_bin.py): about one shard, not the model.

    .venv/bin/python bench/convert_bin_memory.py [--shards 4] [--shard-mb 256] [--dir /tmp/x] [--json]

Writes `--shards` files `pytorch_model-0000k-of-0000n.bin` of `--shard-mb` MB each (fp32 matrices
of 4096 columns, random) + `pytorch_model.bin.index.json`, then converts them in a fresh process
(`convert_bin`) and reports that process's `idle` RSS (after importing torch and safetensors) and `peak` (`ru_maxrss`,
which counts the mapped file pages of the shard being written), against one shard and the whole
checkpoint; then converts again (the marker: reused, no shard read).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MB = 1e6


def make_checkpoint(out: Path, shards: int, shard_mb: int) -> int:
    """The .bin shards and their index; returns the total bytes of tensors."""
    import torch

    out.mkdir(parents=True, exist_ok=True)
    weight_map, total, g = {}, 0, torch.Generator().manual_seed(0)
    rows = int(shard_mb * MB / 4 / 4096 / 4)  # 4 matrices per shard
    for i in range(shards):
        name = f"pytorch_model-{i + 1:05d}-of-{shards:05d}.bin"
        sd = {f"layers.{i}.w{j}": torch.randn(rows, 4096, generator=g) for j in range(4)}
        torch.save(sd, out / name)
        weight_map.update({k: name for k in sd})
        total += sum(t.numel() * 4 for t in sd.values())
        del sd
    (out / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    return total


def child(src: str, dst: str) -> None:
    """Convert in this fresh process; print idle and peak RSS (bytes) and the conversion's info."""
    sys.path.insert(0, str(ROOT))
    import safetensors.torch  # noqa: F401 (imported before `idle`, as on the driver)
    import torch  # noqa: F401

    from kopretrain.train.convert_bin import convert_bin

    Path(dst).mkdir(parents=True, exist_ok=True)
    idle = int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()
    info = convert_bin(Path(src), Path(dst))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"idle": idle, "peak": peak, "info": info}))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--shard-mb", type=int, default=256)
    p.add_argument("--dir", default="")
    p.add_argument("--json", action="store_true")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        return child(*a.child)
    root = Path(a.dir or tempfile.mkdtemp(prefix="convert_bin_"))
    total = make_checkpoint(root / "bin", a.shards, a.shard_mb)
    runs = []
    for _ in range(2):  # the second is reused (marker)
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, __file__, "--child", str(root / "bin"), str(root / "st")],
                             capture_output=True, text=True, check=True, cwd=ROOT).stdout
        runs.append({**json.loads(out.strip().splitlines()[-1]), "wall_s": round(time.perf_counter() - t0, 1)})
    shard = total / a.shards
    result = {"shards": a.shards, "shard_bytes": shard, "total_bytes": total,
              "peak_above_idle": runs[0]["peak"] - runs[0]["idle"], "convert_s": runs[0]["info"]["seconds"],
              "reused": runs[1]["info"]["reused"], "reuse_wall_s": runs[1]["wall_s"]}
    if a.json:
        print(json.dumps(result))
    else:
        print(f"{a.shards} shards x {shard / MB:.0f} MB = {total / MB:.0f} MB fp32; conversion {result['convert_s']:.1f} s")
        print(f"driver peak above idle: {result['peak_above_idle'] / MB:.0f} MB "
              f"= {result['peak_above_idle'] / shard:.2f} shards = {result['peak_above_idle'] / total:.2f}x the checkpoint")
        print(f"second run: reused={result['reused']} ({result['reuse_wall_s']} s incl. interpreter start)")


if __name__ == "__main__":
    main()
