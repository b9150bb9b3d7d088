"""Keep freed host memory in the process, so that a CPU training step does not page-fault its tensors back in.

A training step frees and reallocates the same large tensors every time: at the reference autoencoder size
(``benchmarks/models.py``: V=8000, b=8, L=256) the logits, their log-softmax and both gradients are 65 MB each.
glibc serves every allocation over its mmap threshold (at most 32 MB) with fresh pages from the kernel and unmaps
them on free, so each step takes ~94,000 minor page faults and ~190 ms of system time, a quarter of the step
(measured, BENCHMARKS.md). With mmap off for malloc and the heap never trimmed, freed blocks are reused: ~3,000 faults
and 5 ms per step. The cost is that the process keeps its peak heap until it exits, which a training run does anyway.

This is the same fix as the ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=...`` environment, or jemalloc / tcmalloc
preloaded (PyTorch's CPU performance guide), applied from inside the process with ``mallopt``. It changes nothing
when the process does not use glibc's malloc, or when the user already chose through those variables.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_MAX = -4
USER_CHOICES = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "LD_PRELOAD")


def keep_freed_host_memory() -> bool:
    """Turn off glibc malloc's use of mmap and its trimming for this process; True when it was applied.

    Call it once, before the large allocations. Skipped (False) on non-glibc systems, and when the environment sets
    one of ``USER_CHOICES`` (a preloaded allocator or the user's own malloc tuning wins).
    """
    if any(os.environ.get(name) for name in USER_CHOICES):
        return False
    libc = _glibc()
    if libc is None:
        return False
    # mallopt returns 1 on success; -1 as the trim threshold is SIZE_MAX: never give the heap top back
    return libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, -1) == 1


def _glibc():
    """The C library when it is glibc (it has ``gnu_get_libc_version``), else None (musl, macOS, Windows)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    return libc
