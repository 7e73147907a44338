"""Shared fixtures of the software tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import TINY_DATASET, clean_env, run_module


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A small synthetic dataset in the Kaggle layout (30 images per class, 96x96)."""
    root = tmp_path_factory.mktemp("tiny") / "COVID-19_Radiography_Dataset"
    result = run_module("scripts.sample_data", "--out", str(root), env=clean_env(**TINY_DATASET))
    assert result.returncode == 0, result.stderr
    return root
