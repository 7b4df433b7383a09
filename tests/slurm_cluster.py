"""A real single-node SLURM cluster on localhost, for tests that submit batch scripts.

`slurm_cluster` (a session fixture; import it into a test module) starts a private munged, then
slurmctld and slurmd from Debian's `slurmctld slurmd slurm-client munge` packages (`make setup`
installs them when root), all as the current user and with every file (munge key and socket,
slurm.conf, state, spool, logs) in one temp dir, so nothing system-wide is read or changed and
root is not needed: jobs run as the user who started the daemons. It waits until `sinfo` shows
the node idle; at teardown it cancels every job, then stops the daemons by their PIDs. Tests call
client commands through `cluster.run([...])` or with `cluster.env`, which set `SLURM_CONF`.

Where the packages are missing the fixture skips and says what to install (under CI, where
`make test` installs them first, it fails instead).
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PACKAGES = "slurmctld slurmd slurm-client munge"
COMMANDS = ("slurmctld", "slurmd", "sbatch", "sinfo", "scontrol", "scancel", "munged", "munge")
# The daemons live in sbin, which a normal user's PATH on Debian leaves out.
SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


class ClusterError(RuntimeError):
    """The cluster did not start; the message carries the daemons' logs."""


def find(command: str) -> str | None:
    search = os.pathsep.join([os.environ.get("PATH", os.defpath), *SBIN])
    return shutil.which(command, path=search)


def executable(command: str) -> str:
    found = find(command)
    if found is None:
        raise ClusterError(f"{command} not found (install {PACKAGES})")
    return found


def unavailable_reason() -> str | None:
    """Why a local cluster cannot be started here, or None when it can."""
    absent = [command for command in COMMANDS if find(command) is None]
    if absent:
        return (
            f"SLURM is not installed ({', '.join(absent)} not found): "
            f"`apt-get install {PACKAGES}` (or `make setup` as root)"
        )
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def slurm_conf(root: Path, host: str, user: str, cpus: int, ports: tuple[int, int]) -> str:
    """A one-node slurm.conf; every path lives under `root` so nothing system-wide is touched."""
    return f"""\
ClusterName=paramlibtest
# Addresses given: the host name need not resolve (containers often lack it in /etc/hosts).
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ports[0]}
SlurmdPort={ports[1]}
# The daemons run as this user and can start only this user's jobs: all a test needs.
SlurmUser={user}
SlurmdUser={user}
AuthType=auth/munge
AuthInfo=socket={root}/munge/munge.socket
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups in containers: track processes by parent PID, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# The node may claim more CPUs than the machine has (a 1-core runner still gets 2 ranks).
SlurmdParameters=config_overrides
ReturnToService=2
# `sbatch --wait` polls every min(MinJobAge/2, 32 s) at most: 4 s keeps it at every 2 s.
MinJobAge=4
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


@dataclass
class SlurmCluster:
    root: Path
    conf: Path
    host: str
    cpus: int
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        """The environment for client commands and for the jobs they submit."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(
        self,
        args: Sequence[str],
        *,
        timeout: float = 60.0,
        env: Mapping[str, str] | None = None,
        check: bool = False,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            list(args),
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=cwd,
        )
        if check and done.returncode != 0:
            raise ClusterError(
                f"{' '.join(args)} exited {done.returncode}\nstdout:\n{done.stdout}\n"
                f"stderr:\n{done.stderr}\n{self.logs()}"
            )
        return done

    def logs(self, tail: int = 40) -> str:
        """The end of each daemon's log (its stderr where the log file is empty: a daemon
        that fails on its config says why before it opens the log)."""
        parts = []
        for name in ("munged", "slurmctld", "slurmd"):
            for path in (self.root / f"{name}.log", self.root / f"{name}.out"):
                if path.is_file() and path.stat().st_size:
                    lines = path.read_text(errors="replace").splitlines()[-tail:]
                    parts.append(f"--- {path} (last {len(lines)} lines)\n" + "\n".join(lines))
                    break
        return "\n".join(parts) if parts else "(no daemon logs)"

    def node_state(self) -> str:
        done = self.run(["sinfo", "--noheader", "--Node", "--format=%T"], timeout=15)
        return done.stdout.strip() if done.returncode == 0 else f"sinfo failed: {done.stderr}"

    def wait_idle(self, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise ClusterError(
                        f"{name} exited with {process.returncode} during start-up\n{self.logs()}"
                    )
            state = self.node_state()
            if state == "idle":
                return
            time.sleep(0.5)
        raise ClusterError(
            f"node {self.host} not idle after {timeout:.0f} s (sinfo: {state!r})\n{self.logs()}"
        )

    def start_daemon(self, name: str, args: Sequence[str]) -> None:
        """Start a daemon in the foreground of a child process, so that its PID is known;
        stdout and stderr go to ROOT/NAME.out."""
        with open(self.root / f"{name}.out", "wb") as output:
            self.processes[name] = subprocess.Popen(
                list(args),
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in pytest does not reach the daemons first
            )

    def cancel_all(self) -> None:
        if "slurmctld" in self.processes and self.processes["slurmctld"].poll() is None:
            self.run(["scancel", "--partition=debug"], timeout=15)
            deadline = time.monotonic() + STOP_TIMEOUT_S
            while time.monotonic() < deadline:
                queue = self.run(["squeue", "--noheader", "--format=%i"], timeout=15)
                if queue.returncode != 0 or not queue.stdout.strip():
                    break
                time.sleep(0.5)

    def stop(self) -> None:
        """Cancel the jobs, then stop the daemons this cluster started, newest first."""
        self.cancel_all()
        for name in reversed(list(self.processes)):
            process = self.processes[name]
            if process.poll() is not None:
                continue
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT_S)


