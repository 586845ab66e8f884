"""docs/model.md describes the model models/ACTIVE names, as its card gives it."""

from __future__ import annotations

import shutil
from pathlib import Path

from typer.testing import CliRunner

from app.cli import cli
from app.scoring.model_doc import render_section, section_of
from app.scoring.registry import active_file_version, read_card

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "model.md"


def test_the_model_page_is_the_active_cards_section():
    models = ROOT / "models"
    card = read_card(active_file_version(models), models)
    assert section_of(PAGE.read_text()) == render_section(card), (
        "docs/model.md does not describe models/ACTIVE: run `fraudctl models doc --write`"
    )
    assert f"`{card.version}`" in PAGE.read_text()


def test_a_page_left_behind_by_a_new_active_model_fails_the_check(tmp_path):
    models = tmp_path / "models"
    active = active_file_version(ROOT / "models")
    shutil.copytree(ROOT / "models", models)
    others = [p.name for p in models.iterdir() if p.is_dir() and p.name != active]
    page = tmp_path / "model.md"
    shutil.copy(PAGE, page)
    args = ["models", "doc", "--page", str(page), "--models-dir", str(models)]
    assert CliRunner().invoke(cli, [*args, "--check"]).exit_code == 0
    (models / "ACTIVE").write_text(others[0] + "\n")  # promoted, page not regenerated
    stale = CliRunner().invoke(cli, [*args, "--check"])
    assert stale.exit_code == 2 and f"does not describe model {others[0]}" in stale.stderr
    written = CliRunner().invoke(cli, [*args, "--write"])
    assert written.exit_code == 0, written.output
    assert f"`{others[0]}`" in page.read_text() and f"`{active}`" not in page.read_text()
    assert CliRunner().invoke(cli, [*args, "--check"]).exit_code == 0
