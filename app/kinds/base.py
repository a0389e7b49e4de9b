"""What an input kind is: the plug-in interface the catalog, the loader and the request flow use,
so that none of them branches on the kind (docs/architecture.md, "Add an input kind").

A kind owns what its instances mean: the catalog entries it accepts, the shape and normalisation
of what its model sees, how its instances are decoded and validated (and what that may cost),
which outputs it offers, and its part of an explanation's answer. No torch here: decoding and
rendering run wherever the host work runs (`HostWork`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np
from numpy.typing import NDArray

from app.errors import ErrorItem, InvalidInput

if TYPE_CHECKING:
    from app.inference.catalog import ModelSpec
    from app.inference.inputs import ModelArray
    from app.schemas import Prediction, RenderOptions

T = TypeVar("T")


class HostWork(Protocol):
    """Where per-request CPU work runs (decoding, rendering): off the event loop. `run` may send
    the job to another process (a module-level function, picklable arguments); `run_local` keeps
    it in this one, for jobs whose data costs more to send than the job itself."""

    def run(self, fn: Callable[..., T], *args: Any) -> Awaitable[T]: ...

    def run_local(self, fn: Callable[..., T], *args: Any) -> Awaitable[T]: ...


@dataclass(frozen=True)
class RequestLimits:
    """Per-request costs a kind checks before anything is queued (settings; 413 past them)."""

    max_instances: int
    max_image_pixels: int
    """One image, width x height, read from its header."""
    max_request_pixels: int
    """All of a request's images together, decoded."""
    max_output_pixels: int
    """All of a request's rendered overlays and heatmaps together."""


@dataclass(frozen=True)
class Decoded:
    """A request's instances as the model takes them, and what the kind needs to answer."""

    array: ModelArray
    """N x input_shape, what attribution is computed against (images: N x H x W x 3 RGB bytes,
    made floats on the model's worker)."""
    items: Sequence[Any]
    """Per instance, the kind's own record (the submitted image, the raw row)."""
    held_bytes: int = 0
    """Roughly what the decoded request holds in host memory (the submitted images)."""


@dataclass(frozen=True)
class ExplainOptions:
    outputs: frozenset[str]
    render: RenderOptions
    want_png: bool = False
    floor: bool = False
    """The method's maps are coloured from their floor to their peak (GradCAM)."""
    pixel_level: bool = False
    """The method's maps have per-pixel detail: blurred by default before colouring."""
    attributions_format: str = "list"


@dataclass(frozen=True)
class Rendered:
    """A kind's part of one explanation: its answer fields, and the overlay PNG bytes when the
    client asked for the image itself (`Accept: image/png`)."""

    fields: dict[str, Any]
    png: bytes | None = None


class InputKind(Protocol):
    name: str
    outputs: frozenset[str]
    """The `outputs` an explain request may ask for."""
    default_outputs: frozenset[str]
    method_kinds: frozenset[str]
    """The attribution methods that apply: those of these kinds (a new kind of feature vectors
    can take the methods of "tabular" without any method row changing)."""
    shape_key: str
    """The catalog key that decides what one instance is (named when a model does not fit it)."""
    example_suffixes: tuple[str, ...]
    """The files a model's demo `examples` may be (catalog key `examples`)."""
    attributions_formats: frozenset[str]
    """The `attributions_format`s its answers can be written in."""

    def check_spec(self, spec: ModelSpec) -> None:
        """Raise ValueError for a catalog entry this kind cannot serve."""

    def input_shape(self, spec: ModelSpec) -> tuple[int, ...]:
        """One instance as the model takes it (without the batch dimension)."""

    def normalisation(self, spec: ModelSpec) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """(mean, std) broadcastable to (1, *input_shape): applied inside the explained function."""

    def mean_input(self, spec: ModelSpec) -> NDArray[np.float32] | None:
        """The `mean` baseline, shaped like one instance; None where the catalog gives none."""

    def tensor_inputs(self, spec: ModelSpec) -> dict[str, tuple[str, list[int]]]:
        """Open Inference Protocol: the input tensors it takes, by name (datatype, shape; -1: any)."""

    def describe(self, spec: ModelSpec) -> dict[str, Any]:
        """ModelInfo's kind fields (`features`, `input`)."""

    async def decode(self, spec: ModelSpec, instances: Sequence[Any], files: Sequence[bytes],
                     limits: RequestLimits, host: HostWork, options: ExplainOptions | None,
                     pixels: Sequence[NDArray[np.uint8]] = ()) -> Decoded:
        """Validate and decode (4xx for bad input or a cost over `limits`); `options` is None for
        predict. `files` are uploaded file bytes, `pixels` H x W x 3 uint8 images (v2 protocol)."""

    async def answer(self, spec: ModelSpec, decoded: Decoded, attributions: NDArray[np.float32],
                     predictions: Sequence[Prediction], options: ExplainOptions,
                     host: HostWork) -> list[Rendered]:
        """Each instance's part of its explanation."""


def checked_format(kind: InputKind, asked: str) -> str:
    """The attributions format asked for; 422 for one the kind cannot write."""
    if asked not in kind.attributions_formats:
        raise InvalidInput(f"attributions_format '{asked}' is not available for {kind.name} models "
                           f"(choose from {sorted(kind.attributions_formats)})",
                           [ErrorItem(("attributions_format",), "not available")])
    return asked


def checked_outputs(kind: InputKind, asked: Sequence[str] | None) -> frozenset[str]:
    """The outputs asked for (or the kind's defaults); 422 for one the kind does not offer."""
    chosen = frozenset(asked) if asked is not None else kind.default_outputs
    wrong = chosen - kind.outputs
    if wrong:
        raise InvalidInput(f"outputs {sorted(wrong)} are not available for {kind.name} models "
                           f"(choose from {sorted(kind.outputs)})", [ErrorItem(("outputs",), "not available")])
    return chosen
