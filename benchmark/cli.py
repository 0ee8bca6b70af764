"""The `disaggbench` command line: run suites, attack logged aggregates, list what exists, render leaderboards,
submit and verify leaderboard entries."""

import argparse
import io
import json
import os
import sys
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from attacks.settings import AttackSettings
from benchmark.errors import BenchmarkError
from benchmark.executor import Executor

if TYPE_CHECKING:
    import pandas as pd

    from benchmark.suite import Suite

DEFAULT_RESULTS = "results"
DEFAULT_ENTRIES = "leaderboard/entries"
MAX_WORKERS = 1024  # local processes; more only exhausts the machine


_ATTACK = AttackSettings()  # the disaggregate command's defaults are the attack's own

def _executor(args: argparse.Namespace) -> Executor:
    if not 1 <= args.workers <= MAX_WORKERS:
        raise BenchmarkError(f"--workers must be between 1 and {MAX_WORKERS}")
    scheduler = getattr(args, "scheduler", None)
    if scheduler is not None:
        _check_scheduler(scheduler)
    return Executor(workers=args.workers, scheduler=scheduler)


SCHEDULER_CONNECT_SECONDS = 10.0


def _check_scheduler(address: str) -> None:
    """BenchmarkError, before any work, for an address that is not tcp://HOST:PORT (or HOST:PORT) or where nothing
    answers: a run of one task runs it here without connecting, and another scheme (tls, ws, ucx, inproc) went
    unchecked, so such an address went unnoticed, or failed after the work with a traceback."""
    import socket

    from distributed.comm.addressing import parse_address, parse_host_port

    try:
        scheme, location = parse_address(address)
        if scheme != "tcp":
            raise BenchmarkError(f"--scheduler {address!r}: only tcp:// addresses are supported, not {scheme}://; give tcp://HOST:PORT")
        host, port = parse_host_port(location)
        if not 0 < port < 65536 or not host or any(c.isspace() for c in host):
            raise ValueError(f"host {host!r} and port {port} must be a host name and a port in 1-65535")
    except (ValueError, TypeError) as error:
        raise BenchmarkError(f"--scheduler {address!r} is not a Dask scheduler address: {error}") from None
    try:
        socket.create_connection((host, port), timeout=SCHEDULER_CONNECT_SECONDS).close()
    except OSError as error:
        raise BenchmarkError(f"--scheduler {address}: nothing answers there ({error.strerror or error})") from None


def _check_named(folders: dict[str, str]) -> None:
    """BenchmarkError for an empty folder option (flag: value): the command would write into the current folder."""
    for flag, value in folders.items():
        if not value:
            raise BenchmarkError(f"{flag} '' does not name a folder; give one")


def _load_array(path: str, what: str) -> np.ndarray:
    """A plain .npy array from `path`; BenchmarkError naming the file for anything else."""
    file = Path(path)
    if file.is_dir():
        raise BenchmarkError(f"{what} file {file} is a directory, not a .npy file")
    if not file.exists():
        raise BenchmarkError(f"{what} file {file} does not exist")
    if not file.is_file():
        raise BenchmarkError(f"{what} file {file} is not a regular file")
    try:
        with open(file, "rb") as stream:
            magic = stream.read(6)
    except OSError as error:
        raise BenchmarkError(f"{what} file {file} cannot be read: {error.strerror}") from None
    if magic.startswith(b"PK"):
        raise BenchmarkError(f"{what} file {file} is a .npz archive; give one array saved with numpy.save (.npy)")
    if magic != b"\x93NUMPY":
        raise BenchmarkError(f"{what} file {file} is not a readable .npy array: it has no NPY header")
    try:
        array = np.load(file, allow_pickle=False)
    except Exception as error:  # any unreadable file becomes one line
        raise BenchmarkError(f"{what} file {file} is not a readable .npy array: {' '.join(str(error).split())}") from None
    if array.dtype.kind not in "biuf":
        raise BenchmarkError(f"{what} file {file} holds dtype {array.dtype}; give a numeric array")
    with open(file, "rb") as stream:  # np.load ignores bytes past the array: a damaged or concatenated file
        version = np.lib.format.read_magic(stream)
        (np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0)(stream)
        extra = file.stat().st_size - stream.tell() - array.nbytes
    if extra > 0:
        raise BenchmarkError(f"{what} file {file} has {extra} bytes after its {array.shape} array: a damaged or concatenated .npy file")
    return array


