"""JSON for configs: any frozen dataclass (Equinox modules included) is written as
`{"type": "module:QualName", <constructor arguments>}` and rebuilt by calling the class.

The constructor arguments are read back from the attributes of the same names, so a module with
its own `__init__` (like `Lagrangian(target, init_alpha)`, which also holds a trainable array)
is stored by what it was built from, not by its arrays.
This is what lets a run dir or zoo entry record a user's own metric subclass with its options:
the class is found again by its import path, and its constructor gets the stored fields. Tuples
are stored as JSON lists and read back as tuples (configs hold no lists), so a config survives
`from_json(to_json(cfg)) == cfg` exactly.
"""

import dataclasses
import importlib
import inspect
import json
import warnings
from collections.abc import Mapping
from typing import Any

__all__ = ["ConfigError", "constructor_arguments", "from_dict", "from_json", "to_dict", "to_json",
           "type_path"]

TYPE_KEY = "type"


class ConfigError(ValueError):
    """A config that cannot be written to JSON or rebuilt from it."""


def type_path(cls: type) -> str:
    """`module:QualName` of a class, refusing classes that cannot be imported by that path."""
    if "<locals>" in cls.__qualname__:
        raise ConfigError(
            f"{cls.__qualname__} is defined inside a function, so a stored config could not find "
            "it again; define it at module level (in a module your runs can import).")
    module = cls.__module__
    if module == "__main__":
        warnings.warn(
            f"{cls.__qualname__} is defined in the script being run, so it is stored as "
            f"'__main__:{cls.__qualname__}' and loads again only from that same script; define "
            "it in a module your runs can import to load it anywhere.", stacklevel=3)
    while "._" in module:  # prefer the public package that re-exports it (fidec_zoo.configs)
        parent = module.rsplit(".", 1)[0]
        if getattr(importlib.import_module(parent), cls.__qualname__, None) is not cls:
            break
        module = parent
    return f"{module}:{cls.__qualname__}"


def constructor_arguments(cls: type) -> list[str]:
    """The names of the constructor's arguments (no `*args`/`**kwargs`, no `key`)."""
    params = inspect.signature(cls).parameters.values()
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def to_dict(obj: Any) -> Any:
    """A JSON-able description of `obj` (a dataclass, tuple, mapping or JSON scalar)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {TYPE_KEY: type_path(type(obj))}
        for name in constructor_arguments(type(obj)):
            if not hasattr(obj, name):
                raise ConfigError(
                    f"{type(obj).__name__} takes {name!r} but does not keep it as an attribute, "
                    "so it cannot be stored; keep every constructor argument as a field.")
            out[name] = to_dict(getattr(obj, name))
        return out
    if isinstance(obj, tuple | list):
        return [to_dict(x) for x in obj]
    if isinstance(obj, Mapping):
        if TYPE_KEY in obj:
            raise ConfigError(f"A mapping in a config may not use the key {TYPE_KEY!r}.")
        return {str(k): to_dict(v) for k, v in obj.items()}
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise ConfigError(
        f"{type(obj).__name__} value {obj!r} cannot be stored in a config; use numbers, strings, "
        "tuples or frozen dataclasses (an Equinox module whose fields are such values).")


def _import(path: str) -> type:
    module, _, name = path.partition(":")
    try:
        obj: Any = importlib.import_module(module)
        for part in name.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise ConfigError(
            f"The config names the class {path!r}, which cannot be imported here ({e}). If it is "
            "your own class, make its module importable (install it, or put it on PYTHONPATH)."
        ) from None
    if not isinstance(obj, type) or not dataclasses.is_dataclass(obj):
        raise ConfigError(f"{path!r} is not a dataclass, so it cannot be built from a config.")
    return obj


def from_dict(data: Any) -> Any:
    """Inverse of `to_dict`: rebuilds dataclasses by their stored type, lists as tuples."""
    if isinstance(data, list):
        return tuple(from_dict(x) for x in data)
    if isinstance(data, Mapping):
        if TYPE_KEY not in data:
            return {k: from_dict(v) for k, v in data.items()}
        cls = _import(data[TYPE_KEY])
        names = set(constructor_arguments(cls))
        kwargs = {k: from_dict(v) for k, v in data.items() if k != TYPE_KEY}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise ConfigError(
                f"{cls.__name__} has no argument(s) {unknown} (it takes {sorted(names)}); the "
                "config was written by another version of its class.")
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"Cannot build {cls.__name__} from the stored config: {e}") from e
    return data


def to_json(obj: Any, **kwargs: Any) -> str:
    """`to_dict` as a JSON string (`kwargs` go to `json.dumps`, e.g. `indent=2`)."""
    return json.dumps(to_dict(obj), **kwargs)


def from_json(text: str) -> Any:
    """Inverse of `to_json`."""
    return from_dict(json.loads(text))
