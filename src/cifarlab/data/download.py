"""Download the official CIFAR archives into the cache: resumable, md5-verified.

A partial download lives in ``<name>.part`` and resumes with an HTTP Range
request; a server that ignores Range sends the whole file again, which is
handled too. Only a file whose md5 matches is renamed into place, and a verified
file gets a ``.md5ok`` stamp so later runs skip re-hashing 170 MB. Two processes that
need the same archive take turns on a lock file: the second waits, then finds it there.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

try:
    import fcntl
except ImportError:  # Windows: no lock, as before
    fcntl = None

from cifarlab.errors import CifarlabError, bar_disabled, note

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
    stamp = _stamp_file(dest)
    if dest.is_file() and _stamp(dest) == _read(stamp):
        return dest  # verified before and untouched since
    folder.mkdir(parents=True, exist_ok=True)
    with _turn(dest, quiet):
        if dest.is_file() and _md5(dest) == expected:  # perhaps fetched while we waited
            stamp.write_text(_stamp(dest))
            return dest
        dest.unlink(missing_ok=True)
        part = dest.with_name(dest.name + ".part")
        # a run stopped after the last byte left the whole file: a server answers a Range
        # past its end with 416, and the next run deleted the file and asked for another
        if not (part.is_file() and _md5(part) == expected):
            url = _base_url().rstrip("/") + "/" + filename  # checked only where one is fetched
            sized = _fetch(url, part, quiet, filename)
            if (actual := _md5(part)) != expected:
                part.unlink()
                why = (
                    "A mirror must serve the official archive byte for byte: fix or unset "
                    "CIFARLAB_DOWNLOAD_URL"
                    if sized
                    else "The server sent no size, so a transfer cut short looks complete: "
                    "run again to download it afresh"
                )
                raise CifarlabError(
                    f"downloaded {url} has md5 {actual}, not the official file's {expected}; "
                    f"it was deleted. {why}, or {_how(filename)}"
                )
        os.replace(part, dest)
        stamp.write_text(_stamp(dest))
        return dest


def distrust(archive: Path) -> None:
    """Forget that a downloaded ``archive`` was verified: it failed to read, so the next run
    hashes it again and fetches it afresh if it was damaged since."""
    if archive.name in MD5:
        _stamp_file(archive).unlink(missing_ok=True)


@contextlib.contextmanager
def _turn(dest: Path, quiet: bool) -> Iterator[None]:
    """Hold ``dest``'s lock file: two runs fetching into one ``.part`` would ruin it."""
    if fcntl is None:
        yield
        return
    with dest.with_name(dest.name + ".lock").open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            note(quiet, f"waiting for another cifarlab process to download {dest.name}")
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield  # the lock goes with the file's closing


def _base_url() -> str:
    url = os.environ.get("CIFARLAB_DOWNLOAD_URL") or DEFAULT_BASE_URL
    try:
        scheme = urllib.parse.urlsplit(url).scheme
    except ValueError:  # "http://[::1": a bracket left open
        scheme = ""
    if scheme not in ("http", "https", "ftp", "file"):
        raise CifarlabError(
            f"CIFARLAB_DOWNLOAD_URL {url!r} is not a URL urllib can fetch; give the folder "
            "holding the archives as https://host/path/ or, on this machine, file:///path/"
        )
    return url


def _stamp_file(archive: Path) -> Path:
    return archive.with_name(archive.name + ".md5ok")


def _fetch(url: str, part: Path, quiet: bool, filename: str) -> bool:
    """Fetch ``url`` into ``part``, continuing from its current size where possible; whether
    the server said how long the file is."""
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
                cut = False
                try:
                    while block := response.read(_BLOCK):
                        out.write(block)
                        bar.update(len(block))
                except (http.client.HTTPException, OSError):
                    cut = True  # a dropped connection: the check below says to resume
    except urllib.error.HTTPError as err:
        if err.code == 416:  # our .part is already as long as (or longer than) the file
            part.unlink()
            raise CifarlabError(f"{url}: cannot resume; partial file deleted, run again") from None
        mirror = "; check CIFARLAB_DOWNLOAD_URL" if os.environ.get("CIFARLAB_DOWNLOAD_URL") else ""
        raise CifarlabError(
            f"cannot download {url}: HTTP {err.code} {err.reason}{mirror}; {_how(filename)}"
        ) from None
    except (urllib.error.URLError, OSError) as err:  # refused, unreachable, timed out
        reason = getattr(err, "reason", None) or err
        message = f"cannot download {url} ({reason}); offline? {_how(filename)}"
        raise CifarlabError(message) from None
    if (cut and total is None) or (total is not None and part.stat().st_size < total):
        of = f" of {total}" if total is not None else ""
        raise CifarlabError(
            f"download of {url} was cut off at {part.stat().st_size}{of} bytes; "
            "run again to resume it"
        )
    return total is not None


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


def _stamp(path: Path) -> str:  # what the .md5ok file holds
    st = path.stat()
    return f"{MD5[path.name]}|{st.st_size}|{st.st_mtime_ns}"


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None
