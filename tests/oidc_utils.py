"""A real OpenID Connect provider process for tests: navikt's mock-oauth2-server (a JVM
process with discovery, JWKS, authorization code with PKCE and an interactive login form
where the tester types the subject and the claims), fetched by ``ops/oidc/fetch.sh``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

from tests.worker_utils import ROOT, free_port

MAIN_CLASS = "no.nav.security.mock.oauth2.StandaloneMockOAuth2ServerKt"
#: The provider's issuer id (the path under its address).
ISSUER_ID = "fraud"


class OidcProvider:
    """A running provider: ``issuer`` is its issuer URL."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}/{ISSUER_ID}"
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> "OidcProvider":
        cache = subprocess.run([str(ROOT / "ops/oidc/fetch.sh")], check=True, capture_output=True,
                               text=True, timeout=600).stdout.strip()
        env = dict(os.environ, SERVER_HOSTNAME="127.0.0.1", SERVER_PORT=str(self.port),
                   JSON_CONFIG=json.dumps({"interactiveLogin": True, "httpServer": "NettyWrapper"}))
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            ["java", "-Xmx256m", "-XX:TieredStopAtLevel=1", "-cp", f"{cache}/*", MAIN_CLASS],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_path.read_text(errors="replace")[-2000:]
            try:
                with urllib.request.urlopen(self.issuer + "/.well-known/openid-configuration", timeout=2):
                    return self
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(f"OIDC provider not up after {timeout}s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


def java_available() -> bool:
    return shutil.which("java") is not None and shutil.which("mvn") is not None
