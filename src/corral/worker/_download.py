"""A big blob's download over a plain socket, in the calling thread.

httpx reads 64 KiB at a time and parses each piece (about 0.8 GB/s of one core, sync); the
bytes of a 1 GB input are better read straight off the socket 1 MiB a call (about 1.5 GB/s
here). This covers exactly the one request the worker makes for a blob, and steps aside (None,
and the caller uses httpx) for anything else: a proxy in the environment, https without a
pinned CA, or an answer other than a plain 200 with a Content-Length.
"""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import httpx

__all__ = ["download_blob"]

_READ = 1 << 20
_HEAD_MAX = 64 << 10
_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy")
_SKIP = {b"host", b"connection", b"accept-encoding", b"content-length"}


def _applies(url: httpx.URL, tls: ssl.SSLContext | bool) -> bool:
    if any(os.environ.get(v) or os.environ.get(v.upper()) for v in _PROXY_VARS):
        return False
    return url.scheme == "http" or (url.scheme == "https" and isinstance(tls, ssl.SSLContext))


def _request(url: httpx.URL, headers: httpx.Headers, sha256: str) -> bytes:
    path = url.raw_path.split(b"?")[0].rstrip(b"/") + b"/blobs/" + sha256.encode()
    lines = [b"GET " + path + b" HTTP/1.1", b"host: " + url.netloc]
    lines += [k + b": " + v for k, v in headers.raw if k.lower() not in _SKIP]
    lines += [b"accept-encoding: identity", b"connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _head(sock: socket.socket) -> tuple[int, dict[bytes, bytes], bytes]:
    """The status, headers (lower-case names) and the first body bytes of the answer."""
    data = b""
    while b"\r\n\r\n" not in data:
        more = sock.recv(_HEAD_MAX)
        if not more or len(data) > _HEAD_MAX:
            raise httpx.RemoteProtocolError("the coordinator's answer ended in its headers")
        data += more
    head, rest = data.split(b"\r\n\r\n", 1)
    status_line, *lines = head.split(b"\r\n")
    parts = status_line.split(b" ", 2)
    fields = {}
    for line in lines:
        name, _, value = line.partition(b":")
        fields[name.strip().lower()] = value.strip()
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    return status, fields, rest


def _body(sock: socket.socket, first: bytes, length: int) -> Iterator[bytes]:
    left = length - len(first)
    if left < 0:
        raise httpx.RemoteProtocolError("the coordinator sent more than it announced")
    yield first
    while left:
        data = sock.recv(min(left, _READ))
        if not data:
            raise httpx.RemoteProtocolError(f"the blob ended {left} bytes short")
        left -= len(data)
        yield data


def _connect(url: httpx.URL, tls: ssl.SSLContext | bool, timeout: float) -> socket.socket:
    host = url.host
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except TimeoutError as exc:
        raise httpx.ConnectTimeout(str(exc)) from exc
    except OSError as exc:
        raise httpx.ConnectError(str(exc)) from exc
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if url.scheme == "https" and isinstance(tls, ssl.SSLContext):
        try:
            return tls.wrap_socket(sock, server_hostname=host)
        except OSError as exc:
            sock.close()
            raise httpx.ConnectError(str(exc)) from exc
    return sock


def download_blob(
    http: httpx.Client | httpx.AsyncClient,
    tls: ssl.SSLContext | bool,
    sha256: str,
    dest: Path,
    receive: Callable[[Iterable[bytes], Path], str],
) -> str | None:
    """Download the blob into dest through `receive` (which writes and hashes it); its hash,
    or None where this does not apply (nothing written then: use httpx)."""
    url = http.base_url
    if not _applies(url, tls):
        return None
    timeout = http.timeout.read or 60.0
    with _connect(url, tls, timeout) as sock:
        try:
            sock.sendall(_request(url, http.headers, sha256))
            status, fields, first = _head(sock)
            length = fields.get(b"content-length", b"")
            plain = b"transfer-encoding" not in fields and b"content-encoding" not in fields
            if status != 200 or not length.isdigit() or not plain:
                return None
            return receive(_body(sock, first, int(length)), dest)
        except TimeoutError as exc:
            raise httpx.ReadTimeout(str(exc)) from exc
        except (ConnectionError, ssl.SSLError) as exc:
            raise httpx.ReadError(str(exc)) from exc
