"""Pure core, thin shell, as the tree shows it (read from the source, nothing imported).

- Faust (and mode, its service library) is imported only in the stream shell,
  ``app/stream/``, and in the worker's metrics adapter ``app/monitoring/worker.py``.
- The pure core imports none of Faust, Kafka clients or Redis, and nothing of the shell.
- ``app/stream/__init__.py`` imports nothing: ``fraudctl`` imports ``app.stream.stack``
  and ``app.stream.offsets`` without loading the Faust app.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from .worker_utils import ROOT

APP = ROOT / "app"
#: Where Faust may be imported: the stream shell and the metrics adapter of a worker.
FAUST_ALLOWED = ("app/stream/", "app/monitoring/worker.py")
#: The pure core: plain Python, tested without a broker.
PURE = (
    "app/features/", "app/decisions/", "app/scoring/", "app/alignment.py", "app/pipeline.py",
    "app/changelog.py", "app/events.py", "app/acls.py", "app/compat.py",
)
SHELL_LIBRARIES = ("faust", "mode", "aiokafka", "redis", "aio_pika")


def _modules() -> list[Path]:
    return sorted(APP.rglob("*.py"))


def _imported(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports, at its top or inside a function."""
    package = list(path.relative_to(ROOT).parts[:-1])  # the package holding the module
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names.add(module)
            names.update(f"{module}.{a.name}" for a in node.names)
    return names


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _top(name: str) -> str:
    return name.split(".", 1)[0]


def test_faust_is_imported_only_in_the_stream_shell():
    offenders = {
        _rel(p): sorted(n for n in _imported(p) if _top(n) in ("faust", "mode"))
        for p in _modules()
        if not _rel(p).startswith(FAUST_ALLOWED)
    }
    assert {k: v for k, v in offenders.items() if v} == {}


@pytest.mark.parametrize("prefix", PURE)
def test_the_pure_core_imports_no_shell(prefix):
    paths = [p for p in _modules() if _rel(p).startswith(prefix)]
    assert paths, f"no module under {prefix}"
    offenders = {
        _rel(p): sorted(
            n for n in _imported(p)
            if _top(n) in SHELL_LIBRARIES or n == "app.stream" or n.startswith("app.stream.")
        )
        for p in paths
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_stream_package_imports_nothing():
    assert _imported(APP / "stream" / "__init__.py") == set()


def test_relative_imports_are_resolved():
    """The check above sees ``from ..stream import offsets`` as ``app.stream.offsets``."""
    assert "app.stream.offsets" in _imported(APP / "cli" / "deadletters.py")
    assert "app.config" in _imported(APP / "stream" / "main.py")
    assert "app.stream.offsets" in _imported(APP / "stream" / "main.py")
