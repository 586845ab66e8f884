"""``fraudctl schemas``: export the wire contracts as JSON Schema files and check them.

One file ``<name>.schema.json`` per entry of :data:`app.events.WIRE_MODELS`, written as
pydantic's ``model_json_schema()`` (validation mode: what a consumer of the topic
accepts) plus ``$schema`` and ``$id``, with sorted keys, a 2-space indent and a trailing
newline, so the files are byte-for-byte reproducible and diff cleanly in review.

Examples
--------
>>> from app.events import Transaction
>>> docs = render_schemas({"transactions": Transaction})
>>> sorted(docs)
['transactions.schema.json']
>>> doc = json.loads(docs["transactions.schema.json"])
>>> doc["$id"], doc["title"], doc["additionalProperties"]
('urn:fraud-stream:schema:transactions', 'Transaction', False)
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import typer
from pydantic import BaseModel

from ..config import PROJECT_ROOT
from ..events import WIRE_MODELS
from ..exceptions import DataError
from .base import cli, console, err_console, settings_epilog

__all__ = [
    "SCHEMA_DIALECT",
    "SCHEMA_SUFFIX",
    "DEFAULT_SCHEMAS_DIR",
    "SchemaDiff",
    "schema_id",
    "schema_of",
    "render_schemas",
    "compare_schemas",
    "write_schemas",
    "schemas_cli",
]

#: JSON Schema dialect that pydantic v2 generates.
SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
#: Suffix of every exported file: ``transactions.schema.json``.
SCHEMA_SUFFIX = ".schema.json"
#: Where ``export`` writes and ``check`` reads by default: ``schemas/`` of the checkout.
DEFAULT_SCHEMAS_DIR = PROJECT_ROOT / "schemas"

_DIFF_LINES_PER_FILE = 40

schemas_cli = typer.Typer(
    name="schemas",
    help="JSON Schema files of the wire contracts (app/events.py).",
    no_args_is_help=True,
)
cli.add_typer(schemas_cli, name="schemas")


# --- pure core ----------------------------------------------------------------------


def schema_id(name: str) -> str:
    """The ``$id`` of the schema of the records called ``name`` (a WIRE_MODELS key).

    >>> schema_id("fraud-alerts")
    'urn:fraud-stream:schema:fraud-alerts'
    """
    return f"urn:fraud-stream:schema:{name}"


def schema_of(name: str, model: type[BaseModel]) -> dict:
    """The JSON Schema document of one wire model.

    Parameters
    ----------
    name : str
        The WIRE_MODELS key; gives ``$id`` and the file name.
    model : type of pydantic.BaseModel
        The record class.

    Returns
    -------
    dict
        pydantic's validation-mode schema with ``$schema``, ``$id`` and ``title`` set.
    """
    doc = model.model_json_schema(mode="validation")
    doc["$schema"] = SCHEMA_DIALECT
    doc["$id"] = schema_id(name)
    doc.setdefault("title", model.__name__)
    return doc


def render_schemas(models: Mapping[str, type[BaseModel]] = WIRE_MODELS) -> dict[str, str]:
    """Every schema file's exact text, by file name.

    Parameters
    ----------
    models : mapping of str to pydantic model class, default=WIRE_MODELS

    Returns
    -------
    dict of str to str
        ``{"<name>.schema.json": text}``; ``text`` is sorted-key JSON with a 2-space
        indent and a trailing newline.
    """
    return {
        f"{name}{SCHEMA_SUFFIX}": json.dumps(
            schema_of(name, model), indent=2, sort_keys=True, ensure_ascii=False
        )
        + "\n"
        for name, model in sorted(models.items())
    }


@dataclass(frozen=True)
class SchemaDiff:
    """How a directory of schema files differs from the code.

    Attributes
    ----------
    missing : list of str
        Files the code defines that the directory lacks.
    changed : dict of str to list of str
        File name -> unified-diff lines (directory on the ``-`` side, code on ``+``).
    extra : list of str
        ``*.schema.json`` files in the directory that no model produces.
    """

    missing: list[str] = field(default_factory=list)
    changed: dict[str, list[str]] = field(default_factory=dict)
    extra: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """True when the directory holds exactly what the code generates."""
        return not (self.missing or self.changed or self.extra)


def compare_schemas(expected: Mapping[str, str], directory: Path) -> SchemaDiff:
    """Compare the rendered schemas with the files in ``directory``.

    Parameters
    ----------
    expected : mapping of str to str
        File name -> text, as :func:`render_schemas` returns.
    directory : pathlib.Path
        A directory that may not exist (then every file is missing).

    Returns
    -------
    SchemaDiff
    """
    on_disk = (
        {p.name: p for p in directory.glob(f"*{SCHEMA_SUFFIX}")} if directory.is_dir() else {}
    )
    missing = sorted(name for name in expected if name not in on_disk)
    extra = sorted(name for name in on_disk if name not in expected)
    changed: dict[str, list[str]] = {}
    for name in sorted(set(expected) & set(on_disk)):
        actual = on_disk[name].read_text(encoding="utf-8")
        if actual != expected[name]:
            changed[name] = list(
                difflib.unified_diff(
                    actual.splitlines(),
                    expected[name].splitlines(),
                    fromfile=f"{directory.name}/{name}",
                    tofile=f"code: {name}",
                    lineterm="",
                )
            )
    return SchemaDiff(missing=missing, changed=changed, extra=extra)


def write_schemas(expected: Mapping[str, str], directory: Path) -> list[str]:
    """Write every schema file into ``directory`` (created if needed).

    Returns
    -------
    list of str
        Names of the files whose content changed (written new or rewritten).

    Raises
    ------
    DataError
        If ``directory`` cannot be created or written.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for name, text in expected.items():
            path = directory / name
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                path.write_text(text, encoding="utf-8")
                written.append(name)
    except OSError as exc:
        raise DataError(f"cannot write schemas to {directory}: {exc.strerror or exc}") from None
    return written


