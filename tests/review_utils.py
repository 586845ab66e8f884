"""A ``fraudctl review serve`` process for tests, and ``fraudctl`` commands."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tests.worker_utils import ROOT

FRAUDCTL = [sys.executable, "-c", "from app.cli import main; main()"]


class Console:
    """A ``fraudctl review serve`` subprocess."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env, self.log_path = env, log_path
        self.port = int(env["REVIEW_PORT"])
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Console":
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            FRAUDCTL + ["review", "serve"], cwd=ROOT, env=self.env,
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.wait(lambda: self.get_json("/healthz") is not None, "console up")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()

    def tail(self) -> str:
        return self.log_path.read_bytes()[-3000:].decode(errors="replace")

    def alive(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, f"console exited: {self.tail()}"

    def get_json(self, path: str):
        try:
            with urllib.request.urlopen(self.url + path, timeout=2) as r:
                return json.loads(r.read())
        except OSError:
            return None

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def post(self, case_id: str, headers: dict | None = None, **form: str) -> tuple[int, str]:
        """POST a form; the answer's status (303 on success: not followed) and body."""
        body = urllib.parse.urlencode(form).encode()
        req = urllib.request.Request(
            f"{self.url}/cases/{urllib.parse.quote(case_id)}/actions", data=body, method="POST",
            headers={"Content-Type": "application/x-www-form-urlencoded", **(headers or {})},
        )
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(req, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def wait(self, ready, what: str, timeout: float = 90.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.alive()
            got = ready()
            if got:
                return got
            time.sleep(0.3)
        raise TimeoutError(f"{what} not reached after {timeout}s; log: {self.tail()}")

    def wait_cases(self, n: int) -> None:
        self.wait(lambda: (self.get_json("/healthz") or {}).get("cases", 0) >= n, f"{n} cases")

    def case_history(self, case_id: str) -> list[dict]:
        out = run_cli(self.env, "review", "show", case_id, "--format", "json")
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)["history"]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(FRAUDCTL + list(args), cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
