"""Train the demo models reproducibly and (re)write `models/catalog.toml`.

    python -m models.train                 # all four models, a couple of minutes on 2 CPU cores
    python -m models.train --only shapes   # one model; the catalog is still written in full

Needs the `train` extra (scikit-learn, for its bundled datasets and metrics; nothing is
downloaded). Every model is trained on CPU with 2 threads and fixed seeds. The saved nets
expect *prepared* input: tabular nets take standardised features ((x - mean) / std with the
catalog's `[models.tabular]` mean/std, in raw units), the image net takes pixels scaled to
[0, 1] then normalised with the catalog's `[models.image]` mean/std; the server does both.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import mean_absolute_error, r2_score, roc_auc_score
from sklearn.model_selection import train_test_split
from torch import nn

from models import shapes, zoo

ROOT = Path(__file__).resolve().parent
CATALOG = ROOT / "catalog.toml"
THREADS = 2

IMAGE_SIZE = 128
IMAGE_MEAN = [0.5, 0.5, 0.5]
IMAGE_STD = [0.25, 0.25, 0.25]

PURCHASE_FEATURES = [
    "age",
    "monthly_spend",
    "category_views",
    "cart_adds",
    "follows_brand",
    "return_rate",
]


@dataclass
class Entry:
    """One `[[models]]` catalog entry; `table` is its `[models.tabular]`/`[models.image]`."""

    fields: dict[str, Any]
    table_name: str
    table: dict[str, Any]
    comments: dict[str, str] = field(default_factory=dict)


@dataclass
class Demo:
    """A demo model: `prepare()` is cheap and deterministic, `train()` fits and saves it."""

    name: str
    directory: str
    prepare: Callable[[], Entry]
    train: Callable[[], dict[str, Any]]


# --------------------------------------------------------------------------- helpers


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _standardisation(x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Training-set mean and (population) std per column, in raw units."""
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    return mean, np.where(std > 1e-12, std, 1.0)


def _floats(values: Sequence[float] | np.ndarray) -> list[float]:
    return [float(v) for v in values]


