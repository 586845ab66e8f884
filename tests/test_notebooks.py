"""The notebooks run end to end on a small window, and are committed without outputs.

Each notebook is executed with nbclient after a cell of injected parameters placed right
after its ``parameters``-tagged cell (what papermill does). Data: the shared handbook file
when present, else the notebooks fall back to the project's simulator.
"""

from __future__ import annotations

import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from app.scoring.lifecycle import read_lifecycle
from app.scoring.registry import list_models, verify_model

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NAMES = ("retrain.ipynb", "explore.ipynb")


def execute(name: str, parameters: dict, timeout_s: int = 300) -> nbformat.NotebookNode:
    """Run a notebook with ``parameters`` injected; the executed notebook."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    [at] = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    source = "# injected parameters\n" + "\n".join(f"{k} = {v!r}" for k, v in parameters.items())
    injected = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    injected.id = "injected-parameters"
    nb.cells.insert(at + 1, injected)
    NotebookClient(nb, timeout=timeout_s, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    return nb


def outputs(nb: nbformat.NotebookNode, kind: str) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if kind in o.get("data", {})]


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebooks_have_no_outputs_and_one_parameters_cell(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    dirty = [i for i, c in enumerate(code) if c.outputs or c.execution_count is not None]
    assert not dirty, f"{name}: code cells {dirty} hold outputs: strip them before committing"
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and "DATA_PATH" in tagged[0].source


@pytest.mark.slow
def test_retrain_notebook_trains_evaluates_plots_and_registers_a_candidate(tmp_path):
    t0 = time.perf_counter()
    nb = execute("retrain.ipynb", {
        "SIMULATE": True, "TRAIN_START": "2018-07-04", "TRAIN_END": "2018-07-05", "GAP_DAYS": 2,
        "TEST_DAYS": 2,
        "MODELS_DIR": str(tmp_path / "models"), "SCRATCH_DIR": str(tmp_path),
        "SIM_CUSTOMERS": 600, "ALERT_BUDGET_PER_DAY": 50,
    })
    elapsed = time.perf_counter() - t0
    # PR + ROC, score distributions, feature importance, daily card precision@100
    assert len(outputs(nb, "image/png")) == 4
    [card] = list_models(tmp_path / "models")
    verify_model(card.version, tmp_path / "models")
    assert read_lifecycle(tmp_path / "models").status(card.version) == "candidate"
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert f"registered {card.version}" in text
    print(f"retrain.ipynb ran in {elapsed:.1f} s")


@pytest.mark.slow
def test_explore_notebook_shows_volumes_scenarios_amounts_and_terminals(tmp_path):
    nb = execute("explore.ipynb", {
        "START": "2018-07-01", "END": "2018-07-07", "SCRATCH_DIR": str(tmp_path),
        "SIM_CUSTOMERS": 600,
    })
    assert len(outputs(nb, "image/png")) == 3
    last = nb.cells[-1].outputs[-1]["data"]["text/plain"]
    assert "fraud rate" in last and "TERMINAL_ID" in last