def cmd_run(args: argparse.Namespace) -> int:
    from benchmark.devices import check_device, resolve_device
    from benchmark.runner import plugin_labels, run_suite
    from benchmark.suite import DefenseSpec, expand, load_suite
    from leaderboard.render import render
    from leaderboard.summary import summarize

    _check_named({"--results": args.results})
    if args.task_timeout is not None and not 0 < args.task_timeout < 1e9:
        raise BenchmarkError("--task-timeout must be a positive number of seconds")
    executor = _executor(args)
    suite = load_suite(args.suite)
    defenses = plugin_labels(tuple(DefenseSpec(name) for name in args.defense)) if args.defense else None
    # Fail before any task runs. The device is part of every task's key, so "auto" is resolved here;
    # on a cluster it cannot be, and must be named.
    if args.scheduler is None:
        device = resolve_device(args.device)
    elif check_device(args.device) == "auto":
        raise BenchmarkError("--device auto with --scheduler: name cpu or cuda, the device is part of every task's key")
    else:
        device = args.device
    if args.scheduler is None:  # a cluster's workers may see other folders
        for cell in suite.cells:
            if cell.data_root is not None and cell.update_kind == "model" and not Path(cell.data_root).is_dir():
                raise BenchmarkError(f"suite {args.suite}: cell {cell.name!r}: data_root {cell.data_root} is not a folder")
    own = expand(suite, plugin_labels(suite.defenses))
    tasks = expand(suite, defenses) if defenses else own
    table = run_suite(
        tasks, args.results, executor, progress=not args.quiet, task_timeout=args.task_timeout,
        device=device, context=own if defenses else [],
    )
    _print(render(summarize(table), args.format))
    return _report_failures(table)


def _print(text: str) -> None:
    """Print to stdout; a reader that closed the pipe (`| head -1`) ends the output quietly."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        _silence_stdout()


def _silence_stdout() -> None:
    """Point stdout at /dev/null: Python's flush at exit would raise on the closed pipe again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def _report_failures(table: "pd.DataFrame") -> int:
    """Exit status of a suite run: 1 with one line naming the first failed task, else 0."""
    from benchmark.columns import failed as is_failed

    failed = table[is_failed(table["status"])]
    if len(failed):
        first = failed.iloc[0]
        print(f"error: {len(failed)} task(s) failed; first ({first['defense']}, {first['scenario']}, seed {first['seed']}): {first['status']}", file=sys.stderr)
        return 1
    return 0


OUTPUTS = ("participants.npy", "updates.npy", "report.json")


def _check_memory(n_rounds: int, n_users: int, counts_file: str) -> None:
    """BenchmarkError, before any work, when the attack's arrays cannot fit this machine's memory: the users' n x n
    Gram matrix and a few T x n float64 matrices (columns, candidates, the search's iterates)."""
    needed = 8 * (n_users * n_users + 6 * n_rounds * n_users)
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not every system reports it
        return
    if needed > memory:
        raise BenchmarkError(
            f"counts file {counts_file}: {n_users} users over {n_rounds} rounds need about {needed / 2**30:.1f} GiB, "
            f"more than this machine's {memory / 2**30:.1f} GiB"
        )