def _fit(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    epochs: int,
    lr: float,
    weight_decay: float,
    batch_size: int,
    seed: int,
) -> None:
    """Minibatch AdamW with a cosine learning-rate schedule."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * math.ceil(len(x) / batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            loss = loss_fn(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    model.eval()


def _save(model: nn.Module, directory: str, metrics: dict[str, Any]) -> None:
    out = ROOT / directory
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(out / "weights.safetensors"))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")


def _write_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- breast-cancer

BC_HIDDEN = [64, 32]
BC_LABELS = ["malignant", "benign"]  # sklearn's target 0 / 1


def _smoothed_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(logits, target, label_smoothing=0.1)


def _bc_data() -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    data = load_breast_cancer()
    x_tr, x_te, y_tr, y_te = train_test_split(
        data.data, data.target, test_size=0.25, stratify=data.target, random_state=0
    )
    return [str(f) for f in data.feature_names], x_tr, x_te, y_tr, y_te


def _bc_prepare() -> Entry:
    features, x_tr, _, _, _ = _bc_data()
    mean, std = _standardisation(x_tr)
    return Entry(
        fields={
            "name": "breast-cancer",
            "kind": "tabular",
            "task": "classification",
            "format": "state_dict",
            "builder": "models.zoo:mlp",
            "builder_args": {"in_features": 30, "hidden": BC_HIDDEN, "out_features": 2},
            "weights": "breast_cancer/weights.safetensors",
            "labels": BC_LABELS,
            "features": features,
            "default_method": "integrated_gradients",
            "examples": ["breast_cancer/example.json"],
        },
        table_name="tabular",
        table={"mean": _floats(mean), "std": _floats(std)},
    )


def _bc_train() -> dict[str, Any]:
    # Hyperparameters (here and for diabetes) were picked by 5-fold cross-validation on the
    # training split only; the held-out rows are used for the reported metrics alone.
    features, x_tr, x_te, y_tr, y_te = _bc_data()
    mean, std = _standardisation(x_tr)
    _seed(0)
    model = zoo.mlp(30, BC_HIDDEN, 2)
    xt = torch.tensor((x_tr - mean) / std, dtype=torch.float32)
    _fit(
        model,
        xt,
        torch.tensor(y_tr),
        _smoothed_cross_entropy,
        epochs=60,
        lr=1e-3,
        weight_decay=1e-2,
        batch_size=32,
        seed=0,
    )
    with torch.no_grad():
        logits = model(torch.tensor((x_te - mean) / std, dtype=torch.float32))
    pred = logits.argmax(1).numpy()
    prob = torch.softmax(logits, 1)[:, 1].numpy()
    metrics = {
        "split": "stratified 25% held out (random_state=0)",
        "n_train": len(x_tr),
        "n_test": len(x_te),
        "accuracy": float((pred == y_te).mean()),
        "auc": float(roc_auc_score(y_te, prob)),
        "logistic_regression_accuracy": float(
            LogisticRegression(max_iter=5000)
            .fit((x_tr - mean) / std, y_tr)
            .score((x_te - mean) / std, y_te)
        ),
    }
    _save(model, "breast_cancer", metrics)
    rows = [int(np.flatnonzero(y_te == 0)[0]), int(np.flatnonzero(y_te == 1)[0])]
    instances = [{f: float(x_te[i, j]) for j, f in enumerate(features)} for i in rows]
    _write_json(ROOT / "breast_cancer" / "example.json", {"instances": instances})
    return metrics


# --------------------------------------------------------------------------- purchase

PURCHASE_HIDDEN = [32, 16]
PURCHASE_ROWS = 20_000


def purchase_logit(x: np.ndarray) -> np.ndarray:
    """The purchase-intent rule, in raw units; columns in `PURCHASE_FEATURES` order.

    Effect on the logit per standard deviation of the generated data: cart_adds +1.46,
    category_views +1.16, return_rate -0.55, monthly_spend +0.24, follows_brand +0.19,
    age -0.15. About 42% of rows are labelled `purchase`.
    """
    age, spend, views, cart, follows, returns = x.T
    return (
        -3.0
        + 0.42 * cart  # each item put in the cart
        + 0.13 * views  # each view of the category
        - 3.8 * returns  # share of past orders returned
        + 0.0008 * spend  # per currency unit spent per month
        + 0.40 * follows  # follows the brand
        - 0.008 * (age - 45.0)  # slightly lower for older customers
    )


def purchase_data(seed: int = 0, rows: int = PURCHASE_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic customers (raw units) and Bernoulli(sigmoid(purchase_logit)) labels."""
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 81, rows).astype(np.float64)
    spend = np.round(np.clip(rng.lognormal(np.log(250.0), 0.8, rows), 0.0, 2000.0), 2)
    views = np.clip(rng.negative_binomial(2, 2.0 / 14.0, rows), 0, 50).astype(np.float64)
    cart = np.clip(rng.negative_binomial(2, 1.0 / 3.0, rows), 0, 20).astype(np.float64)
    follows = rng.binomial(1, 0.35, rows).astype(np.float64)
    returns = np.round(rng.beta(2.0, 6.0, rows), 3)
    x = np.stack([age, spend, views, cart, follows, returns], axis=1)
    p = 1.0 / (1.0 + np.exp(-purchase_logit(x)))
    y = (rng.random(rows) < p).astype(np.int64)
    return x, y


def _purchase_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x, y = purchase_data()
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, stratify=y, random_state=0)
    return x_tr, x_te, y_tr, y_te


def _purchase_prepare() -> Entry:
    x_tr, _, _, _ = _purchase_split()
    mean, std = _standardisation(x_tr)
    return Entry(
        fields={
            "name": "purchase",
            "kind": "tabular",
            "task": "classification",
            "format": "state_dict",
            "builder": "models.zoo:mlp",
            "builder_args": {
                "in_features": 6,
                "hidden": PURCHASE_HIDDEN,
                "out_features": 1,
                "final": "sigmoid",
            },
            "weights": "purchase/weights.safetensors",
            "output": "probabilities",
            "labels": ["no_purchase", "purchase"],
            "features": PURCHASE_FEATURES,
            "default_method": "integrated_gradients",
            "examples": ["purchase/example.json"],
        },
        table_name="tabular",
        table={"mean": _floats(mean), "std": _floats(std)},
        comments={
            "output": "the module already ends in a sigmoid: the server must not apply another"
        },
    )


