"""Our disaggregation attack against the paper's per-user integer program, side by side, on fixed synthetic instances.

    .venv/bin/python benchmarks/disaggregation.py [--instances a,b,f] [--methods attack,uncoupled,nolattice,baseline] [--baseline-time-limit 60]
        [--baseline-users 10] [--workers 2] [--device cpu|cuda] [--seed 0] [--users N] [--rounds T]

Methods: `attack` (attacks.disaggregation.disaggregate), `uncoupled` (the same with the joint stage's
search restarts not coupled through the totals: the gain of that coupling, side by side), `nolattice` (the same
without the lattice stage, attacks/lattice.py: that stage's gain) and `baseline`.

Prints one Markdown table on stdout (progress on stderr). Every (instance, method)
runs in a fresh subprocess of this script, so that its peak memory is its own.

The baseline is the paper's program and nothing else: for each user j, a binary
p in {0,1}^T with the window sums of p equal to counts[j] and |N^T p| <= 1e-6,
N an orthonormal basis of the orthogonal complement of col(A) (rank n, from a
complete QR of the top-n left singular vectors of A), solved by HiGHS through
scipy.optimize.milp with a time limit per user, users in parallel (joblib/loky,
one BLAS thread per worker). No rounds are fixed, no closed form, no heuristics.
It is slow (10 s+ per user at n = 1000), so it runs on a fixed random sample of
users and its wall time is extrapolated to all n users.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

# id: (users n, rounds T, window K, participation)
INSTANCES = {
    "a": (50, 200, 10, 0.5),
    "b": (150, 400, 10, 0.2),
    "c": (1000, 1500, 10, 0.1),
    "d": (1000, 1100, 10, 0.1),
    "e": (1000, 10500, 10, 0.1),
    "f": (50, 100, 10, 0.5),
}
INSTANCE_SEED = 0  # make_instance(..., seed=0) for every instance
SAMPLE_SEED = 12345  # which users the baseline solves
SUBSPACE_TOLERANCE = 1e-6  # |N^T p| <= this in the baseline
# Peak bytes of one baseline worker per entry of the dense N^T ((T - n) x T): the array, milp's CSC copy and
# stacked copy, HiGHS' own copies. Measured about 96 at n = 1000, T = 10500 (9.6 GB per worker); with margin.
BASELINE_BYTES_PER_ENTRY = 120
# id: (minimum exact-column rate, maximum attack wall seconds, text)
TARGETS = {
    "a": (1.0, 1.0, "(a) all exact <= 1 s"),
    "c": (0.99, 600.0, "(c) >= 99% exact <= 600 s"),
    "d": (0.90, 1200.0, "(d) >= 90% exact <= 1200 s"),
    "e": (1.0, 15.0, "(e) exact <= 15 s"),
    "f": (1.0, 10.0, "(f) all exact <= 10 s"),
}
BUDGET_SHARE = 0.8  # of the target wall time, for the attack's integer programs and certificates
STEPS = ("subspace", "linear", "projection_search", "lattice", "totals", "joint", "updates")
STEP_LABELS = {
    "subspace": "subspace",
    "linear": "linear",
    "projection_search": "search",
    "lattice": "lattice",
    "totals": "totals",
    "joint": "joint",
    "updates": "updates",
}
# (d) is judged on honesty: every user exact or reported ambiguous, none wrongly found or unique.
HONESTY_TARGETS = {"d"}
RESULT_MARK = "@@RESULT "
# "uncoupled": the attack with the joint stage's search restarts uncoupled from the totals (what it did before
# they were coupled), to show that change's gain in the same run
# "nolattice": the attack without its lattice stage (AttackSettings(lattice=False)), that stage's gain side by side
ATTACK_METHODS = ("attack", "uncoupled", "nolattice")
# Bins of a user's equalities per free round (Disaggregation.equalities_per_free_round: N^T's rows plus its windows
# with free rounds, over its free rounds), the Donoho-Tanner lead of issue #12: exact columns per bin show where the
# per-user LP stops settling users (on (c), seed 0: 0-11% exact below 0.60, 49% in [0.60, 0.62), 92% in
# [0.62, 0.64), all from 0.64; at T = 1600 every user lies above 0.58 and all are exact)
RATIO_EDGES = (0.55, 0.58, 0.60, 0.62, 0.64, 0.66)


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def shape(key: str) -> tuple[int, int, int, float]:
    """The instance's (n, T, K, participation); with --users, n users and T scaled with them (held-out sizes); with
    --rounds, that T (another horizon: how long the server keeps the model frozen)."""
    n_users, n_rounds, window, participation = INSTANCES[key]
    if _USERS[0] is not None:
        n_users, n_rounds = _USERS[0], round(n_rounds * _USERS[0] / n_users)
    return n_users, _ROUNDS[0] or n_rounds, window, participation


def _instance(key: str):
    from benchmark.synthetic import make_instance

    return make_instance(*shape(key), seed=_SEED[0])


_SEED = [INSTANCE_SEED]  # --seed: held-out instances of the same shapes
_USERS: list[int | None] = [None]  # --users: the same shapes at another number of users
_ROUNDS: list[int | None] = [None]  # --rounds: the same shapes at another number of rounds


def _reap_workers() -> None:
    """Shut the loky workers down and wait for them, so that RUSAGE_CHILDREN counts them."""
    try:
        import joblib.externals.loky.reusable_executor as reusable
    except ImportError:
        return
    executor = getattr(reusable, "_executor", None)
    if executor is not None:
        executor.shutdown(wait=True)


def _peak_memory() -> dict:
    _reap_workers()
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    return {"main_mib": own, "worker_mib": workers}


# ----------------------------------------------------------------------------- attack


def attack_budget(key: str) -> float | None:
    """The attack's clock safety net for its joint stage: 80% of the target wall time, at least a minute."""
    return max(BUDGET_SHARE * TARGETS[key][1], 60.0) if key in TARGETS else None


