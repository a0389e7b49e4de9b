"""Dockerfile, .dockerignore, docker-compose files and deploy/env.example, checked without a
Docker engine. `docker compose config` runs too where a Compose v2 client is installed."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.config import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_CPU = ROOT / "docker-compose.cpu.yml"
ENV_EXAMPLE = ROOT / "deploy" / "env.example"


# --------------------------------------------------------------------------- Dockerfile


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or (line.startswith("#") and not pending):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "Dockerfile ends inside a continued line"
    return out


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return _instructions(DOCKERFILE.read_text())


def _stages(instructions: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for ins in instructions:
        if ins[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(ins)
    return stages


def test_multi_stage_with_named_stages(dockerfile: list[tuple[str, str]]) -> None:
    froms = [args for word, args in dockerfile if word == "FROM"]
    assert len(froms) >= 2
    names = [args.split()[-1] for args in froms if " AS " in args.upper()]
    assert len(names) == len(froms), "every stage is named"
    assert names[-1] == "runtime"


def test_variant_arg_chooses_the_torch_index(dockerfile: list[tuple[str, str]]) -> None:
    args = [a for word, a in dockerfile if word == "ARG"]
    assert "VARIANT=cuda" in args, "CUDA is the default variant"
    text = DOCKERFILE.read_text()
    assert "https://download.pytorch.org/whl/cpu" in text
    assert 'case "$VARIANT" in' in text and "cpu)" in text and "cuda)" in text


def test_dependencies_installed_before_the_source_is_copied(dockerfile: list[tuple[str, str]]) -> None:
    first_install = next(i for i, (word, args) in enumerate(dockerfile)
                         if word == "RUN" and "pip install" in args and "requirements.txt" in args)
    copy_app = next(i for i, (word, args) in enumerate(dockerfile)
                    if word == "COPY" and shlex.split(args)[0] == "app")
    assert first_install < copy_app
    copies_before = [args for word, args in dockerfile[:first_install] if word == "COPY"]
    assert copies_before == ["pyproject.toml ./"], "only pyproject.toml is in the dependency layer"


def test_runtime_stage(dockerfile: list[tuple[str, str]]) -> None:
    runtime = _stages(dockerfile)[-1]
    words = dict(runtime)  # last of each instruction
    users = [a for w, a in runtime if w == "USER"]
    assert users, "the runtime stage sets USER"
    assert users[-1].split(":")[0] not in ("root", "0")
    assert "8000" in words["EXPOSE"].split()
    assert "/readyz" in words["HEALTHCHECK"] and "curl" not in words["HEALTHCHECK"]
    assert json.loads(words["CMD"]) == ["python", "-m", "app"]
    assert json.loads(words["VOLUME"]) == ["/models"]
    env = " ".join(a for w, a in runtime if w == "ENV")
    assert "MODELS=/models/catalog.toml" in env
    assert any(w == "COPY" and shlex.split(a)[-1] == "/models" for w, a in runtime), "demo models baked in"
    # the VOLUME comes after the models are copied, so the image carries them
    index = {w: i for i, (w, _) in enumerate(runtime)}
    copy_models = max(i for i, (w, a) in enumerate(runtime) if w == "COPY" and a.endswith("/models"))
    assert copy_models < index["VOLUME"]


def test_healthcheck_command_is_valid_python(dockerfile: list[tuple[str, str]]) -> None:
    args = dict(_stages(dockerfile)[-1])["HEALTHCHECK"]
    command = json.loads(args[args.index("CMD") + 3:].strip())
    assert command[:2] == ["python", "-c"]
    compile(command[2], "<healthcheck>", "exec")


def test_dockerignore_sends_only_what_the_image_needs() -> None:
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "*"
    for needed in ("pyproject.toml", "README.md", "app/", "models/"):
        assert f"!{needed}" in lines


# --------------------------------------------------------------------------- compose files


class _Tagged:
    def __init__(self, tag: str, value: Any):
        self.tag, self.value = tag, value


class _ComposeLoader(yaml.SafeLoader):
    """PyYAML plus Compose's merge tags (`!reset`, `!override`)."""


def _tagged(loader: yaml.SafeLoader, node: yaml.Node) -> _Tagged:
    if isinstance(node, yaml.SequenceNode):
        value: Any = loader.construct_sequence(node, deep=True)
    elif isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    else:
        value = loader.construct_scalar(node)  # type: ignore[arg-type]
    return _Tagged(node.tag, value)