def _purchase_train() -> dict[str, Any]:
    x_tr, x_te, y_tr, y_te = _purchase_split()
    mean, std = _standardisation(x_tr)
    _seed(1)
    model = zoo.mlp(6, PURCHASE_HIDDEN, 1, final="sigmoid")
    xt = torch.tensor((x_tr - mean) / std, dtype=torch.float32)
    yt = torch.tensor(y_tr, dtype=torch.float32)[:, None]
    _fit(
        model,
        xt,
        yt,
        nn.functional.binary_cross_entropy,
        epochs=12,
        lr=3e-3,
        weight_decay=1e-3,
        batch_size=128,
        seed=1,
    )
    with torch.no_grad():
        prob = model(torch.tensor((x_te - mean) / std, dtype=torch.float32))[:, 0].numpy()
    true_prob = 1.0 / (1.0 + np.exp(-purchase_logit(x_te)))
    metrics = {
        "split": "stratified 25% held out (random_state=0) of 20000 synthetic rows (seed 0)",
        "n_train": len(x_tr),
        "n_test": len(x_te),
        "positive_rate": float(y_te.mean()),
        "accuracy": float(((prob >= 0.5) == y_te).mean()),
        "auc": float(roc_auc_score(y_te, prob)),
        "rule_accuracy": float(((true_prob >= 0.5) == y_te).mean()),
        "rule_auc": float(roc_auc_score(y_te, true_prob)),
        "mean_abs_prob_error_vs_rule": float(np.abs(prob - true_prob).mean()),
    }
    _save(model, "purchase", metrics)
    instances = [
        {
            f: (float(v) if f in ("monthly_spend", "return_rate") else int(v))
            for f, v in zip(PURCHASE_FEATURES, x_te[i], strict=True)
        }
        for i in (0, 1)
    ]
    _write_json(ROOT / "purchase" / "example.json", {"instances": instances})
    return metrics


# --------------------------------------------------------------------------- diabetes

DIABETES_HIDDEN = [32, 16]


def _diabetes_data() -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    data = load_diabetes(scaled=False)
    x_tr, x_te, y_tr, y_te = train_test_split(
        data.data, data.target, test_size=0.25, random_state=0
    )
    return [str(f) for f in data.feature_names], x_tr, x_te, y_tr, y_te


def _diabetes_prepare() -> Entry:
    features, x_tr, _, _, _ = _diabetes_data()
    mean, std = _standardisation(x_tr)
    return Entry(
        fields={
            "name": "diabetes",
            "kind": "tabular",
            "task": "regression",
            "format": "state_dict",
            "builder": "models.zoo:mlp",
            "builder_args": {"in_features": 10, "hidden": DIABETES_HIDDEN, "out_features": 1},
            "weights": "diabetes/weights.safetensors",
            "features": features,
            "default_method": "integrated_gradients",
            "examples": ["diabetes/example.json"],
        },
        table_name="tabular",
        table={"mean": _floats(mean), "std": _floats(std)},
    )


def _diabetes_train() -> dict[str, Any]:
    _, x_tr, x_te, y_tr, y_te = _diabetes_data()
    mean, std = _standardisation(x_tr)
    y_mean, y_std = float(y_tr.mean()), float(y_tr.std())
    _seed(2)
    model = zoo.mlp(10, DIABETES_HIDDEN, 1)
    xt = torch.tensor((x_tr - mean) / std, dtype=torch.float32)
    yt = torch.tensor((y_tr - y_mean) / y_std, dtype=torch.float32)[:, None]
    _fit(
        model,
        xt,
        yt,
        nn.functional.mse_loss,
        epochs=80,
        lr=1e-3,
        weight_decay=1e-1,
        batch_size=32,
        seed=2,
    )
    last = model[-1]
    assert isinstance(last, nn.Linear)
    with torch.no_grad():  # fold the target de-standardisation into the last layer
        last.weight.mul_(y_std)
        last.bias.mul_(y_std).add_(y_mean)
        pred = model(torch.tensor((x_te - mean) / std, dtype=torch.float32))[:, 0].numpy()
    metrics = {
        "split": "25% held out (random_state=0)",
        "n_train": len(x_tr),
        "n_test": len(x_te),
        "r2": float(r2_score(y_te, pred)),
        "mae": float(mean_absolute_error(y_te, pred)),
        "target_mean_baseline_mae": float(np.abs(y_te - y_mean).mean()),
        "linear_regression_r2": float(
            r2_score(y_te, LinearRegression().fit(x_tr, y_tr).predict(x_te))
        ),
    }
    _save(model, "diabetes", metrics)
    write_diabetes_example()
    return metrics