def _run_attack(key: str, args: argparse.Namespace, method: str) -> dict:
    from attacks.disaggregation import AttackSettings, disaggregate

    instance = _instance(key)
    _log(f"[{key} {method}] instance ready, attacking in one process (--workers is the baseline's)")
    started = time.perf_counter()
    cpu_started = time.process_time()
    result = disaggregate(
        instance.aggregates,
        instance.counts,
        instance.window,
        totals=instance.totals,
        settings=AttackSettings(time_limit=args.attack_time_limit, budget=attack_budget(key), device=args.device,
                                lattice=method != "nolattice"),
        progress=args.attack_progress,
    )
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    exact = np.all(result.participants == instance.participants, axis=0)
    statuses = {s: result.status.count(s) for s in ("unique", "ambiguous", "found", "timeout", "infeasible")}
    error = np.abs(result.updates[exact] - instance.updates[exact]).max() if exact.any() else float("nan")
    status = np.array(result.status)
    return {
        "cpu": cpu,
        "wrong_unique": int(((status == "unique") & ~exact).sum()),
        "wrong_found": int(((status == "found") & ~exact).sum()),
        "exact_or_ambiguous": int((exact | (status == "ambiguous")).sum()),
        "events": dict(result.events),
        "clock_limited": bool(result.clock_limited),
        "load": os.getloadavg()[0],
        "exact": float(exact.mean()),
        "exact_users": int(exact.sum()),
        "users": int(len(exact)),
        "unique": statuses["unique"] / len(exact),
        "statuses": statuses,
        "wall": wall,
        "attack_wall_seconds": result.wall_seconds,
        "steps": dict(result.steps),
        "rank": int(result.rank),
        "update_error": float(error),
        "by_ratio": exact_by_ratio(result.equalities_per_free_round, exact),
    }