def cmd_disaggregate(args: argparse.Namespace) -> int:
    from attacks.disaggregation import disaggregate
    from attacks.inputs import check_observation
    from benchmark.devices import resolve_device
    from benchmark.store import check_output_folder, json_ready, write_folder_atomically

    out = Path(args.out)
    check_output_folder(out, OUTPUTS, "--out")
    aggregates = _load_array(args.aggregates, "aggregates")
    counts = _load_array(args.counts, "counts")
    totals = _load_array(args.totals, "totals") if args.totals is not None else None
    for flag, given in (("--aggregates", args.aggregates), ("--counts", args.counts), ("--totals", args.totals)):
        if given and Path(given).resolve().parent == out.resolve():
            raise BenchmarkError(f"--out {out} holds the {flag} file {given}, which writing the outputs would replace; give another folder")
    if aggregates.ndim == 2 and not 1 <= args.window <= aggregates.shape[0]:
        raise BenchmarkError(f"--window must be between 1 and the {aggregates.shape[0]} rounds of the aggregates, got {args.window}")
    precision = float(np.finfo(aggregates.dtype).eps) if np.issubdtype(aggregates.dtype, np.floating) else 0.0
    if precision > np.finfo(np.float32).eps and not args.noise:  # float16: its rounding alone exceeds what exact mode accepts
        raise BenchmarkError(f"aggregates file {args.aggregates} is {aggregates.dtype} (relative rounding {precision:.0e}), too "
                             "coarse for exact disaggregation, which accepts columns within 1e-6 of col(A): give float32 "
                             "or float64 sums, or --noise")
    aggregates, counts, totals = check_observation(aggregates, counts, args.window, totals)
    _check_memory(aggregates.shape[0], counts.shape[0], args.counts)
    _check_explained(aggregates, counts, args.window, args.aggregates)
    joint_options = [flag for flag, given in (
        ("--nodes", args.nodes), ("--certificate-nodes", args.certificate_nodes), ("--mip-checks", args.mip_checks),
        ("--simplex-iterations", args.simplex_iterations), ("--lp-work", args.lp_work), ("--search-work", args.search_work),
        ("--time-limit", args.time_limit), ("--budget", args.budget), ("--no-certify", args.no_certify or None),
        ("--no-lattice", args.no_lattice or None)) if given is not None]
    if args.noise and joint_options:
        raise BenchmarkError(f"{', '.join(joint_options)} {'limits' if len(joint_options) == 1 else 'limit'} the lattice and "
                             "joint stages, which run on exact sums only: leave them out with --noise")
    for name in ("nodes", "certificate_nodes", "mip_checks", "simplex_iterations", "time_limit"):
        if getattr(args, name) is None:
            setattr(args, name, getattr(_ATTACK, name))
    if not 0 < args.time_limit < 1e9:
        raise BenchmarkError("--time-limit must be a positive number of seconds (a clock for each LP or integer program)")
    if args.budget is not None and not 0 <= args.budget < 1e9:
        raise BenchmarkError("--budget must be a non-negative number of seconds")
    if args.nodes < 0 or args.certificate_nodes < 0 or args.simplex_iterations < 1 or args.mip_checks < 1:
        raise BenchmarkError("--nodes and --certificate-nodes must be non-negative, --simplex-iterations and --mip-checks positive")
    for flag, value in (("--lp-work", args.lp_work), ("--search-work", args.search_work)):
        if value is not None and not 0 <= value < 2**62:
            raise BenchmarkError(f"{flag} must be a non-negative amount of work")
    settings = AttackSettings(
        noise=args.noise, time_limit=args.time_limit, budget=args.budget, certify=not args.no_certify, lattice=not args.no_lattice,
        nodes=args.nodes, simplex_iterations=args.simplex_iterations, certificate_nodes=args.certificate_nodes,
        mip_checks=args.mip_checks, lp_work=args.lp_work, search_work=args.search_work, device=resolve_device(args.device),
    )
    subspace = None if args.noise else _exact_subspace(aggregates, counts.shape[0], args.aggregates, precision)
    result = disaggregate(aggregates, counts, args.window, totals, settings, progress=not args.quiet, subspace=subspace)
    report = result.report()
    # an update the sums do not determine (its column a combination of the others') is NaN, not least squares' share
    updates = np.where(result.identifiable[:, None], result.updates, np.nan)
    write_folder_atomically(out, {
        "participants.npy": _npy_bytes(result.participants),
        "updates.npy": _npy_bytes(updates),
        "report.json": json.dumps(json_ready(report), indent=2, allow_nan=False).encode(),
    })
    totals_line = ", ".join(f"{k} {v}" for k, v in report["totals"].items())
    print(f"{len(result.status)} users in {result.wall_seconds:.2f} s: {totals_line}; wrote {out}/participants.npy, updates.npy, report.json")
    if report["unidentifiable_updates"]:
        print(f"note: {report['unidentifiable_updates']} user(s) have a recovered column that is empty or a combination of the "
              "others' (never took part, or always with others): the sums do not determine their updates, written as NaN "
              "(report.json: update_identifiable)", file=sys.stderr)
    if args.noise and result.relative_misfit > AttackSettings().accepted_residual and _noise_free(aggregates, counts.shape[0]):
        print(f"error: --noise, yet the aggregates carry no noise (numerical rank at most the {counts.shape[0]} users) and the "
              f"recovery misses them by a relative {result.relative_misfit:.3g}: run without --noise, or check the counts", file=sys.stderr)
        return 1
    if result.contradiction:
        print("error: --totals contradict the counts and aggregates (no set of binary columns adds up to them in every "
              "round): no user is proven unique", file=sys.stderr)
        return 1
    if result.relative_misfit > settings.accepted_residual:
        misfit = f"the recovery explains the aggregates only to a relative misfit of {result.relative_misfit:.3g}"
        missing = sum(status in ("timeout", "infeasible") for status in result.status)
        if missing:  # the users without a column leave their share of the sums unexplained; the others' statuses stand
            print(f"error: {misfit}: {missing} user(s) have no column (infeasible or timeout)", file=sys.stderr)
        else:
            # without --noise the sums passed the rank check (exact sums of n updates): noise is not the likely cause
            hint = "" if args.noise else "; the columns found do not reproduce the sums (counts that do not match them, "                                          "or columns the attack could not pin down: report.json)"
            print(f"error: {misfit}: no user is proven unique{hint}", file=sys.stderr)
        return 1
    if result.misses_totals:
        print("error: the recovered columns do not add up to --totals in every round: no user is proven unique", file=sys.stderr)
        return 1
    return 0