def write_diabetes_example() -> None:
    """The first two held-out rows, in the data's own units (the page and the README use them)."""
    features, _, x_te, _, _ = _diabetes_data()
    instances = [{f: float(v) for f, v in zip(features, x_te[i], strict=True)} for i in (0, 1)]
    _write_json(ROOT / "diabetes" / "example.json", {"instances": instances})


# --------------------------------------------------------------------------- shapes

SHAPES_EPOCHS = 4
SHAPES_PER_EPOCH = 2500
SHAPES_BATCH = 32
SHAPES_LR = 3e-3
SHAPES_TEST = 1000
SHAPES_TEST_SEED = 999
POINTING_SEED = 4242
OUTSIDE_PENALTY = 3.0
POINTING_WEIGHT = 0.5  # reached after half of the steps (linear ramp from 0)
POINTING_MARGIN = 0.2
EXAMPLES = [  # file name, label, width, height, seed
    ("circle.png", 0, 128, 128, 11),
    ("triangle.jpg", 2, 160, 120, 12),
    ("star.webp", 3, 128, 128, 13),
]


def image_tensor(images: Sequence[Any]) -> torch.Tensor:
    """PIL images (already IMAGE_SIZE square) -> normalised float tensor (N, 3, H, W)."""
    arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.uint8) for im in images])
    x = torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def _shapes_prepare() -> Entry:
    return Entry(
        fields={
            "name": "shapes",
            "kind": "image",
            "task": "classification",
            "format": "state_dict",
            "builder": "models.zoo:shapes_cnn",
            "builder_args": {"num_classes": len(shapes.LABELS)},
            "weights": "shapes/weights.safetensors",
            "labels_file": "shapes/labels.txt",
            "default_method": "gradcam",
            "examples": [f"shapes/examples/{name}" for name, *_ in EXAMPLES],
        },
        table_name="image",
        table={
            "size": [IMAGE_SIZE, IMAGE_SIZE],
            "resize": "stretch",
            "mean": IMAGE_MEAN,
            "std": IMAGE_STD,
        },
    )


def _evaluate_shapes(model: nn.Module, samples: Sequence[shapes.ShapeSample]) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(samples), 200):
            chunk = samples[start : start + 200]
            pred = model(image_tensor([s.image for s in chunk])).argmax(1)
            correct += int((pred == torch.tensor([s.label for s in chunk])).sum())
    return correct / len(samples)


def _pointing_game(model: zoo.ShapesCNN, samples: Sequence[shapes.ShapeSample]) -> dict[str, Any]:
    """Share of images whose attribution peak falls inside the shape's box (predicted class).

    GradCAM on the last conv, upsampled bilinearly; Integrated Gradients (32 steps, baseline
    0 in normalised units, i.e. mid-grey) summed |.| over channels.
    """
    from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam

    x = image_tensor([s.image for s in samples])
    with torch.no_grad():
        target = model(x).argmax(1)
    cam = LayerGradCam(model, model.features[len(model.features) - 2]).attribute(
        x, target=target, relu_attributions=True
    )
    cam = LayerAttribution.interpolate(cam, (IMAGE_SIZE, IMAGE_SIZE), "bilinear")[:, 0]
    ig = IntegratedGradients(model)
    att = (
        torch.cat(
            [
                ig.attribute(x[i : i + 10], baselines=0.0, target=target[i : i + 10], n_steps=32)
                for i in range(0, len(x), 10)
            ]
        )
        .abs()
        .sum(1)
    )

    def hits(maps: torch.Tensor) -> float:
        inside = 0
        for m, s in zip(maps, samples, strict=True):
            row, col = divmod(int(m.argmax()), m.shape[-1])
            x0, y0, x1, y1 = s.box
            inside += int(x0 <= col < x1 and y0 <= row < y1)
        return inside / len(samples)

    return {
        "pointing_game_images": f"{len(samples)} generated images (seed {POINTING_SEED})",
        "pointing_game_gradcam": hits(cam),
        "pointing_game_integrated_gradients": hits(att),
    }


def _inside_cells(boxes: torch.Tensor, cells: int) -> torch.Tensor:
    """(N, cells, cells) mask of the map cells lying entirely inside each (x0, y0, x1, y1) box."""
    cell = IMAGE_SIZE // cells  # 8 pixels: the last conv's map is 16x16 for 128x128 input
    lo = (torch.arange(cells) * cell)[None]
    hi = lo + cell
    x0, y0, x1, y1 = (boxes[:, i, None] for i in range(4))
    in_x = (lo >= x0) & (hi <= x1)
    in_y = (lo >= y0) & (hi <= y1)
    return (in_y[:, :, None] & in_x[:, None, :]).float()


