"""Running the measured tools: wall time, CPU time and peak RSS of exactly one process.

wall  perf_counter() around the complete process lifetime.
CPU   user + system time from os.wait4() on the measured process.
RSS   ru_maxrss (KiB on Linux) from the same wait4().  Linux folds the
      high-water mark of the address space a process had before exec() into
      its ru_maxrss, so a child spawned directly from this (much larger)
      Python process would report >= ~10 MiB even for /bin/true.  With
      --rss-method reaper (the default where it works) the harness therefore
      registers itself as child subreaper and starts the tool from a tiny
      `/bin/sh` that backgrounds it and exits; the orphaned tool is
      re-parented to the harness, which reaps it with wait4(pid).  The
      remaining floor (what /bin/true reports, typically < 1.5 MiB) is what
      launcher_floor() measures.  --rss-method direct uses plain Popen +
      wait4 instead.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import platform
import shlex
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from harness import PROJECT_ROOT, BenchError, log


class CommandFailed(BenchError):
    def __init__(self, cmd: list[str], rc: int, stderr: str):
        self.cmd, self.rc, self.stderr = cmd, rc, stderr
        super().__init__(f"command failed with exit status {rc}: {shell_join(cmd)}")


def shell_join(cmd: list[str]) -> str:
    return " ".join(shlex.quote(c) for c in cmd)


def check_output(cmd: list[str], cwd: Path | None = None) -> str:
    """Runs an untimed command (setup, seeding); its stdout, or CommandFailed."""
    p = subprocess.run(cmd, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if p.returncode != 0:
        raise CommandFailed(cmd, p.returncode, p.stderr)
    return p.stdout


def tool_version(cmd: list[str]) -> str | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None


def host_meta() -> dict[str, Any]:
    """What the JSON results record about the machine and the time of the run."""
    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": platform.node(),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }


def find_imgsync(path: str, build: bool = False, no_build: bool = False) -> Path:
    """The imgsync binary (relative paths from the project root), built with cargo when missing.

    build rebuilds even when the binary exists; no_build never builds.
    """
    imgsync = Path(path)
    if not imgsync.is_absolute():
        imgsync = PROJECT_ROOT / imgsync
    if build or (not imgsync.exists() and not no_build):
        log("building imgsync: cargo build --release")
        rc = subprocess.run(["cargo", "build", "--release"], cwd=PROJECT_ROOT, stdin=subprocess.DEVNULL).returncode
        if rc != 0:
            raise BenchError(f"cargo build --release failed with exit status {rc}")
    if not os.access(imgsync, os.X_OK):
        raise BenchError(f"imgsync binary not found or not executable: {imgsync}")
    return imgsync


@dataclasses.dataclass
class Sample:
    wall_s: float
    maxrss_kib: int
    user_s: float
    sys_s: float
    rc: int
    # Registry scenarios only: HTTP requests through the proxies, the proxy
    # counters in detail, and imgsync's own count from its --json summary.
    requests: int | None = None
    traffic: dict | None = None
    self_reported_requests: int | None = None


def set_child_subreaper() -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_CHILD_SUBREAPER = 36
        z = ctypes.c_ulong(0)
        return libc.prctl(ctypes.c_int(PR_SET_CHILD_SUBREAPER), ctypes.c_ulong(1), z, z, z) == 0
    except (OSError, AttributeError):
        return False


class Runner:
    """Runs one measured command at a time; stdout and stderr go to files in logdir."""

    # Backgrounds the command (stdin from /dev/null, stdout/stderr to files),
    # prints its pid and exits, so the command's parent is a tiny shell rather
    # than this interpreter.  The background subshell waits on a gate (the
    # launcher's stdin, as fd 3) before it execs the command; the harness
    # opens the gate (closes the pipe) only after the launcher has exited.
    # Without it a command that ends very quickly (/bin/true) can be reaped
    # by the launcher shell itself, and wait4() would find no such child.
    LAUNCH = 'o=$1; e=$2; shift 2; exec 3<&0; ( read _ <&3; exec 3<&- "$@" ) </dev/null >"$o" 2>"$e" & echo $!'

    def __init__(self, method: str, logdir: Path):
        self.logdir = logdir
        self.reaper = False
        if method in ("auto", "reaper"):
            self.reaper = set_child_subreaper()
            if not self.reaper and method == "reaper":
                raise BenchError("could not become child subreaper (prctl failed); use --rss-method direct")
        self.method = "reaper" if self.reaper else "direct"
        self.sh = "/bin/sh"
        self.current_pid: int | None = None

    @property
    def stdout_path(self) -> Path:
        """Where the last command's stdout is."""
        return self.logdir / "stdout.log"

    def run(self, cmd: list[str]) -> tuple[Sample, str]:
        """Runs cmd to its end; the sample and the command's stderr."""
        out_path, err_path = self.stdout_path, self.logdir / "stderr.log"
        if self.reaper:
            t0 = time.perf_counter()
            sh = subprocess.Popen(
                [self.sh, "-c", self.LAUNCH, "sh", str(out_path), str(err_path), *cmd],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            )
            pid_line = sh.stdout.read()
            sh.stdout.close()
            sh.wait()
            sh.stdin.close()  # opens the gate: the command starts now, as our orphan
            if sh.returncode != 0 or not pid_line.strip().isdigit():
                raise BenchError(f"launcher failed (status {sh.returncode}) for {shell_join(cmd)}")
            pid = int(pid_line)
        else:
            with open(out_path, "wb") as o, open(err_path, "wb") as e:
                t0 = time.perf_counter()
                p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=o, stderr=e)
            pid = p.pid
        self.current_pid = pid
        try:
            _, status, ru = os.wait4(pid, 0)
        except ChildProcessError:
            raise BenchError(f"lost track of process {pid}; try --rss-method direct") from None
        t1 = time.perf_counter()
        self.current_pid = None
        if not self.reaper:
            p.returncode = os.waitstatus_to_exitcode(status)
        rc = os.waitstatus_to_exitcode(status)
        stderr = err_path.read_text(errors="replace")
        return Sample(t1 - t0, ru.ru_maxrss, ru.ru_utime, ru.ru_stime, rc), stderr

    def kill_current(self) -> None:
        pid = self.current_pid
        if pid is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            for _ in range(50):
                try:
                    if os.waitpid(pid, os.WNOHANG)[0] == pid:
                        return
                except ChildProcessError:
                    return
                time.sleep(0.1)


def launcher_floor(runner: Runner) -> dict[str, Any]:
    """What /bin/true measures through the runner (best wall, largest RSS of 5): the floor of every number."""
    floor = [runner.run(["/bin/true"])[0] for _ in range(5)]
    return {
        "wall_s": min(s.wall_s for s in floor),
        "maxrss_kib": max(s.maxrss_kib for s in floor),
    }
