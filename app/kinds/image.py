"""Images: PNG, JPEG or WebP in (base64 or file parts), resized to what the model sees; heat
colours blended over the submitted image out (overlay, RGBA heatmap), and the raw map on request."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pybase64
from numpy.typing import NDArray
from PIL import Image

from app.errors import PayloadTooLarge
from app.inference.inputs import image_bytes, image_size, model_pixels, open_image, pixels_image
from app.kinds.base import Decoded, ExplainOptions, HostWork, Rendered, RequestLimits
from app.render import Placement, RenderSpec, data_uri, encode_png, heatmap_rgba, output_size, overlay
from app.render.overlay import blend

if TYPE_CHECKING:
    from app.inference.catalog import ImageSpec, ModelSpec
    from app.schemas import Prediction

SMOOTH_SHARE = 0.025
"""Default blur of pixel-level maps: this share of the model input's longer side (3.2 px at 128, 5.6 at 224)."""
IMAGE_OUTPUTS = frozenset({"overlay", "heatmap"})
"""The outputs that are pictures at the submitted image's size (what MAX_OUTPUT_PIXELS counts)."""


LARGE_IMAGE_BYTES = 4 * 2**20
"""A decoded image larger than this is kept as its encoded bytes until it is drawn on: pickling a
30-megapixel image to or from a host work process takes the event loop 0.13-0.18 s each way, and
holding it for the whole computation holds 90 MB; its PNG or JPEG is a small fraction of that."""


@dataclass(frozen=True)
class Submitted:
    """A submitted image and the region of it the model saw: what its pictures are drawn on."""

    image: NDArray[np.uint8] | None
    """Its pixels, EXIF orientation applied: H x W x 4 (RGBA) where it has transparency, else H x W
    x 3 (RGB); None for a large image, held as `encoded` and decoded again where its pictures are
    drawn. An array, not a PIL image: it crosses to and from the host work processes as one copy
    (a PIL image is packed and unpacked on the event loop each way, 2x the time)."""
    crop_box: tuple[float, float, float, float]
    size: tuple[int, int]
    """(width, height), upright."""
    encoded: bytes | None = None
    max_pixels: int = 0

    def picture(self) -> Image.Image:
        if self.image is not None:
            return Image.fromarray(self.image)
        assert self.encoded is not None
        return open_image(self.encoded, self.max_pixels)


@dataclass(frozen=True)
class _Seen:
    """What a decoding job sends back: the image, and what the model sees of it as RGB bytes
    (None: the image itself, not sent twice). Bytes, not floats: a quarter of the data to send."""

    submitted: Submitted
    pixels: NDArray[np.uint8] | None

    def model_bytes(self) -> NDArray[np.uint8]:
        """H x W x 3: what the model sees, as bytes (the model's worker makes them floats)."""
        if self.pixels is not None:
            return self.pixels
        assert self.submitted.image is not None
        return self.submitted.image


def _seen(img: Image.Image, spec: ImageSpec, encoded: bytes | None = None, max_pixels: int = 0) -> _Seen:
    height, width = spec.size
    if img.mode == "RGB" and img.size == (width, height):  # what the model sees, as it is: made and sent once
        return _Seen(Submitted(np.asarray(img), (0.0, 0.0, float(width), float(height)), img.size), None)
    pixels, box = model_pixels(img, spec)
    if encoded is not None and img.width * img.height * len(img.getbands()) > LARGE_IMAGE_BYTES:
        return _Seen(Submitted(None, box, img.size, encoded, max_pixels), pixels)
    return _Seen(Submitted(np.asarray(img), box, img.size), pixels)


def _bytes_and_size(instance: Any, index: int, data: bytes | None, max_pixels: int) -> tuple[bytes, tuple[int, int]]:
    raw = data if data is not None else image_bytes(instance, index)
    return raw, image_size(raw, max_pixels, where=f"instance {index}")


def _decode_file(raw: bytes, index: int, spec: ImageSpec, max_pixels: int) -> _Seen:
    return _seen(open_image(raw, max_pixels, where=f"instance {index}"), spec, raw, max_pixels)


def _decode_array(pixels: NDArray[np.uint8], index: int, spec: ImageSpec, max_pixels: int) -> _Seen:
    return _seen(pixels_image(pixels, index, max_pixels), spec)


