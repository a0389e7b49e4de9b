"""bench/procstat.py: CPU by thread group and child process, on a process whose threads and children
burn amounts of CPU the test chooses (each measured by the burner's own CPU clock, so the amounts
do not depend on the machine's speed or load)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from bench.procstat import GROUPS, group_of, sample, usage
from bench.servers import server_env

BURNER = r"""
import ctypes, subprocess, sys, threading, time

def burn(seconds):
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass

KID = ("import ctypes, sys, time\n"
       "ctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0)\n"
       "end = time.process_time() + float(sys.argv[2])\n"
       "while time.process_time() < end: pass\n"
       "print('burnt', flush=True)\n"
       "sys.stdin.read()\n")

print("ready", flush=True)
sys.stdin.readline()
hold, burnt = threading.Event(), []

def named(seconds):
    burn(seconds)
    burnt.append(1)
    hold.wait()

burn(0.3)  # the main thread
threads = [threading.Thread(target=named, args=(s,), name=n)
           for n, s in (("worker-m_0", 0.6), ("host_0", 0.2), ("AnyIO worker thread", 0.1))]
for t in threads:
    t.start()
short = threading.Thread(target=burn, args=(0.2,), name="short-lived")
short.start()
short.join()
subprocess.run([sys.executable, "-c", KID, "kid-gone", "0.3"], input=b"", stdout=subprocess.DEVNULL, check=True)
live = subprocess.Popen([sys.executable, "-c", KID, "kid-live", "0.2"], stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE)
assert live.stdout.readline().strip() == b"burnt"
while len(burnt) < len(threads):
    time.sleep(0.01)
print("burnt", flush=True)
sys.stdin.readline()
live.stdin.close()
live.wait()
hold.set()
"""


@pytest.fixture()
def burner() -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([sys.executable, "-c", BURNER], env=server_env(), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert proc.stdout.readline().strip() == "ready"
        yield proc
    finally:
        proc.kill()
        proc.wait()
        proc.stdin.close()
        proc.stdout.close()


def step(proc: subprocess.Popen[str], expect: str | None) -> None:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("\n")
    proc.stdin.flush()
    if expect is not None:
        assert proc.stdout.readline().strip() == expect


TICK = 0.05  # the kernel's per-thread accounting is in clock ticks (10 ms) and our reads are not atomic


def test_cpu_is_attributed_to_the_thread_groups_and_children(burner: subprocess.Popen[str]) -> None:
    before = sample(burner.pid)
    step(burner, "burnt")
    after = sample(burner.pid)
    step(burner, None)
    burner.wait(timeout=60)

    names = {name for name, _ in after.threads.values()}
    # The sitecustomize of bench/threadnames named the threads at the OS level (cut to 15 bytes).
    assert {"worker-m_0", "host_0", "AnyIO worker th"} <= names
    used = usage(before, after, burner.pid)
    groups = used["groups_s"]
    assert list(groups) == list(GROUPS)
    assert 0.6 - TICK <= groups["workers"] <= 0.6 + 0.1
    assert 0.2 - TICK <= groups["host work"] <= 0.2 + 0.1
    assert 0.1 - TICK <= groups["request threads"] <= 0.1 + 0.1
    # The main thread burnt 0.3 s and started the threads and the children.
    assert 0.3 - TICK <= groups["event loop"] <= 0.3 + 0.3
    # The thread that exited is found from the process's total.
    assert 0.2 - TICK <= groups["other"] <= 0.2 + 0.2
    # Children: 0.3 s in one already reaped, 0.2 s in one still alive (plus their start-up).
    children = used["children_s"]
    assert set(children) == {"kid-live", "(exited)"}
    assert 0.2 - TICK <= children["kid-live"] <= 0.2 + 0.5
    assert 0.3 - TICK <= children["(exited)"] <= 0.3 + 0.5
    assert groups["child processes"] == pytest.approx(sum(children.values()))
    assert used["total_s"] == pytest.approx(sum(groups.values()))
    assert used["wall_s"] > 0 and used["cores_busy"] == pytest.approx(used["total_s"] / used["wall_s"])
    ranked = sorted(("workers", "event loop", "host work", "request threads"), key=groups.__getitem__, reverse=True)
    assert ranked == ["workers", "event loop", "host work", "request threads"]


def test_a_process_that_is_gone_samples_as_not_alive() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    gone = sample(proc.pid)
    assert not gone.alive and gone.threads == {} and gone.children == {}


@pytest.mark.parametrize(("name", "main", "group"), [
    ("python", True, "event loop"),
    ("worker-resnet18", False, "workers"),
    ("host_3", False, "host work"),
    ("AnyIO worker th", False, "request threads"),
    ("python", False, "other"),
    ("asyncio_0", False, "other"),
    ("host_0", True, "event loop"),
])
def test_group_of(name: str, main: bool, group: str) -> None:
    assert group_of(name, main) == group
