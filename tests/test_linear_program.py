import time

import highspy
import numpy as np

from attacks.geometry import Geometry, column_space
from attacks.linear_program import Limits, SharedProgram, UserBounds
from benchmark.synthetic import make_instance


def test_the_clock_safety_net_bounds_each_solve_not_all_solves_together():
    """HiGHS measures time_limit against a model's run time summed over its solves: the shared model, re-solved
    user after user, once answered every solve past the limit with the clock status at once (no LP ran)."""
    instance = make_instance(50, 100, 10, 0.5, seed=0)
    geometry = Geometry(column_space(instance.aggregates, 50, False), instance.counts, 10)
    seconds = 0.2
    program = SharedProgram(geometry.complement, geometry.window_matrix, Limits(seconds=seconds))
    rng = np.random.default_rng(0)
    statuses = []
    for solve in range(5000):
        user = solve % 50
        zero, one = geometry.fixed_rounds(user)
        bounds = UserBounds(geometry.counts[user], geometry.high[user], one.astype(float), (~zero).astype(float))
        statuses.append(program.relax(bounds, rng.standard_normal(geometry.n_rounds)).status)
        if program.model.getRunTime() > 2 * seconds and len(statuses) > 20:
            break
    assert program.model.getRunTime() > 2 * seconds  # the solves together passed the limit twice over
    assert statuses[-10:] == ["optimal"] * 10  # and the latest ones still ran


def _certificate(checks: int) -> tuple[str, int, int]:
    """Branch and bound for a second binary point of a user who has none (an infeasibility proof)."""
    instance = make_instance(50, 100, 10, 0.5, seed=0)
    geometry = Geometry(column_space(instance.aggregates, 50, False), instance.counts, 10)
    limits = Limits(checks=checks, nodes=10**6, seconds=100)
    program = SharedProgram(geometry.complement, geometry.window_matrix, limits)
    zero, one = geometry.fixed_rounds(3)
    bounds = UserBounds(geometry.counts[3], geometry.high[3], one.astype(float), (~zero).astype(float))
    answer = program.binary(bounds, np.zeros(100), exclude=(instance.participants[:, 3].astype(float),))
    return answer.status, answer.nodes, answer.iterations


def test_an_integer_program_stops_at_its_check_cap_at_the_same_point_on_a_slower_machine(monkeypatch):
    """HiGHS's limit checks come at fixed points of its work: a cap on them stops the root's cuts and heuristics
    and the branching at the same node and iteration whatever each check costs, where a clock would not."""
    assert _certificate(10**6)[0] == "infeasible"  # the proof exists, 2803 nodes away
    capped = _certificate(60)
    assert capped[0] == "limit" and 0 < capped[1] < 2803
    register = highspy.Highs.setCallback

    def slowly(model, callback, data):  # a slower machine: every check takes 2 ms longer, the work is the same
        def slow(*args):
            time.sleep(0.002)
            return callback(*args)
        return register(model, slow, data)

    monkeypatch.setattr(highspy.Highs, "setCallback", slowly)
    assert _certificate(60) == capped
    assert _certificate(200)[1:] > capped[1:]  # more checks, more work


def test_an_lp_solve_is_charged_by_its_model_size_and_capped_by_the_work_left():
    """An iteration's cost grows with the model (8.6 ms on standard's 1100 x 1200 rows at horizon 12, about
    0.2 ms at horizon 3): work is iterations x entries, and a solve may not spend more than the stage has left."""
    instance = make_instance(50, 200, 10, 0.5, seed=0)
    geometry = Geometry(column_space(instance.aggregates, 50, False), instance.counts, 10)
    program = SharedProgram(geometry.complement, geometry.window_matrix)
    zero, one = geometry.fixed_rounds(0)
    bounds = UserBounds(geometry.counts[0], geometry.high[0], one.astype(float), (~zero).astype(float))
    cost = np.random.default_rng(0).standard_normal(geometry.n_rounds)
    free = program.relax(bounds, cost)
    assert free.status == "optimal" and free.iterations > 5
    assert free.work == free.iterations * program.entries > 0
    program.cap_iterations(5)
    capped = program.relax(bounds, -cost)
    assert capped.status == "limit" and capped.iterations <= 5 and capped.work <= 5 * program.entries
