"""TLS for the coordinator: a private CA in the data directory (`--tls auto`), and the rule
that a coordinator reachable from the network must not speak plain HTTP unless told to.

The CA key never leaves the data directory (mode 0600); its certificate is public and is
served at /ca.pem so that a worker holding a join string can pin it by fingerprint. With
several coordinators on one database the CA is made once and kept in the database
(`share_ca`), so every coordinator's certificate chains to the one a join string pins.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .._net import is_loopback
from .store import Store

CA_YEARS = 10
SERVER_DAYS = 825


@dataclass(frozen=True)
class TlsFiles:
    """The files uvicorn serves with, and the CA certificate to publish."""

    cert: Path
    key: Path
    ca: Path


def bind_refusal(host: str, tls: bool, insecure: bool) -> str | None:
    """Why a coordinator may not listen on `host` as configured, or None."""
    if tls or insecure or is_loopback(host):
        return None
    return (
        f"refusing to listen on {host} without TLS: tokens would cross the network in clear;"
        " use --tls auto (or --tls-cert/--tls-key), or --insecure on a network you trust"
    )


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Corral"),
            x509.NameAttribute(NameOID.COMMON_NAME, common),
        ]
    )


def _make_ca(tls_dir: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    name = _name(f"Corral private CA {socket.gethostname()}")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365 * CA_YEARS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    _write_private(tls_dir / "ca.key", _key_pem(key))
    (tls_dir / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _san(names: Iterable[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def server_names(host: str, extra: Iterable[str] = ()) -> list[str]:
    """Names the server certificate is valid for: loopback, this host, `host`, and `extra`."""
    names = ["localhost", "127.0.0.1", "::1", socket.gethostname(), socket.getfqdn(), *extra]
    if host not in ("0.0.0.0", "::", ""):
        names.append(host)
    return [n for n in dict.fromkeys(names) if n]


def _make_server_cert(tls_dir: Path, names: list[str]) -> None:
    ca_key = serialization.load_pem_private_key((tls_dir / "ca.key").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca = x509.load_pem_x509_certificate((tls_dir / "ca.pem").read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=SERVER_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_san(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(tls_dir / "server.key", _key_pem(key))
    (tls_dir / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def share_ca(store: Store, data_dir: Path) -> None:
    """Put the database's CA in the data directory (the first coordinator's, made here
    when the database has none yet): every coordinator then signs with the same one."""
    tls_dir = data_dir / "tls"
    tls_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    def make() -> bytes:
        if not (tls_dir / "ca.key").exists():
            _make_ca(tls_dir)
        return (tls_dir / "ca.key").read_bytes() + b"\0" + (tls_dir / "ca.pem").read_bytes()

    key, _, pem = store.shared_value("tls_ca", make).partition(b"\0")
    _write_private(tls_dir / "ca.key", key)
    (tls_dir / "ca.pem").write_bytes(pem)


def auto_tls(data_dir: Path, names: list[str]) -> TlsFiles:
    """The data directory's CA (made once) and a fresh server certificate for `names`."""
    tls_dir = data_dir / "tls"
    tls_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not (tls_dir / "ca.key").exists():
        _make_ca(tls_dir)
    _make_server_cert(tls_dir, names)
    return TlsFiles(tls_dir / "server.pem", tls_dir / "server.key", tls_dir / "ca.pem")


__all__ = ["TlsFiles", "auto_tls", "bind_refusal", "server_names", "share_ca"]
