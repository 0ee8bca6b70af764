"""The joint stage: every user at once, sharing one LP model and everything already proven.

What users share, and how this stage uses it:
- per-round totals: r = totals - (sum of proven columns) bounds every remaining
  column (p <= r). A round whose r_t is 0 is 0 for every remaining user, and one
  whose r_t equals the number of remaining users who may still be in it is 1 for
  all of them. With the window counts (a window whose count is already met is 0
  elsewhere; one that needs every free round gets them all) this propagates like
  a Sudoku, and every newly proven column restarts it (peeling);
- one constraint matrix: each user's LP relaxation differs only in bounds, so
  one HiGHS model is re-solved from the previous basis (attacks/linear_program.py);
- the search's candidates steer each LP (minimise the distance to them);
- users still without a column are searched again together, their columns
  coupled through what the totals leave once every other column is taken off
  (attacks/projection_search.py), before any per-user program runs.
A candidate is proven `unique` when the LP point farthest from it lies within L1
distance 1 (no other binary point fits); when a second binary point is found
the user is `ambiguous` (the observations do not single out one column). Only
proven columns are peeled, so one wrong guess never spreads.
"""

import time
from dataclasses import dataclass, field

import numpy as np

from attacks.geometry import Geometry
from attacks.linear_program import UNIQUE_BELOW, Answer, Limits, SharedProgram, UserBounds, integral, only_point
from attacks.settings import AttackSettings


@dataclass
class JointState:
    """Per-user knowledge, (T, n) masks: rounds proven 1 (lower) and rounds not proven 0 (upper)."""

    lower: np.ndarray
    upper: np.ndarray
    proven: np.ndarray  # (n,) bool: column proven (status unique)
    alternatives: np.ndarray  # (n,) int: distinct binary columns found for the user
    events: dict[str, int] = field(default_factory=dict)

    def count(self, event: str, amount: int = 1) -> None:
        self.events[event] = self.events.get(event, 0) + amount


@dataclass(frozen=True)
class JointOutcome:
    """What the joint stage adds to a disaggregation: alternatives found per user, its event counts, whether
    the clock safety net stopped it, and whether propagation met a contradiction (no set of binary columns meets
    the counts, the totals and the columns proven so far: the observations are inconsistent)."""

    alternatives: np.ndarray | None = None
    events: dict[str, int] = field(default_factory=dict)
    clock_limited: bool = False
    contradiction: bool = False


def initial_state(geometry: Geometry) -> JointState:
    n_users = geometry.counts.shape[0]
    lower = np.zeros((geometry.n_rounds, n_users), dtype=bool)
    upper = np.ones((geometry.n_rounds, n_users), dtype=bool)
    for user in range(n_users):
        zero, one = geometry.fixed_rounds(user)
        lower[one, user] = True
        upper[zero, user] = False
    return JointState(lower, upper, np.zeros(n_users, dtype=bool), np.zeros(n_users, dtype=np.int64))


def propagate(geometry: Geometry, state: JointState, totals: np.ndarray | None, columns: np.ndarray) -> bool:
    """Fix every round that the counts, the totals and the proven columns force; False on a contradiction."""
    low = geometry.counts.T
    high = geometry.high.T
    index = geometry.window_index
    while True:
        before = int(state.lower.sum()) + int(state.upper.sum())
        ones = geometry.window_sums(state.lower.astype(np.int64))
        possible = geometry.window_sums(state.upper.astype(np.int64))
        if np.any(ones > high) or np.any(possible < low):
            return False
        met = (ones >= high)[index]  # the window's count is reached: its other rounds are 0
        state.upper &= ~met | state.lower
        needs_all = (possible <= low)[index]  # every round still possible is needed
        state.lower |= needs_all & state.upper
        if totals is not None:
            open_users = ~state.proven
            remaining = totals - columns[:, state.proven].sum(axis=1)
            sure = state.lower[:, open_users].sum(axis=1)
            maybe = state.upper[:, open_users].sum(axis=1)
            if np.any(sure > remaining) or np.any(maybe < remaining):
                return False
            full = sure == remaining  # the round's participants are all known: the rest are 0
            state.upper[np.ix_(full, open_users)] &= state.lower[np.ix_(full, open_users)]
            everyone = maybe == remaining  # every user who may be in the round is
            state.lower[np.ix_(everyone, open_users)] |= state.upper[np.ix_(everyone, open_users)]
        if int(state.lower.sum()) + int(state.upper.sum()) == before:
            return True


