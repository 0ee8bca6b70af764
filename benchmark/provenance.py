"""What a task's result depends on besides its parameters: the package's source and any plugin file's bytes.

A task key hashes these, so editing the simulation, an attack, a defense or a plugin file makes the next run
recompute instead of reusing a stored result (the package version can stay the same across many commits).
"""

import ast
import hashlib
import importlib.util
import sysconfig
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
    if origin is None or not origin.is_file():
        return [f"{name}={hashlib.sha256(found.value.encode()).hexdigest()[:16]}"]
    top = importlib.util.find_spec(found.module.partition(".")[0])
    package = Path(top.origin).parent if top is not None and top.origin and top.origin.endswith("__init__.py") else None
    files = sorted(package.rglob("*.py")) if package is not None else [origin]
    return [f"{name}={_files_digest(files, _user_imports(files, origin.parent))}"]


def plugin_digests(name: str, parameters: object = ()) -> list[str]:
    """A digest of the code of every plugin defense named by `name` or by a nested `{name = ...}` entry of
    `parameters`: a `file.py:Class` file's bytes, an entry point's module file. Built-ins are in source_digest."""
    path = plugin_path(name)
    if path is not None:
        digest = _files_digest([path], plugin_helpers(path)) if path.is_file() else \
            hashlib.sha256(b"<missing>").hexdigest()[:16]
        own = [f"{path.name}:{name.rpartition(':')[2]}={digest}"]
    else:
        own = _entry_point_digest(name)
    return own + _nested_digests(parameters)


def _files_digest(files: list[Path], helpers: list[Path]) -> str:
    """SHA-256 of the plugin's own files' bytes, then each helper module's path (relative where it can be, so a
    plugin folder keeps its key elsewhere) and bytes; a plugin without helpers keeps its file's plain digest."""
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in files))
    for helper in helpers:
        digest.update(b"\0" + helper.name.encode() + b"\0" + helper.read_bytes())
    return digest.hexdigest()[:16]


def _library_folders() -> tuple[Path, ...]:
    paths = sysconfig.get_paths()
    return tuple(Path(paths[key]).resolve() for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths)


def plugin_helpers(path: Path) -> list[Path]:
    """The helper module files a `file.py:Class` plugin imports (see _user_imports), resolved; its folder is that of
    the file itself, behind any symbolic link, as defenses.registry imports from there."""
    return _user_imports([path], path.resolve().parent)


def helper_names(files: list[Path], folder: Path) -> set[str]:
    """The top-level module names under which `files` (helpers of a plugin in `folder`) import."""
    names = set()
    for path in files:
        inside = path.relative_to(folder) if path.is_relative_to(folder) else Path(path.name)
        names.add(inside.parts[0] if len(inside.parts) > 1 else inside.stem)
    return names


def is_library_module(module: object) -> bool:
    """Whether a loaded module comes from the standard library, an installed package or this package (no file:
    built in)."""
    origin = getattr(module, "__file__", None)
    if not origin:
        return getattr(module, "__path__", None) is None  # a namespace package has a path and no file
    path = Path(origin).resolve()
    return any(path.is_relative_to(root) for root in _library_folders() + tuple(ROOT / p for p in SOURCE_PACKAGES))


def _user_imports(files: list[Path], folder: Path) -> list[Path]:
    """The module files a plugin's code imports from outside the standard library, installed packages and this
    package (whose source source_digest hashes), found without running it: `import helper` or `from helper import
    x` beside the plugin or on sys.path (a package: all its files), followed through those files' own imports.
    Editing such a helper changes what the plugin computes, so its bytes belong in the key; imports inside functions count too, names a plugin
    builds at run time (importlib.import_module(text)) cannot be seen."""
    libraries, own = _library_folders(), tuple(ROOT / package for package in SOURCE_PACKAGES)
    found: dict[Path, None] = {}
    queue = [path.resolve() for path in files]
    scanned = set(queue)
    while queue:
        for module in _imported_names(queue.pop()):
            for path in _module_files(module, folder.resolve()):
                if path in scanned or any(path.is_relative_to(root) for root in libraries + own):
                    continue
                scanned.add(path)
                found[path] = None
                queue.append(path)
    return sorted(found, key=lambda path: path.as_posix())


def _module_files(module: str, folder: Path) -> list[Path]:
    """The .py files behind top-level `module`: beside the plugin first (a module file, or every file of a package
    folder, namespace packages too), as the plugin imports with its folder first on sys.path; else where
    `import module` finds it (a package: its folders' files); none for compiled, built-in and missing modules."""
    if (folder / f"{module}.py").is_file():
        return [(folder / f"{module}.py").resolve()]
    if (folder / module).is_dir():
        return sorted(path.resolve() for path in (folder / module).rglob("*.py"))
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return []
    if spec is None:
        return []
    if spec.submodule_search_locations:  # a package, regular or namespace
        return sorted(path.resolve() for place in spec.submodule_search_locations for path in Path(place).rglob("*.py"))
    return [Path(spec.origin).resolve()] if spec.origin and spec.origin.endswith(".py") else []


def _imported_names(path: Path) -> list[str]:
    """Top-level names of the modules a file imports (absolute imports only); none where it does not parse."""
    try:
        tree = ast.parse(path.read_bytes())
    except (SyntaxError, ValueError, OSError):
        return []
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name.partition(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module.partition(".")[0])
    return list(dict.fromkeys(names))


def _nested_digests(value: object) -> list[str]:
    if isinstance(value, dict):
        nested = plugin_digests(value["name"]) if isinstance(value.get("name"), str) else []
        return nested + [d for key, v in value.items() if key != "name" for d in _nested_digests(v)]
    if isinstance(value, (list, tuple)):
        return [d for item in value for d in _nested_digests(item)]
    return []
