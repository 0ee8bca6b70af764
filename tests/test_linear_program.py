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
