"""Check a defense before a suite runs: every hook on a small protocol, twice with the same seed."""

from collections.abc import Callable

import numpy as np

from benchmark.errors import BenchmarkError
from benchmark.observation import Analytics
from defenses.accounting import Privacy
from defenses.base import Defense
from defenses.guard import GuardedDefense

USERS, ROUNDS, WINDOW, SAMPLES = 4, 6, 2, 4


def _trace(defense: Defense, users: int = USERS) -> list[tuple[str, object]]:
    """(hook, output) for every hook call of a small fixed protocol of `users` users, in call order."""
    import torch  # a task's dependency: loaded only when a defense is validated

    from benchmark.models import build_model
    from benchmark.scenario import Scenario

    guarded = GuardedDefense(defense)
    scenario = Scenario(n_users=users, n_rounds=ROUNDS, window=WINDOW, samples_per_user=SAMPLES,
                        local_training="fedavg", batch_size=2)
    model = build_model(scenario.model, (1, 2, 2), 3, seed=0)
    data = np.random.default_rng(1)
    x, y = torch.from_numpy(data.standard_normal((SAMPLES, 1, 2, 2))), torch.from_numpy(data.integers(0, 3, SAMPLES))
    updates = data.standard_normal((users, sum(p.numel() for p in model.parameters())))
    rng = np.random.default_rng(0)
    trace: list[tuple[str, object]] = [("public_parameters", guarded.public_parameters())]
    checked_in = np.zeros((ROUNDS, users), dtype=bool)
    for t in range(ROUNDS):
        selected = (np.arange(users) + t) % 2 == 0
        contributing, checked_in[t] = guarded.choose_participants(selected, t, rng)
        trace.append(("choose_participants", (contributing, checked_in[t].copy())))
        aggregate = np.zeros(updates.shape[1])
        for user in np.flatnonzero(contributing):
            own = guarded.local_update(model, x, y, scenario, rng)
            trace.append(("local_update", own))
            sent = guarded.transform_update(updates[user] if own is None else own, rng)
            trace.append(("transform_update", sent))
            aggregate += sent
        trace.append(("padded_uploads", guarded.padded_uploads(2, updates.shape[1], rng)))  # as if two were padded
        received = guarded.transform_aggregate(aggregate, rng)
        trace.append(("transform_aggregate", received))
        trace.append(("transform_step", guarded.transform_step(received, rng)))
    trace.append(("transform_analytics", guarded.transform_analytics(checked_in, WINDOW, rng)))
    trace.append(("privacy", guarded.privacy(ROUNDS, 0.5, int(checked_in.sum(axis=0).max()), 1e-5)))
    trace.append(("public_parameters", guarded.public_parameters()))  # after a run, as the attacker reads them
    return trace


def _same(a: object, b: object) -> bool:
    """Equal bit for bit (NaN equals NaN), through tuples, lists, dicts, Analytics and Privacy."""
    if isinstance(a, Analytics) and isinstance(b, Analytics):
        return _same((a.counts, a.window, a.totals), (b.counts, b.window, b.totals))
    if isinstance(a, Privacy) and isinstance(b, Privacy):
        return _same(a.columns(), b.columns())
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[key], b[key]) for key in a)
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    return type(a) is type(b) and (a == b or a != a and b != b)


def validate_defense(defense_factory: Callable[[], Defense]) -> dict:
    """Build the defense twice and run every hook with the same seed; BenchmarkError naming the first bad hook.

    Bad: an output of the wrong shape or dtype, NaN or infinite values (checked
    by GuardedDefense), a hook that raises, or outputs that differ between the
    two same-seed runs (randomness not drawn from the rng passed in). Returns the public parameters after the
    run of USERS users.
    """
    defense = _build(defense_factory)
    trace = _trace(defense)
    for (hook, a), (_, b) in zip(trace, _trace(_build(defense_factory))):
        if not _same(a, b):
            raise BenchmarkError(f"defense {defense.name!r}: hook {hook} is not deterministic: the same seed gave different outputs")
    return trace[-1][1]


def published_after_run(defense_factory: Callable[[], Defense], users: int) -> dict:
    """The public parameters after the validation protocol run with `users` users (its hooks checked as there):
    whether published groups follow the number of users or are fixed."""
    return _trace(_build(defense_factory), users)[-1][1]


def _build(defense_factory: Callable[[], Defense]) -> Defense:
    try:
        return defense_factory()
    except BenchmarkError:
        raise
    except (Exception, SystemExit) as error:  # a user's constructor: one line, never a traceback or an exit
        raise BenchmarkError(f"defense could not be built: {type(error).__name__}: {error}") from None