def paramlib_env() -> dict[str, str]:
    """`paramlib` on the PATH as from an activated venv, which is how users submit."""
    bin_dir = Path(sys.executable).parent
    if (bin_dir / "paramlib").is_file():
        return {"PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}
    return {"PARAMLIB": f"{sys.executable} -m paramlib"}


def munge_works(socket_path: Path) -> bool:
    """Whether the munged on `socket_path` encodes and decodes a credential."""
    try:
        token = subprocess.run(
            ["munge", "--socket", str(socket_path), "--no-input"],
            capture_output=True,
            timeout=10,
            check=False,
        )
        if token.returncode != 0:
            return False
        done = subprocess.run(
            ["unmunge", "--socket", str(socket_path)],
            input=token.stdout,
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def start_munge(cluster: SlurmCluster) -> None:
    """A munged of our own, with a fresh key. munged refuses a socket whose directory (and
    each one above it) is not executable by all, hence 0711 on the temp dirs."""
    directory = cluster.root / "munge"
    directory.mkdir(mode=0o711)
    directory.chmod(0o711)  # mkdir's mode is masked by the umask
    key = directory / "munge.key"
    key.write_bytes(os.urandom(128))
    key.chmod(0o600)
    socket_path = directory / "munge.socket"
    # --foreground: Popen's PID is munged's own, so teardown stops exactly it.
    cluster.start_daemon(
        "munged",
        [
            executable("munged"),
            "--foreground",
            f"--socket={socket_path}",
            f"--key-file={key}",
            f"--pid-file={directory / 'munged.pid'}",
            f"--log-file={cluster.root / 'munged.log'}",
            f"--seed-file={directory / 'munged.seed'}",
        ],
    )
    deadline = time.monotonic() + 15
    while not munge_works(socket_path):
        if time.monotonic() > deadline or cluster.processes["munged"].poll() is not None:
            raise ClusterError(f"munged did not start\n{cluster.logs()}")
        time.sleep(0.2)


def start_cluster(root: Path) -> SlurmCluster:
    """Start munged, slurmctld and slurmd with everything under `root`; wait for the node."""
    root.chmod(0o711)  # munged's rule for the directories above its socket
    host = socket.gethostname().split(".")[0]  # what slurmd takes as its NodeName
    cpus = max(2, os.cpu_count() or 1)
    for sub in ("state", "spool"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    conf = root / "slurm.conf"
    ports = (free_port(), free_port())
    conf.write_text(slurm_conf(root, host, getpass.getuser(), cpus, ports))
    cluster = SlurmCluster(root=root, conf=conf, host=host, cpus=cpus)
    try:
        start_munge(cluster)
        # -D: stay in the foreground (PID known); -i/-c: no state from an earlier cluster.
        slurmctld, slurmd = executable("slurmctld"), executable("slurmd")
        cluster.start_daemon("slurmctld", [slurmctld, "-D", "-c", "-i", "-f", str(conf)])
        cluster.start_daemon("slurmd", [slurmd, "-D", "-f", str(conf)])
        cluster.wait_idle()
    except BaseException:
        cluster.stop()
        raise
    return cluster


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    reason = unavailable_reason()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (`make test` installs SLURM as root before pytest)")
        pytest.skip(reason)
    # Short paths: slurmstepd puts unix sockets (108-byte limit) in the spool directory.
    root = Path(tempfile.mkdtemp(prefix="paramlib-slurm-"))
    try:
        cluster = start_cluster(root)
        try:
            yield cluster
        finally:
            cluster.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
