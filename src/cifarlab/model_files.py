"""Models given as files (``net.toml``, ``nets/my.py:Net``): how a ``--model`` value names
a file, the digest that makes an edited file a new run, and the copy a run keeps of it.

Kept apart from the registry, which builds nets (and imports torch): the config, the
results tables and the report only need to know which file a run trained.
"""

from __future__ import annotations

import ast
import hashlib
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cifarlab.errors import CifarlabError


def model_file_digest(model: str) -> str | None:
    """SHA-256 of the file a model reference names and of the helper modules beside it that
    it imports (None: a built-in name, or no file)."""
    source = model_source(model)
    return file_digest(source[0]) if source is not None and source[0].is_file() else None


def file_digest(path: Path) -> str:
    """A model file's identity: its bytes, and each helper's name and bytes. A file without
    helpers keeps the plain SHA-256 that runs recorded before helpers counted."""
    digest = hashlib.sha256(path.read_bytes())
    for helper in helper_files(path):
        digest.update(b"\0" + helper.relative_to(path.parent).as_posix().encode() + b"\0")
        digest.update(helper.read_bytes())
    return digest.hexdigest()


def helper_files(path: Path) -> list[Path]:
    """The Python files beside a model file that it imports, directly or through each other,
    as ``python net.py`` finds them (``from blocks import Block``: blocks.py; a package
    folder: its every .py). An edited helper is an edited model."""
    found: set[Path] = set()
    todo = [path]
    while todo:
        for name in _imported_names(todo.pop()):
            for file in _module_files(path.parent, name):
                if file not in found and file != path:
                    found.add(file)
                    todo.append(file)
    return sorted(found)


def _imported_names(file: Path) -> set[str]:
    """Top-level names of the absolute imports in a Python file (its own errors are the
    import's to report)."""
    try:
        tree = ast.parse(file.read_bytes())
    except (SyntaxError, ValueError):
        return set()
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.partition(".")[0])
    return names


def _module_files(folder: Path, name: str) -> list[Path]:
    if (folder / f"{name}.py").is_file():
        return [folder / f"{name}.py"]
    if (folder / name).is_dir():  # a package (or a namespace one): all its code
        return sorted(p for p in (folder / name).rglob("*.py") if "__pycache__" not in p.parts)
    return []


def digest_matches(trained: str, model: str) -> bool:
    """Whether the model file ``model`` names is still the version a run recorded as
    ``trained``; a run recorded before helpers counted has its file's plain SHA-256."""
    source = model_source(model)
    if source is None or not source[0].is_file():
        return False
    return trained in (model_file_digest(model), _sha256(source[0]))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def kept_model_file(run_dir: Path, source: Path) -> Path:
    """Where a run keeps the copy of its model file it trained (``model.toml``/``model.py``)."""
    return run_dir / f"model{source.suffix}"


def model_of_run(run: dict[str, Any], workspace: Path) -> str:
    """The model reference that rebuilds ``run``'s net as it trained: the file it names while
    unchanged (helper modules beside it still import), else the copy the run kept in its
    folder; refused where neither holds that version (a net of the same shapes would load
    the weights and quietly be another model)."""
    reference = model_reference(run["config"]["model"])
    source = model_source(reference)
    trained = (run.get("info") or {}).get("model_file_sha256")
    if source is None or not trained or digest_matches(trained, reference):
        return reference  # built-in, from before digests were recorded, or unchanged
    kept = kept_model_file(workspace / run["id"], source[0])
    if kept.is_file() and file_digest(kept) == trained:  # with the helpers kept beside it
        return f"{kept}:{source[1]}" if source[1] else str(kept)
    raise CifarlabError(
        f"model file {reference!r} has changed (or gone) since run {run['id']} trained it, "
        "and the run kept no copy; restore that version to see its diagram and predictions"
    )


def short_model_names(models: Iterable[str]) -> dict[str, str]:
    """Each model as a report shows it: a model file by its name (``net.toml@a24e21``,
    ``net.py:Net``; runs record absolute paths), unless two files of one name are shown."""
    models = set(models)
    short = {m: Path(m).name if model_source(model_reference(m)) else m for m in models}
    taken = Counter(short.values())
    return {m: s if taken[s] == 1 else m for m, s in short.items()}


def model_reference(name: str) -> str:
    """The model reference behind a name tables show: ``net.toml@a24e21`` -> ``net.toml``
    (results.name_model_versions names the versions of an edited model file so)."""
    base, at, _ = name.rpartition("@")
    return base if at and model_source(base) is not None else name


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
