"""Shared fixtures: the real measured cases beside the project."""

from __future__ import annotations

import pytest

from refractor_core.testing.real_cases import RealCase, get_case, load_cases, real_data_dir

REAL_CASES: list[RealCase] = load_cases()
REAL_CASE_NAMES = [c.name for c in REAL_CASES]


@pytest.fixture(scope="session")
def real_dir():
    d = real_data_dir()
    if d is None:
        pytest.fail("the real data folder ../shared/data/real is missing (set REFRACTOR_REAL_DATA)")
    return d


@pytest.fixture
def real_case():
    """Factory: real_case('sucrose') -> RealCase."""
    return get_case


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small refinements run fastest on one torch thread (and the CI machine is shared)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
