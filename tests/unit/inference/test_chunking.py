"""CPU chunk sizes from the size of a model's largest activation."""

from __future__ import annotations

import pytest
import torch

from app.inference.catalog import load_catalog
from app.inference.chunking import activation_bytes_per_row, cpu_chunk_rows
from app.inference.loading import LoadedModel, load_model
from tests.conftest import CATALOG

MIB = 1 << 20


@pytest.fixture(scope="module")
def demo() -> dict[str, LoadedModel]:
    return {spec.name: load_model(spec, torch.device("cpu")) for spec in load_catalog(CATALOG)
            if spec.name in ("shapes", "breast-cancer")}


def test_largest_activation_of_the_shapes_cnn(demo: dict[str, LoadedModel]) -> None:
    # ShapesCNN (models/zoo.py): the first conv block maps 3x128x128 to 16 channels at 64x64
    # (stride 2), larger than the input (3 x 128 x 128) and every later layer.
    model = demo["shapes"]
    assert activation_bytes_per_row(model) == 16 * 64 * 64 * 4


def test_largest_activation_of_an_mlp(demo: dict[str, LoadedModel]) -> None:
    # breast-cancer: 30 features -> Linear 64 -> ReLU -> Linear 32 -> ... : the 64-wide layer
    model = demo["breast-cancer"]
    assert activation_bytes_per_row(model) == 64 * 4


@pytest.mark.parametrize(("per_row", "limit", "max_rows", "expected"), [
    (3_211_264, 32 * MIB, 4096, 10),  # ResNet-50 at 224x224: conv1 is 64 x 112 x 112 floats
    (262_144, 32 * MIB, 4096, 127),  # strictly below the limit: 128 rows would reach it
    (262_144, 32 * MIB, 64, 64),  # never more than MAX_BATCH_ROWS
    (64 * MIB, 32 * MIB, 4096, 1),  # one row over the limit still runs, alone
    (3_211_264, 0, 4096, 4096),  # no cap
])
def test_cpu_chunk_rows(per_row: int, limit: int, max_rows: int, expected: int) -> None:
    assert cpu_chunk_rows(per_row, limit, max_rows) == expected
