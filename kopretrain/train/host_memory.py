"""glibc's malloc settings around loading a checkpoint and for the training steps (no Ray, no-ops without glibc).

    with compact_host_memory():      # while a strategy builds and loads the model (kopretrain/train/model_init.py)
        ...
    steady_host_allocator()          # the worker, before the first step

Both are re-exported by kopretrain.train.model_init, where they were first defined.
"""

from __future__ import annotations

import contextlib
import ctypes

M_MMAP_THRESHOLD = -3  # glibc mallopt parameters
M_TRIM_THRESHOLD = -1


def _glibc():
    """glibc (for mallopt and malloc_trim), or None elsewhere."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018 (glibc only)
    except (OSError, AttributeError):
        return None
    return libc


def steady_host_allocator() -> bool:
    """glibc's malloc settings for the training steps: mmap threshold 32 MiB (glibc's dynamic
    maximum) and trim threshold 64 MiB, fixed, so that the memory a step frees stays in the heap for
    the next step instead of going back to the OS and being faulted in again (with glibc's dynamic
    thresholds about 2,400 minor page faults per step of the overhead benchmark's model, 38 with
    these: bench/host_page_faults.py). Blocks of 32 MiB and more (real weights, gathered
    parameters) are still mapped and returned when freed. False without glibc (nothing changed)."""
    libc = _glibc()
    if libc is None:
        return False
    libc.mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024)
    libc.mallopt(M_TRIM_THRESHOLD, 64 * 1024 * 1024)
    return True


@contextlib.contextmanager
def compact_host_memory():
    """While loading, glibc hands large host allocations back to the OS as soon as they are freed.

    ZeRO-3 builds each full parameter before partitioning it, and every rank gathers each one
    while it is filled: with glibc's dynamic mmap threshold the freed full-size tensors stay in
    the heap, and a rank's resident memory grew to ~3x its partition (bench/train_memory.md).
    Afterwards `steady_host_allocator` sets the training steps' thresholds (setting one turns
    glibc's dynamic adjustment off: the trim threshold must be set too, or its static 128 KiB would
    hand heap memory back and fault it in again at every step), and the freed memory is trimmed.
    A no-op without glibc.
    """
    libc = _glibc()
    if libc is None:
        yield
        return
    libc.mallopt(M_MMAP_THRESHOLD, 128 * 1024)
    try:
        yield
    finally:
        steady_host_allocator()
        libc.malloc_trim(0)
