"""The version checks: the libraries the Faust and aiokafka corrections were verified
against (:mod:`app.compat`), and the scikit-learn version of a model artifact.

The pure check runs against fake version tables; the worker's start runs as a real
``python -m app worker`` process whose expectation is patched before it starts (the
installed libraries cannot be changed under the test).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys

import pytest

from app.compat import (
    VERIFIED_VERSIONS,
    check_versions,
    installed_versions,
    require_verified_versions,
)
from app.config import Settings
from app.exceptions import ModelVersionError, UnverifiedVersionError
from app.scoring.registry import default_version, load_model, verify_model

from .worker_utils import ROOT

VERIFIED = {"faust-streaming": "0.15.3", "aiokafka": "0.14.0", "mode-streaming": "0.7.1"}


@pytest.mark.parametrize(
    ("installed", "problems"),
    [
        pytest.param(dict(VERIFIED), [], id="all-verified"),
        pytest.param({**VERIFIED, "pandas": "9.9"}, [], id="other-libraries-ignored"),
        pytest.param({**VERIFIED, "faust-streaming": "0.15.4"},
                     ["faust-streaming 0.15.4 (verified: 0.15.3)"], id="newer-faust"),
        pytest.param({**VERIFIED, "aiokafka": "0.13.0"},
                     ["aiokafka 0.13.0 (verified: 0.14.0)"], id="older-aiokafka"),
        pytest.param({"faust-streaming": "0.15.3", "aiokafka": "0.14.1"},
                     ["aiokafka 0.14.1 (verified: 0.14.0)",
                      "mode-streaming not installed (verified: 0.7.1)"], id="two-problems-in-order"),
        pytest.param({**VERIFIED, "aiokafka": "0.14.0.post1"},
                     ["aiokafka 0.14.0.post1 (verified: 0.14.0)"], id="post-release-is-another-version"),
    ],
)
def test_check_versions(installed, problems):
    assert check_versions(installed, VERIFIED) == problems


def test_the_installed_libraries_are_the_verified_ones():
    assert check_versions(installed_versions(), VERIFIED_VERSIONS) == []
    assert require_verified_versions(allow_unverified=False) == []


def test_an_unverified_version_is_refused_unless_allowed(monkeypatch):
    monkeypatch.setitem(VERIFIED_VERSIONS, "aiokafka", "0.0.1")
    with pytest.raises(UnverifiedVersionError, match=r"aiokafka 0\.14\.0 \(verified: 0\.0\.1\)"):
        require_verified_versions(allow_unverified=False)
    assert require_verified_versions(allow_unverified=True) == [
        f"aiokafka {installed_versions()['aiokafka']} (verified: 0.0.1)"
    ]


def test_the_lock_pins_the_verified_versions():
    lock = (ROOT / "requirements.lock").read_text()
    for name, version in VERIFIED_VERSIONS.items():
        assert re.search(rf"^{re.escape(name)}=={re.escape(version)}\b", lock, re.M), name


def _worker(patch: dict[str, str], **env: str) -> subprocess.CompletedProcess:
    """``python -m app worker`` with ``VERIFIED_VERSIONS`` updated by ``patch`` first."""
    code = (
        "import sys, app.compat; "
        f"app.compat.VERIFIED_VERSIONS.update({patch!r}); "
        "sys.argv = ['app', 'worker']; "
        "from app.__main__ import main; main()"
    )
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env={**os.environ, **env},
        capture_output=True, text=True, timeout=120,
    )


def test_worker_refuses_to_start_on_an_unverified_version(redis_url):
    result = _worker({"faust-streaming": "0.0.1"}, REDIS_URL=redis_url,
                     ALLOW_UNVERIFIED_VERSIONS="false")
    assert result.returncode == 78, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: cannot start the worker: installed faust-streaming ")
    assert "(verified: 0.0.1)" in lines[0] and "ALLOW_UNVERIFIED_VERSIONS=true" in lines[0]


def test_worker_starts_on_an_unverified_version_when_allowed(redis_url):
    """With the override the check lets the worker go on to its next check: a busy web
    port stops it there (exit 2), after one warning line naming the version."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _worker({"aiokafka": "0.0.1"}, REDIS_URL=redis_url,
                         ALLOW_UNVERIFIED_VERSIONS="true", WEB_PORT=str(port))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert lines[0].startswith("warning: unverified library versions (aiokafka ")
    assert f"WEB_PORT {port}" in lines[-1]


@pytest.fixture
def foreign_model(tmp_path):
    """The shipped model with a card that names another scikit-learn version."""
    models = Settings().models_dir
    version = default_version(models)
    shutil.copytree(models / version, tmp_path / version)
    card_path = tmp_path / version / "card.json"
    card = json.loads(card_path.read_text())
    card["sklearn_version"] = "0.24.2"
    card_path.write_text(json.dumps(card))
    return tmp_path, version


def test_a_model_of_another_sklearn_version_is_refused(foreign_model):
    import sklearn

    models, version = foreign_model
    for check in (verify_model, load_model):
        with pytest.raises(ModelVersionError) as info:
            check(version, models)
        assert f"written by scikit-learn 0.24.2, this is {sklearn.__version__}" in str(info.value)


def test_worker_refuses_a_model_of_another_sklearn_version(foreign_model, redis_url):
    models, version = foreign_model
    result = subprocess.run(
        [sys.executable, "-m", "app", "worker"], cwd=ROOT, capture_output=True, text=True,
        timeout=120,
        env={**os.environ, "REDIS_URL": redis_url, "MODELS_DIR": str(models),
             "MODEL_VERSION": version, "REDIS_KEY_PREFIX": "compat-test:"},
    )
    assert result.returncode == 78, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "written by scikit-learn 0.24.2" in lines[0], result.stderr
