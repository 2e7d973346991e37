"""Fixtures shared by the training tests."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's tests on one torch thread, then restore the count.

    Two torch threads on a busy 2-core machine spin-wait each other (OpenMP oversubscription),
    and the larger networks (ResNet-50) make that the cost of a test; one thread is faster.
    Use it with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