def _gradcam_hinge(
    model: zoo.ShapesCNN,
    conv: torch.Tensor,
    pooled: torch.Tensor,
    y: torch.Tensor,
    inside: torch.Tensor,
) -> torch.Tensor:
    """Hinge pushing the class map's peak inside the box, above every cell outside it.

    The map is GradCAM's for the true class: with a global max-pool, GradCAM's weight of
    channel k is the class's classifier weight where channel k fires at all, else 0.
    Scale-free: relative to the peak inside the box.
    """
    weights = model.classifier.weight[y] * (pooled > 0).float().detach()  # (N, K)
    cam = torch.einsum("nk,nkhw->nhw", weights, conv)
    big = 1e4
    peak_in = (cam - big * (1.0 - inside)).flatten(1).amax(1)
    peak_out = (cam - big * inside).flatten(1).amax(1)
    scale = peak_in.detach().abs() + 1e-3
    return (torch.relu(peak_out - peak_in + POINTING_MARGIN * scale) / scale).mean()


def _shapes_train() -> dict[str, Any]:
    """Fit the CNN on freshly generated images, with aids to faithful attributions.

    The box of every training image is known, and the loss uses it beside cross-entropy:

    * OUTSIDE_PENALTY x the mean |output| of the last conv (GradCAM's layer) over the map
      cells that do not lie entirely inside the shape's box: evidence must come from the shape;
    * POINTING_WEIGHT x a hinge asking the true class's GradCAM map to peak inside the box
      (`_gradcam_hinge`), ramped in over the first half of training.

    The classifier's weights are kept >= 0 (clamped after every step): each class is scored by
    how strongly its own detectors fire, never by the absence of another's, so GradCAM's
    channel weights are >= 0 and its map peaks where the evidence is.
    """
    _seed(3)
    model = zoo.ShapesCNN(num_classes=len(shapes.LABELS))
    with torch.no_grad():
        model.classifier.weight.abs_()
    steps_per_epoch = SHAPES_PER_EPOCH // SHAPES_BATCH
    total_steps = SHAPES_EPOCHS * steps_per_epoch
    opt = torch.optim.AdamW(model.parameters(), lr=SHAPES_LR, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=SHAPES_LR, total_steps=total_steps, pct_start=0.15
    )
    last_conv = len(model.features) - 2  # features[last_conv] is the last Conv2d
    done = 0
    for epoch in range(SHAPES_EPOCHS):
        model.train()
        # A fresh, balanced set of images every epoch (seeded): no image is seen twice.
        samples = shapes.generate(SHAPES_PER_EPOCH, seed=100 + epoch)
        total, correct, loss_sum = 0, 0, 0.0
        for step in range(steps_per_epoch):
            batch = samples[step * SHAPES_BATCH : (step + 1) * SHAPES_BATCH]
            x = image_tensor([s.image for s in batch])
            y = torch.tensor([s.label for s in batch])
            conv = model.features[: last_conv + 1](x)
            pooled = torch.flatten(model.pool(model.features[last_conv + 1 :](conv)), 1)
            logits = model.classifier(pooled)
            inside = _inside_cells(torch.tensor([s.box for s in batch]), conv.shape[-1])
            outside = 1.0 - inside
            penalty = (conv.abs().mean(1) * outside).sum() / outside.sum().clamp(min=1.0)
            ramp = min(1.0, done / (0.5 * total_steps))
            loss = (
                nn.functional.cross_entropy(logits, y)
                + OUTSIDE_PENALTY * penalty
                + POINTING_WEIGHT * ramp * _gradcam_hinge(model, conv, pooled, y, inside)
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            done += 1
            with torch.no_grad():
                model.classifier.weight.clamp_(min=0.0)
            total += len(batch)
            correct += int((logits.argmax(1) == y).sum())
            loss_sum += loss.item() * len(batch)
        print(
            f"  shapes epoch {epoch + 1}/{SHAPES_EPOCHS}: "
            f"loss {loss_sum / total:.4f}, train accuracy {correct / total:.4f}",
            flush=True,
        )
    model.eval()
    test = shapes.generate(SHAPES_TEST, seed=SHAPES_TEST_SEED)
    metrics = {
        "split": f"{SHAPES_TEST} freshly generated images (seed {SHAPES_TEST_SEED})",
        "n_train": SHAPES_EPOCHS * SHAPES_PER_EPOCH,
        "n_test": SHAPES_TEST,
        "accuracy": _evaluate_shapes(model, test),
        **_pointing_game(model, shapes.generate(200, seed=POINTING_SEED)),
    }
    out = ROOT / "shapes"
    (out / "labels.txt").write_text("\n".join(shapes.LABELS) + "\n", encoding="utf-8")
    metrics["examples"] = _write_examples(model, out / "examples")
    _save(model, "shapes", metrics)
    return metrics


EXAMPLE_MIN_SCORE = 0.9
"""Examples show the model at its best: the first seed (from the listed one) drawing an image that
the model, seeing it as the server does, gives its label at least this probability."""


def _write_examples(model: nn.Module, folder: Path) -> dict[str, dict[str, Any]]:
    """Save the README's example images; return each one's label, score and seed.

    The prediction is made as the server would: the saved file decoded, stretched to
    IMAGE_SIZE x IMAGE_SIZE, normalised.
    """
    folder.mkdir(parents=True, exist_ok=True)
    chosen: dict[str, dict[str, Any]] = {}
    for filename, label, width, height, first_seed in EXAMPLES:
        for seed in range(first_seed, first_seed + 100_000, 100):
            sample = shapes.draw_sample(np.random.default_rng(seed), width, height, label)
            path = folder / filename
            if path.suffix == ".jpg":
                sample.image.save(path, quality=90)
            elif path.suffix == ".webp":
                sample.image.save(path, quality=90, method=6)
            else:
                sample.image.save(path, optimize=True)
            with Image.open(path) as saved:
                image = saved.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
            with torch.no_grad():
                probs = torch.softmax(model(image_tensor([image])), dim=1)[0]
            score = float(probs[label])
            if int(probs.argmax()) == label and score >= EXAMPLE_MIN_SCORE:
                chosen[filename] = {"label": shapes.LABELS[label], "score": round(score, 4), "seed": seed}
                break
        else:
            raise RuntimeError(f"no seed drew a {shapes.LABELS[label]} the model scores >= {EXAMPLE_MIN_SCORE}")
    return chosen


# --------------------------------------------------------------------------- catalog


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"non-finite number {value!r}")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def render_catalog(entries: Sequence[Entry]) -> str:
    """The catalog text; paths in it are relative to the catalog file."""
    lines = [
        "# Demo models, written by `python -m models.train` (do not edit by hand).",
        "# Relative paths are relative to this file.",
    ]
    for entry in entries:
        lines += ["", "[[models]]"]
        for key, value in entry.fields.items():
            line = f"{key} = {_toml(value)}"
            if key in entry.comments:
                line += f"     # {entry.comments[key]}"
            lines.append(line)
        lines.append(f"[models.{entry.table_name}]")
        lines += [f"{key} = {_toml(value)}" for key, value in entry.table.items()]
    return "\n".join(lines) + "\n"