def _decode_one(instance: Any, data: bytes | None, spec: ImageSpec, limits: RequestLimits,
                options: ExplainOptions | None) -> _Seen:
    """A request of one image in one job: its bytes, its size from the header, the request's
    costs checked, then its pixels."""
    raw, size = _bytes_and_size(instance, 0, data, limits.max_image_pixels)
    ImageKind._check_costs([size], limits, options)
    return _decode_file(raw, 0, spec, limits.max_image_pixels)


def default_smoothing(image: ImageSpec, pixel_level: bool) -> float:
    """The blur a method's maps get unless the request says otherwise, in model-input pixels: a
    share of the input's longer side for pixel-level methods, none for the others."""
    return round(SMOOTH_SHARE * max(image.size), 2) if pixel_level else 0.0


def round_significant(values: NDArray[np.floating[Any]], digits: int = 6) -> NDArray[np.float64]:
    """Each value to `digits` significant digits (zeros stay zeros)."""
    values = np.asarray(values, dtype=np.float64)
    magnitude = np.floor(np.log10(np.abs(values), out=np.zeros_like(values), where=values != 0))
    scale = 10.0 ** (digits - 1 - magnitude)
    return np.round(values * scale) / scale


def attribution_values(attr: NDArray[np.float32], attributions_format: str = "list") -> Any:
    """An H x W map as the answer's `attributions`: nested lists of 6-significant-digit numbers, or
    (`float32`) its values as little-endian bytes in base64, with its shape (an EncodedArray)."""
    if attributions_format == "float32":
        data = np.ascontiguousarray(attr, dtype="<f4").tobytes()
        return {"dtype": "float32", "shape": list(attr.shape), "b64": pybase64.b64encode_as_string(data)}
    return round_significant(attr).tolist()


def _render(image: Submitted, attribution: NDArray[np.float32], render: dict[str, Any],
            outputs: frozenset[str], attributions_format: str = "list",
            want_png: bool = False) -> tuple[dict[str, Any], bytes | None]:
    """The image outputs asked for, and the overlay's PNG bytes where `want_png` (else None: the
    data URI already holds them, and the reply from a host work process is half the size)."""
    attr = attribution.sum(axis=0) if attribution.ndim == 3 else attribution
    spec = RenderSpec(**render)
    placement = Placement(image.size, image.crop_box)
    fields: dict[str, Any] = {}
    png = None
    if "heatmap" in outputs:
        heat = heatmap_rgba(attr, placement, spec)
        if "overlay" in outputs:
            png = encode_png(blend(image.picture(), heat, spec.alpha))
            fields["overlay"] = data_uri(png)
        fields["heatmap"] = data_uri(encode_png(heat))
    elif "overlay" in outputs:  # its opacity straight from the colour table: no heat alpha made
        png = encode_png(overlay(image.picture(), attr, placement, spec))
        fields["overlay"] = data_uri(png)
    if "attributions" in outputs:
        fields["attributions"] = attribution_values(attr, attributions_format)
    return fields, png if want_png else None


