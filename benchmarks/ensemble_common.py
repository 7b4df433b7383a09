"""Shared parts of the ensemble benchmarks (ensemble_training.py, ensemble_inference.py):
the network shapes, FLOP counts, alternating timing, the malloc setting and machine facts.

The scripts set the thread environment before importing this module (and torch).

Clocks: on CPU a call's cost is the process's CPU time (user + system, so page faults
count), because on a shared machine wall time also counts the time spent waiting for a
core; the benchmarks run one intra-op thread, so CPU time is not summed over threads.
On CUDA it is wall time between synchronisations.
"""

import ctypes
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

import torch

# The MF-RPN paper's network: 52 inputs -> 7 x 512 -> 48 outputs, 32 members.
N_IN, N_OUT, WIDTH, DEPTH, MEMBERS = 52, 48, 512, 7, 32


def layer_shapes(n_in: int, width: int, depth: int, n_out: int) -> list[tuple[int, int]]:
    """(fan_in, fan_out) per layer."""
    return list(pairwise([n_in, *[width] * depth, n_out]))


def matmul_flops(members: int, batch: int, shapes: Sequence[tuple[int, int]]) -> float:
    """FLOPs of one forward pass's matmuls through all layers (2 per multiply-add)."""
    return 2.0 * members * batch * sum(a * b for a, b in shapes)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def keep_freed_memory() -> None:
    """Have glibc serve every allocation from its heap and never return freed memory.

    By default glibc maps each block of 32 MiB or more afresh and unmaps it when freed,
    so every large activation of every step is page-faulted (and zeroed by the kernel)
    again: on one core that costs more than the step's elementwise work. A Python loop
    over members allocates blocks small enough to be reused and never pays it.
    """
    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_max = -1, -4  # <malloc.h>
    if not (libc.mallopt(m_mmap_max, 0) and libc.mallopt(m_trim_threshold, 2**31 - 1)):
        raise RuntimeError("mallopt refused the setting")


def clock(device: torch.device) -> Callable[[], float]:
    return time.process_time if device.type == "cpu" else time.perf_counter


def time_alternating(
    cases: Mapping[str, Callable[[], object]], rounds: int, device: torch.device
) -> dict[str, list[float]]:
    """Seconds per call of each case (see Clocks above): one untimed call each, then
    `rounds` rounds that call every case once, in turn, so background load hits all alike."""
    for fn in cases.values():
        fn()
    sync(device)
    now = clock(device)
    seconds: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            sync(device)
            start = now()
            fn()
            sync(device)
            seconds[name].append(now() - start)
    return seconds


def machine_info(device: torch.device) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "intra_op_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
