"""Where this process stands in a run: rank, world size, device, and the collectives it needs.

Launchers, in order of precedence:

- torchrun: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT;
- srun: SLURM_PROCID, SLURM_STEP_NUM_TASKS (srun sets it for the step; a process started in
  the batch script itself has only SLURM_NTASKS and runs alone, whatever --ntasks says),
  SLURM_LOCALID; MASTER_ADDR is the first host of SLURM_STEP_NODELIST (or
  SLURM_JOB_NODELIST), from ``scontrol show hostnames`` where it exists, else parsed here;
  MASTER_PORT from the environment, else 29500 + SLURM_JOB_ID % 1000 (jobs sharing a node
  do not collide);
- neither: one process, no process group.

Backend gloo on CPU, nccl on GPU (device cuda:LOCAL_RANK % GPUs per node). Object
collectives (checkpoint gathering) go through a gloo group in both cases, since what they
carry lives on the CPU.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

DEFAULT_PORT = 29500
TIMEOUT = timedelta(minutes=30)  # a checkpoint gather of a large ensemble can be slow


@dataclass(frozen=True)
class Placement:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = DEFAULT_PORT
    launcher: str = "none"  # torchrun | slurm | none


def first_host(nodelist: str) -> str:
    """The first host name of a SLURM node list (``gpu[03-05,07],cpu1`` -> ``gpu03``)."""
    match = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if match is None:
        raise ValueError(f"cannot read a host from node list {nodelist!r}")
    prefix, ranges = match.group(1), match.group(2)
    if ranges is None:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0]


def scontrol_first_host(nodelist: str) -> str:
    """`first_host` through ``scontrol show hostnames`` where scontrol exists (it knows
    every node-list syntax SLURM does), else parsed here."""
    scontrol = shutil.which("scontrol")
    if scontrol is not None:
        try:
            done = subprocess.run(
                [scontrol, "show", "hostnames", nodelist],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            )
            hosts = done.stdout.split()
            if hosts:
                return hosts[0]
        except (subprocess.SubprocessError, OSError):
            pass
    return first_host(nodelist)


def placement_from_env(
    env: Mapping[str, str] = os.environ,
    resolve_host: Callable[[str], str] = scontrol_first_host,
) -> Placement:
    """This process's placement from torchrun's or srun's variables (module docstring)."""
    if "RANK" in env and "WORLD_SIZE" in env:
        return Placement(
            rank=int(env["RANK"]),
            world_size=int(env["WORLD_SIZE"]),
            local_rank=int(env.get("LOCAL_RANK", "0")),
            master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
            master_port=int(env.get("MASTER_PORT", DEFAULT_PORT)),
            launcher="torchrun",
        )
    if "SLURM_PROCID" in env and "SLURM_STEP_NUM_TASKS" in env:
        nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST", "")
        if "MASTER_PORT" in env:
            port = int(env["MASTER_PORT"])
        else:
            port = DEFAULT_PORT + int(env.get("SLURM_JOB_ID", "0")) % 1000
        return Placement(
            rank=int(env["SLURM_PROCID"]),
            world_size=int(env["SLURM_STEP_NUM_TASKS"]),
            local_rank=int(env.get("SLURM_LOCALID", "0")),
            master_addr=env.get("MASTER_ADDR")
            or (resolve_host(nodelist) if nodelist else "127.0.0.1"),
            master_port=port,
            launcher="slurm",
        )
    return Placement()


def pick_device(requested: str, local_rank: int) -> torch.device:
    """cuda:LOCAL_RANK % GPUs for "cuda" (or "auto" where CUDA exists), else the CPU."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device: cuda requested, but torch sees no GPU")
    if requested == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


class Group:
    """The run's processes: a torch.distributed group when world_size > 1, else nothing, with
    the same methods either way (the one-process versions return their input)."""

    def __init__(self, placement: Placement, device: torch.device) -> None:
        self.placement = placement
        self.device = device
        self.rank, self.world_size = placement.rank, placement.world_size
        self._objects: Any = None
        if self.world_size > 1:
            if device.type == "cuda":
                torch.cuda.set_device(device)
            # torchrun's agent may already serve the rendezvous store: env:// joins it.
            address = f"tcp://{placement.master_addr}:{placement.master_port}"
            dist.init_process_group(
                backend="nccl" if device.type == "cuda" else "gloo",
                init_method="env://" if placement.launcher == "torchrun" else address,
                rank=self.rank,
                world_size=self.world_size,
                timeout=TIMEOUT,
            )
            self._objects = (
                dist.new_group(backend="gloo") if device.type == "cuda" else dist.group.WORLD
            )

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def close(self) -> None:
        if self.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier(group=self._objects)

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over ranks (a new tensor on this rank's device)."""
        tensor = tensor.detach().to(self.device, torch.float64).clone()
        if self.world_size > 1:
            dist.all_reduce(tensor)
        return tensor

    def any(self, flag: bool) -> bool:
        """True on every rank when it is True on one (all ranks must call it together)."""
        if self.world_size == 1:
            return flag
        return bool(self.sum(torch.tensor([float(flag)])).item() > 0)

    def gather(self, value: Any) -> list[Any] | None:
        """Every rank's `value` (picklable, on the CPU) on rank 0 in rank order; None elsewhere."""
        if self.world_size == 1:
            return [value]
        received: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(value, received, dst=0, group=self._objects)
        return received