DEMOS = [
    Demo("breast-cancer", "breast_cancer", _bc_prepare, _bc_train),
    Demo("purchase", "purchase", _purchase_prepare, _purchase_train),
    Demo("diabetes", "diabetes", _diabetes_prepare, _diabetes_train),
    Demo("shapes", "shapes", _shapes_prepare, _shapes_train),
]


def main(argv: Sequence[str] | None = None) -> None:
    """Train the selected demo models, save their weights and metrics, write the catalog."""
    parser = argparse.ArgumentParser(
        prog="python -m models.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--only",
        choices=[d.name for d in DEMOS],
        help="train just this model (the catalog is rewritten in full)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(THREADS)
    started = time.perf_counter()
    for demo in DEMOS:
        if args.only and demo.name != args.only:
            continue
        print(f"[{demo.name}] training ...", flush=True)
        t0 = time.perf_counter()
        metrics = demo.train()
        shown = ", ".join(
            f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
            for k, v in metrics.items()
            if k != "split"
        )
        print(f"[{demo.name}] held out: {shown} ({time.perf_counter() - t0:.1f} s)", flush=True)
    CATALOG.write_text(render_catalog([d.prepare() for d in DEMOS]), encoding="utf-8")
    print(
        f"wrote {CATALOG.relative_to(ROOT.parent)}; total {time.perf_counter() - started:.1f} s",
        flush=True,
    )


if __name__ == "__main__":
    main()
