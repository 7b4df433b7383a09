"""The training loop: Adam with a step LR schedule, metrics, validation, checkpoints, resume.

`train(config, out)` runs one invocation of ``paramlib train`` in this process (one rank of a
distributed run when launched by torchrun or srun) and returns its exit status. The run
directory, exit codes and resume rules are in `paramlib.train`'s docstring.

Bit-for-bit resume: the data order is a function of (seed, step) (`BootstrapSampler`), the
model, optimizer and schedule states are restored exactly, every rank's RNG states and the
unlogged loss sums travel in the checkpoint, and the metrics file is cut back to the
checkpoint's step. Same world size and device needed for identical numbers.
"""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import torch
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from paramlib import __version__
from paramlib.doctor import training_threads
from paramlib.guards import FolderLock, UserInputError
from paramlib.train import REQUEUE_EXIT
from paramlib.train import checkpoint as ckpt
from paramlib.train.config import Config, ConfigError, config_from_dict, resume_conflicts
from paramlib.train.data import open_store
from paramlib.train.distributed import Group, Placement, pick_device, placement_from_env
from paramlib.train.signals import StopRequest
from paramlib.train.tasks import Task, task_from_spec, task_from_stores

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.csv"
MODEL_FILE = "model.pt"


class RunDirError(ValueError):
    """The run directory cannot be used as asked (a checkpoint there without --resume, ...)."""


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite: the run stopped before that step changed the weights,
    and the last checkpoint is the last good state."""


def git_commit() -> str | None:
    """The commit of the paramlib source tree, when it is a git checkout."""
    try:
        done = subprocess.run(
            ["git", "-C", str(Path(__file__).parent), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def member_slice(members: int, rank: int, world: int) -> tuple[int, int]:
    """(first member, count) of `rank`: contiguous slices, sizes differing by at most one."""
    if members < world:
        raise ConfigError(
            f"model.members: {members} members cannot be shared by {world} ranks "
            "(member-parallel: each rank trains at least one)"
        )
    first, end = rank * members // world, (rank + 1) * members // world
    return first, end - first


def trained_network(task: Task, state: Mapping[str, Any]) -> nn.Module:
    """The whole network (every member) of `task` with a checkpoint's weights, in eval mode."""
    torch.manual_seed(task.config.train.seed)  # built (initialised), then overwritten
    net = task.network(0, task.members)
    net.load_state_dict(state["model"])
    return net.eval()


def export_checkpoint(
    state: Mapping[str, Any], path: str | Path, output: str | None = None, member: int | None = None
) -> Path:
    """Write the model file of a checkpoint (dict from `checkpoint.load`): the config's export
    output mode unless `output` is given."""
    config = config_from_dict(state["config"])
    task = task_from_spec(config, state["spec"])
    net = trained_network(task, state)
    provenance = {**state["provenance"], "steps": state["step"]}
    return task.export(
        net,
        path,
        output or config.export_output,
        config.export.member if member is None else member,
        provenance,
    )


class Metrics:
    """metrics.csv (rank 0): fixed columns, flushed per row; TensorBoard when installed."""

    def __init__(self, path: Path, columns: list[str], resume_step: int | None) -> None:
        self.columns = columns
        rows: list[dict[str, str]] = []
        if resume_step is not None and path.is_file():
            with path.open(newline="") as handle:
                rows = [r for r in csv.DictReader(handle) if int(r["step"]) <= resume_step]
        # Rows after the checkpoint (logged before an interruption) are dropped: the resumed
        # run writes them again.
        self.handle: TextIO = path.open("w", newline="")
        self.writer = csv.DictWriter(self.handle, columns, extrasaction="ignore")
        self.writer.writeheader()
        self.writer.writerows(rows)
        self.handle.flush()
        self.tensorboard: Any = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(str(path.parent / "tensorboard"))
        except ImportError:  # tensorboard is optional
            pass

    def write(self, row: Mapping[str, float]) -> None:
        self.writer.writerow(
            {k: (f"{v:.9g}" if isinstance(v, float) else v) for k, v in row.items()}
        )
        self.handle.flush()
        if self.tensorboard is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, float) and math.isfinite(value):
                    self.tensorboard.add_scalar(key, value, int(row["step"]))

    def close(self) -> None:
        self.handle.close()
        if self.tensorboard is not None:
            self.tensorboard.close()


