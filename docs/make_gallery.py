"""Render the pictures the README and docs/gallery.md show, with the service itself.

    .venv/bin/python docs/make_gallery.py            # writes docs/img/*.png and docs/gallery.md
    .venv/bin/python docs/make_gallery.py --out /tmp/gallery

The demo catalog is served in process on the CPU and every picture is an answer of the HTTP API
(the overlay, heatmap or chart data URI, decoded), so the pictures are what a client gets.
tests/e2e/test_gallery.py renders them again and compares them with the committed ones.

The gallery (`GRID`) shows every image method, at its defaults, on the `shapes` model's three demo
images and on three photos that ship inside scikit-image (`skimage.data`: nothing is downloaded).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from app.config import Settings
from app.main import create_app

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "models" / "shapes" / "examples"
PHOTOS = ("coffee", "chelsea", "astronaut")
"""scikit-image's bundled photos (a cup of coffee, a cat, an astronaut)."""
IMAGE_METHODS = ("gradcam", "integrated_gradients", "saliency", "input_x_gradient", "smoothgrad", "gradient_shap",
                 "deeplift", "deeplift_shap", "occlusion", "lime")
GRID_SOURCES = ("models/shapes/examples/circle.png", "models/shapes/examples/triangle.jpg",
                "models/shapes/examples/star.webp", *(f"skimage:{name}" for name in PHOTOS))
GRID_SIZE = 160


def _source_bytes(source: str) -> bytes:
    """The file's bytes, or a scikit-image photo as PNG bytes."""
    if not source.startswith("skimage:"):
        return (ROOT / source).read_bytes()
    from skimage import data

    pixels = np.asarray(getattr(data, source.partition(":")[2])())
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _label(source: str) -> str:
    return source.partition(":")[2] if source.startswith("skimage:") else Path(source).stem


@dataclass(frozen=True)
class Picture:
    """One picture: `output` of `model`'s explanation of `source` (an image file, a scikit-image photo
    `skimage:<name>`, or a JSON row)."""

    name: str
    model: str
    source: str
    output: str
    method: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    render: dict[str, Any] = field(default_factory=dict)
    max_size: int = 256

    def body(self) -> dict[str, Any]:
        if self.source.endswith(".json"):
            instance: Any = json.loads((ROOT / self.source).read_text())["instances"][0]
        else:
            instance = {"b64": base64.b64encode(_source_bytes(self.source)).decode()}
        body: dict[str, Any] = {"instances": [instance], "outputs": [self.output], "params": self.params,
                                "render": {"max_size": self.max_size, **self.render}}
        if self.method is not None:
            body["method"] = self.method
        return body


FEATURED = [
    Picture("shapes-star-gradcam-overlay", "shapes", "models/shapes/examples/star.webp", "overlay", "gradcam"),
    Picture("shapes-star-gradcam-heatmap", "shapes", "models/shapes/examples/star.webp", "heatmap", "gradcam"),
    Picture("shapes-triangle-ig-overlay", "shapes", "models/shapes/examples/triangle.jpg", "overlay",
            "integrated_gradients", {"n_steps": 32}, {"sign": "all"}),
    Picture("shapes-circle-occlusion-overlay", "shapes", "models/shapes/examples/circle.png", "overlay",
            "occlusion", {"window": 16, "stride": 8}, {"colormap": "inferno"}),
    Picture("purchase-ig-chart", "purchase", "models/purchase/example.json", "chart", "integrated_gradients"),
]
"""The README's pictures."""
GRID = [Picture(f"gallery-{_label(source)}-{method}", "shapes", source, "overlay", method, max_size=GRID_SIZE)
        for source in GRID_SOURCES for method in IMAGE_METHODS]
"""Every image method at its defaults, on every gallery image: docs/gallery.md."""
PICTURES = FEATURED + GRID


def _png(data_uri: str) -> bytes:
    head, _, payload = data_uri.partition(",")
    if head != "data:image/png;base64":
        raise ValueError(f"not a PNG data URI: {head}")
    return base64.b64decode(payload)


async def _render(out: Path, pictures: Sequence[Picture]) -> list[Path]:
    settings = Settings(models=ROOT / "models" / "catalog.toml", device="cpu", log_level="WARNING")
    app = create_app(settings)
    written = []
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gallery", timeout=600) as client:
        for picture in pictures:
            answer = await client.post(f"/v1/models/{picture.model}/explain", json=picture.body())
            if answer.status_code != 200:
                raise RuntimeError(f"{picture.name}: {answer.status_code} {answer.text}")
            path = out / f"{picture.name}.png"
            path.write_bytes(_png(answer.json()["explanations"][0][picture.output]))
            written.append(path)
    return written


def render(out: Path, pictures: Sequence[Picture] = PICTURES) -> list[Path]:
    """Ask the service for each picture and write it to `out`/<name>.png."""
    out.mkdir(parents=True, exist_ok=True)
    return asyncio.run(_render(out, pictures))


GALLERY_HEAD = """# Gallery

<!-- written by docs/make_gallery.py: edit the script, not this file -->

Every image method of the service, at its default parameters and render options, on the `shapes`
demo model: its three demo images, then three photos that ship inside scikit-image. Each picture
is the `overlay` the HTTP API answers (`docs/make_gallery.py` asks the service for them;
`tests/e2e/test_gallery.py` checks that the committed pictures are still what it answers).

How to read them. The colours are the normalised map (docs/api.md, "How the maps are coloured"):
GradCAM from its floor to its peak; the pixel-level methods (integrated gradients, saliency,
input x gradient, SmoothGrad, gradient SHAP, DeepLift, DeepLift SHAP) blurred by 2.5% of the
model's input side first, so that evidence spread over single pixels along the shape's outline
shows; occlusion and LIME (SLIC superpixels) are regions already.

The photos are out of the `shapes` model's world: it has only seen one geometric shape on a
smooth background, and it calls a cat, a cup of coffee and an astronaut a star or a triangle.
The maps there show what a small shape detector reacts to in a photo (high-contrast corners and
rims, the cat's eyes), and how the overlays look on a full-size photo (drawn at the photo's aspect
ratio: the model saw it stretched to 128 x 128). They are not explanations of the photos, which
would need a model trained on photos; the service can serve one (the catalog's `torchvision`
format), but its weights would have to be downloaded, and nothing here is. A randomly initialised
network would not do either: its maps explain nothing (bench/results/fidelity.md, the
randomisation check).

"""


def gallery_markdown() -> str:
    """docs/gallery.md: one row per image, one column per method."""
    head = "| image | " + " | ".join(f"`{m}`" for m in IMAGE_METHODS) + " |"
    rule = "|---" * (len(IMAGE_METHODS) + 1) + "|"
    rows = []
    for source in GRID_SOURCES:
        label = _label(source)
        cells = [f"![{m} on {label}](img/gallery-{label}-{m}.png)" for m in IMAGE_METHODS]
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return GALLERY_HEAD + "\n".join([head, rule, *rows]) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = parser.parse_args(argv)
    for path in render(args.out):
        print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
    gallery = args.out.parent / "gallery.md"
    gallery.write_text(gallery_markdown(), encoding="utf-8")
    print(gallery.relative_to(ROOT) if gallery.is_relative_to(ROOT) else gallery)


if __name__ == "__main__":
    main()