class JointSolver:
    """Runs the joint stage on the users the earlier stages left unproven."""

    def __init__(self, geometry: Geometry, totals: np.ndarray | None, settings: AttackSettings) -> None:
        self.geometry = geometry
        self.certifying = settings.certify
        self.totals = totals
        self.limits = Limits(settings.simplex_iterations, settings.nodes, settings.mip_checks, settings.time_limit)
        self.tolerance = settings.accepted_residual
        self.deadline = None if settings.budget is None else time.time() + settings.budget
        self.max_model_entries = settings.max_model_entries
        self.program: SharedProgram | None = None
        self.clock_bit = False
        self.lp_work_left = settings.lp_work  # entry-iterations the stage's LPs may still spend (None: no cap)
        self.search_work_left = settings.search_work  # basis-entry column-iterations its restarts may still spend
        self.work_bit = False
        self.certificate_nodes = settings.certificate_nodes  # left for certificates by branching, all users together
        self.device = settings.device  # where the batched search restarts iterate

    def _shared(self) -> SharedProgram:
        """The shared LP model; its next solve may spend no more than the stage's LP work left."""
        if self.program is None:
            self.program = SharedProgram(self.geometry.complement, self.geometry.window_matrix, self.limits)
        if self.lp_work_left is not None:
            self.program.cap_iterations(self.lp_work_left // self.program.entries)
        return self.program

    def fits(self) -> bool:
        g = self.geometry
        return (g.n_rounds - g.rank) * g.n_rounds <= self.max_model_entries

    def out_of_time(self) -> bool:
        """Whether the stage must stop: its LP work (lp_work) is spent, the same on every machine, or
        the clock safety net (budget) bit, which is reported. One solve stopped by its own clock (time_limit)
        is reported (clock_bit) but stops only that solve, not the stage."""
        if self.lp_work_left is not None and self.lp_work_left <= 0:
            self.work_bit = True
            return True
        if self.deadline is not None and time.time() >= self.deadline:
            self.clock_bit = True
            return True
        return False

    def afford_search(self, columns: int, iterations: int) -> bool:
        """Whether a batched search of `columns` columns for up to `iterations` iterations fits the search work
        left; if so it is charged in full (patience may stop it sooner), so the same shapes stop at the same
        restart on every machine. An iteration of one column projects it onto col(A): its cost is the (T x rank)
        basis's entries."""
        cost = columns * iterations * self.geometry.basis.size
        if self.search_work_left is not None:
            if cost > self.search_work_left:
                self.work_bit = True
                return False
            self.search_work_left -= cost
        return True

    def charge(self, work: int) -> None:
        """Charge LP work (simplex iterations x model entries) to the stage's work limit (lp_work)."""
        if self.lp_work_left is not None:
            self.lp_work_left -= work

    def spent(self, answer: Answer) -> Answer:
        """Charge a solve's work to the stage's work limit and note a clock stop."""
        self.charge(answer.work)
        if answer.status == "clock":
            self.clock_bit = True
        return answer

    def bounds(self, state: JointState, user: int) -> UserBounds:
        g = self.geometry
        return UserBounds(g.counts[user], g.high[user], state.lower[:, user].astype(float), state.upper[:, user].astype(float))

    def valid(self, state: JointState, user: int, column: np.ndarray) -> bool:
        """Binary, inside the user's bounds and counts, inside col(A)."""
        g = self.geometry
        if column is None or not integral(column):
            return False
        column = np.round(column)
        sums = g.window_matrix @ column
        inside = np.all(column >= state.lower[:, user]) and np.all(column <= state.upper[:, user])
        counts = np.all(sums >= g.counts[user]) and np.all(sums <= g.high[user])
        nonempty = column.sum() > 0 or g.high[user].sum() == 0
        return bool(inside and counts and nonempty and g.residual(column[:, None])[0] <= self.tolerance)

    def certify(self, state: JointState, user: int, column: np.ndarray, search_alternative: bool) -> str:
        """'unique' (proven), 'ambiguous' (another binary point found) or 'found' (neither, within the limits)."""
        if not self.geometry.exact or not self.certifying:  # count bounds: the certificate's polytope is no proof
            return "found"
        free = state.lower[:, user] != state.upper[:, user]
        verdict, work = only_point(self.geometry.basis, self.geometry.window_basis, free, column, self.limits)
        self.charge(work)
        if verdict == "unique":
            state.count("certified by LP (only point)")
            return "unique"
        if self.out_of_time():
            return "found"
        bounds = self.bounds(state, user)
        answer, distance = self._shared().farthest(bounds, column)
        self.spent(answer)
        if answer.status == "optimal" and distance < UNIQUE_BELOW:
            state.count("certified by LP")
            return "unique"
        if answer.status == "optimal" and integral(answer.x) and self.valid(state, user, answer.x):
            state.count("second point from LP")
            state.alternatives[user] = max(state.alternatives[user], 2)
            return "ambiguous"
        if not search_alternative or self.out_of_time():
            return "found"
        if self.certificate_nodes <= 0:
            state.count("certificate by branching skipped: node budget spent")
            return "found"
        other = self.spent(
            self._shared().binary(bounds, np.zeros(len(column)), exclude=(column,), nodes=self.certificate_nodes))
        self.certificate_nodes -= max(other.nodes, 1)
        if other.status == "infeasible":
            state.count("certified by branch and bound")
            return "unique"
        if other.x is not None and self.valid(state, user, other.x):
            state.count("second point from branch and bound")
            state.alternatives[user] = max(state.alternatives[user], 2)
            return "ambiguous"
        return "found"

    def relax(self, state: JointState, user: int, guess: np.ndarray) -> np.ndarray | str | None:
        """The LP relaxation's point (rounded) where it is a valid column; "infeasible" where the bounds admit none."""
        return self._column(state, user, self._shared().relax(self.bounds(state, user), 1.0 - 2.0 * guess), np.round)

    def branch(self, state: JointState, user: int, guess: np.ndarray) -> np.ndarray | str | None:
        """The integer program's point where it is a valid column; "infeasible" where the bounds admit none."""
        return self._column(state, user, self._shared().binary(self.bounds(state, user), 1.0 - 2.0 * guess), np.asarray)

    def _column(self, state: JointState, user: int, answer: Answer, finish) -> np.ndarray | str | None:
        self.spent(answer)
        if answer.status == "infeasible":
            return "infeasible"
        return finish(answer.x) if answer.x is not None and self.valid(state, user, answer.x) else None


def second_points(geometry: Geometry, solver: "JointSolver", state: JointState, columns: np.ndarray, users: list[int],
                  restarts: int = 3, iterations: int = 300) -> list[int]:
    """Batched evidence of ambiguity: restart the projection search away from each user's column.

    Starts are pushed away from the known column (seeded, so the same inputs give the same starts). A
    restart that lands on another valid binary point proves the user `ambiguous`. Returns those users.
    """
    from attacks.projection_search import projection_search

    rng = np.random.default_rng(0)
    users = np.array(users, dtype=np.int64)
    ambiguous: list[int] = []
    for _ in range(restarts):
        if len(users) == 0 or not solver.afford_search(len(users), iterations):
            break
        known = columns[:, users]
        start = np.clip(1.0 - known + 0.3 * rng.standard_normal(known.shape), 0.0, 1.0) * state.upper[:, users]
        start = np.maximum(start, state.lower[:, users])
        found, residual = projection_search(geometry, users, solver.tolerance, iterations=iterations, start=start,
                                            device=solver.device)
        keep = []
        for k, user in enumerate(users):
            other = found[:, k]
            if residual[k] <= solver.tolerance and not np.array_equal(other, known[:, k]) and solver.valid(state, user, other):
                state.alternatives[user] = max(state.alternatives[user], 2)
                ambiguous.append(int(user))
            else:
                keep.append(k)
        users = users[keep]
    return ambiguous


def restart_search(geometry: Geometry, solver: "JointSolver", state: JointState, users: list[int],
                   remaining: np.ndarray | None = None) -> dict[int, np.ndarray]:
    """Batched: restart the projection search for users it left without a column; returns the valid columns found.

    The search's answer depends on where it starts; restarts from seeded random points inside each user's
    bounds, over all of these users at once, cost far less than one integer program each. With `remaining`
    (the totals minus every other user's column) the restarts are coupled (attacks/projection_search.py):
    longer runs that peel each column as it fits. Restarts go on until `barren` in a row find nobody (or
    `restarts` in all); iterations, restarts and the stage's `search_work`, not the clock, bound the work (the
    clock budget is checked between restarts).
    """
    from attacks.projection_search import projection_search

    coupled = remaining is not None
    # Coupled restarts keep finding columns long after uncoupled ones stop (each peeled column helps the rest):
    # on make_instance(50, 100, 10, 0.5), seeds 0-7, 3000 iterations a restart and 6 barren restarts completed
    # all eight; 20000 iterations a restart (fewer restarts) five, 3 barren restarts seven.
    restarts, barren, iterations, patience = (60, 6, 3000, 100) if coupled else (30, 3, 300, 20)
    rng = np.random.default_rng(1)
    users = np.array(users, dtype=np.int64)
    found: dict[int, np.ndarray] = {}
    misses = 0
    for _ in range(restarts):
        if len(users) == 0 or misses >= barren or solver.out_of_time():  # `barren` restarts in a row found nobody
            break
        if not solver.afford_search(len(users), iterations):
            break
        share = (geometry.counts[users].T / geometry.window)[geometry.window_index]
        start = np.clip(share + 0.3 * rng.standard_normal(share.shape), 0.0, 1.0) * state.upper[:, users]
        start = np.maximum(start, state.lower[:, users])
        columns, residual = projection_search(
            geometry, users, solver.tolerance, iterations=iterations, patience=patience, start=start,
            remaining=remaining, allowed=state.upper[:, users] if coupled else None, device=solver.device,
        )
        keep = []
        for k, user in enumerate(users):
            if residual[k] <= solver.tolerance and solver.valid(state, user, columns[:, k]):
                found[int(user)] = columns[:, k]
                if coupled:
                    remaining = remaining - columns[:, k]
            else:
                keep.append(k)
        misses = misses + 1 if len(keep) == len(users) else 0
        users = users[keep]
    return found


def _remaining(totals: np.ndarray | None, columns: np.ndarray, status: list[str], users: list[int]) -> np.ndarray | None:
    """What `users`' columns must sum to: the totals minus every other user's column, proven or candidate.

    Candidates are not proven, so this only steers the search (every column it returns is checked on its own).
    None without totals, when some user outside `users` has no column either, or when the other columns
    already exceed the totals somewhere (some candidate is wrong)."""
    if totals is None:
        return None
    others = np.array([s in ("unique", "found", "ambiguous") for s in status])
    if np.count_nonzero(~others) != len(users) or others[users].any():
        return None
    remaining = totals - columns[:, others].sum(axis=1)
    return remaining if remaining.min() >= 0 else None


def fixed_columns(state: JointState) -> np.ndarray:
    """Users whose every round is decided by propagation."""
    return np.all(state.lower == state.upper, axis=0)


def _signature(state: JointState, user: int) -> int:
    """Changes whenever the user's bounds tighten: a failed attempt is worth repeating only then."""
    return int(state.lower[:, user].sum()) * (state.lower.shape[0] + 1) + int(state.upper[:, user].sum())


def run_joint(geometry: Geometry, progress, totals: np.ndarray | None, settings, log=None) -> JointOutcome:
    """Peel, relax, branch and certify until nothing changes; updates `progress` (the caller's per-user state)."""

    solver = JointSolver(geometry, totals if geometry.exact else None, settings)
    state = initial_state(geometry)
    n_users = geometry.counts.shape[0]
    columns = progress.columns
    status = progress.status
    for user in range(n_users):
        if status[user] == "unique":
            state.proven[user] = True
            state.lower[:, user] = columns[:, user] > 0.5
            state.upper[:, user] = columns[:, user] > 0.5
    if not solver.fits():
        state.count("joint stage skipped: model too large")
        return JointOutcome(state.alternatives, state.events, False)
    tried: dict[tuple[str, int], int] = {}

    def attempt(stage: str, user: int) -> bool:
        """Whether `stage` is worth running for `user` now (never tried at these bounds)."""
        key = (stage, user)
        signature = _signature(state, user)
        if tried.get(key) == signature:
            return False
        tried[key] = signature
        return True

    def settle(user: int, column: np.ndarray, verdict: str) -> None:
        started = time.perf_counter()
        columns[:, user] = column
        progress.residual[user] = geometry.residual(column[:, None])[0]
        status[user] = verdict
        if verdict == "unique":
            state.proven[user] = True
            state.lower[:, user] = column > 0.5
            state.upper[:, user] = column > 0.5
        elif state.alternatives[user] == 0:
            state.alternatives[user] = 1
        progress.seconds[user] += time.perf_counter() - started

    def timed(user: int, work):
        started = time.perf_counter()
        try:
            return work()
        finally:
            progress.seconds[user] += time.perf_counter() - started

    def prove(user: int, column: np.ndarray, branching: bool) -> bool:
        """Certify a user's candidate and record the verdict; True when it is proven unique."""
        verdict = timed(user, lambda: solver.certify(state, user, column, branching))
        settle(user, column, verdict)
        return verdict == "unique"

    def solve_open(open_users: list[int], stage: str, solve, found_by: str) -> int:
        """Users still without a candidate, one `solve` each (relaxation or branch and bound); how many got proven.

        A column found here gets the LP certificates only: the branch-and-bound certificate waits until a whole
        pass proves nobody new, so it never holds up finding the other users' columns."""
        proven = 0
        for user in open_users:
            if status[user] == "timeout" and attempt(stage, user) and not solver.out_of_time():
                x = timed(user, lambda: solve(state, user, progress.guess[:, user]))
                if isinstance(x, str):
                    status[user] = "infeasible"
                elif x is not None:
                    state.count(found_by)
                    proven += prove(user, x, False)
        return proven

    certify_by_branching = False
    started = time.perf_counter()

    def say(stage: str) -> None:
        if log is not None:
            tally = {s: status.count(s) for s in ("unique", "ambiguous", "found", "timeout", "infeasible") if status.count(s)}
            log(f"joint {time.perf_counter() - started:7.1f} s after {stage}: {tally}")

    contradiction = False
    while True:
        if not propagate(geometry, state, solver.totals, columns):
            state.count("contradiction: the observations admit no such columns")
            contradiction = True
            break
        newly = 0
        for user in np.flatnonzero(fixed_columns(state) & ~state.proven):
            column = state.lower[:, user].astype(np.float64)
            if solver.valid(state, user, column):
                state.count("fixed by propagation")
                settle(user, column, "unique")
                newly += 1
        if newly:
            say("propagation")
            continue
        # Most constrained users first: they are the cheapest to settle, and each proven column helps the rest.
        free_rounds = (state.upper & ~state.lower).sum(axis=0)
        open_users = sorted((u for u in range(n_users) if not state.proven[u] and status[u] != "infeasible"),
                            key=lambda u: (int(free_rounds[u]), u))
        if not open_users or solver.out_of_time():
            break
        if settings.time_limit <= 0:  # no second for any solve: the clock stopped the stage, and the report says so
            solver.clock_bit = True
            break
        # 1. users without a candidate: batched restarts of the search, before any per-user program (they cost
        # far less, and coupled through the totals they need every other candidate in hand)
        lost = [u for u in open_users if status[u] == "timeout" and attempt("search", u)]
        if lost and not solver.out_of_time():
            started_restarts = time.perf_counter()
            found = restart_search(geometry, solver, state, lost, _remaining(solver.totals, columns, status, lost))
            progress.seconds[lost] += (time.perf_counter() - started_restarts) / len(lost)
            for user, x in found.items():
                state.count("found by search restarts")
                settle(user, x, "found")
            say("search restarts for users without a column")
        # 2. candidates in hand: certify them (the LP certificate; a second point makes them ambiguous)
        for user in open_users:
            if status[user] in ("found", "ambiguous") and not solver.out_of_time():
                column = columns[:, user]
                if not solver.valid(state, user, column):  # peeling ruled the candidate out
                    state.count("candidate ruled out by peeling")
                    status[user] = "timeout"
                    columns[:, user] = 0.0  # a user without a column writes none
                    continue
                if attempt("certify" + ("+branch" if certify_by_branching else ""), user):
                    newly += prove(user, column, certify_by_branching)
        say("certificates")
        if newly:
            continue
        # 2b. batched restarts of the search: a second binary point makes a candidate ambiguous
        unproven = [u for u in open_users if status[u] == "found" and attempt("restart", u)]
        if unproven and solver.certifying and geometry.exact and not solver.out_of_time():
            started_restarts = time.perf_counter()
            for user in second_points(geometry, solver, state, columns, unproven):
                status[user] = "ambiguous"
                state.count("second point from search restarts")
            progress.seconds[unproven] += (time.perf_counter() - started_restarts) / len(unproven)
            say("search restarts")
        # 3. users without a candidate: the LP relaxation, steered towards the search's guess;
        # 4. then branch and bound (node limit); once a whole pass proves nobody new, certificates may branch too
        for stage, solve, found_by in (
            ("relax", solver.relax, "found by LP"),
            ("branch", solver.branch, "found by branch and bound"),
        ):
            newly += solve_open(open_users, stage, solve, found_by)
            say("LP relaxations" if stage == "relax" else "branch and bound")
            if newly:
                break
        if newly:
            continue
        if not certify_by_branching:
            certify_by_branching = True
            continue
        break
    if solver.work_bit:
        state.count("work limit spent: the stage stopped")
    if solver.clock_bit:
        state.count("clock safety net stopped work")
    return JointOutcome(state.alternatives, state.events, solver.clock_bit, contradiction)
