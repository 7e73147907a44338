"""Which model a retraining run starts from, whether it fits the current settings, and the key that
says whether this exact retraining was already done."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from registry.store import Registry

CODE_FOLDERS = ("model", "retrain")  # the code whose change makes a retraining worth running again
KEY_PARAMS = ("classes", "data", "train", "retrain", "gate", "export")


class NoBase(RuntimeError):
    """Nothing to retrain: no production model and no tested testing model."""


@dataclass(frozen=True)
class Base:
    version: str
    stage: str  # "production", or "testing" when production is empty
    metadata: dict


def choose_base(registry: Registry) -> Base:
    """The production model; if production is empty, the newest testing version whose tests passed."""
    pointer = registry.current()
    if pointer is not None:
        return Base(pointer["version"], "production", registry.metadata(pointer["version"], "production"))
    tested = registry.newest_tested_metadata()
    if tested is not None:
        version, metadata = tested
        return Base(version, "testing", metadata)
    raise NoBase("no model to retrain: run `make pipeline` first")


def incompatibilities(base: Base, params: dict) -> list[str]:
    """Why ``base`` cannot be fine-tuned with ``params`` (other classes, another input size)."""
    problems = []
    if list(base.metadata.get("classes") or []) != list(params["classes"]):
        problems.append(f"it was trained for the classes {base.metadata.get('classes')}, "
                        f"params.yaml has {params['classes']}")
    if base.metadata.get("image_size") != params["data"]["image_size"]:
        problems.append(f"its input size is {base.metadata.get('image_size')}, "
                        f"data.image_size is {params['data']['image_size']}")
    return problems


def code_sha256(root: Path) -> str:
    """A hash of the training and retraining code."""
    digest = hashlib.sha256()
    for folder in CODE_FOLDERS:
        for path in sorted((root / folder).glob("*.py")):
            digest.update(f"{folder}/{path.name}".encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def retrain_key(base_version: str, dataset_sha256: str, params: dict, root: Path) -> str:
    """What identifies a retraining run: the base, the dataset version, the code and the settings."""
    identity = {"base": base_version, "dataset": dataset_sha256, "code": code_sha256(root),
                "params": {key: params[key] for key in KEY_PARAMS}}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
