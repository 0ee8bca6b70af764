import itertools

import numpy as np
import pytest

from attacks.disaggregation import AttackSettings, disaggregate
from attacks.geometry import Geometry, column_space, descending_ranks, left_singular, numerical_rank
from benchmark.errors import BenchmarkError
from benchmark.synthetic import make_instance


def exact_columns(result, instance):
    return (result.participants == instance.participants).all(axis=0)


def test_closed_form_recovers_everything_and_proves_it_unique():
    instance = make_instance(60, 700, 10, 0.2, seed=1)  # 70 windows >= 60 users
    result = disaggregate(instance.aggregates, instance.counts, 10)
    assert exact_columns(result, instance).all()
    assert set(result.status) == {"unique"}
    assert np.allclose(result.updates, instance.updates, atol=1e-8)
    assert result.steps.keys() >= {"linear"} and "integer_program" not in result.steps


def test_the_low_rank_sketch_gives_the_full_decompositions_subspace_and_falls_back_where_it_cannot():
    rng = np.random.default_rng(3)
    participants = (rng.random((400, 20)) < 0.3).astype(np.float64)
    sums = participants @ (rng.standard_normal((20, 900)) * rng.random((20, 1)))
    left, singular = left_singular(sums)
    fast_left, fast_singular = left_singular(sums, 20)
    assert fast_left.shape == (400, 36)  # sketched: 20 + 16 directions, not all 400
    assert numerical_rank(fast_singular, sums.shape) == numerical_rank(singular, sums.shape) == 20
    assert np.allclose(fast_singular[:20], singular[:20], rtol=1e-12)
    projection = left[:, :20] @ (left[:, :20].T @ participants)
    assert np.abs(fast_left[:, :20] @ (fast_left[:, :20].T @ participants) - projection).max() < 1e-10
    # noise, or more directions than the sketch has (bound 2: 18): it cannot prove the rest negligible, so the full
    noisy = sums + 1e-6 * rng.standard_normal(sums.shape)
    for aggregates, bound in ((noisy, 20), (sums, 2)):
        sketched, full = left_singular(aggregates, bound), left_singular(aggregates)
        assert sketched[0].shape == (400, 400)
        assert np.array_equal(sketched[0], full[0]) and np.array_equal(sketched[1], full[1])


def test_noiseless_instance_below_the_closed_form_is_recovered_exactly(small_instance):
    result = disaggregate(small_instance.aggregates, small_instance.counts, 10, small_instance.totals)
    assert exact_columns(result, small_instance).all()
    assert set(result.status) <= {"unique", "found"}
    assert np.abs(result.updates - small_instance.updates).max() < 1e-8


def test_joint_stage_solves_what_the_search_leaves():
    instance = make_instance(16, 36, 10, 0.5, seed=0)
    result = disaggregate(instance.aggregates, instance.counts, 10, settings=AttackSettings(search_iterations=0, nodes=20))
    assert "joint" in result.steps
    solved = np.array([s in ("unique", "found") for s in result.status])
    assert solved.sum() >= 1
    assert exact_columns(result, instance)[np.array(result.status) == "unique"].all()


def _brute_force_unique(instance, geometry, user):
    """Every binary vector with the user's counts that lies in col(A)."""
    matches = 0
    for bits in itertools.product((0.0, 1.0), repeat=instance.aggregates.shape[0]):
        column = np.array(bits)
        if np.array_equal(geometry.window_matrix @ column, instance.counts[user]) and geometry.residual(column[:, None])[0] < 1e-6:
            matches += 1
    return matches == 1


def test_unique_is_only_claimed_when_true_and_found_columns_are_valid():
    instance = make_instance(6, 12, 4, 0.5, seed=5)
    # without the lattice stage the joint stage finds and certifies these columns itself (with it, user 0, who is
    # ambiguous, takes its other column, and a whole P U that misses A proves nobody unique)
    result = disaggregate(instance.aggregates, instance.counts, 4, settings=AttackSettings(lattice=False))
    geometry = Geometry(column_space(instance.aggregates, 6, False), instance.counts, 4)
    statuses = set()
    for user, status in enumerate(result.status):
        statuses.add(status)
        column = result.participants[:, user].astype(float)
        assert np.array_equal(geometry.window_matrix @ column, instance.counts[user])
        assert geometry.residual(column[:, None])[0] < 1e-6
        if status == "unique":
            assert _brute_force_unique(instance, geometry, user)
    assert "unique" in statuses


