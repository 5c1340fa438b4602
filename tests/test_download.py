"""Downloads from a local HTTP server: md5 check, resume with Range, offline errors."""

from __future__ import annotations

import hashlib
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import pack_tree, write_cifar_python

from cifarlab.data import download as download_module
from cifarlab.data import load_dataset
from cifarlab.errors import CifarlabError

NAME = "cifar-10-python.tar.gz"


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.files``; can ignore Range or drop the connection after N bytes."""

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
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        payload = body[start:]
        if server.drop_after is not None:  # once: send part of the body, then hang up
            payload, server.drop_after = payload[: server.drop_after], None
        self.wfile.write(payload)

    def log_message(self, *args) -> None:  # keep test output clean
        pass


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A threaded local server with a small CIFAR-10 python archive; the cache is per test."""
    archive = pack_tree(write_cifar_python(tmp_path / "src"), tmp_path / NAME).read_bytes()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.requests = {NAME: archive}, []
    httpd.honor_range, httpd.drop_after = True, None
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
    with pytest.raises(CifarlabError, match="expected 0{32}; the file was deleted.* if it fails"):
        load_dataset("cifar10")
    assert list(_downloads(tmp_path).iterdir()) == []


def test_a_cut_off_download_resumes_with_range(server, tmp_path):
    server.drop_after = 20_000
    with pytest.raises(CifarlabError, match="cut off at 20000 of .* run again to resume"):
        load_dataset("cifar10")
    assert (_downloads(tmp_path) / (NAME + ".part")).stat().st_size == 20_000
    load_dataset("cifar10", val_size=0)
    assert server.requests[-1][1] == "bytes=20000-"
    assert (_downloads(tmp_path) / NAME).read_bytes() == server.files[NAME]
    assert not (_downloads(tmp_path) / (NAME + ".part")).exists()


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
