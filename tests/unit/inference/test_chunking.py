"""CPU chunk sizes from the size of a model's largest activation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from app.inference.catalog import load_catalog
from app.inference.chunking import cpu_chunk_rows
from app.inference.loading import LoadedModel, load_model
from tests.conftest import CATALOG
from tests.unit.inference.test_loading import SIZE, image_spec, save_torchscript, seeded, tiny_cnn

MIB = 1 << 20


@pytest.fixture(scope="module")
def demo() -> dict[str, LoadedModel]:
    return {spec.name: load_model(spec, torch.device("cpu")) for spec in load_catalog(CATALOG)
            if spec.name in ("shapes", "breast-cancer")}


def test_largest_activation_of_the_shapes_cnn(demo: dict[str, LoadedModel]) -> None:
    # ShapesCNN (models/zoo.py): the first conv block maps 3x128x128 to 16 channels at 64x64
    # (stride 2), larger than the input (3 x 128 x 128) and every later layer.
    model = demo["shapes"]
    assert model.facts.bytes_per_row == 16 * 64 * 64 * 4


def test_largest_activation_of_an_mlp(demo: dict[str, LoadedModel]) -> None:
    # breast-cancer: 30 features -> Linear 64 -> ReLU -> Linear 32 -> ... : the 64-wide layer
    model = demo["breast-cancer"]
    assert model.facts.bytes_per_row == 64 * 4


@pytest.mark.parametrize(("per_row", "limit", "max_rows", "expected"), [
    (3_211_264, 32 * MIB, 4096, 10),  # ResNet-50 at 224x224: conv1 is 64 x 112 x 112 floats
    (262_144, 32 * MIB, 4096, 127),  # strictly below the limit: 128 rows would reach it
    (262_144, 8 * MIB, 4096, 31),  # the shapes CNN at the default cap
    (262_144, 32 * MIB, 64, 64),  # never more than MAX_BATCH_ROWS
    (3_211_264, 8 * MIB, 4096, 8),  # ResNet-50 at the default cap: 2 rows by the cap, 8 by the floor
    (3_211_264, 8 * MIB, 4, 4),  # ... and never more than MAX_BATCH_ROWS
    (5 * MIB, 8 * MIB, 4096, 6),  # the floor within 4x the cap: 6 rows of 5 MiB, not 8
    (64 * MIB, 32 * MIB, 4096, 1),  # one row over the limit (and its 4x) still runs, alone
    (3_211_264, 0, 4096, 4096),  # no cap
])
def test_cpu_chunk_rows(per_row: int, limit: int, max_rows: int, expected: int) -> None:
    assert cpu_chunk_rows(per_row, limit, max_rows) == expected


def test_every_catalog_format_is_measured(tmp_path: Path) -> None:
    # TinyCNN on 16x16 inputs: the second conv's output, 8 x 16 x 16 floats, is the largest
    # (the input is 3 x 16 x 16)
    net = seeded(tiny_cnn)
    weights = tmp_path / "weights.safetensors"
    save_file(net.state_dict(), str(weights))
    eager = load_model(image_spec(weights, "state_dict"), torch.device("cpu"))
    assert eager.facts.bytes_per_row == 8 * SIZE * SIZE * 4

    exported = tmp_path / "cnn.pt2"
    program = torch.export.export(net, (torch.rand(2, 3, SIZE, SIZE),),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(exported))
    assert load_model(image_spec(exported, "export"), torch.device("cpu")).facts.bytes_per_row \
        == 8 * SIZE * SIZE * 4

    # TorchScript submodules refuse hooks: only the input (and the output) are seen
    scripted = tmp_path / "cnn.ts"
    save_torchscript(net, scripted, "script")
    script_model = load_model(image_spec(scripted, "torchscript"), torch.device("cpu"))
    assert script_model.facts.bytes_per_row == 3 * SIZE * SIZE * 4
