"""Render the pictures the README and docs/gallery.md show, with the service itself.

    .venv/bin/python docs/make_gallery.py            # writes docs/img/*.png
    .venv/bin/python docs/make_gallery.py --out /tmp/gallery

The demo catalog is served in process on the CPU and every picture is an answer of the HTTP API
(the overlay, heatmap or chart data URI, decoded), so the pictures are what a client gets.
tests/e2e/test_gallery.py renders them again and compares them with the committed ones.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from app.config import Settings
from app.main import create_app

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "models" / "shapes" / "examples"


@dataclass(frozen=True)
class Picture:
    """One picture: `output` of `model`'s explanation of `source` (an image file, or a JSON row)."""

    name: str
    model: str
    source: str
    output: str
    method: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    render: dict[str, Any] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        if self.source.endswith(".json"):
            instance: Any = json.loads((ROOT / self.source).read_text())["instances"][0]
        else:
            instance = {"b64": base64.b64encode((ROOT / self.source).read_bytes()).decode()}
        body: dict[str, Any] = {"instances": [instance], "outputs": [self.output], "params": self.params,
                                "render": {"max_size": 256, **self.render}}
        if self.method is not None:
            body["method"] = self.method
        return body


PICTURES = [
    Picture("shapes-star-gradcam-overlay", "shapes", "models/shapes/examples/star.webp", "overlay", "gradcam"),
    Picture("shapes-star-gradcam-heatmap", "shapes", "models/shapes/examples/star.webp", "heatmap", "gradcam"),
    Picture("shapes-triangle-ig-overlay", "shapes", "models/shapes/examples/triangle.jpg", "overlay",
            "integrated_gradients", {"n_steps": 32}, {"sign": "all"}),
    Picture("shapes-circle-occlusion-overlay", "shapes", "models/shapes/examples/circle.png", "overlay",
            "occlusion", {"window": 16, "stride": 8}, {"colormap": "inferno"}),
    Picture("purchase-ig-chart", "purchase", "models/purchase/example.json", "chart", "integrated_gradients"),
]


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


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = parser.parse_args(argv)
    for path in render(args.out):
        print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


if __name__ == "__main__":
    main()
