"""Refinement against the sums under noise: alternating columns and updates, counts kept."""

import numpy as np

from attacks.alternating import refine
from attacks.geometry import Geometry, column_space
from benchmark.synthetic import make_instance


def test_refinement_repairs_perturbed_columns_under_noise():
    instance = make_instance(12, 96, 4, 0.35, dim=200, seed=4)
    rng = np.random.default_rng(0)
    noisy = instance.aggregates + 0.3 * rng.standard_normal(instance.aggregates.shape)
    geometry = Geometry(column_space(noisy, 12, True), instance.counts, 4)
    truth = instance.participants.astype(np.float64)
    start = geometry.round_to_counts(truth + 0.6 * rng.standard_normal(truth.shape), np.arange(12))
    assert (start == truth).mean() < 0.95  # within the counts, but many rounds wrong
    refined = refine(geometry, noisy, start)
    assert np.array_equal(geometry.round_to_counts(refined, np.arange(12)), refined)  # counts kept
    assert (refined == truth).mean() > (start == truth).mean()
    assert (refined == truth).all(axis=0).mean() >= 0.9
