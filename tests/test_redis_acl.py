"""Redis users per component, on a real redis-server started with the ACL file
``fraudctl redis-acl`` writes: each component does its work with its own user and
nothing else (the worker cannot flush the database nor choose the model); and the
worker's store over TLS, verified against a CA the test makes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from app.config import Settings
from app.redis_store import RedisStore, RedisUnavailableError, redis_client_options, redis_url_of
from tests.conftest import free_port
from tests.worker_utils import ROOT

PASSWORDS = {"fraud-worker": "w-pass-91", "fraud-review": "r-pass-27", "fraud-operator": "o-pass-55"}


def _server(args: list[str], ping) -> subprocess.Popen:
    proc = subprocess.Popen(["redis-server", *args, "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            ping()
            return proc
        except (redis.RedisError, OSError):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)


@pytest.fixture
def acl_redis(tmp_path):
    if not shutil.which("redis-server"):
        pytest.skip("redis-server is not on PATH")
    files = []
    for user, password in PASSWORDS.items():
        f = tmp_path / user
        f.write_text(password)
        f.chmod(0o600)
        files += ["--password-file", f"{user}={f}"]
    out = subprocess.run([sys.executable, "-c", "from app.cli import main; main()", "redis-acl", *files],
                         cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    assert not any(p in out.stdout for p in PASSWORDS.values())  # only their hashes
    acl = tmp_path / "users.acl"
    acl.write_text(out.stdout + "user default off\n")
    port = free_port()
    proc = _server(["--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path),
                    "--aclfile", str(acl)],
                   lambda: redis.Redis(port=port, username="fraud-review",
                                       password=PASSWORDS["fraud-review"]).ping())
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def _client(port: int, user: str) -> redis.Redis:
    return redis.Redis(port=port, username=user, password=PASSWORDS[user], socket_timeout=2)


def test_each_component_does_its_work_with_its_own_user_and_nothing_else(acl_redis):
    port = acl_redis
    operator = _client(port, "fraud-operator")
    operator.set("fraud:model:active", b"v20180710-rf")
    operator.set("fraud:rules:current", b"{}")

    async def worker_work() -> tuple:
        store = RedisStore(f"redis://fraud-worker:{PASSWORDS['fraud-worker']}@127.0.0.1:{port}/0",
                           retry_max_seconds=1)
        try:
            held = await store.reserve_alerts(["t1", "t2"], b"w1", 60)
            await store.mark_alerted(["t1"], 3600)
            states = await store.alert_states(["t1", "t2"])
            return held, states, await store.active_model_version(), await store.current_rules()
        finally:
            await store.close()

    held, states, model, rules = asyncio.run(worker_work())
    assert held == [True, True] and states == [(True, None), (False, b"w1")]
    assert (model, rules) == ("v20180710-rf", b"{}")

    async def worker_sets_the_model() -> None:
        store = RedisStore(f"redis://fraud-worker:{PASSWORDS['fraud-worker']}@127.0.0.1:{port}/0")
        try:
            await store.set_active_model_version("evil")
        finally:
            await store.close()

    with pytest.raises(RedisUnavailableError, match="refused: NoPermissionError"):
        asyncio.run(worker_sets_the_model())  # at once: a permission does not heal by waiting
    worker = _client(port, "fraud-worker")
    for refused in (worker.flushdb, worker.flushall, lambda: worker.keys("*"),
                    lambda: worker.config_get("*"), lambda: worker.get("fraud:redriven:x")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            refused()
    review = _client(port, "fraud-review")
    review.set("fraud:rules:current", b'{"id": "case-review"}')
    for refused in (lambda: review.get("fraud:alerted:t1"), lambda: review.set("fraud:model:active", b"x"),
                    review.flushdb):
        with pytest.raises(redis.exceptions.NoPermissionError):
            refused()
    with pytest.raises(redis.exceptions.NoPermissionError):
        operator.flushall()
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(port=port, username="fraud-worker", password="wrong").ping()
    with pytest.raises(redis.exceptions.AuthenticationError):  # the default user is off
        redis.Redis(port=port).ping()
    assert operator.get("fraud:model:active") == b"v20180710-rf"


def _certificates(tmp: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it: (ca, cert, key)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.timezone.utc)

    def cert(subject, issuer, key, signer, **ext):
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1)))
        for e, critical in ext.values():
            b = b.add_extension(e, critical)
        return b.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = cert(ca_name, ca_name, ca_key, ca_key, bc=(x509.BasicConstraints(ca=True, path_length=None), True))
    server = cert(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]), ca_name, key, ca_key,
                  san=(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False))
    paths = tmp / "ca.pem", tmp / "server.pem", tmp / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    paths[2].chmod(0o600)
    return paths


def test_the_worker_store_over_tls_verifies_the_server(tmp_path):
    if not shutil.which("redis-server"):
        pytest.skip("redis-server is not on PATH")
    ca, cert, key = _certificates(tmp_path)
    port = free_port()
    s = Settings(redis_url=f"redis://127.0.0.1:{port}/0", redis_tls=True, redis_tls_ca_file=ca)
    opts = redis_client_options(s)
    proc = _server(["--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path),
                    "--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca),
                    "--tls-auth-clients", "no"],
                   lambda: redis.Redis.from_url(redis_url_of(s), **opts).ping())
    try:
        async def work(url: str, options: dict):
            store = RedisStore(url, retry_max_seconds=0.5, client_options=options)
            try:
                await store.mark_alerted(["t-tls"], 60)
                return await store.already_alerted(["t-tls"])
            finally:
                await store.close()

        assert asyncio.run(work(redis_url_of(s), opts)) == [True]
        # a client that trusts another CA refuses the server
        (tmp_path / "other").mkdir()
        other = Settings(redis_url=s.redis_url, redis_tls=True,
                         redis_tls_ca_file=_certificates(tmp_path / "other")[0])
        with pytest.raises(RedisUnavailableError):
            asyncio.run(work(redis_url_of(other), redis_client_options(other)))
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_security_doc_shows_the_users_of_the_code():
    from app.redis_acl import REDIS_USERS

    doc = (ROOT / "docs/security.md").read_text()
    for u in REDIS_USERS:
        row = next(line for line in doc.splitlines() if line.startswith(f"| `{u.name}` |"))
        assert row.endswith(f"| {' '.join(sorted(u.commands))} |"), row
        assert all(f"`{p}`" in row for p in u.reads + u.writes), row