def _binary_points(geometry, counts, user):
    """Every binary vector with the user's counts that lies in col(A), by brute force."""
    points = []
    for bits in itertools.product((0.0, 1.0), repeat=geometry.n_rounds):
        column = np.array(bits)
        if np.array_equal(geometry.window_matrix @ column, counts[user]) and geometry.residual(column[:, None])[0] < 1e-6:
            points.append(column)
    return points


def test_a_user_with_two_valid_columns_is_ambiguous_never_unique():
    # Users 0 and 1 never share a round and user 2's count equals theirs together: p0 + p1 is binary, in col(A)
    # and meets user 2's count, so the observations cannot tell it from p2.
    participants = np.array(
        [[1, 0, 0, 1], [1, 0, 0, 0], [0, 1, 0, 1], [0, 0, 1, 0], [0, 0, 1, 1], [0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 1]],
        dtype=np.uint8,
    )
    updates = np.random.default_rng(0).standard_normal((4, 6))
    aggregates = participants @ updates
    counts = participants.sum(axis=0)[:, None].astype(np.int64)
    geometry = Geometry(column_space(aggregates.astype(float), 4, False), counts, 8)
    assert len(_binary_points(geometry, counts, 2)) == 2
    result = disaggregate(aggregates.astype(float), counts, 8)
    assert result.status[2] == "ambiguous"
    assert result.alternatives[2] >= 2
    assert result.report()["per_user"][2]["alternatives"] >= 2
    column = result.participants[:, 2].astype(float)
    assert any(np.array_equal(column, point) for point in _binary_points(geometry, counts, 2))
    for user, status in enumerate(result.status):
        if status == "unique":
            assert len(_binary_points(geometry, counts, user)) == 1


def test_peeling_fixes_columns_from_totals_and_proven_columns():
    from attacks.joint import fixed_columns, initial_state, propagate

    # Two windows of two rounds. User 0 is proven; user 1's counts fix it; the totals left then fix user 2.
    participants = np.array([[1, 1, 1], [0, 1, 0], [1, 0, 1], [0, 0, 0]], dtype=np.uint8)
    counts = np.array([[1, 1], [2, 0], [1, 1]], dtype=np.int64)
    totals = participants.sum(axis=1).astype(np.int64)
    geometry = Geometry(np.linalg.qr(participants.astype(float))[0], counts, 2)
    state = initial_state(geometry)
    assert not fixed_columns(state)[2]
    columns = participants.astype(float)
    state.proven[0] = True
    state.lower[:, 0] = state.upper[:, 0] = participants[:, 0] > 0
    assert propagate(geometry, state, totals, columns)
    assert fixed_columns(state).all()
    assert np.array_equal(state.lower, participants > 0)
    # Without the totals user 2 stays open: the cascade comes from peeling.
    alone = initial_state(geometry)
    assert propagate(geometry, alone, None, columns) and not fixed_columns(alone)[2]


def test_peeling_contradiction_is_reported():
    from attacks.joint import initial_state, propagate

    participants = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], dtype=np.uint8)
    counts = np.array([[1, 1], [1, 1]], dtype=np.int64)
    geometry = Geometry(np.linalg.qr(participants.astype(float))[0], counts, 2)
    state = initial_state(geometry)
    impossible = np.array([2, 1, 0, 0])  # round 0 cannot hold two when round 1 needs one more and both have room
    assert not propagate(geometry, state, impossible + np.array([1, 0, 0, 0]), participants.astype(float))


def test_same_inputs_give_same_statuses_whatever_the_clock():
    instance = make_instance(12, 30, 10, 0.5, seed=0)
    runs = [
        disaggregate(instance.aggregates, instance.counts, 10, instance.totals,
                     AttackSettings(search_iterations=20, simplex_iterations=30, nodes=1, time_limit=limit))
        for limit in (30.0, 300.0)
    ]
    assert runs[0].status == runs[1].status
    assert np.array_equal(runs[0].participants, runs[1].participants)
    assert not runs[0].clock_limited and not runs[1].clock_limited
    assert exact_columns(runs[0], instance)[np.array(runs[0].status) == "unique"].all()


def _work_limited(work, monkeypatch=None, delay=0.0, **limits):
    import time

    import attacks.joint

    if delay:
        original = attacks.joint.only_point

        def slower(*args, **kwargs):  # a slower machine: every certificate takes longer, the work is the same
            time.sleep(delay)
            return original(*args, **kwargs)

        monkeypatch.setattr(attacks.joint, "only_point", slower)
    instance = make_instance(40, 120, 10, 0.3, seed=0)  # the joint stage's own work: no lattice stage before it
    return disaggregate(instance.aggregates, instance.counts, 10, instance.totals, AttackSettings(lp_work=work, lattice=False, **limits))