# Rounding in a file's own precision (float32 sums: eps 1.2e-7) spreads over its singular values within a few eps x
# max(T, d) of sigma_1; sums with real noise (a forgotten --noise) sit orders of magnitude above this margin.
ROUNDING_MARGIN = 100.0


def _exact_subspace(aggregates: np.ndarray, n_users: int, aggregates_file: str,
                    precision: float) -> tuple[np.ndarray, np.ndarray]:
    """left_singular(aggregates), which the attack starts from; BenchmarkError, before the attack, where the sums'
    rank exceeds the users (exact sums of n fixed updates have rank <= n: the whole attack had run, written its
    outputs and missed the sums, for counts of only some users or noisy sums without --noise). Rank counts the
    singular values above the rounding of the file's own precision (`precision`, its dtype's eps): exact sums
    logged in float32 carry float32 rounding, which the attack's float64 threshold would count as rank."""
    from attacks.disaggregation import blas_threads_for
    from attacks.geometry import RANK_TOLERANCE, left_singular, numerical_rank

    with blas_threads_for(aggregates):
        subspace = left_singular(aggregates, n_users)
    rank = numerical_rank(subspace[1], aggregates.shape, max(RANK_TOLERANCE, ROUNDING_MARGIN * precision))
    if rank > n_users:
        raise BenchmarkError(f"aggregates file {aggregates_file} has numerical rank {rank}, above the {n_users} users of "
                             f"--counts, which exact sums of {n_users} updates cannot have: give --noise for noisy or "
                             "rounded sums, or the counts of every user")
    return subspace


def _noise_free(aggregates: np.ndarray, n_users: int) -> bool:
    """Whether sums of n fixed updates explain the aggregates exactly: numerical rank <= n (noise raises it)."""
    from attacks.geometry import left_singular, numerical_rank

    return numerical_rank(left_singular(aggregates, n_users)[1], aggregates.shape) <= n_users


