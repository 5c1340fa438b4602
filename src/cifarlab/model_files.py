"""Models given as files (``net.toml``, ``nets/my.py:Net``): how a ``--model`` value names
a file, the digest that makes an edited file a new run, and the copy a run keeps of it.

Kept apart from the registry, which builds nets (and imports torch): the config, the
results tables and the report only need to know which file a run trained.
"""

from __future__ import annotations

import ast
import hashlib
import shutil
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cifarlab.errors import CifarlabError
from cifarlab.tables import split_version


def model_file_digest(model: str) -> str | None:
    """SHA-256 of the file a model reference names (None: a built-in name, or no file): part
    of a run's settings, so an edited file is a new run."""
    source = model_source(model)
    return _sha256(source[0]) if source is not None and source[0].is_file() else None


def model_code_digest(model: str) -> str | None:
    """The digest of the file a model reference names and of the helper modules beside it
    that it imports: the code a run trained. Runs record it beside the file's own digest,
    which alone names the run (runs recorded before helpers counted keep their identity); a
    run whose helpers changed trains again, as a run whose data changed does. For a net
    registered from Python in this process, the digest of its code (its name alone names
    its runs: an edited net trains again, and its versions are told apart, the same way)."""
    source = model_source(model)
    if source is None:
        registry = sys.modules.get("cifarlab.models.registry")  # registering imported it
        return registry.registered_digest(model) if registry is not None else None
    return code_digest(source[0]) if source[0].is_file() else None


def code_digest(path: Path) -> str:
    """A model file's bytes, and each helper's name and bytes (a file without helpers: its
    plain SHA-256)."""
    folder = path.resolve().parent
    digest = hashlib.sha256(path.read_bytes())
    for helper in helper_files(path):
        digest.update(b"\0" + helper.relative_to(folder).as_posix().encode() + b"\0")
        try:
            digest.update(helper.read_bytes())
        except OSError:  # unreadable: its import will say so
            digest.update(b"\0unreadable")
    return digest.hexdigest()


def helper_files(path: Path) -> list[Path]:
    """The Python files beside a model file that it imports, directly or through each other,
    as ``python net.py`` finds them: ``from blocks import Block`` is blocks.py, ``from nets
    import wide`` is nets/__init__.py and nets/wide.py. A folder without ``__init__.py``
    (a log folder named like an installed package) is not one."""
    path = path.resolve()
    found: set[Path] = set()
    todo = [path]
    while todo:
        for module in _imported_modules(todo.pop(), path.parent):
            for file in _module_files(path.parent, module):
                if file not in found and file != path:
                    found.add(file)
                    todo.append(file)
    return sorted(found)


def _imported_modules(file: Path, folder: Path) -> set[str]:
    """Dotted names of the modules a Python file imports (``from a import b``: a, and a.b in
    case b is a submodule), its relative imports read from its package under ``folder``;
    a file that does not parse has none (its import reports it)."""
    try:
        tree = ast.parse(file.read_bytes())
    except (SyntaxError, ValueError, OSError):
        return set()
    package = file.parent.relative_to(folder).parts  # () for the model file's own folder
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level > len(package):  # above the helpers' folder: not ours
                continue
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            if module:
                names.add(module)
            names.update(f"{module}.{a.name}".lstrip(".") for a in node.names if a.name != "*")
    return names


def _module_files(folder: Path, module: str) -> list[Path]:
    """The files Python runs to import ``module`` from ``folder``: each package's
    ``__init__.py`` on the way, and the module itself."""
    files, here = [], folder
    for part in module.split("."):
        if (here / part / "__init__.py").is_file():
            files.append(here / part / "__init__.py")
            here = here / part
        elif (here / f"{part}.py").is_file():
            files.append(here / f"{part}.py")
            break
        else:
            break
    return files


def trained_version(run: dict[str, Any]) -> tuple[str | None, str | None]:
    """The model file digest and model code digest a run recorded (None: not recorded)."""
    info = run.get("info") or {}
    return info.get("model_file_sha256"), info.get("model_code_sha256")


def is_version(run: dict[str, Any], reference: str, kept: Path | None = None) -> bool:
    """Whether the file ``reference`` names (or the run's ``kept`` copy, with the helpers
    kept beside it) is the version ``run`` trained."""
    file_sha, code_sha = trained_version(run)
    path = kept if kept is not None else (model_source(reference) or (Path(),))[0]
    if not path.is_file():
        return False
    if code_sha:
        return code_digest(path) == code_sha
    return _sha256(path) == file_sha


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def kept_model_file(run_dir: Path, source: Path) -> Path:
    """Where a run keeps the copy of its model file it trained (``model.toml``/``model.py``)."""
    return run_dir / f"model{source.suffix}"


