"""Shared fixtures. The real-data folder ../shared/data sits beside the repository
(override with XTALHPC_SHARED_DATA); tests that need it skip with a message where it is absent."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("XTALHPC_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real-data folder {SHARED_DATA} is absent (set XTALHPC_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture
def rng(request) -> np.random.Generator:
    """A fresh seeded generator per test; the seed is printed so a failure can be replayed."""
    seed = int(os.environ.get("XTALHPC_TEST_SEED", np.random.SeedSequence().entropy % 2**32))
    print(f"[{request.node.name}] XTALHPC_TEST_SEED={seed}")
    return np.random.default_rng(seed)
