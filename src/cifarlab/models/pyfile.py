"""Models from the user's Python files: ``path/net.py:Net`` (a class or a factory function).

This imports and runs the user's code, as ``python net.py`` would. The callable
gets ``num_classes`` / ``in_channels`` / ``image_size`` only where its signature
accepts them, and its module must map a (2, C, H, W) batch to (2, num_classes)
logits; every failure is one CifarlabError line.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import inspect
import sys
import traceback
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import torch
from torch import nn

from cifarlab.errors import CifarlabError, first_line, looked_in
from cifarlab.model_files import model_source
from cifarlab.models.code_version import is_user_file
from cifarlab.models.spec import ImageSize, image_hw

NO_MESSAGE = "(no message)"  # after "raised ValueError:", the type name again says nothing


def user_code_line(err: BaseException) -> str:
    """`` at net.py:12`` (in Jupyter `` at Cell In[8], line 12``, as IPython names it): the
    last place in ``err``'s traceback in the user's own code, not in torch's, Python's or
    ours; "" where there is none."""
    for frame in reversed(traceback.extract_tb(err.__traceback__)):
        if is_user_file(frame.filename):
            return f" at {code_place(frame)}"
    return ""


def code_place(frame: traceback.FrameSummary) -> str:
    """``net.py:12``, or in Jupyter ``Cell In[8], line 12`` for the file IPython compiled
    cell 8 under (``/tmp/ipykernel_1/29.py``), as IPython's own tracebacks name it."""
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    cell = getattr(getattr(shell, "compile", None), "_filename_map", {}).get(frame.filename)
    if cell is not None:
        return f"Cell In[{cell}], line {frame.lineno}"
    return f"{Path(frame.filename).name}:{frame.lineno}"


def load_python_model(ref: str) -> Callable[..., nn.Module]:
    """A factory ``(num_classes=, in_channels=, image_size=) -> nn.Module`` for ``ref``."""
    path, attr = model_source(ref)
    module = _import(path)
    target = _pick(module, path, attr)
    label = f"{path}:{attr or target.__name__}"

    return partial(build_user_model, target, label)


def _import(path: Path) -> ModuleType:
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else f"does not exist{looked_in(path)}"
        raise CifarlabError(f"model file '{path}' {what}")
    # a unique module name per file, so two user files called net.py do not collide
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
    name = f"cifarlab_user_{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise CifarlabError(f"model file '{path}' cannot be imported as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up here
    folder = str(path.resolve().parent)
    # Helper modules beside an earlier model file are forgotten first: Python caches modules
    # by name, so a.py's `blocks` served b.py's `from blocks import` (b trained a's net), and
    # a helper edited between two runs in a notebook stayed as it was.
    for helper in _HELPERS:
        sys.modules.pop(helper, None)
    before = set(sys.modules)
    sys.path.insert(0, folder)  # as `python net.py` would: helper modules beside it import
    argv, sys.argv = sys.argv, [str(path)]  # its module-level argparse reads no cifarlab options
    try:
        with _argparse_errors_raised():
            spec.loader.exec_module(module)
    except (SystemExit, _ArgparseError) as err:  # a training script's argparse, or sys.exit()
        sys.modules.pop(name, None)
        why = f" ({err})" if isinstance(err, _ArgparseError) else f" (SystemExit({err.code!r}))"
        raise CifarlabError(
            f"model file '{path}' exited on import{why}: its script code runs when cifarlab "
            'imports it; move that under `if __name__ == "__main__":`'
        ) from None
    except Exception as err:  # the user's code may raise anything; report it as one line
        sys.modules.pop(name, None)
        raise CifarlabError(
            f"model file '{path}' raised {type(err).__name__} on import: "
            f"{first_line(err, NO_MESSAGE)}"
        ) from None
    finally:
        sys.argv = argv
        sys.path.remove(folder)
        _HELPERS.update(n for n in set(sys.modules) - before if _beside(n, folder))
    return module


_HELPERS: set[str] = set()  # modules imported from beside a model file


class _ArgparseError(Exception):
    """A model file's argparse refusing its (empty) command line, as one message."""


