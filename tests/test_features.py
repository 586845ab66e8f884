"""Unit tests of the pure feature code (app.features)."""

from __future__ import annotations

import math

import orjson

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.events import Transaction
from app.events import Label
from app.features import (
    ACCOUNT_FEATURE_NAMES,
    FEATURE_NAMES,
    WINDOWS_DAYS,
    AccountState,
    TerminalState,
    extract_account,
    extract_one,
    terminal_feature_names,
)
from app.features.terminal import extract_terminal, terminal_horizon_ms
from app.features.extract import NO_HISTORY_SECONDS
from app.features.offline import build_features
from app.features.state import DAY_MS, HORIZON_MS

T0 = 1_530_662_400_000  # 2018-07-04T00:00:00Z, a Wednesday


def tx(i: int, t_ms: int, amount_minor: int = 1000, account: str = "a1") -> Transaction:
    return Transaction(
        transaction_id=f"t{i}",
        account_id=account,
        terminal_id="m1",
        amount_minor=amount_minor,
        event_time_ms=t_ms,
    )


def feats(state: AccountState, t: Transaction) -> dict[str, float]:
    return dict(zip(ACCOUNT_FEATURE_NAMES, extract_account(state, t)))


def test_names_are_built_from_windows():
    for w in WINDOWS_DAYS:
        assert f"account_tx_count_{w}d" in FEATURE_NAMES
        assert f"account_amount_mean_{w}d" in FEATURE_NAMES
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)


def test_no_history():
    f = feats(AccountState(), tx(1, T0 + 3_600_000, 2500))
    assert f["amount"] == 25.0
    assert f["account_tx_count_30d"] == 0.0
    assert f["amount_to_account_mean_7d"] == 1.0
    assert f["seconds_since_previous_tx"] == NO_HISTORY_SECONDS
    assert f["is_night"] == 1.0 and f["hour_of_day"] == 1.0 and f["is_weekend"] == 0.0


@pytest.mark.parametrize(
    "age_ms, in_1d, in_7d, in_30d",
    [
        pytest.param(DAY_MS - 1, 1, 1, 1, id="just-inside-1d"),
        pytest.param(DAY_MS, 0, 1, 1, id="exactly-1d-is-out"),
        pytest.param(7 * DAY_MS, 0, 0, 1, id="exactly-7d-is-out"),
        pytest.param(30 * DAY_MS - 1, 0, 0, 1, id="just-inside-30d"),
    ],
)
def test_window_edges(age_ms, in_1d, in_7d, in_30d):
    s = AccountState()
    t = T0 + 40 * DAY_MS
    s.update_one(tx(1, t - age_ms, 1000))
    f = feats(s, tx(2, t, 3000))
    assert (f["account_tx_count_1d"], f["account_tx_count_7d"], f["account_tx_count_30d"]) == (
        in_1d, in_7d, in_30d
    )
    if in_7d:
        assert f["account_amount_mean_7d"] == 10.0
        assert f["amount_to_account_mean_7d"] == 3.0


def test_never_sees_itself_or_later_events():
    s = AccountState()
    s.update_one(tx(1, T0, 1000))
    s.update_one(tx(3, T0 + 2 * 3_600_000, 9000))  # later than the late event below
    late = tx(2, T0 + 3_600_000, 500)
    f = feats(s, late)
    assert f["account_tx_count_1d"] == 1.0  # only t1, not the later t3
    assert f["seconds_since_previous_tx"] == 3600.0


def test_duplicate_counted_once():
    s = AccountState()
    assert s.update_one(tx(1, T0))
    assert not s.update_one(tx(1, T0))
    assert len(s) == 1


def test_expiry_keeps_state_bounded():
    s = AccountState()
    for i in range(100):
        s.update_one(tx(i, T0 + i * DAY_MS))
    assert len(s) == 30
    assert s.times_ms[0] > s.times_ms[-1] - HORIZON_MS


def test_roundtrip_bytes():
    s = AccountState()
    for i in range(5):
        s.update_one(tx(i, T0 + i * 1000, 100 + i))
    assert AccountState.from_bytes(s.to_bytes()) == s
    assert AccountState.from_bytes(None) == AccountState()


