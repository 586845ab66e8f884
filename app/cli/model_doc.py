"""``fraudctl models doc``: the shipped-model section of docs/model.md from the active card.

The rendering is pure (:mod:`app.scoring.model_doc`); this module reads the card and the
page, prints, checks or writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from ..config import get_settings
from ..exceptions import FraudError
from .base import fail, settings_epilog
from .models import models_cli

__all__ = ["doc_command"]


@models_cli.command("doc", epilog=settings_epilog("MODELS_DIR"))
def doc_command(
    page: Path = typer.Option(Path("docs/model.md"), "--page", help="The page to check or write."),
    version: Optional[str] = typer.Option(
        None, "--version", help="Version to describe; default: models/ACTIVE.", show_default=False
    ),
    models_dir: Optional[Path] = typer.Option(
        None, "--models-dir", help="Model registry; default: MODELS_DIR.", show_default=False
    ),
    write: bool = typer.Option(False, "--write", help="Rewrite the page's section."),
    check: bool = typer.Option(
        False, "--check", help="Exit 2 when the page's section differs from the card."
    ),
) -> None:
    """Print the shipped-model section of docs/model.md as the active card gives it."""
    from ..scoring.model_doc import render_section, replace_section, section_of
    from ..scoring.registry import default_version, read_card

    models_dir = models_dir or get_settings().models_dir
    try:
        card = read_card(version or default_version(models_dir), models_dir)
        section = render_section(card)
        if not (write or check):
            typer.echo(section)
            return
        text = page.read_text(encoding="utf-8")
        if check:
            if section_of(text) != section:
                fail(escape(f"{page} does not describe model {card.version} as its card does: "
                            "run `fraudctl models doc --write`"))
            typer.echo(f"{page} describes model {card.version} as its card does")
            return
        page.write_text(replace_section(text, section), encoding="utf-8")
    except FraudError as exc:
        fail(escape(str(exc)))
        return
    except OSError as exc:
        fail(escape(f"{page}: {exc.strerror or exc}"))
        return
    typer.echo(f"{page}: section written from model {card.version}")
