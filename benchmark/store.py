"""The results store: one JSON file per task (the resume cache) and the tidy table built from them."""

import errno
import json
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

from benchmark.columns import RESULT_COLUMNS, SCORE_COLUMNS, row_problem
from benchmark.errors import BenchmarkError


def _first_line(error: Exception) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.chmod(temporary, 0o666 & ~_UMASK)  # mkstemp makes files owner-only; results are meant to be shared
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


# What a suite, plugin, stored table or array file is: a table or README written over one loses it.
INPUT_SUFFIXES = (".toml", ".py", ".parquet", ".npy", ".npz")


def _stored_by_the_tool(path: Path) -> bool:
    """Whether the existing file `path` is part of a results folder (results.csv/.parquet beside a tasks/ folder, or
    a file in its tasks/, utility/, memo/, pictures/) or a leaderboard entry (a JSON object with format and tasks)."""
    folder = path.parent
    if (folder / "tasks").is_dir() or (folder.name in ("tasks", "utility", "memo", "pictures") and (folder.parent / "tasks").is_dir()):
        return True
    if path.suffix.lower() == ".json" and path.stat().st_size < 2**26:
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, ValueError, OSError):
            return False
        return isinstance(record, dict) and {"format", "tasks"} <= set(record)
    return False


def _unreachable(what: str, path: Path, reason: str) -> BenchmarkError:
    """The error for a path the system refuses to look up or create, naming the option (`what`) and the reason."""
    return BenchmarkError(f"{what}: {reason.lower()}: {path}")


def look_up(path: Path, what: str) -> Path:
    """`path` resolved; BenchmarkError naming `what` where the system cannot look it up: a name too long for the file
    system, a loop of symbolic links (Python 3.11's Path.resolve raises RuntimeError on one), a folder it may not
    search. A path that does not exist yet, or lies under a file, passes: the callers name those."""
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        pass
    except OSError as error:
        raise _unreachable(what, path, error.strerror or str(error)) from None
    try:
        return path.resolve()
    except RuntimeError:
        raise _unreachable(what, path, os.strerror(errno.ELOOP)) from None


def check_output_file(path: Path, what: str, keep: tuple[Path, ...] = (), replaces_stored: bool = False) -> None:
    """BenchmarkError, before any work, when `path` cannot be written as a file, or when writing it would replace
    something other than a plain file (a device such as /dev/null, a pipe, a symbolic link's target) or a file
    inside one of the `keep` folders or stored by the tool anywhere (results, entries: a rendered table is never
    written over them; `replaces_stored`: the caller is the tool replacing what it stored, as `submit --overwrite`)."""
    resolved = look_up(path, what)
    if path.is_dir():
        raise BenchmarkError(f"{what} {path} is a directory; give a file name")
    if path.is_symlink():
        raise BenchmarkError(f"{what} {path} is a symbolic link, which the write would replace; give a plain file name")
    if path.exists() and not path.is_file():
        raise BenchmarkError(f"{what} {path} is not a plain file (a device, pipe or socket); give a file name")
    if path.is_file() and path.suffix.lower() in INPUT_SUFFIXES:
        raise BenchmarkError(f"{what} {path} is an existing {path.suffix} file, which the tool reads, never writes; write elsewhere")
    for folder in keep:
        if folder.is_dir() and resolved.is_relative_to(folder.resolve()):
            raise BenchmarkError(f"{what} {path} lies inside {folder}, which holds what the tool stored; write elsewhere")
    if not replaces_stored and path.is_file() and _stored_by_the_tool(path):
        raise BenchmarkError(f"{what} {path} is a stored result or leaderboard entry; write elsewhere")
    _check_parent(path, what)


