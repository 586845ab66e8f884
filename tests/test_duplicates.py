"""A transaction delivered twice in one batch: counted once, alerted once (pure)."""

from __future__ import annotations

from app.config import Settings
from app.events import Transaction, encode
from app.decisions import Snapshot
from app.pipeline import RawRecord, featurize_accounts, receive_terminal_records, score_enriched
from app.scoring.model import Scorer
from app.scoring.registry import default_version, load_model


def test_same_transaction_twice_in_a_batch_alerts_once():
    s = Settings()
    scorer = Scorer(load_model(default_version(s.models_dir), s.models_dir))
    tx = Transaction(transaction_id="t-1", account_id="a-1", terminal_id="m-1",
                     amount_minor=99_000, currency="EUR", event_time_ms=1_530_662_400_000)
    other = tx.model_copy(update={"transaction_id": "t-2", "event_time_ms": tx.event_time_ms + 1})
    records = [
        RawRecord(encode(tx), b"a-1", "transactions", 0, 0, 0.0),
        RawRecord(encode(tx), b"a-1", "transactions", 0, 1, 0.0),  # redelivered copy
        RawRecord(encode(other), b"a-1", "transactions", 0, 2, 0.0),
    ]
    accounts = featurize_accounts(records, lambda _a: None)
    forwarded = [RawRecord(e.to_bytes(), None, "by-terminal", 0, i, 0)
                 for i, e in enumerate(accounts.enriched)]
    terminals = receive_terminal_records(forwarded, lambda _t: None, "transaction-labels")
    result = score_enriched([item for _, item, _ in terminals.arrived], terminals.states.get,
                            Snapshot.of(scorer, 0.0))
    assert [st.transaction.transaction_id for st in result.scored] == ["t-1", "t-1", "t-2"]
    assert result.scored[0].score == result.scored[1].score  # same features both times
    assert [a.alert_id for a in result.alerts] == ["t-1", "t-2"]
    assert result.alerts_deduplicated == 1
    assert accounts.duplicates == 1 and terminals.duplicates == 1
    assert accounts.states["a-1"].ids == ["t-1", "t-2"]
    assert terminals.states["m-1"].ids == ["t-1", "t-2"]


def test_a_redelivery_writes_its_unchanged_terminal_state_again():
    """A worker killed between its local (RocksDB) write and the changelog record leaves
    the changelog behind its store; when the record comes again the state is written
    again, so the changelog catches up (tests/test_faults.py with rocksdb:// found it)."""
    tx = Transaction(transaction_id="t-1", account_id="a-1", terminal_id="m-1",
                     amount_minor=1_000, currency="EUR", event_time_ms=1_530_662_400_000)
    first = featurize_accounts([RawRecord(encode(tx), b"a-1", "transactions", 0, 0, 0.0)],
                               lambda _a: None)
    by_terminal = [RawRecord(first.enriched[0].to_bytes(), None, "by-terminal", 0, 0, 0.0)]
    stored = receive_terminal_records(by_terminal, lambda _t: None, "transaction-labels")
    again = receive_terminal_records(by_terminal, stored.states.get, "transaction-labels")
    assert again.duplicates == 1
    assert again.states["m-1"].to_bytes() == stored.states["m-1"].to_bytes()
    assert again.partitions["m-1"] == 0
