"""A one-node Apache Kafka with a SASL_SSL listener, SCRAM users and ACLs enforced.

The test makes its own CA and broker certificate with Java's ``keytool`` (Kafka needs
Java anyway): ``ca.pem`` (the CA's certificate, what clients trust) and
``broker.p12`` (the broker's key and its certificate for ``127.0.0.1``/``localhost``,
signed by the CA). :func:`start_secure_kafka` starts the cluster of
:mod:`app.kafka_cluster` with :func:`app.kafka_cluster.sasl_ssl_listener`.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from app.kafka_cluster import KafkaCluster, fetch_kafka, sasl_ssl_listener
from app.config import Settings

from .conftest import _STARTED_PIDS, KafkaBroker, free_port

__all__ = ["TlsFiles", "make_tls", "SecureKafka", "start_secure_kafka"]


@dataclass(frozen=True)
class TlsFiles:
    """``ca_file``: PEM of the CA; ``keystore``: PKCS12 of the broker (``password``)."""

    ca_file: Path
    keystore: Path
    password: str


def _keytool(*args: str) -> None:
    keytool = shutil.which("keytool")
    assert keytool, "keytool (Java) is needed for the broker's certificate"
    proc = subprocess.run([keytool, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"keytool {args[0]} failed: {proc.stdout} {proc.stderr}")


def make_tls(folder: Path) -> TlsFiles:
    """A CA and a broker certificate for 127.0.0.1 signed by it (valid 2 days)."""
    folder.mkdir(parents=True, exist_ok=True)
    pw = secrets.token_hex(8)
    ca_store, ca_pem = folder / "ca.p12", folder / "ca.pem"
    store, csr, cert = folder / "broker.p12", folder / "broker.csr", folder / "broker.pem"
    san = "SAN=ip:127.0.0.1,dns:localhost"
    common = ["-storetype", "PKCS12", "-storepass", pw, "-keypass", pw]
    _keytool("-genkeypair", "-alias", "ca", "-keyalg", "EC", "-groupname", "secp256r1",
             "-dname", "CN=fraud-test-ca", "-ext", "bc:c", "-validity", "2",
             "-keystore", str(ca_store), *common)
    _keytool("-exportcert", "-rfc", "-alias", "ca", "-keystore", str(ca_store),
             "-storepass", pw, "-file", str(ca_pem))
    _keytool("-genkeypair", "-alias", "broker", "-keyalg", "EC", "-groupname", "secp256r1",
             "-dname", "CN=127.0.0.1", "-ext", san, "-validity", "2",
             "-keystore", str(store), *common)
    _keytool("-certreq", "-alias", "broker", "-keystore", str(store), "-storepass", pw,
             "-file", str(csr))
    _keytool("-gencert", "-rfc", "-alias", "ca", "-keystore", str(ca_store), "-storepass", pw,
             "-infile", str(csr), "-outfile", str(cert), "-ext", san, "-validity", "2")
    _keytool("-importcert", "-noprompt", "-alias", "ca", "-file", str(ca_pem),
             "-keystore", str(store), "-storepass", pw)
    _keytool("-importcert", "-alias", "broker", "-file", str(cert),
             "-keystore", str(store), "-storepass", pw)
    return TlsFiles(ca_pem, store, pw)


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


def start_secure_kafka(base_dir: Path, users: list[str], attempts: int = 2) -> SecureKafka:
    """Start a one-node SASL_SSL Kafka with a SCRAM user (random password) per name of
    ``users`` plus the super user ``admin``."""
    tls = make_tls(base_dir / "tls")
    passwords = {u: secrets.token_hex(12) for u in ["admin", *users]}
    security = sasl_ssl_listener(
        tls.keystore, tls.password, tls.ca_file, passwords["admin"],
        {u: passwords[u] for u in users},
    )
    libs = fetch_kafka(Settings())
    error: Exception | None = None
    for attempt in range(attempts):
        cluster = KafkaCluster(
            libs, base_dir / f"try-{attempt}", [(free_port(), free_port())], security=security
        )
        try:
            cluster.format()
            for node in cluster.nodes:
                cluster.start_node(node)
                _STARTED_PIDS.add(node.pid)
            cluster.wait_ready(120.0)
            return SecureKafka(KafkaBroker(cluster), tls, passwords)
        except Exception as exc:  # noqa: BLE001 - e.g. a port taken meanwhile
            error = exc
            cluster.stop()
    raise RuntimeError(f"SASL_SSL Kafka did not start after {attempts} attempts: {error}")