def _check_explained(aggregates: np.ndarray, counts: np.ndarray, window: int, aggregates_file: str) -> None:
    """BenchmarkError, before any work, for sums the counts cannot explain or that cannot separate the users."""
    from attacks.fit import check_rounds_explained, check_some_sum

    check_some_sum(aggregates, counts, aggregates_file)
    check_rounds_explained(aggregates, counts, window)
    n_users, dimension = counts.shape[0], aggregates.shape[1]
    if dimension < n_users:  # A = P U then has rank <= d < n: col(A) no longer holds the participant columns
        raise BenchmarkError(f"aggregates file {aggregates_file}: {dimension} coordinates per round for the {n_users} "
                             "users of the counts; separating n updates needs at least n coordinates")


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def cmd_list(args: argparse.Namespace) -> int:
    from benchmark.suite import builtin_suites, load_suite
    from defenses.registry import available_defenses

    print("suites:")
    for name in builtin_suites():
        suite = load_suite(name)
        print(f"  {name} (version {suite.version}): {suite.description}")
    print("defenses:")
    for name, doc in available_defenses().items():
        print(f"  {name}: {doc}")
    print("attacks:")
    print("  static: gradient disaggregation, counts at face value: participant matrix (linear, projection search, joint")
    print("    HiGHS stage: peeling, LP certificates, branch and bound under work limits), then least squares")
    print("  adaptive: the same, reading the defense's public parameters (count bounds, noise search, groups)")
    print("  anonymous: binary vectors of col(A) found without counts, updates by least squares, columns attributed to users")
    print("    by likelihood of the published counts (Hungarian); a task keeps the strongest of the three by attack_success")
    print("  inversion: label inference, analytic first-layer inversion, cosine matching with a TV prior")
    print("  properties: attribution of 'holds a lower-half label' to each user from its last-layer bias")
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    import pandas as pd

    from benchmark.store import write_atomically
    from leaderboard.render import render
    from leaderboard.summary import check_table, summarize

    from benchmark.store import check_output_file, look_up

    if args.out is not None:
        if not args.out or args.out.endswith(("/", os.sep)):
            raise BenchmarkError(f"--out {args.out!r} must name a file (leave it out to print to standard output)")
    if args.entries is not None and not args.readme:  # the board reads --results; silently ignoring it misled
        raise BenchmarkError("--entries applies to --readme only (the leaderboard of a run reads --results)")
    table_options = [name for name, value in (("--suite", args.suite), ("--results", args.results),
                                              ("--format", args.format), ("--cells", args.cells or None)) if value is not None]
    if args.readme and table_options:
        verb = "does" if len(table_options) == 1 else "do"
        raise BenchmarkError(f"{', '.join(table_options)} {verb} not apply to --readme, which renders the entries' "
                             "README (markdown) from --entries")
    if args.readme:
        from leaderboard.submission import render_readme

        entries = args.entries if args.entries is not None else DEFAULT_ENTRIES
        out = Path(args.out) if args.out else Path(entries).parent / "README.md"
        if out.suffix == ".json" and look_up(out, "--out").parent == look_up(Path(entries), "--entries"):
            raise BenchmarkError(f"--out {out} would overwrite an entry of {entries} with the README; give a .md file")
        check_output_file(out, "--out", keep=(Path(entries),))
        write_atomically(out, render_readme(entries).encode())
        print(f"wrote {out}")
        return 0
    suite, results_root = args.suite or "quick", args.results if args.results is not None else DEFAULT_RESULTS
    form = args.format or "markdown"
    if args.cells and form == "board":
        raise BenchmarkError("--cells gives the full per-cell table: choose --format markdown, latex, csv, json or html")
    from benchmark.suite import builtin_suites, check_suite_name, load_suite

    loaded = load_suite(suite) if suite.endswith(".toml") else None  # as `run --suite` takes it: stored under its name
    suite = loaded.name if loaded is not None else suite
    path = Path(results_root) / check_suite_name(suite, "--suite") / "results.parquet"
    if args.out:  # never over the stored results
        check_output_file(Path(args.out), "--out", keep=(path.parent,))
    if not path.is_file():
        raise BenchmarkError(f"no results at {path}; run `disaggbench run --suite {suite}` first")
    try:
        results = pd.read_parquet(path)
    except Exception as error:  # a truncated or foreign file: one line naming it
        raise BenchmarkError(f"results file {path} cannot be read ({' '.join(str(error).split())[:200]}); run the suite again to rewrite it") from None
    check_table(results, str(path))
    if loaded is not None or suite in builtin_suites():
        _check_stored_suite(loaded or load_suite(suite), args.suite or suite, path.parent, results)
    if args.cells:
        from leaderboard.render import cell_columns
        from leaderboard.summary import summarize_cells

        cells = summarize_cells(results)
        text = render(cells, form, columns=cell_columns(cells))
    elif form == "html" and args.out:
        _write_html_page(results, Path(args.out))
        return 0
    else:
        text = render(summarize(results), form)
    if args.out:
        write_atomically(Path(args.out), text.encode())
    else:
        _print(text)
    return 0


def _check_stored_suite(suite: "Suite", source: str, folder: Path, results: "pd.DataFrame") -> None:
    """BenchmarkError where the table in `folder` holds rows of another version of the suite (`submit` of a new
    version stores its tasks and leaves the old table), or where the folder's suite.json says another suite of this
    name and version (other cells, seeds or settings) wrote it: the table would pass for the suite's results."""
    from benchmark.store import ResultStore
    from benchmark.suite import cells_digest, defense_digests, expand

    versions = sorted({str(v) for v in results["suite_version"].dropna()}) if "suite_version" in results.columns else []
    if versions and versions != [suite.version]:
        raise BenchmarkError(f"--results {folder} holds rows of version {', '.join(map(repr, versions))} of suite "
                             f"{suite.name!r}, but {source} is version {suite.version!r}: run `disaggbench run --suite "
                             f"{source}` first")
    store, tasks = ResultStore(folder.parent, suite.name), expand(suite)
    if store.holds_other_cells(suite.version, cells_digest(tasks)):
        raise BenchmarkError(f"--results {folder} holds suite {suite.name!r} version {suite.version!r} with other cells, "
                             f"seeds or settings than {source}: run `disaggbench run --suite {source}` first")
    shown = set(results["defense"].astype(str))
    relabelled = [label for label in store.relabelled(defense_digests(tasks)) if label in shown]
    if relabelled:
        raise BenchmarkError(f"--results {folder} holds rows of {relabelled[0]!r} made with other parameters or code "
                             f"than {source} gives that label: run `disaggbench run --suite {source}` first")


