"""Exchanges inside windows (attacks/polish.py) and the search on the coordinates that carry signal, under noise."""

import numpy as np

from attacks.disaggregation import disaggregate
from attacks.geometry import Geometry, column_space, left_singular, signal_coordinates
from attacks.polish import swap_descent
from attacks.projection_search import projection_search
from attacks.settings import AttackSettings
from benchmark.observation import window_sums

WINDOW = 10


def noisy_instance(noise: float, dimension: int, seed: int = 0, users: int = 50, rounds: int = 600, signal: int = 100):
    """Updates of norm 1 on the first `signal` coordinates only; N(0, noise^2) per coordinate and participant."""
    rng = np.random.default_rng(seed)
    participants = (rng.random((rounds, users)) < 0.3).astype(np.float64)
    updates = np.zeros((users, dimension))
    updates[:, :signal] = rng.standard_normal((users, signal))
    updates /= np.linalg.norm(updates, axis=1, keepdims=True)
    aggregates = participants @ updates + noise * np.sqrt(participants.sum(axis=1))[:, None] * rng.standard_normal(
        (rounds, dimension))
    counts = window_sums(participants, WINDOW).T.astype(np.int64)
    return participants, aggregates, counts


def exact(columns: np.ndarray, participants: np.ndarray) -> int:
    return int((columns == participants).all(axis=0).sum())


def test_exchanges_keep_every_window_count_and_never_raise_a_residual():
    participants, aggregates, counts = noisy_instance(0.02, 2000)
    geometry = Geometry(column_space(aggregates, 50, True), counts, WINDOW)
    rng = np.random.default_rng(1)
    start = geometry.round_to_counts(rng.random(participants.shape), np.arange(50))
    polished = swap_descent(geometry, start)
    assert set(np.unique(polished)) <= {0.0, 1.0}
    assert np.array_equal(window_sums(polished, WINDOW), window_sums(start, WINDOW))
    assert np.all(geometry.residual(polished) <= geometry.residual(start) + 1e-12)
    assert np.all(geometry.residual(polished) < geometry.residual(start))  # random columns always have a better exchange


def test_exchanges_turn_the_searchs_near_misses_into_the_true_columns_under_noise():
    participants, aggregates, counts = noisy_instance(0.02, 2000)
    geometry = Geometry(column_space(aggregates, 50, True), counts, WINDOW)
    searched, _ = projection_search(geometry, np.arange(50), 0.35)
    assert exact(searched, participants) <= 15  # measured 12: binary points near the subspace, not the true ones
    assert exact(swap_descent(geometry, searched), participants) >= 45  # measured 50
    result = disaggregate(aggregates, counts, WINDOW, settings=AttackSettings(noise=True))
    assert exact(result.participants, participants) >= 45


def test_the_coordinates_that_carry_signal_give_a_subspace_nearer_the_true_columns():
    participants, aggregates, counts = noisy_instance(0.04, 4000)
    kept = signal_coordinates(aggregates, 50, left_singular(aggregates)[1])
    assert 100 <= len(kept) <= 150 and set(range(100)) <= set(kept)  # the signal's 100 and a few noise coordinates
    everything = Geometry(column_space(aggregates, 50, True, left_singular(aggregates)), counts, WINDOW)
    selected = Geometry(column_space(aggregates, 50, True), counts, WINDOW)
    assert np.median(selected.residual(participants)) < 0.8 * np.median(everything.residual(participants))
    on_everything = swap_descent(everything, projection_search(everything, np.arange(50), 0.35)[0])
    assert exact(on_everything, participants) == 0  # measured 0
    result = disaggregate(aggregates, counts, WINDOW, settings=AttackSettings(noise=True))
    assert exact(result.participants, participants) >= 15  # measured 20


def test_coordinates_are_all_kept_where_every_one_carries_signal_or_few_stand_out():
    rng = np.random.default_rng(0)
    participants = (rng.random((600, 50)) < 0.3).astype(np.float64)
    updates = rng.standard_normal((50, 2000))  # signal on every coordinate, its variance varying between them
    updates /= np.linalg.norm(updates, axis=1, keepdims=True)
    aggregates = participants @ updates + 0.01 * rng.standard_normal((600, 2000))
    assert len(signal_coordinates(aggregates, 50, left_singular(aggregates)[1])) == 2000
    aggregates = rng.standard_normal((200, 300))
    aggregates[:, :5] *= 10  # 5 coordinates stand out, fewer than 2n for n = 20: the top 20 directions need more
    assert len(signal_coordinates(aggregates, 20, left_singular(aggregates)[1])) == 300


def test_columns_polished_in_parts_equal_columns_polished_together(monkeypatch):
    participants, aggregates, counts = noisy_instance(0.02, 2000)
    geometry = Geometry(column_space(aggregates, 50, True), counts, WINDOW)
    start = geometry.round_to_counts(np.random.default_rng(1).random(participants.shape), np.arange(50))
    together = swap_descent(geometry, start)
    monkeypatch.setattr("attacks.polish.TABLE_ENTRIES", 60 * WINDOW * WINDOW * 7)  # parts of 7 columns
    assert np.array_equal(swap_descent(geometry, start), together)


def test_a_work_limit_stops_the_exchanges_where_that_many_passes_over_the_moving_columns_would():
    """The limit counts columns x T x rank per pass: on a random start every column moves in the first passes, so a
    limit of k passes' work polishes exactly as k passes do, and short of the uncapped descent."""
    participants, aggregates, counts = noisy_instance(0.02, 2000)
    geometry = Geometry(column_space(aggregates, 50, True), counts, WINDOW)
    start = geometry.round_to_counts(np.random.default_rng(1).random(participants.shape), np.arange(50))
    one_pass = 50 * geometry.basis.size
    capped = swap_descent(geometry, start, work_limit=2 * one_pass)
    assert np.array_equal(capped, swap_descent(geometry, start, max_passes=2))
    assert np.all(geometry.residual(capped) > geometry.residual(swap_descent(geometry, start)) - 1e-12)
    assert not np.array_equal(capped, swap_descent(geometry, start))
