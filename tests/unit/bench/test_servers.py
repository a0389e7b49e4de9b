"""bench/servers.py: server processes started, sampled and stopped; their environment."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.common import BENCH
from bench.servers import THREAD_NAMES, Server, child_env, free_port, server_env


def test_child_env_makes_the_repository_importable() -> None:
    env = child_env()
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(BENCH.parent)
    assert env["PYTHONUNBUFFERED"] == "1"


def test_server_env_names_python_threads_at_the_os_level() -> None:
    env = server_env()
    assert env["PYTHONPATH"].split(os.pathsep)[:2] == [str(THREAD_NAMES), str(BENCH.parent)]
    code = ("import os, threading\n"
            "def show():\n"
            "    print(open(f'/proc/self/task/{threading.get_native_id()}/comm').read().strip())\n"
            "t = threading.Thread(target=show, name='render_7'); t.start(); t.join()\n"
            "t = threading.Thread(target=show, name='a-name-longer-than-fifteen-bytes'); t.start(); t.join()\n")
    named = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert named.stdout.split() == ["render_7", "a-name-longer-t"]
    plain = subprocess.run([sys.executable, "-c", code], env=child_env(), capture_output=True, text=True,
                           check=True)
    assert "render_7" not in plain.stdout.split()


def test_server_waits_for_readiness_samples_cpu_and_stops(tmp_path: Path) -> None:
    port = free_port()
    server = Server("web", [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"], child_env(),
                    port, "/", tmp_path)
    try:
        server.wait_ready(60)
        running = server.sample()
        assert running.alive and server.proc.pid in running.threads
        assert running.process_s >= sum(cpu for _, cpu in running.threads.values()) - 0.05
        assert '"GET / HTTP/1.1" 200' in server.tail()
    finally:
        server.stop()
    assert server.proc.returncode is not None
    assert not server.sample().alive


def test_stop_ends_what_the_server_left_behind(tmp_path: Path) -> None:
    # A "server" that starts a child and ignores SIGTERM: stop() kills it and its process group.
    code = ("import signal, subprocess, sys, http.server\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
            "print('child', child.pid, flush=True)\n"
            "http.server.ThreadingHTTPServer(('127.0.0.1', {port}), http.server.SimpleHTTPRequestHandler)"
            ".serve_forever()\n")
    port = free_port()
    server = Server("stubborn", [sys.executable, "-c", code.replace("{port}", str(port))], child_env(), port, "/",
                    tmp_path)
    try:
        server.wait_ready(60)
        child = int(next(line for line in server.tail().splitlines() if line.startswith("child ")).split()[1])
        assert server.sample().children.keys() == {child}
    finally:
        server.stop(timeout=1.0)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{child}").exists()


def test_server_that_exits_at_start_is_reported(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import sys; print('cannot start: boom'); sys.exit(3)"]
    server = Server("broken", argv, child_env(), free_port(), "/", tmp_path)
    try:
        with pytest.raises(RuntimeError, match=r"(?s)broken exited with 3.*cannot start: boom"):
            server.wait_ready(60)
    finally:
        server.stop()