def test_the_work_limit_stops_the_joint_stage_at_the_same_point_on_a_slower_machine(monkeypatch):
    fast = _work_limited(10_000_000)  # entry-iterations: about 1000 simplex iterations of this 10000-entry model
    slow = _work_limited(10_000_000, monkeypatch, delay=0.02)
    assert fast.status == slow.status and np.array_equal(fast.participants, slow.participants)
    assert 0 < fast.status.count("unique") < len(fast.status)  # the limit stopped the certificates part-way
    assert fast.events.get("work limit spent: the stage stopped") == 1
    assert not fast.clock_limited and not slow.clock_limited  # a work limit is no clock: nothing may vary


def test_more_work_never_proves_fewer_users():
    works = (0, 3_000_000, 10_000_000, None)
    proven = [set(np.flatnonzero(np.array(_work_limited(work).status) == "unique")) for work in works]
    assert all(before <= after for before, after in zip(proven, proven[1:]))
    assert len(proven[0]) < len(proven[-1]) == 40


def test_search_work_and_model_size_limit_the_joint_stage():
    unlimited = _work_limited(None)
    assert unlimited.events.get("found by search restarts", 0) > 0
    no_restarts = _work_limited(None, search_work=100)  # less than one restart of these users
    assert "found by search restarts" not in no_restarts.events
    assert no_restarts.events.get("work limit spent: the stage stopped") == 1
    skipped = _work_limited(None, max_model_entries=10)
    assert skipped.events == {"joint stage skipped: model too large": 1}
    assert skipped.status.count("unique") < unlimited.status.count("unique")


def test_zero_time_limit_leaves_hard_users_as_timeout():
    instance = make_instance(50, 100, 10, 0.5, seed=0)
    result = disaggregate(instance.aggregates, instance.counts, 10, settings=AttackSettings(search_iterations=0, time_limit=0, lattice=False))
    assert "timeout" in result.status


def test_counts_that_no_binary_vector_meets_are_infeasible():
    instance = make_instance(20, 60, 10, 0.3, seed=2)
    counts = instance.counts.copy()
    source = int(np.flatnonzero(counts[0] > 0)[0])
    target = int(np.flatnonzero(counts[0] < 10)[-1])
    assert source != target
    counts[0, source] -= 1
    counts[0, target] += 1
    result = disaggregate(instance.aggregates, counts, 10, settings=AttackSettings(time_limit=20))
    assert result.status[0] == "infeasible"


def test_counts_outside_the_span_of_the_window_sums_are_proven_infeasible_without_a_search():
    """More windows than rank: counts taken at face value (rounded here) that no column in col(A) has are
    infeasible from the closed form alone; the others are still recovered and proven."""
    instance = make_instance(60, 700, 10, 0.2, seed=1)
    counts = instance.counts.copy()
    counts[:10] -= counts[:10] % 2
    changed = (counts != instance.counts).any(axis=1)
    assert changed.sum() == 10
    result = disaggregate(instance.aggregates, counts, 10)
    assert all((status == "infeasible") == bad for status, bad in zip(result.status, changed))
    assert exact_columns(result, instance)[~changed].all()
    assert {result.status[u] for u in np.flatnonzero(~changed)} == {"unique"}
    assert "projection_search" not in result.steps


def test_noise_mode_tolerates_small_noise():
    instance = make_instance(30, 200, 10, 0.3, seed=4)
    noisy = instance.aggregates + np.random.default_rng(0).normal(0, 0.05, instance.aggregates.shape)
    exact_mode = disaggregate(noisy, instance.counts, 10, settings=AttackSettings(time_limit=0.1))
    noise_mode = disaggregate(noisy, instance.counts, 10, settings=AttackSettings(noise=True, time_limit=1))
    assert exact_columns(noise_mode, instance).mean() >= 0.95
    assert exact_columns(noise_mode, instance).mean() >= exact_columns(exact_mode, instance).mean()
    assert np.all(np.isfinite(noise_mode.residual))


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a, c: (a[:, :0], c), "non-empty"),
        (lambda a, c: (np.where(np.arange(a.size).reshape(a.shape) == 5, np.nan, a), c), "NaN"),
        (lambda a, c: (a, c.astype(float)), "integer"),
        (lambda a, c: (a, c[:, :-1]), "windows"),
        (lambda a, c: (a, np.where(np.arange(c.size).reshape(c.shape) == 0, 11, c)), "only 10 rounds"),
        (lambda a, c: (a, np.where(np.arange(c.size).reshape(c.shape) == 0, -1, c)), "negative"),
        (lambda a, c: (a.astype(str), c), "numeric"),
    ],
)
def test_bad_observations_are_rejected_with_one_line(small_instance, change, message):
    aggregates, counts = change(small_instance.aggregates, small_instance.counts)
    with pytest.raises(BenchmarkError, match=message) as caught:
        disaggregate(aggregates, counts, 10)
    assert "\n" not in str(caught.value)


