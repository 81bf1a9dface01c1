"""Shared fixtures. Real datasets come from ../shared/datasets when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = Path(
    os.environ.get("GEODML_SHARED_DATASETS", REPO.parent / "shared" / "datasets")
)


def shared_path(relative: str) -> Path:
    """Path of a file under ../shared/datasets, or skip the test with the reason."""
    p = SHARED_DATASETS / relative
    if not p.exists():
        pytest.skip(f"real dataset {relative} not available ({SHARED_DATASETS} absent)")
    return p


@pytest.fixture
def shared():
    return shared_path
