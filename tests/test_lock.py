"""Installs use the lock of exact versions with hashes: ``make install`` (and so CI's
``.ci/run`` -> ``make test``) and the Dockerfile (its instructions are checked in
``tests/test_compose.py``). Make's own dry run (``make -n``) shows what would run."""

from __future__ import annotations

import re
import subprocess
import tomllib

from .worker_utils import ROOT

LOCK = ROOT / "requirements.lock"


def _make_dry_run(target: str, tmp_path) -> list[str]:
    """The commands ``make TARGET`` would run for a virtualenv that does not exist yet."""
    out = subprocess.run(
        ["make", "-n", target, f"VENV={tmp_path / 'venv'}"], cwd=ROOT, capture_output=True,
        text=True, check=True, timeout=60,
    ).stdout.replace("\\\n", " ")  # a recipe line continued with a backslash
    return [" ".join(line.split()) for line in out.splitlines() if line.strip()]


def test_make_install_uses_the_lock_with_hashes(tmp_path):
    commands = _make_dry_run("install", tmp_path)
    pips = [c for c in commands if "pip install" in c]
    assert any("--require-hashes -r requirements.lock" in c for c in pips), commands
    project = [c for c in pips if c.endswith("-e .")]
    assert project and all("--no-deps" in c for c in project), pips
    # nothing else is resolved against the index
    assert all("--require-hashes" in c or "--no-deps" in c for c in pips), pips


def test_ci_runs_make_test_which_installs_from_the_lock(tmp_path):
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test\b", ci, re.M)
    commands = _make_dry_run("test", tmp_path)
    install = next(i for i, c in enumerate(commands) if "-r requirements.lock" in c)
    pytest_run = next(i for i, c in enumerate(commands) if "-m pytest" in c)
    assert install < pytest_run


def test_make_lock_regenerates_it_with_hashes(tmp_path):
    commands = _make_dry_run("lock", tmp_path)
    compile_ = [c for c in commands if "uv pip compile" in c]
    assert compile_ and "--generate-hashes" in compile_[0] and "-o requirements.lock" in compile_[0]
    assert "--extra dev" in compile_[0]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ ;\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_the_lock_pins_every_dependency_with_hashes():
    text = LOCK.read_text()
    pins = re.findall(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)", text, re.M)
    locked = {n.lower().replace("_", "-") for n, _ in pins}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]}
    assert wanted <= locked, f"not in requirements.lock (run `make lock`): {sorted(wanted - locked)}"
    # every pin carries hashes (pip --require-hashes refuses the file otherwise)
    blocks = re.split(r"^(?=[A-Za-z0-9_.\-]+==)", text, flags=re.M)[1:]
    assert len(blocks) == len(pins)
    assert all("--hash=sha256:" in b for b in blocks)
