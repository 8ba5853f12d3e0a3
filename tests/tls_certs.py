"""Throwaway X.509 material for the TLS tests (tests/integration/test_amqp_tls.py,
tests/integration/test_redis_tls.py), made with the openssl CLI: EC P-256 keys, two days."""

from __future__ import annotations

import subprocess
from pathlib import Path

EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_ca(directory: Path, name: str) -> None:
    """A self-signed CA: <name>.pem and <name>.key in `directory`."""
    _openssl(
        "req", "-x509", *EC_KEY, "-days", "2", "-subj", f"/CN={name}",
        "-keyout", str(directory / f"{name}.key"), "-out", str(directory / f"{name}.pem"),
    )  # fmt: skip


def make_leaf(directory: Path, ca: str, name: str, extensions: str) -> None:
    """A certificate for `name`, signed by the CA `ca`."""
    (directory / f"{name}.ext").write_text(extensions + "\n")
    _openssl(
        "req", *EC_KEY, "-subj", f"/CN={name}",
        "-keyout", str(directory / f"{name}.key"), "-out", str(directory / f"{name}.csr"),
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-days", "2", "-in", str(directory / f"{name}.csr"),
        "-CA", str(directory / f"{ca}.pem"), "-CAkey", str(directory / f"{ca}.key"),
        "-CAcreateserial", "-extfile", str(directory / f"{name}.ext"),
        "-out", str(directory / f"{name}.pem"),
    )  # fmt: skip
