"""What a task's result depends on besides its parameters: the package's source and any plugin file's bytes.

A task key hashes these, so editing the simulation, an attack, a defense or a plugin file makes the next run
recompute instead of reusing a stored result (the package version can stay the same across many commits).
"""

import hashlib
import importlib.util
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE_PACKAGES = ("benchmark", "attacks", "defenses")
ENTRY_POINT_GROUP = "disaggbench.defenses"  # as in defenses/registry.py, which this light module must not import


@cache
def source_digest() -> str:
    """SHA-256 of every .py under benchmark/, attacks/, defenses/ and the built-in suite files, once per process."""
    digest = hashlib.sha256()
    files = sorted(
        [path for package in SOURCE_PACKAGES for path in (ROOT / package).rglob("*.py")]
        + list((ROOT / "benchmark" / "suites").glob("*.toml"))
    )
    for path in files:
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def plugin_path(name: str) -> Path | None:
    """The file of a `path/to/file.py:ClassName` defense name, else None."""
    path_text, sep, _ = name.rpartition(":")
    return Path(path_text) if sep and path_text.endswith(".py") else None


def portable_name(name: str) -> str:
    """A defense's name as keys hash it: a plugin by its file's name, not its path, so a task keeps its key
    when run from another folder."""
    path = plugin_path(name)
    return name if path is None else f"{path.name}:{name.rpartition(':')[2]}"


@cache
def _entry_points() -> dict:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


@cache
def _entry_point_digest(name: str) -> list[str]:
    """`name=sha256` of the module file behind an installed `disaggbench.defenses` entry point, if any."""
    found = _entry_points().get(name)
    if found is None:
        return []
    spec = importlib.util.find_spec(found.module)
    origin = Path(spec.origin) if spec is not None and spec.origin else None
    data = origin.read_bytes() if origin is not None and origin.is_file() else found.value.encode()
    return [f"{name}={hashlib.sha256(data).hexdigest()[:16]}"]


def plugin_digests(name: str, parameters: object = ()) -> list[str]:
    """A digest of the code of every plugin defense named by `name` or by a nested `{name = ...}` entry of
    `parameters`: a `file.py:Class` file's bytes, an entry point's module file. Built-ins are in source_digest."""
    path = plugin_path(name)
    if path is not None:
        data = path.read_bytes() if path.is_file() else b"<missing>"
        own = [f"{path.name}:{name.rpartition(':')[2]}={hashlib.sha256(data).hexdigest()[:16]}"]
    else:
        own = _entry_point_digest(name)
    return own + _nested_digests(parameters)


def _nested_digests(value: object) -> list[str]:
    if isinstance(value, dict):
        nested = plugin_digests(value["name"]) if isinstance(value.get("name"), str) else []
        return nested + [d for key, v in value.items() if key != "name" for d in _nested_digests(v)]
    if isinstance(value, (list, tuple)):
        return [d for item in value for d in _nested_digests(item)]
    return []
