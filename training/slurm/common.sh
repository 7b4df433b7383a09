# shellcheck shell=bash
# Shared body of the paramlib sbatch scripts (sourced, not submitted). It runs
#   srun paramlib train CONFIG [key=value ...] --out RUNDIR --resume
# with one task per GPU (or CPU rank), and turns the trainer's REQUEUE_EXIT (99: "a
# SIGUSR1/SIGTERM arrived, the checkpoint is written, run me again with --resume") into
# `scontrol requeue`, so a job near its time limit comes back and continues where it stopped.
#
# Environment it reads (all optional):
#   PARAMLIB              the command to run (default `paramlib`, found on the PATH sbatch
#                         exported); may hold words, e.g. "python -m paramlib"
#   PARAMLIB_MAX_REQUEUES stop requeueing after this many restarts (default 50)
#   OMP_NUM_THREADS       default: the CPUs per task
#   MASTER_ADDR, MASTER_PORT  torch.distributed's rendezvous; unset, the trainer takes the
#                         first node of the step and 29500 + job id % 1000
#                         (paramlib/train/distributed.py)

readonly REQUEUE_EXIT=99  # paramlib.train.REQUEUE_EXIT

paramlib_usage() {
  echo "usage: sbatch [sbatch options] SCRIPT CONFIG.yaml RUNDIR [key=value ...]" \
    "[--variant NAME] [--max-steps N]" >&2
  exit 2
}

# Run the training step under srun and requeue the job when the trainer asks for it.
paramlib_train_main() {
  [[ $# -ge 2 ]] || paramlib_usage
  local config=$1 rundir=$2
  shift 2
  if [[ -z ${SLURM_JOB_ID:-} ]]; then
    echo "${0##*/}: not inside a SLURM job; submit it with sbatch" >&2
    exit 2
  fi
  local -a command
  read -r -a command <<<"${PARAMLIB:-paramlib}"
  mkdir -p "$rundir"

  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}

  echo "paramlib job $SLURM_JOB_ID (restart ${SLURM_RESTART_COUNT:-0}) on $SLURM_JOB_NODELIST:" \
    "${SLURM_NTASKS:-1} task(s), $(date -Is)"
  echo "  ${command[*]} train $config $* --out $rundir --resume"

  # Slurm's --signal (without B:) reaches every rank directly. The shell forwards a USR1 sent
  # to itself (--signal=B:USR1@..., scancel --batch) to srun, which passes it to the ranks.
  # SIGTERM means scancel, preemption or the time limit: the ranks get it from Slurm too and
  # checkpoint; the shell only notes it so that such a stop is never requeued from here
  # (a cancelled job must stay cancelled; PreemptMode=REQUEUE requeues by itself).
  local terminated=0 srun_pid rc
  trap 'echo "batch shell: SIGUSR1, forwarding to srun"; kill -USR1 "$srun_pid" 2>/dev/null' USR1
  trap 'echo "batch shell: SIGTERM"; terminated=1' TERM

  # Since Slurm 22.05 srun does not inherit sbatch's --cpus-per-task: pass it on, or every
  # rank would be bound to one CPU.
  local -a srun_options=(--export=ALL)
  [[ -n ${SLURM_CPUS_PER_TASK:-} ]] && srun_options+=("--cpus-per-task=$SLURM_CPUS_PER_TASK")
  srun "${srun_options[@]}" "${command[@]}" train "$config" "$@" --out "$rundir" --resume &
  srun_pid=$!
  # `wait` returns early when a trapped signal arrives; wait again until srun has exited.
  while :; do
    wait "$srun_pid"
    rc=$?
    kill -0 "$srun_pid" 2>/dev/null || break
  done
  trap - USR1 TERM
  echo "training exited with status $rc, $(date -Is)"

  if [[ $rc -eq $REQUEUE_EXIT && $terminated -eq 0 ]]; then
    local restarts=${SLURM_RESTART_COUNT:-0} max=${PARAMLIB_MAX_REQUEUES:-50}
    if ((restarts >= max)); then
      echo "not requeueing: $restarts restarts reached PARAMLIB_MAX_REQUEUES=$max;" \
        "resume with the same command" >&2
      exit "$rc"
    fi
    echo "checkpoint written; requeueing job $SLURM_JOB_ID"
    # On success Slurm ends this attempt (the shell may not get past this line) and runs the
    # script again later with the same arguments: --resume continues from the checkpoint.
    if scontrol requeue "$SLURM_JOB_ID"; then
      exit 0
    fi
    echo "scontrol requeue failed (JobRequeue=0 or --no-requeue?); resubmit the same" \
      "command to continue" >&2
  fi
  exit "$rc"
}
