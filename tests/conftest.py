import numpy as np
import pytest

from benchmark.synthetic import make_instance

# The scenario cell of the small suites the CLI, runner and submission tests write.
TINY_CELL = """
[[cells]]
name = "tiny-fedsgd"
n_users = 6
n_rounds = 24
participation = 0.4
window = 3
"""

# The smallest suite: the undefended tiny cell, one seed.
TINY_SUITE = """
name = "tiny"
version = "1"
seeds = [0]

[attack]
time_limit = 0.2

[[defenses]]
name = "none"
""" + TINY_CELL


@pytest.fixture
def small_instance():
    """40 users, 160 rounds, windows of 10 (16 windows < 40 users: no closed form)."""
    return make_instance(40, 160, 10, 0.3, seed=3)


def write_observation(folder, instance, totals=True):
    paths = {"aggregates": folder / "A.npy", "counts": folder / "C.npy", "totals": folder / "S.npy"}
    np.save(paths["aggregates"], instance.aggregates)
    np.save(paths["counts"], instance.counts)
    if totals:
        np.save(paths["totals"], instance.totals)
    return paths
