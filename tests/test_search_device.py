"""The searches' torch path (for a GPU, `--device cuda`) runs the reference's arithmetic: torch's CPU device stands in
for a GPU here, and must find what numpy finds."""

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from attacks.disaggregation import disaggregate
from attacks.geometry import Geometry, column_space
from attacks.projection_search import projection_search
from attacks.settings import AttackSettings
from benchmark.synthetic import make_instance

TORCH_CPU = "cpu:0"  # any device but "cpu" takes the torch path


@pytest.fixture(autouse=True)
def one_thread():
    """numpy's BLAS and torch's OpenMP threads, interleaved on a busy machine, wait on each other's spinning (torch's
    own thread count is not threadpoolctl's: with two suite workers on the 2 cores, the whole attack below took 39 s
    on the torch path with torch's threads, 2.9 s with one)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("n, rounds, participation, noise", [(50, 200, 0.5, 0.0), (80, 120, 0.1, 0.0), (60, 720, 0.1, 0.05)])
def test_the_torch_search_finds_the_columns_numpy_finds(n, rounds, participation, noise):
    """Exact sums with the basis step (T >= 2r) and with the complement step (T < 2r), and sums under noise."""
    instance = make_instance(n, rounds, 10, participation, seed=0)
    aggregates = instance.aggregates + noise * np.random.default_rng(1).standard_normal(instance.aggregates.shape)
    geometry = Geometry(column_space(aggregates, n, noise > 0), instance.counts, 10)
    tolerance = 0.35 if noise else 1e-6
    reference, fit = projection_search(geometry, np.arange(n), tolerance)
    on_device, device_fit = projection_search(geometry, np.arange(n), tolerance, device=TORCH_CPU)
    exact = (reference == instance.participants).all(axis=0)
    assert exact.sum() >= n // 2  # the instance is one the search can do
    assert np.array_equal(on_device, reference)
    assert np.allclose(device_fit, fit, rtol=0, atol=1e-12)


def test_the_coupled_restarts_and_the_whole_attack_agree_on_the_torch_path():
    instance = make_instance(30, 60, 10, 0.5, seed=0)  # (f)'s density: the first search leaves users to the joint stage
    # no clock budget: work limits decide both answers, and a clock that bites on a busy machine would not; no
    # lattice stage, which would settle these users before the joint stage's restarts
    settings = AttackSettings(lattice=False)
    reference = disaggregate(instance.aggregates, instance.counts, 10, instance.totals, settings)
    on_device = disaggregate(instance.aggregates, instance.counts, 10, instance.totals,
                             AttackSettings(device=TORCH_CPU, lattice=False))
    assert reference.events.get("found by search restarts", 0) > 0
    assert not reference.clock_limited and not on_device.clock_limited
    assert np.array_equal(on_device.participants, reference.participants) and on_device.status == reference.status
    assert (reference.participants == instance.participants).all(axis=0).mean() == 1.0
