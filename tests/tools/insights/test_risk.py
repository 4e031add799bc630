"""The payment-risk score: no leakage from the future, a backtest on the IBM file, determinism,
the named fallback, and the SQL arithmetic agreeing with the Python one on a real ledger."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased
from typer.testing import CliRunner

from memory.models import (
    CustomerRiskSnapshot,
    Dispute,
    Invoice,
    InvoiceStatus,
    Organisation,
    RiskModelVersion,
)
from tests.tools.insights.test_focus import TODAY, Book, build_book
from tools.imports.importer import parse_invoice_csv
from tools.insights import risk
from tools.insights.risk import (
    FEATURES,
    HistoryRecord,
    Priors,
    RiskModel,
    backtest,
    build_features,
    outcome_as_of,
    records_from_parsed,
    train_on_history,
)

IBM = Path(__file__).resolve().parents[4] / "shared" / "data" / "ibm-accounts-receivable.csv"
needs_ibm = pytest.mark.skipif(not IBM.exists(), reason="../shared/data is not beside the repo")
PRIORS = Priors(late_rate=0.3, dispute_rate=0.1)
Featurizer = Callable[[Sequence[HistoryRecord], Sequence[HistoryRecord], date], np.ndarray]


def synthetic_history(
    n_customers: int = 12, per_customer: int = 30, seed: int = 3
) -> list[HistoryRecord]:
    """Customers with their own lateness habit, paid invoices and a few still open."""
    rng = random.Random(seed)
    start = date(2023, 1, 2)
    out: list[HistoryRecord] = []
    for c in range(n_customers):
        habit = rng.random()
        for i in range(per_customer):
            issue = start + timedelta(days=rng.randint(0, 540))
            due = issue + timedelta(days=rng.choice((15, 30, 45)))
            disputed = rng.random() < 0.12
            late = rng.random() < (0.85 if disputed else habit)
            settle = (
                due + timedelta(days=rng.randint(1, 40))
                if late
                else due - timedelta(days=rng.randint(0, 10))
            )
            settle = max(settle, issue)
            open_ = i >= per_customer - 2
            out.append(
                HistoryRecord(
                    key=f"C{c}-{i}",
                    customer=f"C{c}",
                    issue_date=issue,
                    due_date=due,
                    amount_minor=rng.randint(1_000, 90_000),
                    settled_date=None if open_ else settle,
                    disputed=disputed,
                    paperless=rng.random() < 0.5,
                )
            )
    return out


def _python_features(
    history: Sequence[HistoryRecord], targets: Sequence[HistoryRecord], as_of: date
) -> np.ndarray:
    return build_features(history, targets, as_of, PRIORS).x


def _leaky_features(
    history: Sequence[HistoryRecord], targets: Sequence[HistoryRecord], as_of: date
) -> np.ndarray:
    """A deliberately wrong featurizer: it reads every settlement, even those after ``as_of``."""
    x = build_features(history, targets, as_of, PRIORS).x.copy()
    for i, t in enumerate(targets):
        mine = [r for r in history if r.customer == t.customer and r.key != t.key and r.late()]
        x[i, FEATURES.index("earlier_late_rate")] += len(mine) / 100
    return x


def perturb_future(
    history: Sequence[HistoryRecord], as_of: date, seed: int = 9
) -> list[HistoryRecord]:
    """Rewrite everything dated after ``as_of``: settlements after it move, vanish or flip between
    on time and late; disputes get opened after it; invoices issued after it change amount and
    channel; and a few brand-new later invoices appear. (An undated dispute flag is, by contract,
    known when an invoice is scored, so it is left alone.)"""
    rng = random.Random(seed)
    out = []
    for r in history:
        if r.settled_date is not None and r.settled_date > as_of:
            choice = rng.randrange(3)
            new_settled = (
                None
                if choice == 0
                else max(
                    as_of + timedelta(days=1), r.due_date + timedelta(days=rng.randint(-5, 60))
                )
            )
            r = dataclasses.replace(r, settled_date=new_settled)
            if not r.disputed:  # a dispute opened after as_of (dated: invisible on as_of)
                r = dataclasses.replace(
                    r, disputed=True, disputed_on=as_of + timedelta(days=rng.randint(1, 20))
                )
        if r.issue_date > as_of:
            r = dataclasses.replace(
                r, amount_minor=r.amount_minor * 3 + 7, paperless=not r.paperless
            )
        out.append(r)
    for i in range(20):
        cust = rng.choice(history).customer
        issue = as_of + timedelta(days=rng.randint(1, 30))
        out.append(
            HistoryRecord(
                key=f"future-{i}",
                customer=cust,
                issue_date=issue,
                due_date=issue + timedelta(days=30),
                amount_minor=999_999,
                settled_date=issue + timedelta(days=90),
                disputed=True,
            )
        )
    return out


def assert_no_leak(featurize: Featurizer, history: list[HistoryRecord], as_of: date) -> None:
    """Features of every invoice issued by ``as_of``, scored on ``as_of``, must not move when
    anything after ``as_of`` is rewritten."""
    targets = [r for r in history if r.issue_date <= as_of]
    before = featurize(history, targets, as_of)
    changed = perturb_future(history, as_of)
    by_key = {r.key: r for r in changed}
    after = featurize(changed, [by_key[t.key] for t in targets], as_of)
    np.testing.assert_array_equal(before, after)


# --- labels and features ----------------------------------------------------------------------


def test_outcome_is_known_only_once_it_happened() -> None:
    r = HistoryRecord("1", "c", date(2024, 1, 1), date(2024, 1, 31), 100, date(2024, 2, 10))
    assert outcome_as_of(r, date(2024, 1, 15)) is None  # open, not yet due: nobody knows
    assert outcome_as_of(r, date(2024, 2, 5)) is True  # unpaid after due: late, whatever happens
    assert outcome_as_of(r, date(2024, 2, 10)) is True  # settled after due
    on_time = dataclasses.replace(r, settled_date=date(2024, 1, 31))
    assert outcome_as_of(on_time, date(2024, 1, 20)) is None
    assert outcome_as_of(on_time, date(2024, 1, 31)) is False  # paid on the due date
    undated = dataclasses.replace(r, settled_date=None, outcome_known=False)
    assert outcome_as_of(undated, date(2025, 1, 1)) is None
    assert outcome_as_of(r, date(2024, 1, 1)) is None  # issued that day: not yet history


@pytest.mark.parametrize("as_of", [date(2023, 4, 1), date(2023, 9, 15), date(2024, 3, 1)])
def test_features_use_nothing_after_the_scoring_date(as_of: date) -> None:
    assert_no_leak(_python_features, synthetic_history(), as_of)


def test_the_leakage_check_catches_a_feature_that_peeks_at_the_future() -> None:
    with pytest.raises(AssertionError):
        assert_no_leak(_leaky_features, synthetic_history(), date(2023, 9, 15))


def test_an_invoice_never_sees_its_own_outcome() -> None:
    history = synthetic_history()
    target = next(r for r in history if r.settled_date and r.late())
    assert target.settled_date is not None
    as_of = target.settled_date + timedelta(days=5)
    x1 = build_features(history, [target], as_of, PRIORS).x
    flipped = [
        dataclasses.replace(r, settled_date=r.due_date) if r.key == target.key else r
        for r in history
    ]
    x2 = build_features(flipped, [target], as_of, PRIORS).x
    np.testing.assert_array_equal(x1, x2)


def test_customer_with_one_invoice_gets_the_priors_and_says_so() -> None:
    only = HistoryRecord("solo", "new", date(2024, 3, 1), date(2024, 3, 31), 5_000)
    fm = build_features([only], [only], date(2024, 4, 15), PRIORS)
    x = fm.x[0]
    assert x[FEATURES.index("earlier_invoices")] == 0.0
    assert x[FEATURES.index("earlier_late_rate")] == pytest.approx(PRIORS.late_rate)
    assert x[FEATURES.index("earlier_dispute_rate")] == pytest.approx(PRIORS.dispute_rate)
    assert x[FEATURES.index("amount_vs_usual")] == 0.0
    model, _ = train_on_history(synthetic_history(), date(2024, 6, 1))
    assert model.kind == "logistic"
    texts = [r.text for r in risk.reasons_for(model, fm, 0, top=9, min_weight=0)]
    assert "No earlier payment history for this customer" in texts or any(
        "No earlier payment history" in t for t in texts
    )


def test_open_and_past_due_earlier_invoices_count_as_late() -> None:
    a = HistoryRecord("a", "c", date(2024, 1, 1), date(2024, 1, 31), 100)  # still open
    b = HistoryRecord("b", "c", date(2024, 1, 5), date(2024, 2, 4), 100, date(2024, 2, 1))
    t = HistoryRecord("t", "c", date(2024, 3, 1), date(2024, 3, 31), 100)
    fm = build_features([a, b, t], [t], date(2024, 3, 1), PRIORS)
    assert int(fm.n_known[0]) == 2 and int(fm.n_late[0]) == 1 and int(fm.n_open_past_due[0]) == 1
    assert fm.x[0][FEATURES.index("earlier_avg_days_late")] == pytest.approx(
        min((date(2024, 3, 1) - date(2024, 1, 31)).days, 60) / 2
    )


# --- the model --------------------------------------------------------------------------------


def test_too_little_history_gives_the_named_fallback() -> None:
    few = synthetic_history(n_customers=2, per_customer=20)
    model, ts = train_on_history(few, date(2024, 9, 1))
    assert model.kind == "fallback"
    assert model.fallback_reason and "needs at least" in model.fallback_reason
    assert "Fallback" in model.label
    # The fallback is the customer's shrunk late rate, exactly.
    np.testing.assert_allclose(model.predict(ts.features.x), ts.features.x[:, 1])


def test_training_is_deterministic_and_params_reproduce_sklearn() -> None:
    history = synthetic_history()
    m1, ts = train_on_history(history, date(2024, 9, 1))
    m2, _ = train_on_history(history, date(2024, 9, 1))
    assert m1.kind == "logistic"
    assert m1.to_params() == m2.to_params()
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(ts.features.x)
    reference = LogisticRegression(random_state=risk.RANDOM_STATE, max_iter=1000).fit(
        scaler.transform(ts.features.x), ts.labels
    )
    expected = reference.predict_proba(scaler.transform(ts.features.x))[:, 1]
    np.testing.assert_allclose(m1.predict(ts.features.x), expected, rtol=1e-9, atol=1e-12)


def test_backtest_on_a_synthetic_history_ranks_habitual_late_payers_first() -> None:
    result = backtest(synthetic_history(n_customers=20, per_customer=40), 0.7)
    assert result.model_kind == "logistic"
    assert result.auc is not None and result.auc > 0.75
    assert sum(row["count"] for row in result.calibration) == result.n_test


def test_backtest_refuses_bad_fractions_and_empty_histories() -> None:
    with pytest.raises(risk.NotEnoughHistory, match="between 0 and 1"):
        backtest(synthetic_history(), 1.5)
    with pytest.raises(risk.NotEnoughHistory):
        backtest([], 0.7)


# --- the IBM file -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ibm_records() -> list[HistoryRecord]:
    parsed = parse_invoice_csv(IBM)
    assert not parsed.errors
    return records_from_parsed(parsed.rows)


@needs_ibm
@pytest.mark.parametrize("fraction", [0.5, 0.6, 0.7, 0.8])
def test_ibm_backtest_auc_at_every_cut(ibm_records: list[HistoryRecord], fraction: float) -> None:
    result = backtest(ibm_records, fraction)
    assert result.model_kind == "logistic"
    assert result.auc is not None and result.auc >= 0.90, result.to_dict()
    assert result.baseline_auc is not None and result.auc > result.baseline_auc
    assert result.brier is not None and result.brier < 0.15


@needs_ibm
def test_ibm_backtest_is_blind_to_everything_after_the_cut(
    ibm_records: list[HistoryRecord],
) -> None:
    """Rewrite every settlement after the cut: the trained model and every held-out score stay
    exactly the same (only the labels they are judged against change)."""
    ordered = sorted(ibm_records, key=lambda r: (r.issue_date, r.key))
    cut = ordered[int(0.7 * len(ordered))].issue_date
    test = [r for r in ordered if r.issue_date >= cut]

    def model_and_scores(records: list[HistoryRecord]) -> tuple[dict[str, object], np.ndarray]:
        model, _ = train_on_history(records, cut)
        by_key = {r.key: r for r in records}
        feats = build_features(records, [by_key[t.key] for t in test], cut, model.priors)
        return model.to_params(), model.predict(feats.x)

    params, scores = model_and_scores(ibm_records)
    changed = [
        dataclasses.replace(r, settled_date=r.due_date + timedelta(days=45))
        if r.settled_date is not None and r.settled_date > cut
        else r
        for r in ibm_records
    ]
    assert sum(a != b for a, b in zip(ibm_records, changed, strict=True)) > 500
    params2, scores2 = model_and_scores(changed)
    assert params == params2
    np.testing.assert_array_equal(scores, scores2)
    assert_no_leak(_python_features, ibm_records, cut)


@needs_ibm
def test_cli_backtest_prints_json_with_auc(tmp_path: Path) -> None:
    from api.cli.main import app

    runner = CliRunner()
    out = runner.invoke(app, ["risk", "backtest", str(IBM), "--json"])
    assert out.exit_code == 0, out.output
    import json

    data = json.loads(out.stdout)
    assert data["fraction"] == 0.7 and data["auc"] >= 0.90
    assert len(data["calibration"]) == 10 and data["brier"] < 0.15
    bad = runner.invoke(app, ["risk", "backtest", str(IBM), "--fraction", "1.2"])
    assert bad.exit_code == 2 and "outside (0, 1)" in bad.output
    missing = runner.invoke(app, ["risk", "backtest", str(tmp_path / "nope.csv")])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    assert "Traceback" not in missing.output


# --- the ledger -------------------------------------------------------------------------------


def _sql_scores(session: Session, org_id: int, model: RiskModel) -> dict[int, float]:
    t = aliased(Invoice, name="t")
    dialect = session.get_bind().dialect.name
    disputed = risk.dispute_ids_subquery(org_id)
    own = (t.disputed.is_(True)) | (disputed.c.invoice_id.is_not(None))
    sr = risk.sql_risk(org_id, TODAY, model, t, dialect, own)
    rows = session.execute(
        select(t.id, sr.probability)
        .select_from(t)
        .outerjoin(sr.customers, sr.customers.c.customer_id == t.customer_id)
        .outerjoin(disputed, disputed.c.invoice_id == t.id)
        .where(t.org_id == org_id, t.status == InvoiceStatus.OPEN)
    ).all()
    return {int(i): float(p) for i, p in rows}


def test_train_stores_versions_and_sql_scores_equal_python_scores(
    session: Session, org: Organisation
) -> None:
    book: Book = build_book(session, org)
    v1 = risk.train(session, org.id, TODAY)
    v2 = risk.train(session, org.id, TODAY)
    session.commit()
    assert (v1.version, v2.version) == (1, 2)
    assert v2.kind == "logistic" and v2.trained_through == TODAY
    assert v2.metrics["examples"] >= 200 and v2.metrics["holdout_auc"] is not None
    assert v2.params["coef"] and "mean" in v2.params  # reproducible without pickle
    model = risk.current_model(session, org.id)
    assert model.version == 2

    state = risk.ensure_snapshot(session, org.id, TODAY, model)
    assert state.refreshed
    sql = _sql_scores(session, org.id, model)
    history = risk.ledger_history(session, org.id)
    open_ids = {int(r.key) for r in history} & set(sql)
    targets = [r for r in history if int(r.key) in open_ids]
    fm = build_features(history, targets, TODAY, model.priors)
    python = dict(zip((int(t.key) for t in targets), model.predict(fm.x), strict=True))
    assert len(python) == len(book.open_invoices) > 10
    for invoice_id, p in python.items():
        assert sql[invoice_id] == pytest.approx(p, rel=1e-9, abs=1e-12)

    # The same features come back from the snapshot aggregates (what the reasons are built on).
    snap = risk.snapshot_select(org.id, TODAY, model, session.get_bind().dialect.name).subquery()
    inv = aliased(Invoice)
    rows = session.execute(
        select(
            inv.id,
            inv.amount_minor,
            inv.issue_date,
            inv.due_date,
            inv.paperless,
            (inv.disputed.is_(True) | inv.id.in_(select(Dispute.invoice_id))).label("own_disputed"),
            *(snap.c[a] for a in risk.AGGREGATES),
        )
        .join(snap, snap.c.customer_id == inv.customer_id)
        .where(inv.id.in_([int(t.key) for t in targets]))
        .order_by(inv.id)
    ).all()
    agg = risk.features_from_aggregates(rows, TODAY, model.priors)
    order = {int(t.key): i for i, t in enumerate(targets)}
    np.testing.assert_allclose(agg.x, fm.x[[order[r.id] for r in rows]], rtol=1e-12, atol=1e-12)


def test_snapshot_follows_the_ledger_and_the_model(session: Session, org: Organisation) -> None:
    book = build_book(session, org)
    model = risk.current_model(session, org.id)
    assert model.kind == "fallback" and "No risk model" in (model.fallback_reason or "")
    first = risk.ensure_snapshot(session, org.id, TODAY, model)
    again = risk.ensure_snapshot(session, org.id, TODAY, model)
    assert first.refreshed and not again.refreshed
    n = session.scalar(
        select(func.count())
        .select_from(CustomerRiskSnapshot)
        .where(CustomerRiskSnapshot.org_id == org.id)
    )
    assert n == len(book.customers)
    # A payment arrives: the snapshot is refreshed on the next look.
    from tools.payments.posting import post_payment

    inv = book.open_invoices[0]
    post_payment(
        session,
        org.id,
        amount_minor=inv.balance_minor,
        currency=inv.currency,
        received_on=TODAY,
        actor="test",
        invoice_id=inv.id,
        send_receipt=False,
    )
    # Within the tolerated lag the snapshot stands; past it, it is rebuilt.
    assert not risk.ensure_snapshot(session, org.id, TODAY, model).refreshed
    later = datetime.now(UTC) + risk.SNAPSHOT_MAX_AGE + timedelta(seconds=1)
    assert risk.ensure_snapshot(session, org.id, TODAY, model, now=later).refreshed
    assert not risk.ensure_snapshot(session, org.id, TODAY, model, now=later).refreshed
    assert risk.ensure_snapshot(session, org.id, TODAY + timedelta(days=1), model).refreshed
    trained = risk.RiskModel.from_version(risk.train(session, org.id, TODAY))
    assert risk.ensure_snapshot(session, org.id, TODAY + timedelta(days=1), trained).refreshed


def test_org_without_history_scores_with_the_fallback(session: Session, org: Organisation) -> None:
    row = risk.train(session, org.id, TODAY)
    assert row.kind == "fallback" and row.metrics["examples"] == 0
    assert "0 paid invoices" in row.params["fallback_reason"]
    assert session.scalar(select(func.count()).select_from(RiskModelVersion)) == 1
    model = RiskModel.from_version(row)
    assert model.priors.late_rate == risk.NO_PRIOR_LATE_RATE