def test_totals_that_disagree_with_counts_are_rejected(small_instance):
    totals = small_instance.totals.copy()
    totals[0] += 1
    with pytest.raises(BenchmarkError, match="totals disagree"):
        disaggregate(small_instance.aggregates, small_instance.counts, 10, totals)


def test_an_exhausted_budget_stops_the_integer_programs():
    instance = make_instance(50, 100, 10, 0.5, seed=0)
    settings = AttackSettings(search_iterations=0, time_limit=30, budget=0.0, lattice=False)
    result = disaggregate(instance.aggregates, instance.counts, 10, settings=settings)
    assert set(result.status) == {"timeout"}
    assert result.seconds.max() < 5


def test_counts_that_cannot_produce_the_sums_prove_no_user_unique(small_instance):
    """Each all-zero column passes its own (zero) counts; the whole P U misses A, so none may be `unique`."""
    result = disaggregate(small_instance.aggregates, np.zeros_like(small_instance.counts), 10)
    assert result.relative_misfit == pytest.approx(1.0)
    assert "unique" not in result.status and result.report()["relative_misfit"] == result.relative_misfit


def _exact_columns(found: np.ndarray, truth: np.ndarray) -> int:
    return int(sum(np.array_equal(found[:, j], truth[:, j]) for j in range(truth.shape[1])))


def test_relaxed_search_finds_more_columns_than_plain_douglas_rachford():
    """Dense participation (0.5) leaves the LP loose, so the search carries the attack; the relaxed step must pay."""
    from attacks.projection_search import projection_search

    found = {1.0: 0, 0.5: 0}
    for seed in range(3):
        instance = make_instance(50, 100, 10, 0.5, seed=seed)
        geometry = Geometry(column_space(instance.aggregates, 50, False), instance.counts, 10)
        for relaxation in found:
            columns, _ = projection_search(geometry, np.arange(50), 1e-6, iterations=3000, patience=10**6,
                                           relaxation=relaxation)
            found[relaxation] += _exact_columns(columns, instance.participants)
    assert found[0.5] > found[1.0] + 5  # measured 31 against 17


def test_coupling_users_through_the_totals_finds_more_columns():
    """The users the first search leaves, searched together: their columns must sum to the totals minus the rest."""
    from attacks.projection_search import projection_search

    instance = make_instance(50, 100, 10, 0.5, seed=0)
    geometry = Geometry(column_space(instance.aggregates, 50, False), instance.counts, 10)
    first, residual = projection_search(geometry, np.arange(50), 1e-6)
    left = np.flatnonzero(residual > 1e-6)
    remaining = instance.totals - first[:, residual <= 1e-6].sum(axis=1)
    found = {}
    for coupled in (False, True):
        columns, fit = projection_search(geometry, left, 1e-6, iterations=20_000, patience=10**6,
                                         remaining=remaining if coupled else None)
        assert (columns[:, fit <= 1e-6] == instance.participants[:, left[fit <= 1e-6]]).all()
        found[coupled] = int((fit <= 1e-6).sum())
    assert len(left) > 40 and found[True] > found[False] + 5  # measured 36 against 25


def test_dense_participation_is_recovered_through_the_totals():
    instance = make_instance(50, 100, 10, 0.5, seed=0)
    result = disaggregate(instance.aggregates, instance.counts, 10, instance.totals, AttackSettings(lattice=False))
    assert exact_columns(result, instance).all()
    assert result.events.get("found by search restarts", 0) > 40
    without = disaggregate(instance.aggregates, instance.counts, 10, settings=AttackSettings(nodes=0, budget=30, lattice=False))
    assert exact_columns(without, instance).sum() < 40


def test_one_user_without_a_column_leaves_the_others_proofs_standing():
    """A user whose counts no column fits makes A - P U large; that says nothing of the other users' proofs."""
    instance = make_instance(20, 60, 10, 0.3, seed=1)
    counts = instance.counts.copy()
    counts[0, np.flatnonzero(counts[0] > 0)[0]] -= 1  # one participation moved to another window
    counts[0, np.flatnonzero(counts[0] < 10)[-1]] += 1
    result = disaggregate(instance.aggregates, counts, 10, settings=AttackSettings(nodes=20))
    status = np.array(result.status)
    assert status[0] in ("infeasible", "timeout") and result.relative_misfit > 0.05
    assert (status[1:] == "unique").sum() >= 15
    assert exact_columns(result, instance)[status == "unique"].all()


