"""How hard the attacker tries: a light module, so suites load without the solver stack."""

from dataclasses import dataclass


@dataclass(frozen=True)
class AttackSettings:
    """How hard the attacker tries. `noise` switches to rank truncation and a minimised residual."""

    noise: bool = False
    tolerance: float | None = None  # accepted relative residual; default 1e-6 exact, 0.35 under noise
    time_limit: float = 60.0  # seconds per user for each integer program or certificate
    budget: float | None = None  # seconds for all integer programs and certificates together; None: no cap
    certify: bool = True
    search_iterations: int = 600
    adaptive: bool = False  # read the defense's public parameters (attacks/adaptive.py)

    @property
    def accepted_residual(self) -> float:
        if self.tolerance is not None:
            return self.tolerance
        return 0.35 if self.noise else 1e-6
