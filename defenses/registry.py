"""Find a defense by name: a built-in, `path/to/file.py:ClassName`, or an entry point in `disaggbench.defenses`."""

import importlib.util
import inspect
import sys
from importlib.metadata import entry_points
from pathlib import Path

from benchmark.errors import BenchmarkError, TaskTimeout
from benchmark.provenance import helper_names, is_library_module, plugin_helpers
from defenses.base import Defense
from defenses.builtin import ALIASES, BUILTIN_DEFENSES

ENTRY_POINT_GROUP = "disaggbench.defenses"


def _from_file(spec: str) -> type:
    path_text, _, class_name = spec.rpartition(":")
    path = Path(path_text)
    if path.is_dir():
        raise BenchmarkError(f"defense file {path} is a directory, not a .py file")
    if not path.is_file():
        raise BenchmarkError(f"defense file {path} does not exist")
    folder = path.resolve().parent
    _forget(helper_names(plugin_helpers(path), folder))
    module_spec = importlib.util.spec_from_file_location(f"disaggbench_user_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    sys.path.insert(0, str(folder))  # helper modules beside the plugin import as beside a script, while it loads
    try:
        module_spec.loader.exec_module(module)
    except (KeyboardInterrupt, TaskTimeout):  # the user's Ctrl-C, the task's clock: not the file's failure
        raise
    except BaseException as error:  # noqa: BLE001 - a user's file: any failure (an exit, GeneratorExit) becomes one line
        raise BenchmarkError(f"defense file {path} failed to load: {type(error).__name__}: {error}") from None
    finally:
        sys.path.remove(str(folder))
    if not hasattr(module, class_name):
        raise BenchmarkError(f"defense file {path} has no class {class_name}")
    return getattr(module, class_name)


def _forget(names: set[str]) -> None:
    """Drop the modules of these top-level names (and their submodules) from sys.modules, so the plugin imports its
    own helpers' current code (the key hashed them), not another plugin's helper of the same name loaded before;
    never one loaded from the standard library, an installed package or this package (a helper that shadows such a
    name cannot replace a module already in use)."""
    for key in [key for key in sys.modules if key.partition(".")[0] in names]:
        if not is_library_module(sys.modules[key]):
            del sys.modules[key]


def defense_class(name: str) -> type:
    """The class behind a defense name (an old name in ALIASES gives its new one's)."""
    name = ALIASES.get(name, name)
    if name in BUILTIN_DEFENSES:
        return BUILTIN_DEFENSES[name]
    if ".py:" in name:
        cls = _from_file(name)
    else:
        found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
        if not found:
            known = ", ".join(sorted(available_defenses()))
            raise BenchmarkError(f"unknown defense {name!r}; known: {known}; or give path/to/file.py:ClassName")
        cls = found[0].load()
    if not (inspect.isclass(cls) and issubclass(cls, Defense)):
        raise BenchmarkError(f"defense {name!r} is not a subclass of defenses.base.Defense")
    label = declared_name(cls)
    if is_builtin_name(label):
        raise BenchmarkError(f"defense {name!r} is named {label!r}, a built-in defense's name: its rows would pass for the "
                             "built-in's; give it a name of its own")
    check_label(label, f"defense {name!r}: name")  # as a suite's [[defenses]] labels: it labels the plugin's rows
    return cls


def bound_parameters(name: str, given: dict) -> dict:
    """Every constructor parameter of the defense, defaults filled in; BenchmarkError where it does not take `given`."""
    try:
        bound = inspect.signature(defense_class(name)).bind(**given)
    except TypeError as error:
        raise BenchmarkError(f"defense {name!r} does not take parameters {given}: {error}") from None
    bound.apply_defaults()
    parameters: dict = {}
    for key, value in bound.arguments.items():
        kind = bound.signature.parameters[key].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            parameters.update(value)
        elif kind is not inspect.Parameter.VAR_POSITIONAL:
            parameters[key] = value
    return parameters


def check_label(value: object, what: str) -> str:
    """A name tables print (a defense's label or name, a cell's, a grid's, the utility task's): a non-empty string
    without surrounding spaces or control characters, which tables would not show; BenchmarkError naming `what`."""
    if not (isinstance(value, str) and value.strip()):
        raise BenchmarkError(f"{what} must be a non-empty string, got {value!r}")
    if value != value.strip() or not value.isprintable():
        raise BenchmarkError(f"{what} {value!r} has surrounding spaces or control characters, which tables would not show")
    if not value.isascii():  # a look-alike letter (Cyrillic o in "none") passed for another defense; wide ones broke the board
        raise BenchmarkError(f"{what} {value!r} must be ASCII: tables print it as a row's identity, where a look-alike "
                             "letter could pass for another name")
    return value


def is_builtin_name(label: str) -> bool:
    """Whether rows labelled `label` would pass for a built-in defense's (its name or an old alias), also once
    tables strip or fold its spaces ("none " printed as "none")."""
    shown = " ".join(label.split())
    return shown in BUILTIN_DEFENSES or shown in ALIASES


def declared_name(cls: type) -> str:
    """The class's `name`, unless it only inherits the base class's ("none"): then its class name."""
    declared = [k.__dict__["name"] for k in cls.__mro__ if k is not Defense and isinstance(k.__dict__.get("name"), str)]
    return declared[0] if declared and declared[0].strip() else cls.__name__


def make_defense(name: str, parameters: dict | None = None) -> Defense:
    """An instance; parameters a class lists in `nested_defenses` hold {name, ...} entries, built here first."""
    cls = defense_class(name)
    parameters = dict(parameters or {})
    for key in getattr(cls, "nested_defenses", ()):
        if key in parameters:
            parameters[key] = _nested(name, key, parameters[key])
    _check_types(name, cls, parameters)
    try:
        return cls(**parameters)
    except BenchmarkError:
        raise
    except (Exception, SystemExit) as error:  # a constructor that rejects its parameters (or exits)
        raise BenchmarkError(f"defense {name!r} rejected its parameters {parameters}: {type(error).__name__}: {error}") from None


def _check_types(name: str, cls: type, parameters: dict) -> None:
    """A parameter annotated int, float, bool or str must be one (a float finite), named in the error."""
    from benchmark.scenario import type_error

    try:
        signature = inspect.signature(cls, eval_str=True)
    except Exception:  # noqa: BLE001 - annotations a user's file cannot evaluate: the constructor checks alone
        return
    for key, value in parameters.items():
        parameter = signature.parameters.get(key)
        if parameter is not None and parameter.annotation in (int, float, bool, str):
            problem = type_error(value, parameter.annotation)
            if problem:
                raise BenchmarkError(f"defense {name!r}: parameter {key} {problem}, got {value!r}")


def _nested(name: str, key: str, entries: object) -> list[Defense]:
    if not isinstance(entries, list) or not all(isinstance(entry, dict) and isinstance(entry.get("name"), str) for entry in entries):
        raise BenchmarkError(f"{name} needs {key} = [{{name = \"...\", ...parameters}}, ...], each name a string, got {entries!r}")
    return [make_defense(entry["name"], {k: v for k, v in entry.items() if k != "name"}) for entry in entries]


def available_defenses() -> dict[str, str]:
    """Name -> first line of the docstring, for `disaggbench list`."""
    names = {name: (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else "" for name, cls in BUILTIN_DEFENSES.items()}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        names.setdefault(ep.name, f"plugin from {ep.value}")
    return names
