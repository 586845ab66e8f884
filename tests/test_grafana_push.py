"""``fraudctl dashboards push`` against a recorded HTTP contract of Grafana's API.

Grafana cannot run on this machine (no Docker, no Grafana package), so this is the one
mock of the project: a real local HTTP server (pytest-httpserver) answers the requests
of Grafana's documented HTTP API with the documented response bodies
(``tests/data/grafana/contract.json``, its ``_source`` says where they come from), and the
test checks every request grafana-client sends: method, path, bearer token and the exact
JSON body. The dashboards themselves are checked against a real Prometheus in
``tests/test_observability_prometheus.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.cli import cli
from app.cli.dashboards import DASHBOARDS_DIR, load_dashboards
from app.dashboards.grafana import push_dashboards
from app.exceptions import ObservabilityError

from .worker_utils import free_port

CONTRACT = json.loads((Path(__file__).parent / "data/grafana/contract.json").read_text())
TOKEN = "glsa_test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def boards() -> dict[str, dict]:
    return load_dashboards(DASHBOARDS_DIR)


def _expect_saves(httpserver, boards, folder_uid="fraud-stream"):
    for board in boards.values():
        slug = board["title"].lower().replace(" ", "-")
        answer = json.loads(
            json.dumps(CONTRACT["save_dashboard"]["body"])
            .replace("{uid}", board["uid"])
            .replace("{slug}", slug)
        )
        httpserver.expect_ordered_request(
            "/api/dashboards/db",
            method="POST",
            headers=AUTH,
            json={
                "dashboard": {**board, "id": None},
                "folderUid": folder_uid,
                "overwrite": True,
                "message": "fraudctl dashboards push",
            },
        ).respond_with_json(answer, status=CONTRACT["save_dashboard"]["status"])


def test_push_creates_the_missing_folder_then_saves_every_dashboard(httpserver, boards):
    httpserver.expect_ordered_request(
        "/api/folders/fraud-stream", method="GET", headers=AUTH
    ).respond_with_json(CONTRACT["get_folder_missing"]["body"], status=404)
    httpserver.expect_ordered_request(
        "/api/folders", method="POST", headers=AUTH, json=CONTRACT["create_folder"]["request"]
    ).respond_with_json(CONTRACT["create_folder"]["body"])
    _expect_saves(httpserver, boards)

    results = push_dashboards(httpserver.url_for("/"), TOKEN, boards)

    httpserver.check_assertions()
    assert [(r.title, r.uid, r.version) for r in results] == [  # in file-name order
        ("Case review", "fraud-case-review", 3),
        ("Fraud operations", "fraud-operations", 3),
        ("Model quality", "fraud-model-quality", 3),
    ]
    assert results[1].url == "/d/fraud-operations/fraud-operations"


def test_push_into_an_existing_folder_creates_no_folder(httpserver, boards):
    httpserver.expect_ordered_request(
        "/api/folders/fraud-stream", method="GET", headers=AUTH
    ).respond_with_json(CONTRACT["get_folder_found"]["body"])
    _expect_saves(httpserver, boards)

    results = push_dashboards(httpserver.url_for("/"), TOKEN, boards)

    httpserver.check_assertions()
    assert len(results) == len(boards) == 3
    assert len(httpserver.log) == 4  # one GET, three dashboards, no POST /api/folders


def test_a_refused_token_is_one_clear_error(httpserver, boards):
    httpserver.expect_request("/api/folders/fraud-stream").respond_with_json(
        CONTRACT["unauthorized"]["body"], status=401
    )
    with pytest.raises(ObservabilityError, match=r"reading folder 'fraud-stream' failed \(HTTP 401"):
        push_dashboards(httpserver.url_for("/"), "wrong", boards)


def test_a_rejected_dashboard_names_it(httpserver, boards):
    httpserver.expect_request("/api/folders/fraud-stream").respond_with_json(
        CONTRACT["get_folder_found"]["body"]
    )
    httpserver.expect_request("/api/dashboards/db", method="POST").respond_with_json(
        CONTRACT["save_dashboard_version_mismatch"]["body"], status=412
    )
    # the first in file-name order: dashboards/case-review.json
    with pytest.raises(ObservabilityError, match="saving dashboard 'Case review' failed"):
        push_dashboards(httpserver.url_for("/"), TOKEN, boards)


def test_an_unreachable_grafana_is_one_clear_error(boards):
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ObservabilityError, match=f"Grafana at {url}: reading folder"):
        push_dashboards(url, TOKEN, boards, timeout_seconds=2)


def test_cli_push_uploads_the_committed_dashboards(httpserver, boards):
    httpserver.expect_ordered_request(
        "/api/folders/fraud-stream", method="GET", headers=AUTH
    ).respond_with_json(CONTRACT["get_folder_found"]["body"])
    _expect_saves(httpserver, boards)
    url = httpserver.url_for("/").rstrip("/")

    result = CliRunner().invoke(cli, ["dashboards", "push", "--url", url, "--token", TOKEN])

    assert result.exit_code == 0, result.output
    httpserver.check_assertions()
    assert f"Fraud operations: {url}/d/fraud-operations/fraud-operations (version 3)" in result.output
    assert "Model quality" in result.output and "Case review" in result.output


def test_cli_push_without_a_token_exits_2(monkeypatch):
    monkeypatch.delenv("GRAFANA_TOKEN", raising=False)
    from app.config import get_settings

    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["dashboards", "push", "--url", "http://127.0.0.1:1"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2
    assert "no Grafana token" in result.output