class ImageKind:
    name = "image"
    outputs: frozenset[str] = frozenset({"overlay", "heatmap", "attributions", "faithfulness"})
    example_suffixes: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp")
    """What a model's demo `examples` may be."""
    method_kinds: frozenset[str] = frozenset({"image"})
    """The methods for these kinds apply to it (a method row names the kinds it is for)."""
    attributions_formats: frozenset[str] = frozenset({"list", "float32"})
    shape_key = "image.size"
    """The catalog key that decides what one instance is."""
    default_outputs: frozenset[str] = frozenset({"overlay"})

    def check_spec(self, spec: ModelSpec) -> None:
        if spec.features:
            raise ValueError("image models take no 'features'")
        if spec.tabular is not None:
            raise ValueError("image models take no [models.tabular] table")

    def _image(self, spec: ModelSpec) -> ImageSpec:
        return spec.image_spec

    def input_shape(self, spec: ModelSpec) -> tuple[int, ...]:
        height, width = self._image(spec).size
        return (3, height, width)

    def normalisation(self, spec: ModelSpec) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        image = self._image(spec)
        return (np.asarray(image.mean, np.float32).reshape(1, 3, 1, 1),
                np.asarray(image.std, np.float32).reshape(1, 3, 1, 1))

    def mean_input(self, spec: ModelSpec) -> NDArray[np.float32] | None:
        """The normalisation's mean colour: the image that is zero after normalisation."""
        mean = np.asarray(self._image(spec).mean, np.float32).reshape(3, 1, 1)
        return np.ascontiguousarray(np.broadcast_to(mean, self.input_shape(spec)))

    def tensor_inputs(self, spec: ModelSpec) -> dict[str, tuple[str, list[int]]]:
        """Open Inference Protocol: encoded files (BYTES), or decoded RGB pixels (UINT8)."""
        return {"image": ("BYTES", [-1]), "pixels": ("UINT8", [-1, -1, -1, 3])}

    def describe(self, spec: ModelSpec) -> dict[str, Any]:
        height, width = self._image(spec).size
        return {"features": None, "input": {"height": height, "width": width, "channels": 3}}

    async def decode(self, spec: ModelSpec, instances: Sequence[Any], files: Sequence[bytes],
                     limits: RequestLimits, host: HostWork, options: ExplainOptions | None,
                     pixels: Sequence[NDArray[np.uint8]] = ()) -> Decoded:
        """Headers first (format, size), the request's pixel costs checked, then the pixels (one
        job for a request of one image)."""
        sources: list[tuple[Any, bytes | None]] = [(inst, None) for inst in instances] + [(None, f) for f in files]
        image = self._image(spec)
        if len(sources) == 1 and not len(pixels):
            seen = [await host.run(_decode_one, *sources[0], image, limits, options)]
        else:
            probed = await asyncio.gather(*(host.run(_bytes_and_size, inst, i, data, limits.max_image_pixels)
                                            for i, (inst, data) in enumerate(sources)))
            sizes = [size for _, size in probed] + [(array.shape[1], array.shape[0]) for array in pixels]
            self._check_costs(sizes, limits, options)
            seen = await asyncio.gather(
                *(host.run(_decode_file, raw, i, image, limits.max_image_pixels)
                  for i, (raw, _) in enumerate(probed)),
                *(host.run(_decode_array, array, i, image, limits.max_image_pixels)
                  for i, array in enumerate(pixels, start=len(probed))))
        inputs = [item.model_bytes() for item in seen]
        array = inputs[0][None] if len(inputs) == 1 else np.stack(inputs)
        held = 4 * sum(w * h for w, h in (item.submitted.size for item in seen))
        return Decoded(array, [item.submitted for item in seen], held_bytes=held)

    @staticmethod
    def _check_costs(sizes: Sequence[tuple[int, int]], limits: RequestLimits, options: ExplainOptions | None) -> None:
        decoded = sum(w * h for w, h in sizes)
        if decoded > limits.max_request_pixels:
            raise PayloadTooLarge(f"the request's images hold {decoded} pixels, over "
                                  f"MAX_REQUEST_PIXELS={limits.max_request_pixels}")
        if options is None:
            return
        pictures = len(options.outputs & IMAGE_OUTPUTS)
        rendered = pictures * sum(w * h for w, h in (output_size(s, options.render.max_size) for s in sizes))
        if rendered > limits.max_output_pixels:
            raise PayloadTooLarge(
                f"the answer would hold {rendered} rendered pixels ({pictures} picture(s) per image at "
                f"render.max_size={options.render.max_size}), over MAX_OUTPUT_PIXELS={limits.max_output_pixels}: "
                "ask for a smaller max_size or fewer images")

    def smoothing(self, spec: ModelSpec, options: ExplainOptions) -> float:
        """The blur before colouring, in model-input pixels: the request's, else a share of the input
        for pixel-level methods."""
        if options.render.smooth is not None:
            return options.render.smooth
        return default_smoothing(self._image(spec), options.pixel_level)

    async def answer(self, spec: ModelSpec, decoded: Decoded, attributions: NDArray[np.float32],
                     predictions: Sequence[Prediction], options: ExplainOptions,
                     host: HostWork) -> list[Rendered]:
        render = {**options.render.model_dump(), "smooth": self.smoothing(spec, options), "floor": options.floor}
        outputs = options.outputs | ({"overlay"} if options.want_png else set())
        # Pictures are worth sending to a host work process; the raw map alone is not.
        run = host.run if outputs & IMAGE_OUTPUTS else host.run_local
        maps = [attr.sum(axis=0) if attr.ndim == 3 and attr.shape[0] > 1 else attr for attr in attributions]
        done = await asyncio.gather(*(run(_render, image, attr, render, outputs, options.attributions_format,
                                          options.want_png)
                                      for image, attr in zip(decoded.items, maps, strict=True)))
        return [Rendered(fields, png) for fields, png in done]


IMAGE = ImageKind()
