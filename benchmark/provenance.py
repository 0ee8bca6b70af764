"""What a task's result depends on besides its parameters: the package's source and any plugin file's bytes.

A task key hashes these, so editing the simulation, an attack, a defense or a plugin file makes the next run
recompute instead of reusing a stored result (the package version can stay the same across many commits).
"""

import hashlib
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE_PACKAGES = ("benchmark", "attacks", "defenses")


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


def plugin_digests(value: object) -> list[str]:
    """`file.py:Class=sha256` of every plugin defense named in a defense name or its (nested) parameters."""
    if isinstance(value, str):
        path = plugin_path(value)
        if path is None:
            return []
        data = path.read_bytes() if path.is_file() else b"<missing>"
        return [f"{path.name}:{value.rpartition(':')[2]}={hashlib.sha256(data).hexdigest()[:16]}"]
    if isinstance(value, dict):
        return plugin_digests(value.get("name")) + [d for v in value.values() if isinstance(v, (list, dict)) for d in plugin_digests(v)]
    if isinstance(value, (list, tuple)):
        return [d for item in value for d in plugin_digests(item)]
    return []
