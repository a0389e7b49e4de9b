"""Server processes for the benchmark: start, wait until ready, sample their CPU, stop."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from bench import procstat
from bench.common import BENCH, ROOT

__all__ = ["Server", "child_env", "free_port", "server_env", "start_ours", "start_servers"]

THREAD_NAMES = BENCH / "threadnames"
"""Holds the sitecustomize that gives Python threads their names at the OS level (bench/procstat.py)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_env() -> dict[str, str]:
    """The environment of the servers and probes: the repository importable (builders such as
    `models.zoo:mlp` are found there, as the catalog is copied to a temporary folder)."""
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else "")}


def server_env() -> dict[str, str]:
    """`child_env()` with the thread-naming sitecustomize first on the path (its threads, and its
    child processes' threads, named at the OS level for the CPU breakdown)."""
    env = child_env()
    env["PYTHONPATH"] = str(THREAD_NAMES) + os.pathsep + env["PYTHONPATH"]
    return env


def _group_alive(pgid: int) -> bool:
    """Whether a process of process group `pgid` is still there (zombies awaiting their reaper aside)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


class Server:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], port: int, ready_path: str,
                 logdir: Path, cwd: Path = ROOT):
        self.name = name
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.ready_path = ready_path
        self.logfile = logdir / f"{name}.log"
        self._log = self.logfile.open("wb")
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if httpx.get(self.url + self.ready_path, timeout=2.0, trust_env=False).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s:\n{self.tail()}")

    def sample(self) -> procstat.TreeSample:
        """CPU so far of the server's threads and child processes."""
        return procstat.sample(self.proc.pid)

    def tail(self, lines: int = 40) -> str:
        if not self._log.closed:
            self._log.flush()
        text = self.logfile.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM to the server's process group (it started its own session: the server and its
        children), then SIGKILL to whatever of it is left after `timeout`."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        # Until the group's processes are gone, they still hold memory and CPU the next server needs.
        deadline = time.monotonic() + timeout
        while _group_alive(self.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        self._log.close()


def start_ours(device: str, catalog: Path, service_env: dict[str, str], logdir: Path, *, name: str = "ours",
               root: Path = ROOT) -> Server:
    """Our service (`python -m app`) on a free loopback port, not yet ready; from the source tree
    `root` (another commit's, bench/ab.py), which it runs in and imports from."""
    env = {**server_env(), "MODELS": str(catalog), "HOST": "127.0.0.1", "DEVICE": device, "LOG_LEVEL": "WARNING",
           **service_env}
    if root != ROOT:
        env["PYTHONPATH"] = os.pathsep.join((str(THREAD_NAMES), str(root)))
    env["PORT"] = str(free_port())
    return Server(name, [sys.executable, "-m", "app"], env, int(env["PORT"]), "/readyz", logdir, cwd=root)


def start_servers(device: str, catalog: Path, models: Sequence[str], service_env: dict[str, str],
                  naive_serial: bool, naive_png: str, logdir: Path,
                  naive_model: str = "tutorial") -> tuple[Server, Server]:
    """Our service and the naive server on free loopback ports, both ready."""
    ours = start_ours(device, catalog, service_env, logdir)
    naive_port = free_port()
    naive_argv = [sys.executable, "-m", "bench.naive_server", "--catalog", str(catalog),
                  "--port", str(naive_port), "--device", device, "--models", ",".join(models),
                  "--png", naive_png, "--model-as", naive_model]
    if naive_serial:
        naive_argv.append("--serial")
    naive = Server("naive", naive_argv, server_env(), naive_port, "/healthz", logdir)
    try:
        ours.wait_ready(300)
        naive.wait_ready(300)
    except BaseException:
        ours.stop()
        naive.stop()
        raise
    return ours, naive
