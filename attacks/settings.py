"""How hard the attacker tries: a light module, so suites load without the solver stack."""

from dataclasses import asdict, dataclass

INVERT_AT = ("every-horizon", "longest-horizon")
# Settings added after entries were made, with the value that gives the attack those entries were scored with:
# at that value a setting stays out of task keys, so older entries keep their keys (and `verify` finds their tasks)
LATER_SETTINGS = {"lattice": False}


@dataclass(frozen=True)
class AttackSettings:
    """How hard the attacker tries. `noise` switches to rank truncation and a minimised residual."""

    noise: bool = False
    tolerance: float | None = None  # accepted relative residual; default 1e-6 exact, 0.35 under noise
    time_limit: float = 60.0  # clock safety net per LP or integer program (seconds); answers come from the work limits
    budget: float | None = None  # clock safety net for the joint stage as a whole (seconds); None: no cap
    # work limits for the joint stage as a whole, so that it stops at the same point on every machine (None: no
    # cap): lp_work, entry-iterations (simplex iterations x the nonzero entries of the model they ran on, since an
    # iteration's cost grows with the model) of all its LPs and integer programs together (an integer program's
    # count includes its cuts and heuristics), checked between solves; search_work, basis-entry
    # column-iterations (columns x iterations x the entries of the T x rank basis each iteration projects onto)
    # of its batched search restarts, checked before each restart; max_model_entries, the largest shared LP
    # model ((T - rank) x T dense entries) the stage builds: beyond it the stage is skipped
    lp_work: int | None = None
    search_work: int | None = None
    max_model_entries: int = 40_000_000
    simplex_iterations: int = 20_000  # work limit per LP solve: with `nodes`, it decides the answers
    nodes: int = 200  # work limit: branch-and-bound nodes per integer program
    # work limit: HiGHS's limit checks per integer program (attacks/linear_program.py), which bound its root's
    # cuts and heuristics; without it a root under rounded counts ran 35000 simplex iterations into the clock
    mip_checks: int = 200
    # work limit: branch-and-bound nodes that certificates by branching may spend, all users together (each
    # still stops at `nodes`); without it a shape whose columns are all found but unprovable spends `nodes`
    # on every user (about 45 s at n = 50, T = 100, K = 10, q = 0.5 for 4 proofs in 50; 500 nodes cost about 2 s there)
    certificate_nodes: int = 500
    certify: bool = True
    search_iterations: int = 600
    # the lattice stage (attacks/lattice.py) for users the search left, where T <= attacks.lattice.MAX_ROUNDS
    lattice: bool = True
    adaptive: bool = False  # read the defense's public parameters (attacks/adaptive.py)
    inverted_users: int = 0  # invert a seeded sample of this many recovered updates (0: every one)
    invert_at: str = "every-horizon"  # or "longest-horizon": a cell's shorter horizons run no inversion
    invert: bool = True  # set per task from invert_at by the suite's expansion; False: inference columns NaN
    # where the batched searches iterate (attacks/search_device.py): "cpu" (numpy, the reference: the same answer
    # on every machine) or a torch device such as "cuda"; set by the run's --device, not by suites
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.invert_at not in INVERT_AT:
            raise ValueError(f"invert_at must be one of {', '.join(INVERT_AT)}, got {self.invert_at!r}")

    def keyed(self) -> dict:
        """The settings as task keys hash them: every field, less LATER_SETTINGS at their earlier value."""
        return {k: v for k, v in asdict(self).items() if not (k in LATER_SETTINGS and v == LATER_SETTINGS[k])}

    @property
    def accepted_residual(self) -> float:
        if self.tolerance is not None:
            return self.tolerance
        return 0.35 if self.noise else 1e-6
