"""The version of a net registered from Python: a digest of the code it runs.

A file model's version is its file's bytes (``model_files``); a class defined in a notebook
has no file to read, so its version is what Python compiled: the bytecode and constants of
its methods, and of the user's own classes and functions they reach (a ``Block`` from
another cell), with the values they read (``WIDTH = 64``, ``CFG = [64, "M"]``, a closure's
``width``). Torch's and other libraries' objects count by name (``torch.nn.ReLU``).

Left out, so the version survives what does not change the net: file names and line
numbers (a comment, a blank line, another cell or kernel), and memory addresses (a
function's repr). Bytecode differs between Python versions: a new Python is a new version.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import site
import sys
import sysconfig
import types
from functools import partial
from pathlib import Path
from typing import Any

MAX_DEPTH = 8  # nested containers read this deep; a net's settings are never deeper
MAX_ITEMS = 10_000  # a container this long is data, not a setting: its length stands for it


def factory_digest(factory: Any) -> str:
    """SHA-256 of the code ``factory`` (a class, a function or a partial of one) runs."""
    digest, seen, todo = hashlib.sha256(), set(), [factory]
    while todo:
        obj = todo.pop()
        if id(obj) not in seen:
            seen.add(id(obj))
            text = _class(obj, todo) if isinstance(obj, type) else _function(obj, todo)
            digest.update(text.encode())
    return digest.hexdigest()


def _class(cls: type, todo: list[Any]) -> str:
    parts = [f"class {cls.__qualname__}(" + ",".join(_value(b, todo) for b in cls.__bases__)]
    for key, value in sorted(vars(cls).items()):
        function = getattr(value, "__func__", getattr(value, "fget", value))
        if isinstance(function, types.FunctionType):  # methods, dunder ones too
            parts.append(f"def {key}")
            todo.append(function)
        elif not (key.startswith("__") and key.endswith("__")):  # __firstlineno__, __doc__
            parts.append(f"{key}={_value(value, todo)}")
    return "\n".join(parts)


def _function(obj: Any, todo: list[Any]) -> str:
    if isinstance(obj, partial):
        return f"partial({_value(obj.func, todo)}, {_value((obj.args, obj.keywords), todo)})"
    if not isinstance(obj, types.FunctionType):  # a builtin or a callable object
        return _value(obj, todo)
    parts = [_value((obj.__defaults__, obj.__kwdefaults__), todo)]
    names = sorted(_code(obj.__code__, parts))
    parts += [f"{n}={_value(obj.__globals__[n], todo)}" for n in names if n in obj.__globals__]
    for name, cell in zip(obj.__code__.co_freevars, obj.__closure__ or ()):
        with contextlib.suppress(ValueError):  # a cell not yet assigned
            parts.append(f"{name}={_value(cell.cell_contents, todo)}")
    return "\n".join(parts)


def _code(code: types.CodeType, parts: list[str]) -> set[str]:
    """Add ``code`` and the code nested in it (lambdas, inner functions, comprehensions) to
    ``parts``; return the global names it reads."""
    parts.append(code.co_code.hex() + repr((code.co_names, code.co_varnames)))
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code(const, parts)
        else:
            parts.append(_value(const, []))
    return names


def _value(value: Any, todo: list[Any], depth: int = 0) -> str:
    """A stable text for what a net's code reads: plain values by value, containers item by
    item, the user's classes and functions by name (their code is queued), the rest by type."""
    if value is None or isinstance(value, bool | int | float | complex | str | bytes):
        return repr(value)
    if depth > MAX_DEPTH:
        return "..."
    if isinstance(value, list | tuple | set | frozenset | dict):
        items = list(value.items()) if isinstance(value, dict) else list(value)
        if len(items) > MAX_ITEMS:
            return f"{type(value).__name__}[{len(items)}]"
        texts = [_value(item, todo, depth + 1) for item in items]
        if isinstance(value, set | frozenset | dict):  # their order changes with hashing
            texts.sort()
        return f"{type(value).__name__}[{', '.join(texts)}]"
    if isinstance(value, partial):
        return _value((value.func, value.args, value.keywords), todo, depth + 1)
    if isinstance(value, type | types.FunctionType):
        if _is_users(value):
            todo.append(value)
        return f"{value.__module__}.{value.__qualname__}"
    if isinstance(value, types.ModuleType):
        return f"module {value.__name__}"
    if dataclasses.is_dataclass(value):  # a config object: its fields
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return f"{_value(type(value), todo)}{_value(fields, todo, depth + 1)}"
    if hasattr(value, "__wrapped__"):  # @functools.cache, @wraps: the function it wraps
        return _value(value.__wrapped__, todo, depth + 1)
    if callable(value) and hasattr(value, "__qualname__"):  # torch.relu, a bound method
        return f"{getattr(value, '__module__', '?')}.{value.__qualname__}"
    kind = type(value)
    if _is_users(kind) and hasattr(value, "__dict__"):  # cfg = Cfg(); cfg.width = 32
        return f"{_value(kind, todo)}{_value(vars(value), todo, depth + 1)}"
    shown = repr(value)  # torch.float16, an nn.Module's layers: the value, where it shows
    if " at 0x" not in shown and len(shown) <= MAX_ITEMS:
        return f"{kind.__module__}.{kind.__qualname__}({shown})"
    return f"{kind.__module__}.{kind.__qualname__} object"  # not an address


def _is_users(obj: type | types.FunctionType) -> bool:
    """Whether a class or function is the user's code (a notebook's, a project's module),
    not Python's, torch's, cifarlab's or an installed library's: by the file its code was
    compiled from (a class: its methods'), else its module's."""
    functions = [obj] if not isinstance(obj, type) else list(vars(obj).values())
    for function in functions:
        code = getattr(getattr(function, "__func__", function), "__code__", None)
        if code is not None:
            return is_user_file(code.co_filename)
    if obj.__module__ == "__main__":  # a notebook's or a script's (its launcher's file aside)
        return True
    filename = getattr(sys.modules.get(obj.__module__), "__file__", None)
    return filename is not None and is_user_file(filename)


def is_user_file(filename: str) -> bool:
    """Whether ``filename`` is the user's: not under Python's, torch's, cifarlab's or an
    installed library's folders (a notebook cell's ``/tmp/ipykernel_1/29.py`` is)."""
    if filename.startswith("<"):  # <frozen ...>, <string>
        return False
    path = Path(filename).resolve()
    return not any(path.is_relative_to(folder) for folder in _library_folders())


@functools.cache
def _library_folders() -> list[Path]:
    import torch

    folders = [Path(torch.__file__).parent, Path(__file__).parent.parent]  # torch, cifarlab
    folders += [Path(sysconfig.get_paths()[k]) for k in ("stdlib", "platstdlib", "purelib")]
    folders += [Path(p) for p in (*site.getsitepackages(), site.getusersitepackages())]
    return [folder.resolve() for folder in folders]