# --- commands ------------------------------------------------------------------------


def _say(text: str, *, stderr: bool = False) -> None:
    """Print one plain line (no markup, no wrapping: paths stay whole)."""
    (err_console if stderr else console).print(
        text, markup=False, highlight=False, soft_wrap=True
    )


@schemas_cli.command("export", epilog=settings_epilog())
def export_command(
    out: Path = typer.Option(
        DEFAULT_SCHEMAS_DIR, "--out", "-o", help="Directory to write <name>.schema.json into."
    ),
) -> None:
    """Write one JSON Schema file per wire contract."""
    expected = render_schemas()
    written = write_schemas(expected, out)
    unchanged = len(expected) - len(written)
    _say(f"{len(expected)} schemas in {out}: {len(written)} written, {unchanged} unchanged")
    for name in compare_schemas(expected, out).extra:
        _say(f"warning: {out / name} matches no wire model; remove it", stderr=True)


@schemas_cli.command("check", epilog=settings_epilog())
def check_command(
    directory: Path = typer.Option(
        DEFAULT_SCHEMAS_DIR, "--dir", "-d", help="Directory holding the exported schemas."
    ),
) -> None:
    """Exit 1, with a diff summary, if the schema files differ from the code."""
    diff = compare_schemas(render_schemas(), directory)
    if diff.clean:
        _say(f"schemas in {directory} match the code")
        return
    for name in diff.missing:
        _say(f"missing: {directory / name}", stderr=True)
    for name in diff.extra:
        _say(f"extra:   {directory / name} (no wire model)", stderr=True)
    for name, lines in diff.changed.items():
        body = [ln for ln in lines[2:] if ln[:1] in "+-"]
        _say(f"changed: {directory / name} ({len(body)} lines)", stderr=True)
        for line in lines[:_DIFF_LINES_PER_FILE]:
            _say(f"  {line}", stderr=True)
        if len(lines) > _DIFF_LINES_PER_FILE:
            _say(f"  ... {len(lines) - _DIFF_LINES_PER_FILE} more diff lines", stderr=True)
    _say("the schema files differ from the code: run `fraudctl schemas export`", stderr=True)
    raise typer.Exit(1)