class Progress:
    """One status line on stderr: rewritten in place on a terminal, a line per log row else."""

    def __init__(self, total: int, first_step: int, enabled: bool) -> None:
        self.total, self.enabled = total, enabled
        self.tty = sys.stderr.isatty()
        self.start = (time.perf_counter(), first_step)

    def update(self, step: int, row: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        rate = (step - self.start[1]) / max(time.perf_counter() - self.start[0], 1e-9)
        shown = (f"{k} {v:.4g}" for k, v in row.items() if k not in ("step", "seconds"))
        text = (
            f"step {step}/{self.total}  {'  '.join(shown)}  {rate:.1f} steps/s  "
            f"eta {(self.total - step) / max(rate, 1e-9):.0f} s"
        )
        if self.tty:
            sys.stderr.write("\r" + text + "\033[K" + ("\n" if step == self.total else ""))
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()


@dataclass
class _State:
    step: int = 0
    window: torch.Tensor | None = None  # loss-part sums since the last log row
    window_steps: int = 0
    elapsed: float = 0.0


def train(
    config: Config,
    out: str | Path,
    resume: bool = False,
    max_steps: int | None = None,
    placement: Placement | None = None,
) -> int:
    """One invocation of ``paramlib train`` (module docstring); returns the exit status."""
    out = Path(out)
    placement = placement or placement_from_env()
    device = pick_device(config.train.device, placement.local_rank)
    _set_threads(config, placement)
    # Signals are caught from here on: one arriving while the data load is not lost.
    with StopRequest() as stop:
        group = Group(placement, device)
        try:
            with _run_dir_lock(out, group):
                saved = _check_run_dir(config, out / ckpt.CHECKPOINT_FILE, resume)
                if saved is not None and saved["step"] >= config.train.steps:
                    if group.is_main and not (out / MODEL_FILE).is_file():
                        export_checkpoint(saved, out / MODEL_FILE)
                    print(
                        f"[paramlib train] {out}: finished at step {saved['step']}",
                        file=sys.stderr,
                    )
                    status = 0
                else:
                    status = _run(config, out, saved, max_steps, group, stop)
            # Ranks leave together: a rank that tore its process group down while rank 0 was
            # still exporting once aborted in gloo ("terminate called without an active
            # exception") under a loaded machine.
            group.barrier()
            return status
        finally:
            group.close()


def _set_threads(config: Config, placement: Placement) -> None:
    """train.threads, else OMP_NUM_THREADS where a launcher set it, else what `paramlib
    doctor` finds sensible here (torch's own default, every core, oversubscribes a shared
    machine); said once, by rank 0."""
    launcher = os.environ.get("OMP_NUM_THREADS", "")
    if config.train.threads:
        threads, why = config.train.threads, "train.threads"
    elif (
        launcher.isdigit() and int(launcher) > 0
    ):  # the batch script's choice (SLURM: CPUs per task)
        threads, why = int(launcher), "OMP_NUM_THREADS; set train.threads to change"
    else:
        # torchrun's ranks on a node share its CPUs; srun binds each task to its own.
        threads, why = training_threads(int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        why = f"default: {why}; set train.threads to change"
    torch.set_num_threads(threads)
    if placement.rank == 0:
        print(f"[paramlib train] {threads} torch thread(s) per process ({why})", file=sys.stderr)


@contextmanager
def _run_dir_lock(out: Path, group: Group) -> Iterator[None]:
    """Hold `out`'s `FolderLock` (rank 0 for the whole run) so that a second training into
    the same directory is refused, not interleaved; every rank learns whether rank 0 got it,
    so the ranks of a refused run stop together instead of waiting for each other."""
    with ExitStack() as stack:
        refused: UserInputError | None = None
        if group.is_main:
            try:
                stack.enter_context(FolderLock(out, "run directory"))
            except UserInputError as error:
                refused = error
        if group.any(refused is not None):
            raise refused or RunDirError(f"run directory {out}: rank 0 could not lock it")
        yield


def _check_run_dir(config: Config, path: Path, resume: bool) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    if not resume:
        raise RunDirError(
            f"{path.parent} holds a checkpoint: pass --resume to continue it, or choose "
            "another --out"
        )
    saved = ckpt.load(path)
    conflicts = resume_conflicts(config_from_dict(saved["config"]), config)
    for role, store in saved["spec"]["stores"].items():
        # Checked here too, not only when training goes on: a finished run is not up to date
        # once its store was rebuilt from other data.
        now = open_store(store["path"], f"store {role!r}").attrs.get("fingerprint")
        if now != store.get("fingerprint"):
            conflicts.append(f"store {role!r} ({store['path']}) was rebuilt from other data")
    if conflicts:
        raise RunDirError(
            f"{path} was written with another config or store; --resume may change only run"
            " length and logging:\n  " + "\n  ".join(conflicts)
        )
    return saved


def _run(
    config: Config,
    out: Path,
    saved: dict[str, Any] | None,
    max_steps: int | None,
    group: Group,
    stop: StopRequest,
) -> int:
    task = task_from_stores(config, saved["spec"].get("loader") if saved is not None else None)
    if group.is_main:
        print(f"[paramlib train] {task.loader_note}", file=sys.stderr)
    try:
        return _train(config, out, saved, max_steps, group, stop, task)
    finally:
        task.close()


def _train(
    config: Config,
    out: Path,
    saved: dict[str, Any] | None,
    max_steps: int | None,
    group: Group,
    stop: StopRequest,
    task: Task,
) -> int:
    train_config = config.train
    ensemble = config.ensemble
    first, count = member_slice(task.members, group.rank, group.world_size) if ensemble else (0, 1)
    torch.manual_seed(train_config.seed)  # initial weights (the LSTM draws from torch's RNG)
    net = task.network(first, count).to(group.device)
    optimizer = torch.optim.Adam(net.parameters(), lr=train_config.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(
        optimizer, step_size=train_config.lr_decay_every, gamma=train_config.lr_decay
    )
    state = _State()
    if saved is None:
        ckpt.seed_everything(train_config.seed * 1000 + group.rank)
        provenance = {
            "config": config.to_dict(),
            "stores": task.spec["stores"],
            "git_commit": git_commit(),
            "paramlib_version": __version__,
            "torch_version": str(torch.__version__),
            "seed": train_config.seed,
            "world_size": group.world_size,
        }
    else:
        provenance = saved["provenance"]
        _restore(saved, net, optimizer, scheduler, state, group, first, count, ensemble)
    if group.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG_FILE).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    model: nn.Module = net
    if not ensemble and group.world_size > 1:
        model = DistributedDataParallel(
            net,
            device_ids=[group.device] if group.device.type == "cuda" else None,
            broadcast_buffers=False,  # normalisation buffers never change (torch >= 1.x keyword)
        )
    task.prepare(group.device, first, count, group.rank, group.world_size)

    total = train_config.steps
    end = min(total, max_steps) if max_steps else total
    # Ensembles sum their members' losses; single models on several ranks average them.
    denominator = task.members if ensemble else group.world_size
    metrics = (
        Metrics(
            out / METRICS_FILE,
            ["step", "lr", *task.train_parts, *task.val_parts, "seconds"],
            state.step if saved is not None else None,
        )
        if group.is_main
        else None
    )
    progress = Progress(total, state.step, group.is_main and train_config.progress)

    def write_checkpoint() -> None:
        _save(out, config, task, provenance, net, optimizer, scheduler, state, group, ensemble)

    started = time.perf_counter() - state.elapsed
    try:
        for step in range(state.step, end):
            net.train()
            lr = optimizer.param_groups[0]["lr"]
            objective, parts = task.step_loss(model, net, step)
            # Checked before the update: NaN weights never reach a checkpoint.
            if group.any(not bool(torch.isfinite(objective.detach()).all())):
                raise _non_finite(task, objective, step, out, group)
            optimizer.zero_grad(set_to_none=True)
            objective.backward()
            optimizer.step()
            scheduler.step()
            state.window = parts if state.window is None else state.window + parts
            state.window_steps += 1
            state.step = done = step + 1
            row: dict[str, float] = {}
            if done % train_config.log_every == 0 or done == total:
                sums = group.sum(state.window) / (state.window_steps * denominator)
                row.update(zip(task.train_parts, sums.tolist(), strict=True))
                state.window, state.window_steps = None, 0
            if done % train_config.val_every == 0 or done == total:
                net.eval()
                val = group.sum(task.val_losses(net)) / denominator
                row.update(zip(task.val_parts, val.tolist(), strict=False))
            state.elapsed = time.perf_counter() - started
            if row:
                row = {"step": done, "lr": lr, **row, "seconds": state.elapsed}
                if metrics is not None:
                    metrics.write(row)
                progress.update(done, row)
            stopping = group.any(stop.signal is not None)
            if stopping or done % train_config.checkpoint_every == 0 or done == end:
                write_checkpoint()
            if stopping:
                if group.is_main:
                    print(
                        f"\n[paramlib train] {stop.name or 'stop signal'}: checkpoint at "
                        f"step {done} in {out}; exit {REQUEUE_EXIT} (resume with --resume)",
                        file=sys.stderr,
                    )
                return REQUEUE_EXIT
    finally:
        if metrics is not None:
            metrics.close()
    if end < total:
        if group.is_main:
            print(
                f"[paramlib train] stopped at step {end} of {total} (--max-steps)", file=sys.stderr
            )
        return 0
    if group.is_main:
        path = export_checkpoint(ckpt.load(out / ckpt.CHECKPOINT_FILE), out / MODEL_FILE)
        print(
            f"[paramlib train] {out}: {total} steps in {state.elapsed:.1f} s; model {path}",
            file=sys.stderr,
        )
    return 0


def _non_finite(
    task: Task, objective: torch.Tensor, step: int, out: Path, group: Group
) -> NonFiniteLoss:
    """The error that stops a run at a non-finite loss: the step, the batch's store samples
    (on the rank whose loss it was), and the checkpoint that stays."""
    kept = out / ckpt.CHECKPOINT_FILE
    kept_text = (
        f"the checkpoint in {out} is kept as it was" if kept.is_file() else "no checkpoint yet"
    )
    rank = f"rank {group.rank}: " if group.world_size > 1 else ""
    loss = objective.detach().float().cpu()
    if bool(torch.isfinite(loss).all()):
        batch = "another rank's loss was not finite"
    else:
        batch = f"loss {loss.flatten()[0].item()}; its batch has {task.describe_batch(step)}"
    return NonFiniteLoss(f"{rank}step {step + 1}: {batch}; training stopped, {kept_text}")


def _save(
    out: Path,
    config: Config,
    task: Task,
    provenance: Mapping[str, Any],
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    state: _State,
    group: Group,
    ensemble: bool,
) -> None:
    """Gather what rank 0 needs (every rank's RNG and loss window; member slices), write."""
    local: dict[str, Any] = {
        "rng": ckpt.rng_state(group.device),
        "window": None if state.window is None else state.window.cpu(),
    }
    if ensemble:
        local["model"] = ckpt.cpu_state(net.state_dict())
        local["optimizer"] = ckpt.cpu_state(optimizer.state_dict())
    ranks = group.gather(local)
    if ranks is not None:
        model, optim = (
            (
                ckpt.cat_members([r["model"] for r in ranks]),
                ckpt.cat_members([r["optimizer"] for r in ranks]),
            )
            if ensemble
            else (ckpt.cpu_state(net.state_dict()), ckpt.cpu_state(optimizer.state_dict()))
        )
        ckpt.save_atomic(
            {
                "format": ckpt.CHECKPOINT_FORMAT,
                "config": config.to_dict(),
                "spec": task.spec,
                "provenance": dict(provenance),
                "step": state.step,
                "model": model,
                "optimizer": optim,
                "scheduler": scheduler.state_dict(),
                "ranks": [{"rng": r["rng"], "window": r["window"]} for r in ranks],
                "window_steps": state.window_steps,
                "elapsed": state.elapsed,
            },
            out / ckpt.CHECKPOINT_FILE,
        )
    group.barrier()  # no rank runs ahead (or exits) before the checkpoint exists


def _restore(
    saved: Mapping[str, Any],
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    state: _State,
    group: Group,
    first: int,
    count: int,
    ensemble: bool,
) -> None:
    model, optim = saved["model"], saved["optimizer"]
    if ensemble:
        model = ckpt.slice_members(model, first, count)
        optim = ckpt.slice_members(optim, first, count)
    net.load_state_dict(model)
    optimizer.load_state_dict(optim)
    scheduler.load_state_dict(saved["scheduler"])
    ranks = saved["ranks"]
    state.step, state.window_steps, state.elapsed = (
        saved["step"],
        saved["window_steps"],
        saved["elapsed"],
    )
    if len(ranks) == group.world_size:
        ckpt.set_rng_state(ranks[group.rank]["rng"], group.device)
        state.window = ranks[group.rank]["window"]
    else:
        # Another world size: the RNG streams are reseeded by rank and step (a model that
        # draws from them, dropout, no longer matches an uninterrupted run), and rank 0 carries
        # the unlogged loss sums, rescaled so the next row's mean stays right.
        ckpt.seed_everything(
            (saved["config"]["train"]["seed"] * 1000 + group.rank) * 7919 + state.step
        )
        windows = [r["window"] for r in ranks if r["window"] is not None]
        scale = 1.0 if ensemble else group.world_size / len(ranks)  # ranks' means, not sums
        state.window = scale * sum(windows[1:], windows[0]) if windows and group.is_main else None
        if group.is_main:
            print(
                f"[paramlib train] resuming a {len(ranks)}-rank checkpoint on "
                f"{group.world_size} ranks: results will differ from an uninterrupted run",
                file=sys.stderr,
            )
    if state.window is not None:
        state.window = state.window.to(group.device)