def test_a_noise_mode_search_stops_once_its_candidates_stop_improving_and_returns_what_the_full_search_does(monkeypatch):
    """Under heavy noise on the sums no candidate improves after the convex phase: stopping on progress must save
    the iterations and change nothing it returns."""
    import attacks.projection_search as search

    instance = make_instance(60, 600, 10, 0.1, seed=0)
    noisy = instance.aggregates + 2.0 * np.random.default_rng(1).standard_normal(instance.aggregates.shape)
    geometry = Geometry(column_space(noisy, 60, True), instance.counts, 10)
    steps = []
    step = search._SubspaceStep.__call__
    monkeypatch.setattr(search._SubspaceStep, "__call__", lambda self, *a: steps.append(1) or step(self, *a))
    answers = {}
    for patience in (None, search.NOISE_PROGRESS_CHECKS):
        steps.clear()
        answers[patience] = search.projection_search(geometry, np.arange(60), 0.35, progress_patience=patience)
        answers[patience] += (len(steps),)
    (full, full_fit, full_steps), (early, early_fit, early_steps) = answers.values()
    assert np.array_equal(full, early) and np.array_equal(full_fit, early_fit)
    assert full_steps == 600 and early_steps <= 100 + 25 * (search.NOISE_PROGRESS_CHECKS + 2)


@pytest.mark.parametrize("window", [5, 10, 30])
@pytest.mark.parametrize("columns", [1, 7, 80, 400])
def test_rounding_ranks_like_a_stable_sort_on_every_path(window, columns):
    """descending_ranks picks a path by size (one sort of contiguous rows, comparisons, a strided sort); every
    path must rank as a stable argsort of -scores does, ties (clipped scores, closed rounds at -inf) by position."""
    rng = np.random.default_rng(window * 1000 + columns)
    blocks = np.round(rng.standard_normal((12, window, columns)), 1)
    blocks[rng.random(blocks.shape) < 0.2] = -np.inf
    order = np.argsort(-blocks, axis=1, kind="stable")
    expected = np.empty_like(order)
    np.put_along_axis(expected, order, np.arange(window)[None, :, None], axis=1)
    assert np.array_equal(descending_ranks(blocks), expected)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_users_with_identical_counts_get_both_columns_and_are_ambiguous(seed):
    """Two users whose counts are equal window for window fit each other's column: every stage, user by user, gave
    both the same column and lost the other (misfit 0.24). The totals leave exactly the lacking column."""
    rng = np.random.default_rng(seed)
    n_users, n_rounds, window = 10, 40, 10
    participants = (rng.random((n_rounds, n_users)) < 0.5).astype(np.int64)
    for w in range(n_rounds // window):  # user 9: user 5's rounds shuffled within each window
        rounds = slice(w * window, (w + 1) * window)
        participants[rounds, 9] = rng.permutation(participants[rounds, 5])
    aggregates = participants @ rng.normal(size=(n_users, 100))
    counts = participants.reshape(n_rounds // window, window, n_users).sum(axis=1).T
    result = disaggregate(aggregates, counts, window, participants.sum(axis=1), AttackSettings(time_limit=5.0))
    assert sorted(map(tuple, result.participants.T.tolist())) == sorted(map(tuple, participants.T.tolist()))
    assert result.status[5] == result.status[9] == "ambiguous" and result.alternatives[5] >= 2
    assert [s for k, s in enumerate(result.status) if k not in (5, 9)] == ["unique"] * 8
    assert result.relative_misfit < 1e-9


def test_users_who_share_their_rounds_keep_one_proven_column():
    """Members of a fixed group take part in the same rounds: the same column for both is the truth, and the totals
    confirm it rather than offer another, so neither becomes ambiguous."""
    rng = np.random.default_rng(0)
    participants = (rng.random((40, 10)) < 0.5).astype(np.int64)
    participants[:, 9] = participants[:, 5]
    aggregates = participants @ rng.normal(size=(10, 100))
    counts = participants.reshape(4, 10, 10).sum(axis=1).T
    result = disaggregate(aggregates, counts, 10, participants.sum(axis=1), AttackSettings(time_limit=5.0))
    assert np.array_equal(result.participants, participants)
    assert "ambiguous" not in (result.status[5], result.status[9])
