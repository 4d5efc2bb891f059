"""Test PKI made with the ``openssl`` command line: a CA, server and client certificates."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import bcrypt


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _key_and_csr(directory: Path, name: str, cn: str) -> None:
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}",
        cwd=directory,
    )  # fmt: skip


@dataclass(frozen=True)
class Pki:
    directory: Path
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    #: a client certificate from a CA the server does not trust
    rogue_cert: Path
    rogue_key: Path


def make_ca(directory: Path, name: str) -> Path:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2", "-subj", f"/CN={name}",
        cwd=directory,
    )  # fmt: skip
    return directory / f"{name}.crt"


def issue(directory: Path, ca: str, name: str, cn: str, ext: str) -> tuple[Path, Path]:
    """A certificate ``name.crt``/``name.key`` signed by ``ca`` with extensions ``ext``."""
    _key_and_csr(directory, name, cn)
    (directory / f"{name}.ext").write_text(ext)
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext",
        cwd=directory,
    )  # fmt: skip
    return directory / f"{name}.crt", directory / f"{name}.key"


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca = make_ca(directory, "ca")
    make_ca(directory, "rogue-ca")
    server = issue(
        directory,
        "ca",
        "server",
        "localhost",
        "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    client = issue(
        directory,
        "ca",
        "client",
        "prometheus",
        "subjectAltName=DNS:prometheus.monitoring.svc\nextendedKeyUsage=clientAuth\n",
    )
    rogue = issue(
        directory,
        "rogue-ca",
        "rogue",
        "prometheus",
        "subjectAltName=DNS:prometheus.monitoring.svc\nextendedKeyUsage=clientAuth\n",
    )
    return Pki(directory, ca, *server, *client, *rogue)


def bcrypt_hash(password: str, cost: int = 4) -> str:
    """A bcrypt hash as htpasswd -B writes it (cost 4 keeps tests fast)."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=cost)).decode()
