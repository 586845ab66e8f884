"""Security of a running worker: secrets stay secret, endpoints are read-only, and a
model artifact that does not match its registry entry is never loaded.

A real worker, the real broker and a Redis of the test's own that requires a password.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis

from app.config import Settings
from app.events import Transaction, encode
from app.redis_store import redis_client_options, redis_url_of

from .conftest import free_port
from .worker_utils import ROOT, Worker, worker_env

REDIS_SECRET = "s3cret-redis-Pa55word"
KAFKA_SECRET = "s3cret-kafka-Pa55word"


class _PasswordRedis:
    """A redis-server of the test's own that requires ``REDIS_SECRET``."""

    def __init__(self, work_dir: Path):
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--dir", str(work_dir),
             "--requirepass", REDIS_SECRET],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, password=REDIS_SECRET, socket_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.RedisError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def password_redis(tmp_path):
    if not shutil.which("redis-server"):
        pytest.skip("redis-server is not on PATH")
    server = _PasswordRedis(tmp_path)
    try:
        yield server
    finally:
        server.stop()


def _get(port: int, path: str, method: str = "GET") -> tuple[int, bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method, data=b"x" if method != "GET" else None)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


OIDC_SECRET = "s3cret-oidc-client"
SESSION_KEY = "q5w4QkYwmdx1Xh2P7g3Jb3sYtq2Jw0eX8s9Q3K1d6Zk="


def test_settings_never_show_secrets():
    s = Settings(
        kafka_sasl_username="svc", kafka_sasl_password=KAFKA_SECRET,
        redis_url=f"redis://:{REDIS_SECRET}@127.0.0.1:6379/0", redis_password=REDIS_SECRET,
        review_oidc_client_secret=OIDC_SECRET, review_session_key=SESSION_KEY,
    )
    for text in (repr(s), str(s), str(s.model_dump())):
        for secret in (KAFKA_SECRET, REDIS_SECRET, OIDC_SECRET, SESSION_KEY):
            assert secret not in text
    # only the code that connects reads the value
    assert redis_client_options(s)["password"] == REDIS_SECRET


def test_redis_tls_settings_reach_the_client(tmp_path):
    ca = tmp_path / "ca.pem"
    s = Settings(redis_url="redis://127.0.0.1:6380/0", redis_tls=True, redis_tls_ca_file=ca)
    opts = redis_client_options(s)
    assert redis_url_of(s) == "rediss://127.0.0.1:6380/0" and opts["ssl_ca_certs"] == str(ca)
    assert "ssl_ca_certs" not in redis_client_options(Settings(redis_url="redis://127.0.0.1:6379/0"))
    # tests/test_redis_acl.py connects over TLS to a real redis-server with these


@pytest.mark.broker
def test_worker_keeps_secrets_out_of_logs_and_endpoints(broker, password_redis, tmp_path):
    url = f"redis://127.0.0.1:{password_redis.port}/0"  # the password comes from REDIS_PASSWORD
    env = worker_env(
        broker.url, url, tmp_path,
        REDIS_PASSWORD=REDIS_SECRET,
        KAFKA_SASL_PASSWORD=KAFKA_SECRET,  # set, but no user: SASL is off
    )
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        worker.wait_ready()
        from .worker_utils import produce

        tx = Transaction(transaction_id="t-sec", account_id="acc-s", terminal_id="m-1",
                         amount_minor=100, currency="EUR", event_time_ms=1_530_662_400_000)
        produce(broker.bootstrap, env["TRANSACTIONS_TOPIC"], [(b"acc-s", encode(tx))])
        worker.wait_metric("fraud_transactions_scored_total", 1, timeout=60)
        bodies = {}
        for path in ("/", "/metrics", "/router/", "/router/topics", "/router/account_states/"):
            status, body = _get(worker.web_port, path)
            bodies[path] = (status, body)
        writes = {
            (method, path): _get(worker.web_port, path, method)[0]
            for method in ("POST", "PUT", "DELETE", "PATCH")
            for path in ("/", "/metrics", "/router/")
        }
    finally:
        worker.stop()
    log = (tmp_path / "worker.log").read_text(errors="replace")
    assert "Traceback" not in log
    for secret in (REDIS_SECRET, KAFKA_SECRET):
        assert secret not in log
        for path, (_, body) in bodies.items():
            assert secret.encode() not in body, path
    assert bodies["/metrics"][0] == 200
    # no endpoint accepts a write
    assert all(code in (403, 404, 405) for code in writes.values()), writes