_ids = st.text(alphabet="abcXYZ019_.:-", min_size=1, max_size=64)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, HORIZON_MS - 1), st.integers(0, 2**63 - 1), _ids),
                max_size=120))
def test_binary_state_roundtrips(rows):
    rows.sort(key=lambda r: r[0])
    s = AccountState([T0 + t for t, _, _ in rows], [a for _, a, _ in rows], [i for _, _, i in rows])
    raw = s.to_bytes()
    assert raw[:1] == b"\x01"  # the binary form: every such state fits it
    assert AccountState.from_bytes(raw) == s


def test_state_size_at_handbook_activity():
    """100 transactions in 30 days (the issue's "handbook activity"), handbook-like ids
    and amounts: the binary form is about half the JSON form of earlier versions."""
    s = AccountState([T0 + i * 25_000_000 for i in range(100)], [5_000 + i for i in range(100)],
                     [str(1_000_000 + i) for i in range(100)])
    raw = s.to_bytes()
    legacy = orjson.dumps({"t": s.times_ms, "a": s.amounts_minor, "i": s.ids})
    assert len(raw) == 14 + 100 * (4 + 4) + 100 * 7 + 99
    assert len(raw) < len(legacy) / 1.8
    assert AccountState.from_bytes(legacy) == s  # state written by an earlier version
    assert AccountState.from_bytes(legacy.decode()) == s


def test_states_outside_the_binary_form_fall_back_to_json():
    wide_span = AccountState([T0, T0 + 60 * DAY_MS], [1, 2], ["a", "b"])
    odd_id = AccountState([T0], [1], ["caf\u00e9"])
    for s in (wide_span, odd_id):
        raw = s.to_bytes()
        assert raw[:1] == b"{" and AccountState.from_bytes(raw) == s
    with pytest.raises(ValueError, match="unknown format"):
        AccountState.from_bytes(b"\x07" + AccountState().to_bytes()[1:])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 45 * DAY_MS), st.integers(0, 10**7)), min_size=1, max_size=40
    )
)
def test_matches_brute_force(events):
    """extract_one equals a direct computation over all earlier events."""
    events = sorted(events)
    s = AccountState()
    seen: list[tuple[int, int]] = []
    for i, (dt, amt) in enumerate(events):
        t = T0 + dt
        f = feats(s, tx(i, t, amt))
        for w in WINDOWS_DAYS:
            win = [a for (u, a) in seen if t - w * DAY_MS < u <= t]
            assert f[f"account_tx_count_{w}d"] == len(win)
            mean = sum(win) / len(win) / 100 if win else 0.0
            assert math.isclose(f[f"account_amount_mean_{w}d"], mean, rel_tol=1e-12)
        s.update_one(tx(i, t, amt))
        seen.append((t, amt))


def test_offline_builder_equals_one_by_one():
    txs = [tx(i, T0 + i * 3_600_000, 1000 + 37 * i, account=f"a{i % 3}") for i in range(50)]
    X = build_features(txs)
    states: dict[str, AccountState] = {}
    terminal = TerminalState()
    for row, t in zip(X, txs):
        s = states.setdefault(t.account_id, AccountState())
        assert list(row) == extract_one(s, terminal, t)
        s.update_one(t)
        terminal.update_one(t, terminal_horizon_ms())
    assert X.shape == (50, len(FEATURE_NAMES))


def test_redelivered_transaction_gets_its_first_features():
    s = AccountState()
    first = []
    txs = [tx(i, T0 + i * 60_000, 100 * (i + 1)) for i in range(5)]
    for t in txs:
        first.append(extract_account(s, t))
        s.update_one(t)
    assert [extract_account(s, t) for t in txs] == first


# --- terminal features --------------------------------------------------------------

H = terminal_horizon_ms(7)


def label(i: int, t_ms: int, fraud: bool, label_ms: int, terminal: str = "m1") -> Label:
    return Label(
        transaction_id=f"t{i}",
        account_id="a1",
        terminal_id=terminal,
        is_fraud=fraud,
        transaction_time_ms=t_ms,
        label_time_ms=label_ms,
    )


def tfeats(state: TerminalState, t: Transaction) -> dict[str, float]:
    return dict(zip(terminal_feature_names(7), extract_terminal(state, t, 7)))


