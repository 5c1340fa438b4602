"""Download the official CIFAR archives into the cache: resumable, md5-verified.

A partial download lives in ``<name>.part`` and resumes with an HTTP Range
request; a server that ignores Range sends the whole file again, which is
handled too. Only a file whose md5 matches is renamed into place, and a verified
file gets a ``.md5ok`` stamp so later runs skip re-hashing 170 MB.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from cifarlab.errors import CifarlabError, bar_disabled

DEFAULT_BASE_URL = "https://www.cs.toronto.edu/~kriz/"
ARCHIVES = {"cifar10": "cifar-10-python.tar.gz", "cifar100": "cifar-100-python.tar.gz"}
# Tests replace these with the md5s of the small archives they serve.
MD5 = {
    "cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a",
    "cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85",
}
TIMEOUT_S = 20.0  # per socket operation: an offline machine fails fast instead of hanging
_BLOCK = 1 << 16


def download(name: str, folder: Path, quiet: bool = False) -> Path:
    """The verified archive of dataset ``name`` (``cifar10``/``cifar100``) in ``folder``."""
    filename = ARCHIVES[name]
    dest, expected = folder / filename, MD5[filename]
    stamp = dest.with_name(dest.name + ".md5ok")
    if dest.is_file() and _stamp(dest) == _read(stamp):
        return dest  # verified before and untouched since
    if dest.is_file() and _md5(dest) == expected:
        stamp.write_text(_stamp(dest))
        return dest
    dest.unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    url = os.environ.get("CIFARLAB_DOWNLOAD_URL", DEFAULT_BASE_URL).rstrip("/") + "/" + filename
    part = dest.with_name(dest.name + ".part")
    _fetch(url, part, quiet, filename)
    actual = _md5(part)
    if actual != expected:
        part.unlink()
        raise CifarlabError(
            f"downloaded {url} has md5 {actual}, expected {expected}; the file was deleted. "
            "Run again to download it afresh; if it fails again, the server holds another "
            f"file: unset CIFARLAB_DOWNLOAD_URL or fix it, or {_how(filename)}"
        )
    os.replace(part, dest)
    stamp.write_text(_stamp(dest))
    return dest


def _fetch(url: str, part: Path, quiet: bool, filename: str) -> None:
    """Fetch ``url`` into ``part``, continuing from its current size where possible."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            resumed = response.status == 206
            if not resumed:
                have = 0  # the server ignored Range (or there was nothing to resume)
            length = response.headers.get("Content-Length")
            total = have + int(length) if length is not None else None
            with (
                part.open("ab" if resumed else "wb") as out,
                tqdm(total=total, initial=have, unit="B", unit_scale=True,
                     desc=part.name.removesuffix(".part"), disable=bar_disabled(quiet)) as bar,
            ):  # fmt: skip
                try:
                    while block := response.read(_BLOCK):
                        out.write(block)
                        bar.update(len(block))
                except (http.client.HTTPException, OSError):
                    pass  # a dropped connection: the size check below says to resume
    except urllib.error.HTTPError as err:
        if err.code == 416:  # our .part is already as long as (or longer than) the file
            part.unlink()
            raise CifarlabError(f"{url}: cannot resume; partial file deleted, run again") from None
        raise CifarlabError(
            f"cannot download {url}: HTTP {err.code} {err.reason}; offline? {_how(filename)}"
        ) from None
    except (urllib.error.URLError, OSError) as err:  # refused, unreachable, timed out
        reason = getattr(err, "reason", None) or err
        message = f"cannot download {url} ({reason}); offline? {_how(filename)}"
        raise CifarlabError(message) from None
    if total is not None and part.stat().st_size < total:
        raise CifarlabError(
            f"download of {url} was cut off at {part.stat().st_size} of {total} bytes; "
            "run again to resume it"
        )


def _how(filename: str) -> str:
    """How to give the data without this download."""
    return (
        f"fetch {filename} elsewhere and pass --data PATH/TO/it (or its extracted folder, "
        "or an image-folder dataset), or set CIFARLAB_DATA"
    )


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _stamp(path: Path) -> str:
    st = path.stat()
    return f"{MD5[path.name]}|{st.st_size}|{st.st_mtime_ns}"


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None
