"""What a benchmark machine still needs, read from pyproject.toml (used by bench/gpu.sh).

    python -m bench.deps            # prints the missing requirements, one per line
    python -m bench.deps --check    # exit 0 only if nothing is missing, the service and the
                                    # benchmark import, and torch sees a CUDA device
"""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
BENCH_EXTRAS = ("tomli-w",)
"""Development requirements the benchmark itself uses."""
NOT_BENCHED = ("scikit-learn",)
"""Service requirements no scenario uses (kernel_shap's surrogate fit): a lent GPU machine may have
no index to fetch them from."""


def requirements() -> list[str]:
    """The service's dependencies and the benchmark's few development ones, as pyproject pins them."""
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    service = [req for req in project["dependencies"] if _name(req) not in NOT_BENCHED]
    dev = [req for req in project["optional-dependencies"]["dev"] if _name(req) in BENCH_EXTRAS]
    return [*service, *dev]


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower()


def missing() -> list[str]:
    """Requirements whose distribution is not installed at all (any installed version counts: a
    machine's preinstalled CUDA torch is kept)."""
    absent = []
    for requirement in requirements():
        try:
            importlib.metadata.version(_name(requirement))
        except importlib.metadata.PackageNotFoundError:
            absent.append(requirement)
    return absent


def check() -> list[str]:
    """Problems that stop a GPU benchmark run, empty when there are none."""
    problems = [f"missing: {requirement}" for requirement in missing()]
    if problems:
        return problems
    try:
        import torch

        import app.main  # noqa: F401  (the service, with every module it imports)
        import bench.run  # noqa: F401
    except ImportError as exc:
        return [f"cannot import: {exc}"]
    if not torch.cuda.is_available():
        problems.append("no CUDA device visible to torch")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.deps", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    if args.check:
        problems = check()
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1 if problems else 0
    for requirement in missing():
        print(requirement)
    return 0


if __name__ == "__main__":
    sys.exit(main())
