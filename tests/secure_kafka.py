"""A one-node Apache Kafka with a SASL_SSL listener, SCRAM users and ACLs enforced.

The test makes its own CA and broker certificate with the ``openssl`` command:
``ca.pem`` (the CA's certificate, what clients trust) and ``broker-keystore.pem`` (the
broker's key and its certificate for ``127.0.0.1``/``localhost``, signed by the CA, a
PEM keystore as Kafka reads them). :func:`start_secure_kafka` starts the cluster of
:mod:`app.stream.kafka_cluster` with :func:`app.stream.kafka_cluster.sasl_ssl_listener`.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from app.config import Settings
from app.stream.kafka_cluster import sasl_ssl_listener

from .conftest import KafkaBroker, start_kafka

__all__ = ["TlsFiles", "make_tls", "SecureKafka", "start_secure_kafka"]


@dataclass(frozen=True)
class TlsFiles:
    """``ca_file``: PEM of the CA; ``keystore``: PEM of the broker's key and chain."""

    ca_file: Path
    keystore: Path


def _openssl(*args: str, cwd: Path) -> None:
    openssl = shutil.which("openssl")
    assert openssl, "the openssl command is needed for the broker's certificate"
    proc = subprocess.run([openssl, *args], capture_output=True, text=True, cwd=cwd)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {proc.stdout} {proc.stderr}")


def make_tls(folder: Path) -> TlsFiles:
    """A CA and a broker certificate for 127.0.0.1/localhost signed by it (P-256,
    valid 2 days), made with the ``openssl`` command (milliseconds; ``keytool`` takes a
    JVM start per step)."""
    folder.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-noenc"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=fraud-test-ca",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=folder)
    _openssl("req", *ec, "-keyout", "broker.key", "-out", "broker.csr",
             "-subj", "/CN=127.0.0.1", cwd=folder)
    (folder / "broker.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
    )
    _openssl("x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "broker.crt", "-days", "2",
             "-extfile", "broker.ext", cwd=folder)
    keystore = folder / "broker-keystore.pem"
    keystore.write_text(
        (folder / "broker.key").read_text() + (folder / "broker.crt").read_text()
        + (folder / "ca.pem").read_text()
    )
    keystore.chmod(0o600)
    return TlsFiles(folder / "ca.pem", keystore)


@dataclass
class SecureKafka:
    """The started broker, its TLS files and every SCRAM user's password."""

    broker: KafkaBroker
    tls: TlsFiles
    passwords: dict[str, str]
    admin: str = "admin"

    @property
    def url(self) -> str:
        return self.broker.url

    def settings(self, user: str, password: str | None = None, **extra) -> Settings:
        """Client settings of ``user`` (its own password unless ``password``)."""
        return Settings(
            kafka_broker_url=self.url,
            kafka_ssl=True,
            kafka_ssl_ca_file=self.tls.ca_file,
            kafka_sasl_mechanism="SCRAM-SHA-512",
            kafka_sasl_username=user,
            kafka_sasl_password=password if password is not None else self.passwords[user],
            **extra,
        )

    def env(self, user: str, password: str | None = None) -> dict[str, str]:
        """The same as environment variables."""
        return {
            "KAFKA_BROKER_URL": self.url,
            "KAFKA_SSL": "true",
            "KAFKA_SSL_CA_FILE": str(self.tls.ca_file),
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "KAFKA_SASL_USERNAME": user,
            "KAFKA_SASL_PASSWORD": password if password is not None else self.passwords[user],
        }


def start_secure_kafka(base_dir: Path, users: list[str]) -> SecureKafka:
    """Start a one-node SASL_SSL Kafka with a SCRAM user (random password) per name of
    ``users`` plus the super user ``admin``."""
    tls = make_tls(base_dir / "tls")
    passwords = {u: secrets.token_hex(12) for u in ["admin", *users]}
    security = sasl_ssl_listener(
        tls.keystore, tls.ca_file, passwords["admin"], {u: passwords[u] for u in users},
    )
    return SecureKafka(start_kafka(base_dir, security=security), tls, passwords)
