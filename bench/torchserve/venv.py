"""The TorchServe comparison's own virtual environment, `bench/.torchserve-venv` (git-ignored).

TorchServe and its model archiver are installed there, pinned, apart from the service's `.venv`;
the venv reads the service venv's site-packages through a `.pth` file, so TorchServe's workers
run the very same torch, torchvision, captum and Pillow as our service (one copy on disk, no
second download of torch), while nothing of TorchServe's reaches the service's environment.

    python -m bench.torchserve.venv          # create or complete it (make install runs this)
"""

from __future__ import annotations

import os
import re
import shutil
import site
import subprocess
import sys
from pathlib import Path

from bench.common import BENCH, log

__all__ = ["REQUIREMENTS", "VENV", "ensure", "java_version", "python", "tool"]

VENV = BENCH / ".torchserve-venv"
REQUIREMENTS = ("torchserve==0.12.0", "torch-model-archiver==0.12.0")
PTH = "explainserve-venv.pth"
CHECK = ("import importlib.metadata as m, ts, torch, torchvision, captum, model_archiver; "
         "print(m.version('torchserve'), m.version('torch-model-archiver'), torch.__version__, captum.__version__)")


def python() -> Path:
    return VENV / "bin" / "python"


def tool(name: str) -> Path:
    """An executable of the venv (`torchserve`, `torch-model-archiver`)."""
    return VENV / "bin" / name


def _site_packages(interpreter: Path) -> Path:
    out = subprocess.run([str(interpreter), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def _installed() -> str | None:
    """The versions it reports when everything imports, else None."""
    if not python().is_file():
        return None
    probe = subprocess.run([str(python()), "-c", CHECK], capture_output=True, text=True)
    return probe.stdout.strip() if probe.returncode == 0 else None


def ensure() -> Path:
    """The venv's Python, after creating or completing the venv if needed."""
    import torch

    versions = _installed()
    wanted = [r.split("==")[1] for r in REQUIREMENTS] + [torch.__version__]
    if versions is not None and versions.split()[:3] == wanted:
        return python()
    log(f"setting up {VENV} ({', '.join(REQUIREMENTS)}, with the service's torch {torch.__version__})")
    if not python().is_file():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    ours = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (_site_packages(python()) / PTH).write_text("\n".join(ours) + "\n", encoding="utf-8")
    subprocess.run([str(python()), "-m", "pip", "install", "-q", "--disable-pip-version-check", *REQUIREMENTS],
                   check=True)
    versions = _installed()
    if versions is None or versions.split()[:3] != wanted:
        raise RuntimeError(f"{VENV}: expected torchserve, torch-model-archiver and torch {wanted}, got {versions}")
    return python()


def java_version() -> int:
    """The major version of `java` on PATH (TorchServe 0.12's frontend needs 11 or later)."""
    java = shutil.which("java", path=os.environ.get("PATH"))
    if java is None:
        raise RuntimeError("TorchServe needs Java 11 or later: apt-get install openjdk-17-jre-headless")
    out = subprocess.run([java, "-version"], capture_output=True, text=True)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if match is None:
        raise RuntimeError(f"cannot read the Java version from: {out.stderr.strip()}")
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


if __name__ == "__main__":
    print(ensure())
