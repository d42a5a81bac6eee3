"""`steady_host_allocator` (kopretrain/train/model_init.py): after it, the host memory a training
step frees is reused by the next step instead of being handed back to the OS and faulted in again.
Counted in page faults (the kernel's count, not a time), each setting in its own process since
malloc settings are per process."""

from __future__ import annotations

import ctypes
import subprocess
import sys

import pytest

STEP = r"""
import ctypes, resource, sys, torch
sys.path.insert(0, {root!r})
from transformers import LlamaConfig, LlamaForCausalLM
from kopretrain.train.host_memory import M_MMAP_THRESHOLD, steady_host_allocator
torch.set_num_threads(1)
if {mode!r} == "mmap_only":  # compact_host_memory before the fix: the mmap threshold alone
    ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024)
if {mode!r} == "steady":
    assert steady_host_allocator()
torch.manual_seed(0)
model = LlamaForCausalLM(LlamaConfig(vocab_size=2048, hidden_size=128, intermediate_size=344, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2))
opt = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=False)
x = torch.randint(0, 2048, (4, 128))

def step():
    model(input_ids=x, labels=x).loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)

for _ in range(5):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> int:
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[2])
    out = subprocess.run([sys.executable, "-c", STEP.format(root=root, mode=mode)], capture_output=True, text=True,
                         check=True)
    return int(out.stdout.strip().splitlines()[-1])


def _glibc() -> bool:
    try:
        ctypes.CDLL("libc.so.6").mallopt  # noqa: B018
    except (OSError, AttributeError):
        return False
    return True


@pytest.mark.skipif(not _glibc(), reason="glibc's mallopt only")
def test_steady_allocator_stops_the_page_faults_of_every_step():
    """A tiny Llama's training steps: with glibc's dynamic thresholds, and with the mmap threshold
    fixed alone (the static 128 KiB trim threshold then trims the heap after every step), the
    steps fault pages in again; with `steady_host_allocator` they reuse the heap."""
    counts = {mode: faults(mode) for mode in ("dynamic", "mmap_only", "steady")}
    # seen on the 2-core VM: dynamic 2,000-14,000, mmap_only 10,000-19,000, steady 500-3,100
    assert counts["steady"] * 2 < counts["mmap_only"], counts
    assert counts["steady"] < counts["dynamic"], counts
