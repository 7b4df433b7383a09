"""The trainer: ``paramlib train CONFIG.yaml`` and ``paramlib export CHECKPOINT``.

Command-line contract (SLURM scripts and ``make demo`` rely on it)::

    paramlib train CONFIG.yaml [key.sub=value ...] [--variant small] [--out DIR]
                   [--resume] [--max-steps N]
    paramlib export CHECKPOINT|DIR --out MODEL.pt [--output mean_spread|members|mean|member]
                   [--member I]
    paramlib calibrate CONFIG.yaml [key.sub=value ...] [--variant small]
                   [--prior-scale S,S,...] [--members M,M,...] [--out DIR]

Overrides may come before or after the options. Configs: `paramlib.train.config`;
the calibration search: `paramlib.train.calibrate`.

The same command runs alone, under ``srun`` (one task per rank: SLURM_PROCID,
SLURM_STEP_NUM_TASKS, SLURM_LOCALID, SLURM_STEP_NODELIST) or under ``torchrun`` (RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT); see `paramlib.train.distributed`.

Run directory (``--out DIR``; default ``runs/<config name>[-<variant>]``)::

    DIR/config.yaml      the resolved config: variant and overrides applied, paths absolute
    DIR/checkpoint.pt    the latest checkpoint, replaced atomically (temporary file + rename)
                         every train.checkpoint_every steps, on SIGTERM/SIGUSR1 and at the
                         end; written by rank 0 and holding every member of an ensemble
    DIR/metrics.csv      one row per train.log_every steps (train loss, lr, validation loss
                         every train.val_every steps, seconds)
    DIR/tensorboard/     the same scalars, only when the tensorboard package is installed
    DIR/model.pt         the model file exported after the last step (ensembles: mean and
                         spread); ``paramlib export`` writes other output modes from
                         DIR/checkpoint.pt

Exit status of ``paramlib train``:

- 0   finished (DIR/model.pt written), or stopped at ``--max-steps`` (resumable);
- 99  `REQUEUE_EXIT`: SIGTERM or SIGUSR1 arrived; the current step finished, the checkpoint
      was written, and the same command with ``--resume`` continues the run (an sbatch script
      calls ``scontrol requeue`` on it);
- 2   invalid config, override, run directory or checkpoint (the message names the file and
      key), or the run directory is in use by another run (the message names its PID);
- 3   `NONFINITE_EXIT`: the loss became NaN or infinite; the message names the step and the
      batch's store samples (those with non-finite values when there are any); the run
      stopped before that step changed the weights, DIR/checkpoint.pt is kept as it was;
- 1   any other error.

One run at a time per DIR: the run holds an advisory lock on DIR/.paramlib.lock (rank 0,
released when the process ends, however it ends); a second ``paramlib train`` into DIR is
refused with exit 2. Torch threads per process: ``train.threads``, else OMP_NUM_THREADS
when set (the SLURM scripts set it to the CPUs per task), else what ``paramlib doctor``
reports (the physical cores not busy with other work); the count is printed at start.

``--resume`` continues from DIR/checkpoint.pt when there is one and starts afresh when there
is none, so a first submission and its requeued restarts run the same command; a finished
run exits 0 at once (writing DIR/model.pt if it is missing). Without ``--resume`` a DIR that
already holds a checkpoint is refused. An interrupted and resumed run equals an uninterrupted
one bit for bit on CPU (same seed and world size): the checkpoint holds model, optimizer,
LR schedule, the RNG states of every rank and the step, from which the data order follows
(with either loader, `paramlib.train.data`; the loader ``auto`` chose is kept in it too).
"""

REQUEUE_EXIT = 99
NONFINITE_EXIT = 3

__all__ = ["NONFINITE_EXIT", "REQUEUE_EXIT"]
