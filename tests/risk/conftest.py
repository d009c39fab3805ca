"""Shared fixtures for the risk-mathematics tests."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Run these small tensor ops on one thread: on a shared 2-core box thread sync dominates."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
