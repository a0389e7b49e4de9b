"""Run in bench/.torchserve-venv by tests/unit/bench/test_torchserve.py: TorchServe's Python backend
path for a model folder, without the Java frontend. The model is loaded by TorchServe's own loader
(`ts.model_loader`, as its worker does: handler file, Context, metrics cache), and each image goes
through `Service.retrieve_data_for_inference` and the handler's entry point, as a request, then as
an explanation request (header `explain: True`, as the frontend sets for /explanations).

    python torchserve_probe.py MODEL_DIR IMAGE.png...   -> JSON on stdout, one entry per image
"""

import contextlib
import json
import os
import sys

import numpy as np
import ts
from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl
from ts.model_loader import ModelLoaderFactory
from ts.service import Service


def main() -> None:
    # TorchServe's VisionHandler.get_insights prints to stdout: keep stdout for the answer.
    with contextlib.redirect_stdout(sys.stderr):
        out = answers(sys.argv[1], sys.argv[2:])
    json.dump(out, sys.stdout)


def answers(model_dir: str, images: list[str]) -> list[dict[str, object]]:
    sys.path.append(model_dir)  # as model_service_worker does before loading
    with open(os.path.join(model_dir, "MAR-INF", "MANIFEST.json")) as f:
        manifest = json.load(f)
    metrics = MetricsCacheYamlImpl(config_file_path=os.path.join(os.path.dirname(ts.__file__), "configs",
                                                                  "metrics.yaml"))
    metrics.initialize_cache()
    metrics.model_name = manifest["model"]["modelName"]
    service = ModelLoaderFactory.get_model_loader().load(
        manifest["model"]["modelName"], model_dir, manifest["model"]["handler"], None, 1, None, True, metrics)
    out = []
    for path in images:
        with open(path, "rb") as f:
            png = f.read()
        answers = []
        for explain in (False, True):
            batch = [{"requestId": b"probe", "parameters": [{"name": "body", "contentType": "image/png", "value": png}],
                      "headers": [{"name": b"explain", "value": b"True"}] if explain else []}]
            headers, inputs, ids = Service.retrieve_data_for_inference(batch)
            service.context.request_ids = ids
            service.context.request_processor = headers
            metrics.request_ids = ids
            (answer,) = service._entry_point(inputs, service.context)
            answers.append(answer)
        top5, attributions = answers
        out.append({"top5": [[int(k), float(v)] for k, v in top5.items()],
                    "attributions": np.asarray(attributions, dtype=np.float64).sum(axis=0).tolist()})
    return out


if __name__ == "__main__":
    main()
