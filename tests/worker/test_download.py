"""The worker's socket-level download of a big blob, against a scripted HTTP server."""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import httpx
import pytest

from corral._blobio import write_hashed_sync
from corral.worker._download import download_blob


def receive(chunks: Iterable[bytes], dest: Path) -> str:
    return write_hashed_sync(chunks, dest)[0]


class Server:
    """Answers each connection with `answer` and keeps what was asked."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.requests: list[bytes] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/prefix/api/v1"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                self.requests.append(data)
                conn.sendall(self.answer)


@pytest.fixture
def server() -> Iterator[Callable[[bytes], Server]]:
    made: list[Server] = []

    def make(answer: bytes) -> Server:
        made.append(Server(answer))
        return made[-1]

    yield make
    for s in made:
        s.sock.close()


def client(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"authorization": "Bearer sekrit"}, timeout=5.0)


# for http:// the worker passes a context that trusts nothing (config.tls_verify): unused
@pytest.mark.parametrize("tls", [False, ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)])
def test_downloads_and_hashes_the_blob(
    server: Callable[[bytes], Server], tmp_path: Path, tls: ssl.SSLContext | bool
) -> None:
    data = os.urandom(3 << 20)
    sha = hashlib.sha256(data).hexdigest()
    s = server(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(data) + data)
    with client(s.url) as http:
        assert download_blob(http, tls, sha, tmp_path / "b", receive) == sha
    assert (tmp_path / "b").read_bytes() == data
    (request,) = s.requests
    assert request.startswith(f"GET /prefix/api/v1/blobs/{sha} HTTP/1.1\r\n".encode())
    assert b"authorization: bearer sekrit\r\n" in request.lower()
    assert b"accept-encoding: identity\r\n" in request


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: 1\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\n\r\nno length",
    ],
)
def test_anything_else_is_left_to_httpx(
    server: Callable[[bytes], Server], tmp_path: Path, answer: bytes
) -> None:
    s = server(answer)
    with client(s.url) as http:
        assert download_blob(http, False, "ab" * 32, tmp_path / "b", receive) is None
    assert not (tmp_path / "b").exists()


def test_a_short_body_is_a_transport_error(
    server: Callable[[bytes], Server], tmp_path: Path
) -> None:
    s = server(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\nonly this")
    with client(s.url) as http, pytest.raises(httpx.TransportError, match="short"):
        download_blob(http, False, "ab" * 32, tmp_path / "b", receive)


def test_no_server_is_a_connect_error(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with client(f"http://127.0.0.1:{port}") as http, pytest.raises(httpx.ConnectError):
        download_blob(http, False, "ab" * 32, tmp_path / "b", receive)


@pytest.mark.parametrize("var", ["HTTP_PROXY", "https_proxy", "ALL_PROXY"])
def test_steps_aside_for_a_proxy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, var: str) -> None:
    monkeypatch.setenv(var, "http://proxy.example:3128")
    with client("http://127.0.0.1:9") as http:
        assert download_blob(http, False, "ab" * 32, tmp_path / "b", receive) is None


def test_steps_aside_for_https_with_the_system_trust(tmp_path: Path) -> None:
    with client("https://127.0.0.1:9") as http:
        assert download_blob(http, True, "ab" * 32, tmp_path / "b", receive) is None