def _write_html_page(results: "pd.DataFrame", out: Path) -> None:
    """The page and its two plots beside it (`<stem>-success-vs-utility.png`, `<stem>-recovery-vs-rounds.png`; the
    first only where some defense has a utility drop).

    The plots are drawn in a scratch folder before anything is written, so a failure leaves no file behind.
    """
    import tempfile

    from benchmark.store import write_atomically
    from leaderboard.plots import frontier_points, plot_recovery_vs_rounds, plot_success_vs_utility
    from leaderboard.render import render
    from leaderboard.summary import summarize

    from benchmark.store import check_output_file

    summary = summarize(results)
    plots = {f"{out.stem}-success-vs-utility.png": plot_success_vs_utility, f"{out.stem}-recovery-vs-rounds.png": plot_recovery_vs_rounds}
    if frontier_points(summary).empty:  # no utility task in the suite: the page shows the one plot it can draw
        plots.pop(f"{out.stem}-success-vs-utility.png")
    for name in plots:
        check_output_file(out.parent / name, "--out's plot")
    page = render(summary, "html", plots=list(plots))
    with tempfile.TemporaryDirectory(prefix="disaggbench-plots-") as scratch:
        images = {name: plot(results, Path(scratch) / name).read_bytes() for name, plot in plots.items()}
    for name, image in images.items():
        write_atomically(out.parent / name, image)
    write_atomically(out, page.encode())


def cmd_submit(args: argparse.Namespace) -> int:
    from leaderboard.render import render
    from leaderboard.submission import parse_parameters, submit

    _check_named({"--results": args.results, "--entries": args.entries})
    submission = submit(
        args.defense, parse_parameters(args.param or []), args.suite, args.name, args.results, args.entries,
        _executor(args), overwrite=args.overwrite, progress=not args.quiet,
    )
    table = submission.table
    print(render(submission.summary, "board"))
    print(f"wrote {submission.path} ({len(table)} tasks)")
    return _report_failures(table)


def cmd_verify(args: argparse.Namespace) -> int:
    from leaderboard.submission import verify

    result = verify(args.entry, args.sample, args.seed, args.suite, _executor(args), progress=not args.quiet)
    for line in result.differences:
        print(line)
    checked = f"{result.checked} of {result.total} tasks of {args.entry} (--seed {result.seed})"
    for note in result.processor_notes:
        print(f"note: {note}", file=sys.stderr)
    if result.new_columns:
        print(f"note: {', '.join(result.new_columns)}: written by newer scoring code, in no task of the entry: not "
              "compared", file=sys.stderr)
    if result.differences:
        for note in [*result.package_notes, *result.clock_notes]:
            print(f"note: {note}", file=sys.stderr)
        print(f"error: {len(result.differences)} score(s) differ in {checked}", file=sys.stderr)
        return 1
    within = (f" ({len(result.processor_notes)} value(s) within the rounding of another processor)"
              if result.processor_notes else "")
    print(f"verified {checked}: every score matches{within}")
    return 0