_ComposeLoader.add_constructor("!reset", _tagged)
_ComposeLoader.add_constructor("!override", _tagged)


def _load(path: Path) -> dict[str, Any]:
    data = yaml.load(path.read_text(), Loader=_ComposeLoader)
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def service() -> dict[str, Any]:
    services = _load(COMPOSE)["services"]
    assert list(services) == ["explainserve"]
    return dict(services["explainserve"])


def test_compose_ports_build_and_restart(service: dict[str, Any]) -> None:
    assert "8000:8000" in service["ports"]
    assert service["build"]["context"] == "."
    assert service["build"]["args"]["VARIANT"] == "cuda"
    assert service["restart"] == "unless-stopped"
    assert service["environment"]["PORT"] == "8000"


def test_compose_gpu_reservation(service: dict[str, Any]) -> None:
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]


def test_compose_models_mounted_read_only(service: dict[str, Any]) -> None:
    mounts = [v for v in service["volumes"] if isinstance(v, dict) and v.get("target") == "/models"]
    assert len(mounts) == 1
    assert mounts[0]["source"] == "./models" and mounts[0]["read_only"] is True
    assert service["environment"]["MODELS"] == "/models/catalog.toml"
    assert (ROOT / "models" / "catalog.toml").is_file()


def test_compose_env_file_and_healthcheck(service: dict[str, Any]) -> None:
    assert {"path": ".env", "required": False} in service["env_file"]
    check = service["healthcheck"]
    assert check["test"][0] == "CMD" and any("/readyz" in part for part in check["test"])
    compile(check["test"][-1], "<healthcheck>", "exec")
    for key in ("interval", "timeout", "retries", "start_period"):
        assert key in check


def test_cpu_override_drops_the_gpu(service: dict[str, Any]) -> None:
    cpu = _load(COMPOSE_CPU)["services"]["explainserve"]
    assert cpu["build"]["args"]["VARIANT"] == "cpu"
    assert cpu["environment"]["DEVICE"] == "cpu"
    devices = cpu["deploy"]["resources"]["reservations"]["devices"]
    assert isinstance(devices, _Tagged) and devices.tag == "!reset"
    assert cpu["image"] != service["image"]


# --------------------------------------------------------------------------- env.example


def _example_values() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        text = line.removeprefix("# ").strip()
        if line.startswith("# ") and "=" in text and text.split("=", 1)[0].isupper():
            name, _, value = text.partition("=")
            values[name] = value
    return values


def test_env_example_lists_every_setting_with_its_default(monkeypatch: pytest.MonkeyPatch) -> None:
    values = _example_values()
    fields = {name.upper() for name in Settings.model_fields}
    assert set(values) == fields
    for name in fields:
        monkeypatch.delenv(name, raising=False)
    defaults = Settings().model_dump()
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    assert Settings().model_dump() == defaults


# --------------------------------------------------------------------------- docker compose config


def _compose_command() -> list[str] | None:
    """`docker compose` (the plugin), else a standalone Compose v2 `docker-compose`."""
    candidates = []
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    if shutil.which("docker-compose"):
        candidates.append(["docker-compose"])
    for command in candidates:
        try:
            done = subprocess.run([*command, "version", "--short"], capture_output=True, text=True,
                                  timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0 and done.stdout.strip().lstrip("v").startswith("2"):
            return command
    return None


@pytest.mark.parametrize("cpu", [False, True], ids=["gpu", "cpu"])
def test_docker_compose_config(cpu: bool) -> None:
    command = _compose_command()
    if command is None:
        pytest.skip("no Docker Compose v2 client here (`docker compose version` fails): "
                    "the compose files are checked by parsing them above")
    files = ["-f", str(COMPOSE)] + (["-f", str(COMPOSE_CPU)] if cpu else [])
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    done = subprocess.run([*command, "--project-directory", str(ROOT), *files, "config", "--format", "json"],
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    config = json.loads(done.stdout)["services"]["explainserve"]
    devices = config.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices")
    if cpu:
        assert not devices and config["build"]["args"]["VARIANT"] == "cpu"
    else:
        assert devices[0]["driver"] == "nvidia" and devices[0]["capabilities"] == ["gpu"]
    assert config["ports"][0]["target"] == 8000 and str(config["ports"][0]["published"]) == "8000"
    assert config["volumes"][0]["read_only"] is True