@contextlib.contextmanager
def _argparse_errors_raised() -> Iterator[None]:
    """While a model file imports, argparse's error raises instead of printing its usage
    above cifarlab's line and exiting: its message goes into that one line."""

    def error(parser: argparse.ArgumentParser, message: str) -> NoReturn:
        raise _ArgparseError(f"{parser.prog}: error: {message}")

    original = argparse.ArgumentParser.error
    argparse.ArgumentParser.error = error  # type: ignore[method-assign]
    try:
        yield
    finally:
        argparse.ArgumentParser.error = original  # type: ignore[method-assign]


def _beside(name: str, folder: str) -> bool:
    """Whether module ``name`` was found in ``folder`` itself (``blocks.py``, ``mylib/``),
    as the borrowed sys.path entry finds it, and not in a subfolder such as a project's
    .venv: those are packages, some of which register torch ops once per process."""
    file = getattr(sys.modules.get(name), "__file__", None)
    if file is None or not Path(file).resolve().is_relative_to(folder):
        return False
    first = Path(file).resolve().relative_to(folder).parts[0]
    return first.partition(".")[0] == name.partition(".")[0]


def _pick(module: ModuleType, path: Path, attr: str) -> Callable[..., nn.Module]:
    own = [
        n
        for n, v in vars(module).items()
        if inspect.isclass(v) and issubclass(v, nn.Module) and v.__module__ == module.__name__
    ]
    if not attr:
        if len(own) == 1:
            return getattr(module, own[0])
        listed = ", ".join(own) or "none"
        raise CifarlabError(
            f"model file '{path}': name the class or factory as '{path}:Name' "
            f"(nn.Module classes defined there: {listed})"
        )
    if not hasattr(module, attr):
        listed = ", ".join(own) or "no nn.Module classes"
        raise CifarlabError(f"model file '{path}' has no {attr!r}; it defines {listed}")
    target = getattr(module, attr)
    if not callable(target):
        raise CifarlabError(f"'{path}:{attr}' is not a class or function")
    return target


def build_user_model(target: Callable[..., nn.Module], label: str, **shape: int) -> nn.Module:
    """``target(...)`` given the shape arguments its signature takes; errors as one line."""
    try:
        if inspect.isclass(target) and target.__init__ is nn.Module.__init__:
            raise ValueError  # no own __init__: Module's (*args, **kwargs) accepts nothing
        params = inspect.signature(target).parameters.values()
        takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
        names = {p.name for p in params}
    except (TypeError, ValueError):  # some builtins have no signature: pass nothing
        takes_all, names = False, set()
    kwargs = {k: v for k, v in shape.items() if takes_all or k in names}
    try:
        model = target(**kwargs)
    except Exception as err:
        raise CifarlabError(
            f"model '{label}' raised {type(err).__name__}{user_code_line(err)} when built: "
            f"{first_line(err, NO_MESSAGE)}"
        ) from None
    if not isinstance(model, nn.Module):
        raise CifarlabError(f"model '{label}' returned {type(model).__name__}, not an nn.Module")
    return model


def check_logits(
    model: nn.Module, ref: str, *, num_classes: int, in_channels: int, image_size: ImageSize
) -> None:
    """Run a (2, C, H, W) batch through ``model`` and insist on (2, num_classes) logits."""
    batch = (2, in_channels, *image_hw(image_size))
    was_training = model.training
    model.eval()  # no BatchNorm statistics are changed by this probe
    try:
        with torch.no_grad():
            out = model(torch.randn(batch))
    except Exception as err:
        raise CifarlabError(
            f"model '{ref}' raised {type(err).__name__}{user_code_line(err)} on a {batch} "
            f"batch: {first_line(err, NO_MESSAGE)}"
        ) from None
    finally:
        model.train(was_training)
    got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if got != (2, num_classes):
        raise CifarlabError(
            f"model '{ref}' maps a {batch} batch to {got}, not (2, {num_classes}) logits; "
            "accept num_classes/in_channels/image_size arguments or fix its output layer"
        )