class _StoreOnce(argparse._StoreAction):
    """An option that takes one value: given twice, it is a bad input (the last one had silently won)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        _mark_given(parser, self, option_string)
        super().__call__(parser, namespace, values, option_string)


class _StoreTrueOnce(argparse._StoreTrueAction):
    def __call__(self, parser, namespace, values, option_string=None) -> None:
        _mark_given(parser, self, option_string)
        super().__call__(parser, namespace, values, option_string)


def _mark_given(parser: "_Parser", action: argparse.Action, option_string: str | None) -> None:
    if action.dest in parser.given:
        parser.error(f"{option_string} is given more than once; give it once")
    parser.given.add(action.dest)


class _Parser(argparse.ArgumentParser):
    """argparse, with a bad option reported like every other bad input: one line, exit 2 (usage via --help); an
    option that takes one value may be given once (`--param` and `--defense` repeat by design)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.given: set[str] = set()
        self.register("action", None, _StoreOnce)
        self.register("action", "store", _StoreOnce)
        self.register("action", "store_true", _StoreTrueOnce)

    def error(self, message: str) -> None:
        print(f"error: {self.prog}: {' '.join(message.split())} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="disaggbench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run a suite (default quick) and print its leaderboard")
    run.add_argument("--suite", default="quick", help="a built-in suite name or a .toml file (default: quick)")
    run.add_argument("--defense", action="append", help="run this defense instead of the suite's (repeatable): a built-in name, path/to/file.py:ClassName or an entry point")
    run.add_argument("--results", default=DEFAULT_RESULTS, help="results folder (default: results)")
    run.add_argument("--workers", type=int, default=1, help="local worker processes (default 1)")
    run.add_argument("--scheduler", help="address of a Dask scheduler to run the tasks on")
    run.add_argument("--task-timeout", type=float, help="seconds after which a task is recorded as failed (local workers only)")
    run.add_argument("--device", default="cpu", help="where inversions and the batched disaggregation searches run: cpu, cuda, or auto (cuda when torch sees one); part of every task's key, as CPU and GPU scores differ (default cpu, whose scores match on every machine)")
    run.add_argument("--format", default="board", choices=["board", "markdown", "latex", "csv", "json", "html"], help="board: a compact ranking that fits 120 columns (default); the others: the full table")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.set_defaults(handler=cmd_run)

    dis = commands.add_parser("disaggregate", help="attack aggregates logged by any FL system (.npy files)")
    dis.add_argument("--aggregates", required=True, help="float array T x d, one aggregated update per round")
    dis.add_argument("--counts", required=True, help="integer array n x W, participation counts per window")
    dis.add_argument("--window", required=True, type=int, help="rounds per analytics window K")
    dis.add_argument("--out", required=True, help="output folder")
    dis.add_argument("--totals", help="optional integer array of length T, participants per round")
    dis.add_argument("--nodes", type=int, help=f"work limit: branch-and-bound nodes per integer program (default {_ATTACK.nodes}); with --simplex-iterations it decides the answers, the same on any machine")
    dis.add_argument("--certificate-nodes", type=int, help=f"work limit: branch-and-bound nodes for all certificates by branching together (default {_ATTACK.certificate_nodes})")
    dis.add_argument("--mip-checks", type=int, help=f"work limit: HiGHS's limit checks per integer program, which bound its root's cuts and heuristics (default {_ATTACK.mip_checks})")
    dis.add_argument("--simplex-iterations", type=int, help=f"work limit: simplex iterations per LP (default {_ATTACK.simplex_iterations})")
    dis.add_argument("--lp-work", type=int, help="work limit: entry-iterations (simplex iterations x the nonzero entries of the model they ran on) for the joint stage as a whole, its LPs and integer programs together (default: no cap); it stops the stage at the same point on any machine")
    dis.add_argument("--search-work", type=int, help="work limit: basis-entry column-iterations (columns x iterations x the entries of the T x rank basis) for the joint stage's batched search restarts together (default: no cap)")
    dis.add_argument("--time-limit", type=float, help=f"clock safety net: seconds per LP or integer program (default {_ATTACK.time_limit:g}); the report says when it bit")
    dis.add_argument("--device", default="cpu", help="where the batched searches iterate: cpu (numpy, the reference: the same answer on every machine), cuda, or auto (cuda when torch sees one)")
    dis.add_argument("--budget", type=float, help="clock safety net: seconds for the joint stage as a whole (default: no cap); the report says when it bit")
    dis.add_argument("--noise", action="store_true", help="updates drift or carry noise: rank truncation, minimised residual")
    dis.add_argument("--no-certify", action="store_true", help="skip the uniqueness certificates (found columns stay `found`)")
    dis.add_argument("--no-lattice", action="store_true", help="skip the lattice stage (attacks/lattice.py; it runs only where T <= 250, on users the search left)")
    dis.add_argument("--quiet", action="store_true", help="no progress bar")
    dis.set_defaults(handler=cmd_disaggregate)

    lst = commands.add_parser("list", help="list suites, defenses and attacks")
    lst.set_defaults(handler=cmd_list)

    board = commands.add_parser("leaderboard", help="render a suite's stored results as a table")
    board.add_argument("--suite", help="the suite whose stored results to render (default: quick)")
    board.add_argument("--results", help=f"results folder (default: {DEFAULT_RESULTS})")
    board.add_argument("--format", choices=["board", "markdown", "latex", "csv", "json", "html"], help="board: a compact ranking that fits 120 columns; the others (default markdown): the full table")
    board.add_argument("--out", help="write to this file instead of standard output; with --format html, the two plots are written beside it")
    board.add_argument("--cells", action="store_true", help="one row per defense and cell, every score with its interval, instead of one per defense")
    board.add_argument("--readme", action="store_true", help="write the leaderboard README from the entries instead (to --out, default: beside the entries folder)")
    board.add_argument("--entries", help=f"entries folder for --readme, and only for it (default: {DEFAULT_ENTRIES})")
    board.set_defaults(handler=cmd_leaderboard)

    sub = commands.add_parser("submit", help="run a suite for one defense and write a leaderboard entry")
    sub.add_argument("defense", help="a built-in name, path/to/file.py:ClassName or an entry point")
    sub.add_argument("--name", required=True, help="entry name (letters, digits, - and _): writes ENTRIES/NAME.json")
    sub.add_argument("--suite", default="standard", help="a built-in suite name or a .toml file (default: standard)")
    sub.add_argument("--param", action="append", metavar="KEY=VALUE", help="a defense constructor parameter, VALUE read as TOML (repeatable)")
    sub.add_argument("--results", default=DEFAULT_RESULTS, help="results folder; stored tasks are reused (default: results)")
    sub.add_argument("--entries", default=DEFAULT_ENTRIES, help=f"entries folder (default: {DEFAULT_ENTRIES})")
    sub.add_argument("--overwrite", action="store_true", help="replace an existing entry of that name")
    sub.add_argument("--workers", type=int, default=1, help="local worker processes (default 1)")
    sub.add_argument("--scheduler", help="address of a Dask scheduler to run the tasks on")
    sub.add_argument("--quiet", action="store_true", help="no progress bar")
    sub.set_defaults(handler=cmd_submit)

    ver = commands.add_parser("verify", help="re-run a random sample of an entry's tasks and report every score that differs")
    ver.add_argument("entry", help="an entry file, e.g. leaderboard/entries/NAME.json")
    ver.add_argument("--sample", type=int, default=3, help="tasks to re-run (default 3)")
    ver.add_argument("--seed", type=int, help="seed of the sample (default: random, printed)")
    ver.add_argument("--suite", help="load the suite from here instead of the entry's recorded source")
    ver.add_argument("--workers", type=int, default=1, help="local worker processes (default 1)")
    ver.add_argument("--scheduler", help="address of a Dask scheduler to run the tasks on")
    ver.add_argument("--quiet", action="store_true", help="no progress bar")
    ver.set_defaults(handler=cmd_verify)
    return parser


def main(argv: list[str] | None = None) -> int:
    # A terminal or pipe that cannot encode a character (PYTHONIOENCODING=ascii, a C locale) gets "?" for it: the
    # board's dashes and a path's accents had raised UnicodeEncodeError after the outputs were written.
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="replace")  # one "?" a character: the board's columns stay aligned
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except BenchmarkError as error:
        print(f"error: {_one_line(str(error))}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `disaggbench list | head -1`: the reader has what it wanted
        _silence_stdout()
        return 0
    except OSError as error:  # a disk that fills up or a folder that vanishes while writing: one line, no traceback
        print(f"error: {_one_line(str(error))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; outputs are written whole or not at all, and a suite run resumes from its finished tasks", file=sys.stderr)
        return 130
    except MemoryError:
        print("error: out of memory; finished tasks are kept: try fewer --workers or a smaller instance", file=sys.stderr)
        return 2
    except RuntimeError as error:
        if not _out_of_gpu_memory(error):
            raise
        print(f"error: the GPU ran out of memory ({str(error).splitlines()[0]}); run with --device cpu", file=sys.stderr)
        return 2


def _one_line(text: str) -> str:
    """`text` with each control character (newline, tab, ESC), line separator or invisible format character written
    as Python escapes it (\\n, \\x1b, \\u2028): an error stays one line whatever a path in it holds, and cannot drive
    the terminal; other text, non-ASCII included, is left readable."""
    return "".join(c.encode("unicode_escape").decode("ascii") if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c
                   for c in text)


def _out_of_gpu_memory(error: BaseException) -> bool:
    """torch's out-of-memory error; torch is only looked up where something already imported it."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(error, torch.OutOfMemoryError)


if __name__ == "__main__":
    sys.exit(main())
