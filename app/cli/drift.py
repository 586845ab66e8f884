"""``fraudctl drift reference``: store a model's training distribution in its card, for
the drift metric (``fraud_feature_psi``)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ..config import get_settings
from ..exceptions import FraudError
from .base import cli, console, settings_epilog, stage_progress

__all__ = ["drift_cli", "reference_command"]

drift_cli = typer.Typer(
    name="drift",
    help="Feature drift: the training reference of a model (see docs/observability.md).",
    no_args_is_help=True,
)
cli.add_typer(drift_cli, name="drift")


@drift_cli.command("reference", epilog=settings_epilog("MODELS_DIR"))
def reference_command(
    version: str = typer.Argument(..., help="Model version (see `fraudctl models list`)."),
    data: Path = typer.Option(
        ..., "--data", help="The handbook data the model was trained on (file or folder)."
    ),
    bins: int = typer.Option(10, "--bins", min=2, max=100, help="Quantile bins per feature."),
) -> None:
    """Recompute the model's training matrix (card data window) and write its per-feature
    bins and shares into the card as ``drift_reference``."""
    from ..data.handbook import read_handbook
    from ..monitoring.reference import reference_for_window
    from ..scoring.registry import CARD_NAME, ModelCard, read_card

    models_dir = get_settings().models_dir
    card = read_card(version, models_dir)
    with stage_progress() as progress:
        task = progress.add_task("reading data and computing features", total=None)
        df = read_handbook(data, card.data.history_start, card.data.train.end)
        try:
            reference, n_rows = reference_for_window(
                df, card.data.train.start, card.data.train.end, card.feature_names, bins
            )
        except ValueError as exc:
            raise FraudError(f"{data}: {exc}") from None
        progress.update(task, completed=1, total=1)
    if n_rows != card.data.train.transactions:
        console.print(
            f"[yellow]note:[/] {n_rows} training rows, the card says "
            f"{card.data.train.transactions}: is this the data the model was trained on?"
        )
    path = Path(models_dir) / version / CARD_NAME
    raw = json.loads(path.read_text(encoding="utf-8"))
    raw["drift_reference"] = {k: v.model_dump() for k, v in reference.items()}
    text = ModelCard.model_validate(raw).model_dump_json(indent=2) + "\n"  # as save_model
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    console.print(f"{version}: drift reference of {len(reference)} features from {n_rows} rows")
