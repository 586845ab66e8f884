"""``make notebooks`` opens JupyterLab on notebooks/: the server starts, lists both
notebooks through its contents API, and stops. JupyterLab and papermill come from the
lock (the ``notebooks`` extra), so the normal test install has them."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from .conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = {"retrain.ipynb", "explore.ipynb"}
_START_SECONDS = 90.0


def _make_notebooks_command(port: int, token: str) -> list[str]:
    """What ``make notebooks`` runs for this test's virtualenv, with a port and a token."""
    venv = Path(sys.executable).parent.parent
    args = f"--no-browser --port={port} --ServerApp.ip=127.0.0.1 --IdentityProvider.token={token}"
    out = subprocess.run(["make", "-n", "notebooks", f"VENV={venv}", f"JUPYTER_ARGS={args}"],
                         cwd=ROOT, capture_output=True, text=True, check=True, timeout=60).stdout
    [lab] = [line for line in out.splitlines() if "jupyter lab" in line]
    return shlex.split(lab)


def test_make_notebooks_opens_jupyterlab_on_the_notebooks(tmp_path):
    port, token = free_port(), "test-token"
    command = _make_notebooks_command(port, token)
    assert command[0].endswith("/jupyter") and "--notebook-dir=notebooks" in command
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces")}
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline, listed = time.monotonic() + _START_SECONDS, None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/api/contents",
                              headers={"Authorization": f"token {token}"}, timeout=5)
                if r.status_code == 200:
                    listed = r.json()
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        if listed is None:
            err = server.stderr.read().decode()[-2000:] if server.poll() is not None else ""
            pytest.fail(f"JupyterLab did not answer on port {port} within {_START_SECONDS} s "
                        f"(exit {server.poll()}): {err}")
        names = {item["name"] for item in listed["content"] if item["type"] == "notebook"}
        assert NOTEBOOKS <= names, names
        lab = httpx.get(f"http://127.0.0.1:{port}/lab?token={token}", timeout=10)
        assert lab.status_code == 200 and "JupyterLab" in lab.text
        denied = httpx.get(f"http://127.0.0.1:{port}/api/contents", timeout=5)
        assert denied.status_code == 403  # the token is required
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
    assert server.returncode is not None


@pytest.mark.slow
def test_retrain_notebook_reads_own_data_through_a_mapping_and_uses_verdicts(tmp_path):
    """The retrain notebook on a bank-style export (mapping file) with analysts' verdicts
    from a file of transaction-labels values: it says how many labels they moved."""
    import orjson
    import pandas as pd

    from app.data.simulate import simulate
    from app.events import Label

    from .test_data_contract import MAPPING
    from .test_notebooks import execute

    df = simulate(n_customers=150, n_terminals=1500, start_date="2018-06-01", n_days=39, seed=3)
    df = df.assign(TX_DATETIME=pd.to_datetime(df["TX_DATETIME"]))
    local = df["TX_DATETIME"].dt.tz_localize("UTC").dt.tz_convert("Europe/Brussels")
    pd.DataFrame({
        "ref": df["TRANSACTION_ID"], "booked_at": local.dt.strftime("%d/%m/%Y %H:%M:%S"),
        "card": "C" + df["CUSTOMER_ID"].astype(str), "merchant": "M" + df["TERMINAL_ID"].astype(str),
        "amount_cents": (df["TX_AMOUNT"] * 100).round().astype("int64"),
        "chargeback": df["TX_FRAUD"].map({1: "Y", 0: "N"}),
    }).to_csv(tmp_path / "export.csv", index=False)
    (tmp_path / "bank.yaml").write_text(MAPPING)
    frauds = df[(df["TX_FRAUD"] == 1) & (df["TX_DATETIME"] < "2018-07-04")].head(30)
    genuine = df[df["TX_FRAUD"] == 0].head(1)  # an analyst's call the data disagrees with
    with open(tmp_path / "verdicts.jsonl", "wb") as f:
        for _, row in pd.concat([frauds, genuine]).iterrows():
            ms = int(row["TX_DATETIME"].value // 1_000_000)
            label = Label(transaction_id=str(row["TRANSACTION_ID"]),
                          account_id=str(row["CUSTOMER_ID"]), terminal_id=str(row["TERMINAL_ID"]),
                          is_fraud=True, transaction_time_ms=ms, label_time_ms=ms + 7_200_000,
                          source="investigation")
            f.write(orjson.dumps(label.model_dump()) + b"\n")
    nb = execute("retrain.ipynb", {
        "DATA_PATH": str(tmp_path / "export.csv"), "MAPPING": str(tmp_path / "bank.yaml"),
        "VERDICTS_PATH": str(tmp_path / "verdicts.jsonl"), "TRAIN_START": "2018-07-04",
        "TRAIN_END": "2018-07-05", "GAP_DAYS": 2, "TEST_DAYS": 2,
        "MODELS_DIR": str(tmp_path / "models"), "SCRATCH_DIR": str(tmp_path),
        "ALERT_BUDGET_PER_DAY": 50, "REGISTER": False,
    })
    [summary] = [c for c in nb.cells if c.get("id") == "verdicts-code"]
    text = summary.outputs[-1]["data"]["text/plain"]
    assert f"{len(frauds) + 1:,} of" in text.split("labels by investigation")[1].splitlines()[0]
    assert "2.0 h" in text and "168.0 h" in text
    assert text.split("disagree with TX_FRAUD")[1].split()[0] == "1"
    print(text)
    changed = text.split("changed by the verdicts")[1].split()[0]
    assert int(changed.replace(",", "")) > 0  # earlier labels move terminal risk
