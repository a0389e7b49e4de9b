"""The method table: every attribution method the service offers, one row each
(`app.inference.methods.base.Method`), and how a request's method and parameters are resolved
for a model. Adding a method is its row (in a module of this package) and one line here."""

from __future__ import annotations

from typing import Any

from app.errors import ErrorItem, InvalidInput, quoted
from app.inference.catalog import ModelSpec
from app.inference.facts import ModelFacts
from app.inference.methods.base import Method
from app.inference.methods.deeplift import DEEPLIFT, DEEPLIFT_SHAP
from app.inference.methods.gradients import INPUT_X_GRADIENT, SALIENCY, SMOOTHGRAD
from app.inference.methods.integrated import GRADIENT_SHAP, INTEGRATED_GRADIENTS
from app.inference.methods.layers import GRADCAM
from app.inference.methods.lime import LIME
from app.inference.methods.perturbation import FEATURE_ABLATION, KERNEL_SHAP, OCCLUSION
from app.inference.params import MethodParams, resolve_params

METHODS: dict[str, Method] = {m.name: m for m in (
    INTEGRATED_GRADIENTS, GRADIENT_SHAP, SALIENCY, INPUT_X_GRADIENT, SMOOTHGRAD, GRADCAM, OCCLUSION,
    FEATURE_ABLATION, KERNEL_SHAP, LIME, DEEPLIFT, DEEPLIFT_SHAP,
)}


def offered_methods(spec: ModelSpec, facts: ModelFacts) -> list[str]:
    """What this model offers: its catalog list, or every method of its kind, that can run on it."""
    names = spec.methods or list(METHODS)
    kinds = spec.input_kind.method_kinds
    return [n for n in names if n in METHODS and METHODS[n].offered_for(kinds, facts)]


def model_defaults(spec: ModelSpec, facts: ModelFacts, name: str) -> dict[str, Any]:
    """The method's defaults for this model: its own per-model ones, then the catalog's."""
    return {**METHODS[name].defaults(facts), **spec.method_params.get(name, {})}


def resolve(spec: ModelSpec, facts: ModelFacts, offered: list[str], name: str,
            request: dict[str, Any]) -> tuple[Method, MethodParams]:
    """The method row and resolved parameters for a request: 422 for an unknown method, one the
    model does not offer, a bad parameter, or one that does not fit the model."""
    method = METHODS.get(name)
    if method is None:
        raise InvalidInput(f"unknown method {quoted(name)} (known: {', '.join(METHODS)})",
                           [ErrorItem(("method",), "unknown method")])
    if name not in offered:
        raise InvalidInput(f"method '{name}' is not offered for model '{spec.name}' (offered: {', '.join(offered)})",
                           [ErrorItem(("method",), "not offered")])
    params = resolve_params(method.params, model_defaults(spec, facts, name), request)
    method.check(facts, params)
    return method, params


__all__ = ["METHODS", "Method", "model_defaults", "offered_methods", "resolve"]
