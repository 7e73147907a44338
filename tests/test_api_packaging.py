"""The API's image, checked without a Docker engine: api/requirements.txt covers what the API
imports and pins it as requirements.txt does, and the files api/Dockerfile copies are enough to
start the API, whose HEALTHCHECK then passes. (That the install line installs in a fresh venv
needs the package index, so it is checked by hand, not here.)"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import requests
from api_helpers import TIMEOUT_S, image_bytes, production, registry, wait_for  # noqa: F401  (fixtures)
from helpers import REPO_ROOT, clean_env
from packaging.requirements import Requirement

HEAVY = {"tensorflow", "tensorflow-cpu", "keras", "tf2onnx", "onnx", "pytest"}


def pins(path: Path) -> dict[str, str]:
    """``name -> version`` of the ``name==version`` lines of a requirements file."""
    found = {}
    for line in path.read_text().splitlines():
        if match := re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line.strip()):
            found[canonical(match.group(1))] = match.group(2)
    return found


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def with_dependencies(names: set[str]) -> set[str]:
    """The installed distributions ``names`` need, themselves included."""
    seen, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for line in metadata.requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(canonical(requirement.name))
    return seen


def dockerfile() -> list[tuple[str, str]]:
    """``(instruction, arguments)`` of api/Dockerfile, continuation lines joined."""
    text = (REPO_ROOT / "api" / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_api_requirements_pin_what_requirements_txt_pins_and_no_tensorflow():
    api, project = pins(REPO_ROOT / "api" / "requirements.txt"), pins(REPO_ROOT / "requirements.txt")
    assert api and all(project.get(name) == version for name, version in api.items()), api
    assert not set(api) & HEAVY


def imported_modules(statement: str) -> set[str]:
    """Top-level modules loaded by a fresh interpreter running ``statement``."""
    code = f"import sys; {statement}; print(' '.join({{m.split('.')[0] for m in sys.modules}}))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=clean_env(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def test_api_requirements_cover_every_package_the_api_imports():
    modules = imported_modules("import api.serve") - imported_modules("pass")  # not site's startup hooks
    owners = metadata.packages_distributions()
    imported = {canonical(dist) for module in modules for dist in owners.get(module, [])}
    assert {"flask", "onnxruntime", "pillow"} <= imported
    covered = with_dependencies(set(pins(REPO_ROOT / "api" / "requirements.txt")))
    assert imported - covered == set()
    assert not imported & HEAVY


def test_the_dockerfile_runs_as_a_user_and_installs_only_the_api_requirements():
    instructions = dockerfile()
    users = [arguments for instruction, arguments in instructions if instruction == "USER"]
    assert users and users[-1] not in ("root", "0")
    runs = " ".join(arguments for instruction, arguments in instructions if instruction == "RUN")
    assert "-r api/requirements.txt" in runs and "requirements.txt " not in runs.replace("api/requirements.txt", "")


def in_build_context(relative: str) -> bool:
    """Whether api/Dockerfile.dockerignore (which docker uses for this Dockerfile instead of the root
    .dockerignore) lets ``relative`` into the build context: the last matching rule decides, and a
    rule that matches a folder matches what is inside it."""
    rules = [line.strip() for line in (REPO_ROOT / "api" / "Dockerfile.dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    parts = relative.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    kept = True
    for rule in rules:
        keep, pattern = rule.startswith("!"), rule.lstrip("!")
        if any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes):
            kept = keep
    return kept


@pytest.fixture
def image_tree(tmp_path) -> Path:
    """The files api/Dockerfile copies, laid out as in the image's working directory, from the build
    context docker would send (a file its ignore file leaves out is missing here too)."""
    root = tmp_path / "app"
    for instruction, arguments in dockerfile():
        if instruction != "COPY":
            continue
        *sources, target = shlex.split(arguments)
        for source in sources:
            origin = REPO_ROOT / source.rstrip("/")
            destination = root / target if not target.endswith("/") or origin.is_dir() else root / target / origin.name
            files = sorted(origin.rglob("*")) if origin.is_dir() else [origin]
            for file in files:
                relative = file.relative_to(REPO_ROOT).as_posix()
                if file.is_file() and in_build_context(relative):
                    placed = destination / file.relative_to(origin) if origin.is_dir() else destination
                    placed.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(file, placed)
    return root


def test_the_copied_files_start_the_api_and_its_healthcheck_passes(image_tree, registry, production, tmp_path):
    environment = {}
    for instruction, arguments in dockerfile():
        if instruction == "ENV":
            environment.update(dict(pair.split("=", 1) for pair in shlex.split(arguments)))
    health = json.loads(next(arguments for instruction, arguments in dockerfile()
                             if instruction == "HEALTHCHECK").split("CMD", 1)[1])
    port_file = tmp_path / "port"
    env = clean_env(**{**environment, "REGISTRY_URI": registry.uri, "API_HOST": "127.0.0.1", "API_PORT": "0"})
    env.pop("PYTHONPATH", None)
    server = subprocess.Popen([sys.executable, "-m", "api.serve", "--port-file", str(port_file)], cwd=image_tree,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: port_file.exists() or server.poll() is not None, timeout=30, message="the port file")
        assert server.poll() is None, server.communicate()[1]
        port = port_file.read_text().strip()
        check = subprocess.run([sys.executable if word == "python" else word for word in health], cwd=image_tree,
                               env={**env, "API_PORT": port}, capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stderr
        answer = requests.post(f"http://127.0.0.1:{port}/predict", data=image_bytes(),
                               headers={"Content-Type": "image/png"}, timeout=TIMEOUT_S)
        assert answer.status_code == 200 and answer.json()["model_version"] == production
    finally:
        server.terminate()
        server.communicate(timeout=30)