def exact_by_ratio(ratio: np.ndarray, exact: np.ndarray) -> list[tuple[str, int, int]]:
    """(bin, users, exact users) for each nonempty bin of RATIO_EDGES (inf, nothing free, in the last)."""
    bins = np.digitize(ratio, RATIO_EDGES)
    edges = ("", *(f"{e:.2f}" for e in RATIO_EDGES), "")
    rows = []
    for b in np.unique(bins):
        label = f"< {edges[1]}" if b == 0 else f">= {edges[b]}" if b == len(RATIO_EDGES) else f"{edges[b]}-{edges[b + 1]}"
        rows.append((label, int((bins == b).sum()), int(exact[bins == b].sum())))
    return rows


# ----------------------------------------------------------------------------- baseline


def _available_memory() -> int:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62


def _baseline_user(complement_t: np.ndarray, windows: np.ndarray, counts: np.ndarray, time_limit: float, user: int):
    """The paper's program for one user: p in {0,1}^T, B p = counts, |N^T p| <= 1e-6. Returns (user, status, column, seconds)."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    started = time.perf_counter()
    n_rounds = windows.shape[1]
    result = milp(
        c=np.zeros(n_rounds),
        integrality=np.ones(n_rounds),
        bounds=Bounds(0.0, 1.0),
        constraints=[
            LinearConstraint(windows, counts, counts),
            LinearConstraint(complement_t, -SUBSPACE_TOLERANCE, SUBSPACE_TOLERANCE),
        ],
        options={"time_limit": float(time_limit), "disp": False},
    )
    seconds = time.perf_counter() - started
    column = None if result.x is None else np.round(result.x).astype(np.uint8)
    if result.status == 0 and column is not None:
        status = "found"
    elif result.status == 2:
        status = "infeasible"
    elif result.status == 1:
        status = "timeout"
    else:
        status = f"error {result.status}"
    return user, status, column, seconds


def _run_baseline(key: str, args: argparse.Namespace) -> dict:
    import joblib

    instance = _instance(key)
    n_users = instance.counts.shape[0]
    n_rounds = instance.aggregates.shape[0]
    _log(f"[{key} baseline] instance ready, computing N (SVD + complete QR)")
    started = time.perf_counter()
    left = np.linalg.svd(instance.aggregates, full_matrices=False)[0][:, :n_users]
    q = np.linalg.qr(left, mode="complete")[0]
    complement_t = np.ascontiguousarray(q[:, n_users:].T)  # N^T: (T - n) x T
    del left, q
    n_windows = instance.counts.shape[1]
    windows = np.zeros((n_windows, n_rounds))
    windows[np.arange(n_rounds) // instance.window, np.arange(n_rounds)] = 1.0
    setup = time.perf_counter() - started
    sample_size = n_users if args.baseline_users <= 0 else min(args.baseline_users, n_users)
    users = np.sort(np.random.default_rng(SAMPLE_SEED).choice(n_users, size=sample_size, replace=False))
    per_worker = BASELINE_BYTES_PER_ENTRY * complement_t.size
    jobs = max(1, min(args.workers, int(0.8 * _available_memory() // per_worker)))
    _log(
        f"[{key} baseline] setup {setup:.1f} s; {sample_size} of {n_users} users, "
        f"{args.baseline_time_limit:g} s limit each, {jobs} worker(s) (about {per_worker / 2**30:.1f} GiB each)"
    )
    solving = time.perf_counter()
    answers = []
    with joblib.parallel_config(backend="loky", inner_max_num_threads=1):
        solved = joblib.Parallel(n_jobs=jobs, return_as="generator")(
            joblib.delayed(_baseline_user)(
                complement_t, windows, instance.counts[user].astype(np.float64), args.baseline_time_limit, int(user)
            )
            for user in users
        )
        for user, status, column, seconds in solved:
            exact = column is not None and np.array_equal(column, instance.participants[:, user])
            answers.append({"user": user, "status": status, "exact": bool(exact), "seconds": seconds})
            _log(f"[{key} baseline] user {user}: {status}, {'exact' if exact else 'not exact'}, {seconds:.1f} s")
    sample_wall = time.perf_counter() - solving
    per_user = np.array([a["seconds"] for a in answers])
    statuses: dict[str, int] = {}
    for answer in answers:
        statuses[answer["status"]] = statuses.get(answer["status"], 0) + 1
    exact_users = sum(a["exact"] for a in answers)
    return {
        "exact": exact_users / sample_size,
        "exact_users": int(exact_users),
        "users": int(sample_size),
        "statuses": statuses,
        "setup": setup,
        "jobs": jobs,
        "sample_wall": sample_wall,
        "mean_user_seconds": float(per_user.mean()),
        "max_user_seconds": float(per_user.max()),
        # what all n users would take with the same limit and workers
        "wall": setup + float(per_user.mean()) * n_users / args.workers,
        "per_user": answers,
    }


# ----------------------------------------------------------------------------- parent: subprocesses and table


def _child(spec: str, args: argparse.Namespace) -> None:
    key, method = spec.split(":")
    if method == "uncoupled":  # the attack as it was before its restarts were coupled through the totals
        import attacks.joint

        attacks.joint._remaining = lambda *_: None
    result = _run_baseline(key, args) if method == "baseline" else _run_attack(key, args, method)
    result.update(_peak_memory())
    print(RESULT_MARK + json.dumps(result), flush=True)


def _spawn(key: str, method: str, args: argparse.Namespace) -> dict:
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--_child",
        f"{key}:{method}",
        "--workers",
        str(args.workers),
        "--baseline-users",
        str(args.baseline_users),
        "--baseline-time-limit",
        str(args.baseline_time_limit),
        "--attack-time-limit",
        str(args.attack_time_limit),
        "--seed",
        str(args.seed),
    ]
    if args.users is not None:
        command += ["--users", str(args.users)]
    if args.rounds is not None:
        command += ["--rounds", str(args.rounds)]
    if args.attack_progress:
        command.append("--attack-progress")
    command += ["--device", args.device]
    _log(f"[{key} {method}] start (fresh subprocess)")
    started = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    elapsed = time.perf_counter() - started
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if done.returncode != 0 or not lines:
        _log(f"[{key} {method}] FAILED with exit code {done.returncode} after {elapsed:.0f} s")
        return {"failed": done.returncode, "elapsed": elapsed}
    result = json.loads(lines[-1][len(RESULT_MARK) :])
    _log(
        f"[{key} {method}] done: exact {result['exact_users']}/{result['users']}, wall {result['wall']:.2f} s, "
        f"peak {result['main_mib']:.0f} + {result['worker_mib']:.0f} MiB, statuses {result['statuses']}"
    )
    return result


def _seconds(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _table(results: dict, keys: list[str], methods: list[str], args: argparse.Namespace) -> str:
    steps = [s for s in STEPS if any(s in results.get((k, "attack"), {}).get("steps", {}) for k in keys)]
    header = [
        "id", "users n", "rounds T", "window K", "participation", "method", "exact columns", "unique",
        "wall (s)", "peak MiB", "baseline/attack",
    ] + [f"{STEP_LABELS[s]} (s)" for s in steps] + ["target", "notes"]
    rows = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for key in keys:
        n_users, n_rounds, window, participation = shape(key)
        attack = results.get((key, "attack"))
        for method in methods:
            result = results[(key, method)]
            cells = [key, str(n_users), str(n_rounds), str(window), f"{participation:g}", method]
            if "failed" in result:
                cells += ["—"] * (len(header) - len(cells) - 1) + [f"failed (exit {result['failed']})"]
                rows.append("| " + " | ".join(cells) + " |")
                continue
            exact = f"{result['exact']:.1%} ({result['exact_users']}/{result['users']})"
            memory = f"{result['main_mib'] + result['worker_mib']:.0f}"
            if method in ATTACK_METHODS:
                ratio = "—"
                unique = f"{result['unique']:.1%}"
                wall = _seconds(result["wall"])
                step_cells = [_seconds(result["steps"][s]) if s in result["steps"] else "—" for s in steps]
                target = "—"
                if key in TARGETS and method == "attack":
                    rate, limit, _ = TARGETS[key]
                    target = "met" if result["exact"] >= rate and result["wall"] <= limit else "MISSED"
                    if key in HONESTY_TARGETS:
                        honest = result["exact_or_ambiguous"] == result["users"] and result["wrong_found"] == 0
                        target += "; honesty " + ("met" if honest and result["wrong_unique"] == 0 else "MISSED")
                others = {s: c for s, c in result["statuses"].items() if c and s != "unique"}
                notes = f"rank {result['rank']}" + (f"; {others}" if others else "")
                notes += f"; wrong unique {result['wrong_unique']}, wrong found {result['wrong_found']}"
                notes += f"; CPU {result['cpu']:.1f} s; load {result['load']:.1f}" + ("; CLOCK SAFETY NET BIT" if result["clock_limited"] else "")
            else:
                ok = attack is not None and "failed" not in attack
                ratio = "—"
                if ok and attack["wall"] > 0:
                    times = result["wall"] / attack["wall"]
                    ratio = f"{times:.0f}x" if times >= 10 else f"{times:.2g}x"
                unique = "—"
                wall = f"{_seconds(result['wall'])}*" if result["users"] < n_users else _seconds(result["wall"])
                step_cells = ["—"] * len(steps)
                target = "—"
                statuses = ", ".join(f"{c} {s}" for s, c in sorted(result["statuses"].items()))
                notes = (
                    f"{result['users']} of {n_users} users: {statuses}; per user mean "
                    f"{result['mean_user_seconds']:.1f} s, max {result['max_user_seconds']:.1f} s; "
                    f"setup {result['setup']:.1f} s; sample wall {result['sample_wall']:.1f} s"
                )
                if result["jobs"] < args.workers:
                    notes += f"; sample ran {result['jobs']} user(s) at a time to fit in memory"
            cells += [exact, unique, wall, memory, ratio] + step_cells + [target, notes]
            rows.append("| " + " | ".join(cells) + " |")
    by_ratio = [
        f"({key} {method}) " + ", ".join(f"{label}: {hit}/{users}" for label, users, hit in results[(key, method)]["by_ratio"])
        for key in keys for method in methods
        if method in ATTACK_METHODS and "by_ratio" in results[(key, method)]
    ]
    limit = f"{args.baseline_time_limit:g}"
    sample = "all" if args.baseline_users <= 0 else str(args.baseline_users)
    footnotes = [
        "",
        f"Instances: benchmark.synthetic.make_instance(n, T, K, participation, seed={args.seed}) "
        "(G ~ N(0,1), d = 1.2 n, Bernoulli participation); the attack also gets the per-round totals. "
        f"{args.workers} worker process(es), {os.cpu_count()} CPU cores; load average when the table was printed "
        f"{os.getloadavg()[0]:.1f} (1 min) / {os.getloadavg()[2]:.1f} (15 min): other processes on the machine skew timings.",
        f"Attack: attacks.disaggregation.disaggregate with AttackSettings(time_limit={args.attack_time_limit:g}, device={args.device!r}, "
        f"budget=max({BUDGET_SHARE:g} x the target wall time, 60 s) where there is a target, else none) "
        "(work limits at their defaults: they decide the answers; time_limit and budget are clock safety nets, "
        "and a row says CLOCK SAFETY NET BIT when one stopped work); wall = time of the call; step columns = its "
        "`steps` (seconds of each stage, — = stage not run); wrong unique/found = users with that status whose "
        "column is not the true one; load = 1-minute load average when the row finished (2 cores).",
        f"Baseline: the paper's per-user program (p in {{0,1}}^T, window sums = counts, |N^T p| <= {SUBSPACE_TOLERANCE:g}, "
        "N = complement of col(A) from a complete QR of the top-n left singular vectors), scipy.optimize.milp (HiGHS), "
        f"no fixed rounds or heuristics; {sample} randomly sampled users per instance (seed {SAMPLE_SEED}), "
        f"{limit} s limit per user. *wall extrapolated = setup (SVD + QR) + mean per-user time x n / workers; "
        "the exact-column rate is that of the sample; where memory allows fewer than `workers` HiGHS runs at once "
        "(about 120 bytes per entry of N^T each), the sample runs fewer at a time but the extrapolation still divides "
        "by workers. A user that hits the limit counts as not exact.",
        "Peak MiB: each (instance, method) in a fresh subprocess; ru_maxrss of that process (RUSAGE_SELF, including "
        "generating the instance) + RUSAGE_CHILDREN ru_maxrss of its joblib/loky workers after they are shut down "
        "(the largest single worker, not the sum over workers).",
        "Targets (attack): " + "; ".join(TARGETS[k][2] for k in TARGETS)
        + "; (d) honesty: every user exact or `ambiguous`, none wrongly `found` or `unique`.",
    ]
    if by_ratio:
        footnotes += ["", "Exact columns by equalities per free round of each user's LP after fixing by counts "
                      "(Disaggregation.equalities_per_free_round; Donoho-Tanner: the LP polytope tends to be the single "
                      "binary point above about 1/2): " + "; ".join(by_ratio)]
    return "\n".join(rows + footnotes)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", default=",".join(INSTANCES), help="comma-separated ids (default: all)")
    parser.add_argument("--methods", default="attack,baseline", help="comma-separated: attack, uncoupled (the attack without coupled restarts), nolattice (without the lattice stage), baseline")
    parser.add_argument("--baseline-time-limit", type=float, default=60.0, help="seconds per user (default 60)")
    parser.add_argument("--baseline-users", type=int, default=10, help="sampled users per instance; 0 = all (default 10)")
    parser.add_argument("--attack-time-limit", type=float, default=60.0, help="AttackSettings.time_limit (default 60)")
    parser.add_argument("--attack-progress", action="store_true", help="the attack's progress bars on stderr")
    parser.add_argument("--workers", type=int, default=2, help="worker processes of the baseline's per-user programs (default 2); the attack runs in one process")
    parser.add_argument("--device", default="cpu", help="where the attack's batched searches iterate: cpu (numpy, the reference) or a torch device such as cuda (AttackSettings.device); run once with each for the side-by-side figure")
    parser.add_argument("--seed", type=int, default=INSTANCE_SEED, help="instance seed (default 0; others are held out)")
    parser.add_argument("--users", type=int, help="run the chosen shapes at this many users, T scaled with n, each under "
                        "its own clock (held-out sizes; a target then reads as the shape's)")
    parser.add_argument("--rounds", type=int, help="run the chosen shapes at this many rounds T (another horizon; "
                        "on (c), seed 0: 55-57%% exact at T = 1500, all 1000 at T = 1600 in 515 s at load 6)")
    parser.add_argument("--_child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.users is not None and args.users < 2:
        parser.error("--users needs at least 2 users")
    if args.rounds is not None and args.rounds < 2:
        parser.error("--rounds needs at least 2 rounds")
    _SEED[0], _USERS[0], _ROUNDS[0] = args.seed, args.users, args.rounds
    if args._child:
        _child(args._child, args)
        return
    keys = [k.strip() for k in args.instances.split(",") if k.strip()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [k for k in keys if k not in INSTANCES] + [m for m in methods if m not in (*ATTACK_METHODS, "baseline")]
    if unknown:
        parser.error(f"unknown instance or method: {', '.join(unknown)}")
    results = {}
    for key in keys:
        for method in methods:
            results[(key, method)] = _spawn(key, method, args)
    print(_table(results, keys, methods, args), flush=True)


if __name__ == "__main__":
    main()