def model_of_run(
    run: dict[str, Any], workspace: Path, to: str = "see its diagram and predictions"
) -> str:
    """The model reference that rebuilds ``run``'s net as it trained: the file it names while
    unchanged (helper modules beside it still import), else the copy the run kept in its
    folder; refused where neither holds that version (a net of the same shapes would load
    the weights and quietly be another model), with what restoring it lets one ``to`` do."""
    reference = model_reference(run["config"]["model"])
    source = model_source(reference)
    if source is None:
        refuse_other_registered_version(run, reference, to)
        return reference
    if not any(trained_version(run)) or is_version(run, reference):
        return reference  # built-in, from before digests were recorded, or unchanged
    kept = kept_model_file(workspace / run["id"], source[0])
    if is_version(run, reference, kept):  # with the helpers kept beside it
        return f"{kept}:{source[1]}" if source[1] else str(kept)
    raise CifarlabError(
        f"model file {reference!r} (or a helper module it imports) has changed since run "
        f"{run['id']} trained it, and the run kept no copy of that version; restore it to {to}"
    )


def refuse_other_registered_version(run: dict[str, Any], name: str, to: str) -> None:
    """A net registered from Python is rebuilt from the code registered now: refused where
    that is not the code ``run`` trained (same shapes: the weights loaded into another net),
    or where this process has not registered it (a notebook's net, in a shell's command)."""
    from cifarlab.models.registry import is_registered  # torch: not for the light commands

    trained, now = trained_version(run)[1], model_code_digest(name)
    # a net registered from Python records its code: "unknown model; choose one of" is no fix
    # for it (a built-in renamed since keeps that message, with its did-you-mean)
    if trained and not is_registered(name):
        raise CifarlabError(
            f"run {run['id']} trained {name!r}, which is not registered in this process; "
            f"register it (cifarlab.register_model) to {to}"
        )
    if trained and now and trained != now:
        raise CifarlabError(
            f"model {name!r} registered in this process is not the version run {run['id']} "
            f"trained (its code has changed since); register that version again to {to}"
        )


def short_model_names(models: Iterable[str]) -> dict[str, str]:
    """Each model as a report shows it: a model file by its name (``net.toml@a24e21``,
    ``net.py:Net``; runs record absolute paths), unless two files of one name are shown."""
    models = set(models)
    short = {m: Path(m).name if model_source(model_reference(m)) else m for m in models}
    taken = Counter(short.values())
    return {m: s if taken[s] == 1 else m for m, s in short.items()}


def model_reference(name: str) -> str:
    """The model reference behind a name tables show: ``net.toml@a24e21`` -> ``net.toml``,
    ``my-net@3f9a1c`` -> ``my-net`` (results.name_model_versions names the versions of an
    edited model file, or of a net registered from Python, so)."""
    return split_version(name)[0]


def model_source(model: str) -> tuple[Path, str] | None:
    """What a ``--model`` value names in a file: ``spec.toml`` -> (its path, ""),
    ``nets/my.py:Net`` -> (nets/my.py, "Net"), ``nets/my.py`` -> (nets/my.py, ""), and None
    for a built-in name. The one place that tells a file from a name."""
    if model.endswith(".toml"):
        return Path(model), ""
    if model.endswith(".py") or ".py:" in model:
        path, _, name = model.partition(".py:") if ".py:" in model else (model[:-3], "", "")
        return Path(path + ".py"), name
    return None


RUN_FILES = {"model", "tensorboard"}  # names in a run folder a helper could take (model.py)


def keep_model_file(model: str, run_dir: Path) -> None:
    """A copy of the run's model file (spec or Python) in its folder, as it was trained: the
    report rebuilds the net from it after the file is edited, moved, or read from
    another folder (``model_of_run``)."""
    source = model_source(model)
    if source is None or kept_model_file(run_dir, source[0]).exists():  # kept at its start
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    kept = kept_model_file(run_dir, source[0])
    shutil.copyfile(source[0], kept)
    folder = source[0].resolve().parent
    helpers = {h: run_dir / h.relative_to(folder) for h in helper_files(source[0])}
    # beside the copy, as beside the file, so it imports them; a helper named like the run's
    # own files (`model`: the copy itself) is not kept, and the copy then matches no version
    if all(Path(h.relative_to(folder).parts[0]).stem not in RUN_FILES for h in helpers):
        for helper, copy in helpers.items():
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(helper, copy)
