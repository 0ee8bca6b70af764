"""A content-addressed memo for inversions, shared on disk by a run's worker processes.

An inversion is a pure function of its inputs (model weights, updates, seeds, settings, device, code), and
many tasks of a suite invert the same arrays: every defense that leaves a user's update intact gives the
attack, and the oracle ceiling, that user's true update. The memo keys a computation by the bytes of all
its inputs and the package's source digest, so a stored answer is exactly what recomputing would give;
without a directory (`use(None)`, the default) it computes every time.
"""

import hashlib
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

_directory: Path | None = None


def use(directory: str | os.PathLike | None) -> None:
    """Memoize into `directory` from now on in this process (None: never)."""
    global _directory
    _directory = None if directory is None else Path(directory)


def _digest(parts: tuple) -> str:
    from benchmark.provenance import source_digest

    digest = hashlib.sha256(source_digest().encode())
    for part in parts:
        if isinstance(part, np.ndarray):
            digest.update(f"{part.dtype.str}{part.shape}".encode())
            digest.update(np.ascontiguousarray(part).tobytes())
        else:
            digest.update(repr(part).encode())
        digest.update(b"\0")
    return digest.hexdigest()[:32]


def _checksum(values: tuple[np.ndarray, ...]) -> np.ndarray:
    """sha256 of the arrays' dtypes, shapes and bytes, as stored beside them: an edited entry no longer matches."""
    digest = hashlib.sha256()
    for value in values:
        digest.update(f"{value.dtype.str}{value.shape}".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    return np.frombuffer(digest.digest(), dtype=np.uint8)


def memoized(parts: tuple, compute: Callable[[], tuple[np.ndarray, ...]]) -> tuple[np.ndarray, ...]:
    """compute(), or its stored answer for the same `parts`; a missing, unreadable or edited entry (its arrays no
    longer match the checksum stored with them) is recomputed."""
    if _directory is None:
        return compute()
    path = _directory / f"{_digest(parts)}.npz"
    try:
        with np.load(path) as stored:
            values = tuple(stored[f"a{i}"] for i in range(len(stored.files) - 1))
            if np.array_equal(stored["checksum"], _checksum(values)):
                return values
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        pass
    values = compute()
    temporary = None
    try:
        _directory.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=_directory, suffix=".tmp")
        with os.fdopen(handle, "wb") as out:
            np.savez(out, checksum=_checksum(values), **{f"a{i}": value for i, value in enumerate(values)})
        os.replace(temporary, path)
    except OSError:  # a memo that cannot be written only costs time
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
    return values