def test_wrong_redis_password_refused_in_one_line_without_the_secret(password_redis, tmp_path):
    wrong = "not-the-" + REDIS_SECRET
    result = subprocess.run(
        [sys.executable, "-m", "app", "worker"],
        cwd=ROOT,
        env={**worker_env("kafka://127.0.0.1:9", f"redis://:{wrong}@127.0.0.1:{password_redis.port}/0", tmp_path),
             "WEB_PORT": str(free_port())},
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 78
    assert wrong not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "REDIS_PASSWORD" in lines[0]  # not retried for a minute: a password is no outage


def test_worker_refuses_a_tampered_model_artifact(redis_url, tmp_path):
    """A worker whose artifact's sha256 differs from the registry's card does not start."""
    models = tmp_path / "models"
    shutil.copytree(ROOT / "models", models)
    version = (models / "ACTIVE").read_text().strip()
    artifact = models / version / "model.joblib"
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0x01
    artifact.write_bytes(bytes(data))
    result = subprocess.run(
        [sys.executable, "-m", "app", "worker"],
        cwd=ROOT,
        env={**worker_env("kafka://127.0.0.1:9", redis_url, tmp_path),
             "MODELS_DIR": str(models), "WEB_PORT": str(free_port())},
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 78
    assert "sha256" in result.stderr and version in result.stderr


def test_secrets_come_from_files_readable_by_the_service_only(tmp_path, monkeypatch):
    secret = tmp_path / "redis-password"
    secret.write_text(REDIS_SECRET + "\n")
    secret.chmod(0o600)
    monkeypatch.setenv("REDIS_PASSWORD_FILE", str(secret))
    assert redis_client_options(Settings())["password"] == REDIS_SECRET
    monkeypatch.setenv("REDIS_PASSWORD", REDIS_SECRET)
    with pytest.raises(ValueError, match="REDIS_PASSWORD and REDIS_PASSWORD_FILE are both set"):
        Settings()


@pytest.mark.parametrize(("setting", "command"), [
    pytest.param("REVIEW_OIDC_CLIENT_SECRET_FILE", ["review", "serve"], id="console-client-secret"),
    pytest.param("REVIEW_SESSION_KEY_FILE", ["review", "serve"], id="console-session-key"),
    pytest.param("REDIS_PASSWORD_FILE", ["models", "list"], id="cli-redis-password"),
])
def test_a_secret_file_others_may_read_is_refused_at_start(tmp_path, setting, command):
    secret = tmp_path / "secret"
    secret.write_text(OIDC_SECRET)
    secret.chmod(0o644)
    result = subprocess.run(
        [sys.executable, "-c", "from app.cli import main; main()", *command], cwd=ROOT,
        env={**worker_env("kafka://127.0.0.1:9", "redis://127.0.0.1:9/0", tmp_path), setting: str(secret)},
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "others may read it (mode 0644)" in lines[0], result.stderr
    assert OIDC_SECRET not in result.stderr + result.stdout


@pytest.mark.parametrize("command", [
    pytest.param(["-m", "app", "worker"], id="worker"),
    pytest.param(["-c", "from app.cli import main; main()", "models", "list"], id="cli"),
])
def test_a_refused_secret_file_shows_no_other_secret(tmp_path, command):
    """The refusal names the file, not the other settings read: a password given in the
    environment beside it stays out of stderr."""
    secret = tmp_path / "secret"
    secret.write_text(OIDC_SECRET)
    secret.chmod(0o644)
    env = {**worker_env("kafka://127.0.0.1:9", f"redis://fraud-worker:{REDIS_SECRET}@127.0.0.1:9/0",
                        tmp_path),
           "KAFKA_SASL_USERNAME": "worker", "KAFKA_SASL_PASSWORD": KAFKA_SECRET,
           "REVIEW_SESSION_KEY_FILE": str(secret)}
    result = subprocess.run([sys.executable, *command], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "REVIEW_SESSION_KEY_FILE" in lines[0], result.stderr
    for value in (OIDC_SECRET, REDIS_SECRET, KAFKA_SECRET):
        assert value not in result.stderr + result.stdout