def test_terminal_windows_end_delay_days_before():
    s = TerminalState()
    t = T0 + 40 * DAY_MS
    s.update_one(tx(1, t - 7 * DAY_MS - 1000), H)  # in all windows
    s.update_one(tx(2, t - 7 * DAY_MS + 1000), H)  # inside the delay: in none
    s.update_one(tx(3, t - 9 * DAY_MS), H)  # in 7d and 30d
    f = tfeats(s, tx(9, t))
    assert f["terminal_tx_count_1d_delay_7d"] == 1
    assert f["terminal_tx_count_7d_delay_7d"] == 2
    assert f["terminal_tx_count_30d_delay_7d"] == 2
    assert f["terminal_risk_7d_delay_7d"] == 0.0


@pytest.mark.parametrize(
    "label_offset_ms, known",
    [
        pytest.param(-1, True, id="label-just-before-is-known"),
        pytest.param(0, False, id="label-at-the-same-time-is-not-known"),
        pytest.param(1, False, id="label-after-is-not-known-even-if-processed-first"),
    ],
)
def test_terminal_risk_uses_only_labels_arrived_before(label_offset_ms, known):
    s = TerminalState()
    t = T0 + 40 * DAY_MS
    s.update_one(tx(1, t - 8 * DAY_MS), H)
    s.update_one(tx(2, t - 8 * DAY_MS + 5), H)
    s.label_one(label(1, t - 8 * DAY_MS, True, t + label_offset_ms), H)
    s.label_one(label(2, t - 8 * DAY_MS + 5, False, t - 10), H)  # genuine: no change
    f = tfeats(s, tx(9, t))
    assert f["terminal_tx_count_7d_delay_7d"] == 2
    assert f["terminal_risk_7d_delay_7d"] == (0.5 if known else 0.0)


def test_terminal_state_dedups_and_expires():
    s = TerminalState()
    assert s.update_one(tx(1, T0), H)
    assert not s.update_one(tx(1, T0), H)
    assert s.label_one(label(1, T0, True, T0 + 7 * DAY_MS), H)
    assert not s.label_one(label(1, T0, True, T0 + 7 * DAY_MS), H)
    s.update_one(tx(2, T0 + H + 1), H)
    assert s.ids == ["t2"] and s.fraud_ids == []
    assert TerminalState.from_bytes(s.to_bytes()) == s


def test_offline_applies_labels_at_arrival_time():
    """A fraud label counts for transactions after its arrival, not before."""
    t_fraud = T0
    txs = [tx(0, t_fraud, account="a0")]
    txs += [tx(i, T0 + 7 * DAY_MS + i * 1000, account=f"a{i}") for i in range(1, 4)]
    # the fraud label arrives between tx 1 and tx 2
    lbl = [label(0, t_fraud, True, T0 + 7 * DAY_MS + 1500)]
    X = build_features(txs, lbl)
    risk = FEATURE_NAMES.index("terminal_risk_1d_delay_7d")
    assert X[1, risk] == 0.0  # before the label arrived
    assert X[2, risk] == 1.0 and X[3, risk] == 1.0


def test_late_transactions_are_processed_and_counted():
    """The allowed-lateness rule (issue 6): older than the account's newest by more than
    the allowed lateness -> late, but still in state and featurized; a duplicate is not."""
    from app.events import Transaction, encode
    from app.pipeline import RawRecord, featurize_accounts

    def tx(i: int, minutes: int) -> Transaction:
        return Transaction(transaction_id=f"t{i}", account_id="a", terminal_id="m",
                           amount_minor=100, event_time_ms=1_530_000_000_000 + minutes * 60_000)

    txs = [tx(0, 0), tx(1, 120), tx(2, 115), tx(3, 30), tx(1, 120)]
    records = [RawRecord(encode(t), b"a", "transactions", 0, i, 0) for i, t in enumerate(txs)]
    out = featurize_accounts(records, lambda _: None, allowed_lateness_ms=60 * 60_000)
    assert out.late == 1  # t3 is 90 min behind t1; t2 only 5 min
    assert out.duplicates == 1
    assert out.states["a"].ids == ["t0", "t3", "t2", "t1"]
    assert len(out.enriched) == 5