def _existing_ancestor(path: Path, what: str) -> Path:
    """The nearest of `path` and its parents that exists; BenchmarkError at a symbolic link to nothing on the way, or
    a name there too long for that folder's file system (creating the folder would fail there, after the work)."""
    folder, missing = path, []
    while not folder.exists() and folder != folder.parent:
        if folder.is_symlink():
            raise BenchmarkError(f"{what} {path}: {folder} is a symbolic link to nothing")
        missing.append(os.fsencode(folder.name))
        folder = folder.parent
    if folder.is_dir() and any(len(name) > os.pathconf(folder, "PC_NAME_MAX") for name in missing):
        raise _unreachable(what, path, os.strerror(errno.ENAMETOOLONG))
    return folder


def _check_parent(path: Path, what: str) -> None:
    """BenchmarkError unless `path` can be written: its nearest existing folder must take a folder named like the
    staging folder or temporary file beside `path` (`.NAME.new.XXXXXXXX`), which a probe creates and removes at once;
    access bits alone miss a name too long for the file system, and /proc or /sys, which refuse even root."""
    folder = _existing_ancestor(path.parent, what)
    if not folder.is_dir():
        raise BenchmarkError(f"{what} {path}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise BenchmarkError(f"{what} {path}: folder {folder} is not writable")
    try:
        os.rmdir(tempfile.mkdtemp(dir=folder, prefix=f".{path.name}.new."))
    except OSError as error:
        raise BenchmarkError(f"{what} {path}: cannot be written in {folder} ({error.strerror})") from None


def check_output_folder(out: Path, names: tuple[str, ...], what: str) -> None:
    """BenchmarkError, before any work, when `out` cannot take `names`: a file there, a folder not writable,
    or something in it that is not one of `names` as a plain file (never deleted by a rewrite)."""
    if str(out) == "" or out.name in ("", ".", ".."):
        raise BenchmarkError(f"{what} {str(out)!r} does not name a folder of its own; give a new or empty folder")
    resolved = look_up(out, what)
    if out.is_symlink():
        raise BenchmarkError(f"{what} {out} is a symbolic link; give a real folder")
    if out.exists() and not out.is_dir():
        raise BenchmarkError(f"{what} {out} is a file, not a folder")
    here = Path.cwd().resolve()
    if resolved == here or resolved in here.parents:
        raise BenchmarkError(f"{what} {out} holds the current folder; give a new or empty folder")
    _check_parent(out, what)
    if out.is_dir():
        for entry in out.iterdir():
            if entry.name not in names or not entry.is_file() or entry.is_symlink():
                raise BenchmarkError(f"{what} {out} holds {entry.name!r}, which is not one of its outputs ({', '.join(names)}); give an empty or new folder")


def write_folder_atomically(out: Path, files: dict[str, bytes]) -> None:
    """Write every file into a temporary sibling folder, then rename it to `out`: all the files or none.

    A previous `out` holding only these outputs (see check_output_folder) is replaced.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.new."))
    try:
        for name, data in files.items():
            (staging / name).write_bytes(data)
            os.chmod(staging / name, 0o666 & ~_UMASK)
        os.chmod(staging, 0o777 & ~_UMASK)
        if out.is_dir():
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old."))
            os.replace(out, old / "out")
            os.replace(staging, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def json_ready(value):
    """`value` with every non-finite float, however deep in lists and dicts, as JSON allows it (null, "inf")."""
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    return _json_safe(value)


def _write_json(path: Path, record: dict) -> None:
    write_atomically(path, json.dumps({k: _json_safe(v) for k, v in record.items()}, sort_keys=True).encode())


def _read_json(path: Path) -> dict:
    """The JSON object at `path`; ValueError unless it is one, with a text status."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise ValueError(f"not UTF-8: {error}") from None
    if not isinstance(record, dict) or not isinstance(record.get("status"), str):
        raise ValueError("not a JSON object with a status")
    return record


class ResultStore:
    """Results of one suite under `root/<suite>/`: `tasks/<key>.json`, `utility/<key>.json` (one per utility
    training, shared by the tasks that need it), `pictures/<key>.png`, `results.parquet` / `results.csv`."""

    def __init__(self, root: str | os.PathLike, suite: str) -> None:
        self.folder = Path(root) / suite
        self.tasks = self.folder / "tasks"
        self.utility = self.folder / "utility"

    def picture(self, key: str) -> Path:
        """Where a task's reconstruction grid goes: beside the results, named by the task key."""
        return self.folder / "pictures" / f"{key}.png"

    def finished(self, key: str, identity: dict | None = None) -> bool:
        """A readable stored row (of the task whose ID columns are `identity`, if given; see stored_row) that is a
        result: a failed task (timed out under a machine's load, its worker lost, a defense that raised) runs again."""
        row = self.stored_row(key, identity)
        return row is not None and not str(row.get("status", "")).startswith("failed")

    def stored_row(self, key: str, identity: dict | None = None) -> dict | None:
        """The stored row (of the task whose ID columns are `identity`, if given), or None: a truncated, foreign or
        edited file is named on stderr, removed, and so recomputed."""
        return self._readable(self.tasks / f"{key}.json", lambda k: self.load(k, identity), key, "task", "it is recomputed")

    @staticmethod
    def _readable(path: Path, load, key: str, what: str, then: str) -> dict | None:
        """load(key), or None where `path` holds nothing (or something corrupted, named on stderr and removed)."""
        if not path.is_file():
            return None
        try:
            return load(key)
        except ValueError as error:
            print(f"warning: stored {what} {path} is corrupted ({_first_line(error)}); {then}", file=sys.stderr)
            path.unlink(missing_ok=True)
            return None

    def check_writable(self, what: str = "--results") -> None:
        """BenchmarkError now, before any task runs, when the results folder cannot be written (`what` names it)."""
        look_up(self.folder, what)
        _check_parent(self.tasks, what)  # a real write: /proc and /sys refuse it even to root, whose access bits say yes
        if any(sub.is_dir() and not os.access(sub, os.W_OK | os.X_OK) for sub in (self.tasks, self.utility)):
            raise BenchmarkError(f"{what} {self.folder} is not writable")
        for name in ("results.parquet", "results.csv"):
            if (self.folder / name).is_dir():
                raise BenchmarkError(f"{what}: results file {self.folder / name} is a folder")
        for sub in (self.tasks, self.utility, self.folder / "pictures"):
            if sub.exists() and not sub.is_dir():
                raise BenchmarkError(f"{what}: {sub} is a file, not a folder")

    def claim(self, name: str, version: str, cells: str, defenses: dict[str, str] | None = None) -> None:
        """Mark the folder as this suite's (`cells`: a digest of its cells, seeds, attack and utility task;
        `defenses`: each label's defense digest, merged into those recorded), or BenchmarkError, before any work,
        where another suite of the same name and version holds it: its table would be replaced by this one's rows.
        Another version of the suite takes the folder over, as it always did."""
        if self.holds_other_cells(version, cells):
            raise BenchmarkError(f"--results {self.folder} holds another suite named {name!r}, version {version!r} "
                                 "(other cells, seeds or settings); give another --results, or a new name or version")
        held = self.claimed() or {}
        same = (held.get("name"), held.get("version"), held.get("cells")) == (name, version, cells)
        recorded = held.get("defenses") if same and isinstance(held.get("defenses"), dict) else {}
        identity = {"name": name, "version": version, "cells": cells, "defenses": {**recorded, **(defenses or {})}}
        if held != identity:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_atomically(self.folder / "suite.json", json.dumps(identity, sort_keys=True).encode())

    def holds_other_cells(self, version: str, cells: str) -> bool:
        """Whether this version of the suite, with other cells, seeds or settings (`cells`: their digest), wrote here."""
        held = self.claimed()
        return held is not None and held.get("version") == version and held.get("cells") not in (None, cells)

    def relabelled(self, defenses: dict[str, str]) -> list[str]:
        """The labels whose rows here were made by another defense (name, parameters or plugin code) than
        `defenses` gives them (label -> digest); none where the folder does not record its defenses."""
        held = (self.claimed() or {}).get("defenses")
        held = held if isinstance(held, dict) else {}
        return sorted(label for label, digest in defenses.items() if held.get(label) not in (None, digest))

    def claimed(self) -> dict | None:
        """The suite that last wrote here ({name, version, cells, defenses}: claim); None where none is recorded or
        readable."""
        path = self.folder / "suite.json"
        try:
            held = json.loads(path.read_text()) if path.is_file() else None
        except (OSError, ValueError):
            return None  # unreadable: claimed anew
        return held if isinstance(held, dict) else None

    def check_slots(self, keys: list[str]) -> None:
        """BenchmarkError, before any task runs, when something other than a plain file sits where a task's row or
        picture goes: writing there would fail after the task computed, and its result would be lost."""
        for key in keys:
            for path in (self.tasks / f"{key}.json", self.picture(key)):
                if path.is_symlink() or (path.exists() and not path.is_file()):
                    raise BenchmarkError(f"results folder: {path} is not a plain file; remove it so the task can be stored")

    def save(self, key: str, row: dict) -> None:
        _write_json(self.tasks / f"{key}.json", row)

    def load(self, key: str, identity: dict | None = None) -> dict:
        """The stored row; ValueError when the file is not a row a task writes (benchmark.columns.row_problem)."""
        row = _read_json(self.tasks / f"{key}.json")
        problem = row_problem(row, identity)
        if problem is not None:  # an edited or foreign file: recomputed like a truncated one
            raise ValueError(problem)
        return {k: (float(v) if v in ("inf", "-inf") else (math.nan if v is None else v)) for k, v in row.items()}

    def trained(self, key: str) -> bool:
        """A stored utility training that succeeded: a failed one is trained again."""
        record = self.stored_utility(key)
        return record is not None and record["status"] == "ok"

    def stored_utility(self, key: str) -> dict | None:
        """The stored utility training, or None: a corrupted file is named on stderr, removed, and so trained again."""
        return self._readable(self.utility / f"{key}.json", self.load_utility, key, "utility run", "it is trained again")

    def save_utility(self, key: str, record: dict) -> None:
        """`record`: status ("ok" or "failed: <one line>"), test_accuracy (NaN when failed), seconds."""
        _write_json(self.utility / f"{key}.json", record)

    def load_utility(self, key: str) -> dict:
        """The stored training; ValueError unless it is a JSON object with a status and, when ok, a numeric accuracy."""
        record = _read_json(self.utility / f"{key}.json")
        accuracy = record.get("test_accuracy")
        if record["status"] != "ok" and not record["status"].startswith("failed"):
            raise ValueError(f"status must be ok or failed: ..., got {record['status']!r}")
        if record["status"] == "ok" and not (isinstance(accuracy, (int, float)) and not isinstance(accuracy, bool)
                                             and 0.0 <= accuracy <= 1.0):
            raise ValueError(f"an ok run needs a test_accuracy in [0, 1], got {accuracy!r}")
        return {k: (math.nan if v is None else v) for k, v in record.items()}

    def table(self, keys: list[str], missing: dict[str, dict] | None = None) -> "pd.DataFrame":
        """One row per stored key; a key not stored takes its row from `missing` (scores NaN), if given there."""
        import pandas as pd  # here: commands that only write files (disaggregate) should not load pandas

        missing = missing or {}
        rows = []
        for key in keys:  # each file read once
            row = self.stored_row(key)
            if row is not None or key in missing:
                rows.append(row if row is not None else missing[key])
        frame = pd.DataFrame(rows).reindex(columns=[*RESULT_COLUMNS, *sorted({k for r in rows for k in r} - set(RESULT_COLUMNS))])
        return frame.astype({c: "float64" for c in SCORE_COLUMNS})

    def write_table(self, frame: "pd.DataFrame", stem: str = "results") -> tuple[Path, Path]:
        parquet, csv = self.folder / f"{stem}.parquet", self.folder / f"{stem}.csv"
        write_atomically(parquet, frame.to_parquet(index=False))
        write_atomically(csv, frame.to_csv(index=False).encode())
        return parquet, csv
