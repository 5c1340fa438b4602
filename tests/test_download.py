"""Downloads from a local HTTP server: md5 check, resume with Range, offline errors."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import pack_tree, write_cifar_python

from cifarlab.data import download as download_module
from cifarlab.data import load_dataset
from cifarlab.errors import CifarlabError

NAME = "cifar-10-python.tar.gz"


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.files``; can ignore Range, drop the connection after N bytes, send
    no Content-Length, or send slowly."""

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        server = self.server
        body = server.files.get(self.path.rsplit("/", 1)[-1])
        server.requests.append((self.path, self.headers.get("Range")))
        if body is None:
            self.send_error(404)
            return
        start, wanted = 0, self.headers.get("Range")
        if wanted and server.honor_range:
            start = int(wanted.removeprefix("bytes=").split("-")[0])
            if start >= len(body):  # as real servers answer a range past the end
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        if server.send_length:
            self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        payload = body[start:]
        if server.drop_after is not None:  # once: send part of the body, then hang up
            payload, server.drop_after = payload[: server.drop_after], None
        for at in range(0, len(payload), 4096):
            self.wfile.write(payload[at : at + 4096])
            time.sleep(server.pause)

    def log_message(self, *args) -> None:  # keep test output clean
        pass


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A threaded local server with a small CIFAR-10 python archive; the cache is per test."""
    archive = pack_tree(write_cifar_python(tmp_path / "src"), tmp_path / NAME).read_bytes()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.requests = {NAME: archive}, []
    httpd.honor_range, httpd.drop_after = True, None
    httpd.send_length, httpd.pause = True, 0.0
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("CIFARLAB_DOWNLOAD_URL", f"http://127.0.0.1:{httpd.server_port}/files/")
    monkeypatch.setenv("CIFARLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(download_module.MD5, NAME, hashlib.md5(archive).hexdigest())
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _downloads(tmp_path):
    return tmp_path / "cache" / "downloads"


def test_download_verifies_and_is_reused(server, tmp_path):
    data = load_dataset("cifar10", val_size=6)
    assert data.classes == ("cat", "dog", "frog") and len(data.train) == 24
    assert (_downloads(tmp_path) / NAME).read_bytes() == server.files[NAME]
    assert server.requests == [("/files/" + NAME, None)]
    load_dataset("cifar10", val_size=6)  # verified file + cached arrays: no new request
    load_dataset(None, val_size=6)  # no --data, no CIFARLAB_DATA: cifar10 is the default
    assert len(server.requests) == 1


def test_md5_mismatch_deletes_the_file(server, tmp_path, monkeypatch):
    monkeypatch.setitem(download_module.MD5, NAME, "0" * 32)
    mismatch = "not the official file's 0{32}; it was deleted. A mirror must"
    with pytest.raises(CifarlabError, match=mismatch):
        load_dataset("cifar10")
    assert [p.name for p in _downloads(tmp_path).iterdir()] == [NAME + ".lock"]


def test_a_server_that_sends_no_size_gets_no_blame_for_a_short_file(server, tmp_path):
    # Without a Content-Length a hang-up reads as the file's end: the md5 says it was not
    server.send_length, server.drop_after = False, 20_000
    with pytest.raises(CifarlabError, match="sent no size, so a transfer cut short .* afresh"):
        load_dataset("cifar10")
    load_dataset("cifar10", val_size=0)  # as the message says
    assert (_downloads(tmp_path) / NAME).read_bytes() == server.files[NAME]


def test_a_missing_file_on_a_mirror_names_the_mirror_setting(server):
    with pytest.raises(CifarlabError, match="HTTP 404 .*; check CIFARLAB_DOWNLOAD_URL; fetch"):
        load_dataset("cifar100")


@pytest.mark.parametrize("url", ["/tmp/mirror/", "notaurl", "http://[::1"])
def test_a_mirror_setting_that_is_no_url_is_one_line(tmp_path, monkeypatch, url):
    monkeypatch.setenv("CIFARLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CIFARLAB_DOWNLOAD_URL", url)  # a folder: file:///tmp/mirror/ is meant
    with pytest.raises(CifarlabError, match=f"CIFARLAB_DOWNLOAD_URL '{re.escape(url)}' is not a "
                       "URL urllib can fetch; give .* file:///path/$"):  # fmt: skip
        load_dataset("cifar10")


def test_a_complete_archive_on_disk_needs_no_url(server, tmp_path, monkeypatch):
    folder = _downloads(tmp_path)  # copied in by hand: verified by its md5, fetched from nowhere
    folder.mkdir(parents=True)
    (folder / NAME).write_bytes(server.files[NAME])
    monkeypatch.setenv("CIFARLAB_DOWNLOAD_URL", "/tmp/mirror/")
    assert len(load_dataset("cifar10", val_size=6).train) == 24
    assert server.requests == []


def test_a_mirror_folder_on_this_machine_serves_as_file_urls(server, tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / NAME).write_bytes(server.files[NAME])
    monkeypatch.setenv("CIFARLAB_DOWNLOAD_URL", mirror.as_uri() + "/")
    assert len(load_dataset("cifar10", val_size=6).train) == 24


def test_two_processes_downloading_at_once_take_turns(server, tmp_path):
    # Both used to append to one .part: a broken file, one md5 error, 170 MB lost.
    server.pause = 0.01  # the first is still fetching when the second starts
    folder, got = _downloads(tmp_path), []
    runs = [threading.Thread(target=lambda: got.append(download_module.download(
        "cifar10", folder, quiet=True))) for _ in range(2)]  # fmt: skip
    for run in runs:
        run.start()
        time.sleep(0.05)
    for run in runs:
        run.join()
    assert got == [folder / NAME] * 2 and len(server.requests) == 1
    assert (folder / NAME).read_bytes() == server.files[NAME]


def test_a_download_damaged_after_its_check_is_fetched_again(server, tmp_path):
    # Its size and time unchanged, the stamp still vouched for it: every run failed.
    load_dataset("cifar10", val_size=0)
    archive = _downloads(tmp_path) / NAME
    st, raw = archive.stat(), bytearray(archive.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    archive.write_bytes(bytes(raw))
    os.utime(archive, ns=(st.st_atime_ns, st.st_mtime_ns))
    for entry in (tmp_path / "cache").glob("decoded-*"):  # as on a machine with a new cache
        shutil.rmtree(entry)
    with pytest.raises(CifarlabError, match="cannot read the archive"):
        load_dataset("cifar10", val_size=0)
    load_dataset("cifar10", val_size=0)
    assert len(server.requests) == 2 and archive.read_bytes() == server.files[NAME]


def test_a_cut_off_download_resumes_with_range(server, tmp_path):
    server.drop_after = 20_000
    with pytest.raises(CifarlabError, match="cut off at 20000 of .* run again to resume"):
        load_dataset("cifar10")
    assert (_downloads(tmp_path) / (NAME + ".part")).stat().st_size == 20_000
    load_dataset("cifar10", val_size=0)
    assert server.requests[-1][1] == "bytes=20000-"
    assert (_downloads(tmp_path) / NAME).read_bytes() == server.files[NAME]
    assert not (_downloads(tmp_path) / (NAME + ".part")).exists()


def test_a_download_stopped_after_its_last_byte_is_used_as_it_is(server, tmp_path):
    # Stopped while hashing or renaming, it left the whole .part: the next run asked for
    # the bytes after its end, got 416, deleted it and said to run again
    folder = _downloads(tmp_path)
    folder.mkdir(parents=True)
    (folder / (NAME + ".part")).write_bytes(server.files[NAME])
    assert len(load_dataset("cifar10", val_size=0).train) == 30
    assert server.requests == [] and (folder / NAME).read_bytes() == server.files[NAME]


def test_a_server_that_ignores_range_sends_the_whole_file(server, tmp_path):
    server.honor_range = False
    _downloads(tmp_path).mkdir(parents=True)
    (_downloads(tmp_path) / (NAME + ".part")).write_bytes(b"stale bytes from elsewhere")
    load_dataset("cifar10", val_size=0)
    assert server.requests[-1][1] == "bytes=26-"
    assert (_downloads(tmp_path) / NAME).read_bytes() == server.files[NAME]


def test_a_corrupted_cached_archive_is_fetched_again(server, tmp_path):
    load_dataset("cifar10", val_size=0)
    (_downloads(tmp_path) / NAME).write_bytes(b"rotten")
    load_dataset("cifar10", val_size=0)
    assert len(server.requests) == 2


def test_offline_is_one_line_saying_how_to_give_a_local_copy(tmp_path, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on: connection refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("CIFARLAB_DOWNLOAD_URL", f"http://127.0.0.1:{port}/")
    with pytest.raises(CifarlabError, match="cannot download .* pass --data") as err:
        load_dataset("cifar100")
    assert "\n" not in str(err.value)
    assert "fetch cifar-100-python.tar.gz elsewhere" in str(err.value)  # the file asked for


def test_a_path_that_is_no_dataset_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(CifarlabError, match="neither a folder nor"):
        load_dataset(tmp_path / "notes.txt")
    with pytest.raises(CifarlabError, match="does not exist"):
        load_dataset("cifar11")
    with pytest.raises(CifarlabError, match="data: a path or cifar10/cifar100, not a int"):
        load_dataset(123)  # a bare TypeError from pathlib, naming neither argument nor fix
