"""Payment-risk score: the probability that an open invoice is paid late, learned from the
organisation's own paid history.

Why it is built this way:

* **Only what was known on the scoring date.** Every feature is computed "as of" a date ``D``: the
  customer's invoices issued before ``D``, their settlements on or before ``D``, and the ones still
  unpaid and already past due on ``D`` (those are known to be late). Anything settled after ``D`` is
  treated as still open; invoices issued after ``D`` do not exist yet. Training examples are
  featurized as of their own issue date, so the model never learns from the future
  (``tests/tools/insights/test_risk.py`` perturbs every later settlement and checks nothing moves).
* **Deterministic and reproducible without pickle.** A scikit-learn ``LogisticRegression``
  (lbfgs, fixed ``random_state``) on standardized features; the stored ``RiskModelVersion.params``
  hold the means, scales, coefficients and intercept, so scoring is plain arithmetic, in numpy or in
  SQL (Today's Focus ranks a million invoices in the database, see ``tools/insights/focus.py``).
* **Transparent fallback.** With too little history (fewer than ``MIN_TRAINING_EXAMPLES`` known
  outcomes, or fewer than ``MIN_PER_CLASS`` late or on-time payments) the score is the customer's
  earlier late rate shrunk toward the organisation average, and ``kind == "fallback"`` says so.
* **Reasons.** Each score carries its top reasons: the features that pushed it up or down most.

The label: an invoice is *late* when it was settled after its due date (or is unpaid after it).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal, Protocol

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import (
    Date,
    Float,
    Integer,
    String,
    and_,
    case,
    cast,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
)
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.elements import ColumnElement

from memory import business_day, clock
from memory.models import (
    CustomerRiskSnapshot,
    Dispute,
    Invoice,
    InvoiceStatus,
    Organisation,
    Payment,
    PromiseToPay,
    RiskModelVersion,
)

# --- the feature set --------------------------------------------------------------------------

DAYS_LATE_CAP = 60
OPEN_PAST_DUE_CAP = 10
SHRINKAGE = 2.0  # pseudo-invoices pulling a short history toward the organisation average
LOGIT_CLIP = 30.0
SNAPSHOT_MAX_AGE = timedelta(minutes=15)  # how far the risk history may lag the ledger
MIN_TRAINING_EXAMPLES = 200
MIN_PER_CLASS = 20
RANDOM_STATE = 0
NO_PRIOR_LATE_RATE = 0.5  # an organisation with no known outcome at all: no information either way

#: Model features, in order. Their meaning is in FEATURE_LABELS; all are computable in SQL.
FEATURES: tuple[str, ...] = (
    "earlier_invoices",
    "earlier_late_rate",
    "earlier_avg_days_late",
    "earlier_dispute_rate",
    "amount_vs_usual",
    "terms_days",
    "paperless",
    "open_past_due",
    "disputed",
)

FEATURE_LABELS: dict[str, str] = {
    "earlier_invoices": "ln(1 + earlier invoices of the customer with a known outcome)",
    "earlier_late_rate": "share of those paid late, shrunk toward the organisation's late rate",
    "earlier_avg_days_late": f"mean days late over them (each capped at {DAYS_LATE_CAP} days)",
    "earlier_dispute_rate": "share of the customer's settled invoices that were disputed (shrunk)",
    "amount_vs_usual": "ln(amount / the customer's mean amount on earlier invoices)",
    "terms_days": "payment terms: days from invoice date to due date",
    "paperless": "1 when the invoice went out electronically",
    "open_past_due": (
        f"the customer's other invoices unpaid and past due on the scoring date "
        f"(≤ {OPEN_PAST_DUE_CAP})"
    ),
    "disputed": "1 when the invoice itself is (or was) in dispute on the scoring date",
}

_BIG = 10**9  # "never" as a date ordinal


@dataclass(frozen=True, slots=True)
class HistoryRecord:
    """One invoice as the risk model sees it; built from the ledger or from a CSV row.

    ``settled_date`` is the day it was fully paid (None: still open). ``outcome_known`` is False for
    an invoice closed without a settlement date (its timing is unknown, so it teaches nothing about
    lateness; its amount still counts toward the customer's usual amount). ``disputed_on`` dates a
    dispute when the source has dates; an undated dispute flag is taken as known when scoring.
    """

    key: str
    customer: str
    issue_date: date
    due_date: date
    amount_minor: int
    settled_date: date | None = None
    disputed: bool = False
    disputed_on: date | None = None
    paperless: bool | None = None
    outcome_known: bool = True

    def late(self) -> bool | None:
        """The label: paid after the due date. None when it is not settled (or timing unknown)."""
        if not self.outcome_known or self.settled_date is None:
            return None
        return self.settled_date > self.due_date


def outcome_as_of(record: HistoryRecord, as_of: date) -> bool | None:
    """Late / on time as it was known on ``as_of``; None when nobody could know yet."""
    if not record.outcome_known or record.issue_date >= as_of:
        return None
    if record.settled_date is not None and record.settled_date <= as_of:
        return record.settled_date > record.due_date
    if record.due_date < as_of:
        return True  # unpaid on as_of and already past due: it is late whatever happens next
    return None


@dataclass(frozen=True)
class Priors:
    """Organisation-level rates the features shrink toward (part of the model's params)."""

    late_rate: float
    dispute_rate: float


@dataclass
class FeatureMatrix:
    """Features for a batch of invoices plus the raw counts behind them (for the reasons)."""

    x: NDArray[np.float64]
    n_known: NDArray[np.int64]
    n_late: NDArray[np.int64]
    n_settled: NDArray[np.int64]
    n_disputed: NDArray[np.int64]
    n_open_past_due: NDArray[np.int64]


@dataclass
class _CustomerArrays:
    keys: list[str]
    issue: NDArray[np.int64]
    due: NDArray[np.int64]
    settled: NDArray[np.int64]
    known: NDArray[np.bool_]
    amount: NDArray[np.float64]
    disputed: NDArray[np.bool_]
    disputed_on: NDArray[np.int64]


def _ordinal(d: date | None, none: int) -> int:
    return d.toordinal() if d is not None else none


def _group(history: Iterable[HistoryRecord]) -> dict[str, _CustomerArrays]:
    grouped: dict[str, list[HistoryRecord]] = defaultdict(list)
    for r in history:
        grouped[r.customer].append(r)
    out: dict[str, _CustomerArrays] = {}
    for cust, recs in grouped.items():
        out[cust] = _CustomerArrays(
            keys=[r.key for r in recs],
            issue=np.array([r.issue_date.toordinal() for r in recs], dtype=np.int64),
            due=np.array([r.due_date.toordinal() for r in recs], dtype=np.int64),
            settled=np.array([_ordinal(r.settled_date, _BIG) for r in recs], dtype=np.int64),
            known=np.array([r.outcome_known for r in recs], dtype=np.bool_),
            amount=np.array([float(r.amount_minor) for r in recs], dtype=np.float64),
            disputed=np.array([r.disputed for r in recs], dtype=np.bool_),
            disputed_on=np.array([_ordinal(r.disputed_on, -_BIG) for r in recs], dtype=np.int64),
        )
    return out


def _history_counts(
    h: _CustomerArrays | None,
    targets: Sequence[HistoryRecord],
    idx: Any,
    d: Any,
) -> tuple[Any, Any, Any, Any, Any, Any, Any]:
    """For a chunk of one customer's targets (``idx``, scored on the ordinals ``d``): invoices
    with a known outcome, late ones, settled, settled and disputed, open past due, the sum of
    days late and the mean amount of earlier invoices, each target's own invoice left out."""
    if h is None or not h.keys:
        n_known = late = n_settled = n_disp = opd = np.zeros(len(idx), dtype=np.int64)
        dl_sum = np.zeros(len(idx))
        mean_amt = np.full(len(idx), np.nan)
    else:
        key_pos = {k: j for j, k in enumerate(h.keys)}
        own = np.array([key_pos.get(targets[i].key, -1) for i in idx])
        earlier = h.issue[None, :] < d
        earlier &= np.arange(len(h.keys))[None, :] != own[:, None]
        settled_by = earlier & h.known[None, :] & (h.settled[None, :] <= d)
        open_pd = earlier & h.known[None, :] & (h.settled[None, :] > d) & (h.due[None, :] < d)
        late_settled = settled_by & (h.settled > h.due)[None, :]
        days_settled = np.clip(h.settled - h.due, 0, DAYS_LATE_CAP)[None, :]
        days_open = np.clip(d - h.due[None, :], 0, DAYS_LATE_CAP)
        n_settled = settled_by.sum(axis=1)
        n_open = open_pd.sum(axis=1)
        n_known = n_settled + n_open
        late = late_settled.sum(axis=1) + n_open
        dl_sum = (settled_by * days_settled).sum(axis=1) + (open_pd * days_open).sum(axis=1)
        disp_known = h.disputed[None, :] & (h.disputed_on[None, :] <= d)
        n_disp = (settled_by & disp_known).sum(axis=1)
        opd = n_open
        n_earlier = earlier.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_amt = np.where(
                n_earlier > 0, (earlier * h.amount[None, :]).sum(axis=1) / n_earlier, np.nan
            )
    return n_known, late, n_settled, n_disp, opd, dl_sum, mean_amt


def build_features(
    history: Sequence[HistoryRecord],
    targets: Sequence[HistoryRecord],
    as_of: date | Sequence[date],
    priors: Priors,
    *,
    chunk: int = 512,
) -> FeatureMatrix:
    """Features of each target as known on its scoring date (``as_of``, one date or one per target).

    The target's own outcome is never used: it is excluded from its customer's history by key.
    Only the target's own attributes (amount, terms, channel, dispute known by then) and the
    customer's history as of the scoring date enter.
    """
    n = len(targets)
    dates = [as_of] * n if isinstance(as_of, date) else list(as_of)
    if len(dates) != n:
        raise ValueError("give one scoring date, or one per target")
    x = np.zeros((n, len(FEATURES)), dtype=np.float64)
    counts = {k: np.zeros(n, dtype=np.int64) for k in ("known", "late", "settled", "disp", "opd")}
    by_customer: dict[str, list[int]] = defaultdict(list)
    for i, t in enumerate(targets):
        by_customer[t.customer].append(i)
    groups = _group(history)
    a, p0, d0 = SHRINKAGE, priors.late_rate, priors.dispute_rate
    for cust, idx_all in by_customer.items():
        h = groups.get(cust)
        for start in range(0, len(idx_all), chunk):
            idx = np.array(idx_all[start : start + chunk], dtype=np.int64)
            d = np.array([dates[i].toordinal() for i in idx], dtype=np.int64)[:, None]
            n_known, late, n_settled, n_disp, opd, dl_sum, mean_amt = _history_counts(
                h, targets, idx, d
            )
            for row, i in enumerate(idx):
                t = targets[i]
                amount = float(t.amount_minor)
                ratio = 0.0
                if amount > 0 and not math.isnan(mean_amt[row]) and mean_amt[row] > 0:
                    ratio = math.log(amount / mean_amt[row])
                nk = int(n_known[row])
                own_disputed = t.disputed and (t.disputed_on is None or t.disputed_on <= dates[i])
                x[i] = (
                    math.log1p(nk),
                    (int(late[row]) + a * p0) / (nk + a),
                    float(dl_sum[row]) / nk if nk else 0.0,
                    (int(n_disp[row]) + a * d0) / (int(n_settled[row]) + a),
                    ratio,
                    float((t.due_date - t.issue_date).days),
                    1.0 if t.paperless else 0.0,
                    float(min(int(opd[row]), OPEN_PAST_DUE_CAP)),
                    1.0 if own_disputed else 0.0,
                )
                counts["known"][i] = nk
                counts["late"][i] = int(late[row])
                counts["settled"][i] = int(n_settled[row])
                counts["disp"][i] = int(n_disp[row])
                counts["opd"][i] = int(opd[row])
    return FeatureMatrix(
        x=x,
        n_known=counts["known"],
        n_late=counts["late"],
        n_settled=counts["settled"],
        n_disputed=counts["disp"],
        n_open_past_due=counts["opd"],
    )


# --- the model --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reason:
    """One reason behind a score: what pushed it, which way, and how strongly (log-odds)."""

    feature: str
    text: str
    direction: Literal["raises", "lowers"]
    weight: float


@dataclass
class RiskModel:
    """A scoring function that is plain arithmetic over ``params`` (no pickle).

    ``logistic``: sigmoid(intercept + Σ coef·(x − mean)/scale). ``fallback``: the customer's earlier
    late rate shrunk toward the organisation average (``earlier_late_rate`` itself).
    """

    kind: Literal["logistic", "fallback"]
    priors: Priors
    mean: tuple[float, ...] = ()
    scale: tuple[float, ...] = ()
    coef: tuple[float, ...] = ()
    intercept: float = 0.0
    features: tuple[str, ...] = FEATURES
    fallback_reason: str | None = None
    version: int | None = None
    trained_at: datetime | None = None
    trained_through: date | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """What the UI says about where the score comes from."""
        if self.kind == "fallback":
            return "Fallback score (not enough paid history to learn a model)"
        when = f", trained {self.trained_at:%Y-%m-%d}" if self.trained_at else ""
        version = f" v{self.version}" if self.version is not None else ""
        return f"Learned model{version}{when}"

    def linear_terms(self) -> tuple[NDArray[np.float64], float]:
        """Weights and bias on the raw features: logit = bias + Σ w·x (what SQL evaluates)."""
        w = np.array(self.coef) / np.array(self.scale)
        bias = self.intercept - float(np.dot(w, np.array(self.mean)))
        return w, bias

    def logit(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        if self.kind == "fallback":
            p = np.clip(x[:, FEATURES.index("earlier_late_rate")], 1e-9, 1 - 1e-9)
            return np.log(p / (1 - p))
        z = (x - np.array(self.mean)) / np.array(self.scale)
        return np.asarray(z @ np.array(self.coef) + self.intercept, dtype=np.float64)

    def predict(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        """Probability of late payment per row of ``x``."""
        if self.kind == "fallback":
            return np.asarray(x[:, FEATURES.index("earlier_late_rate")], dtype=np.float64)
        z = np.clip(self.logit(x), -LOGIT_CLIP, LOGIT_CLIP)
        return np.asarray(1.0 / (1.0 + np.exp(-z)), dtype=np.float64)

    def contributions(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        """Each feature's push on the log-odds relative to the average invoice in training."""
        if self.kind == "fallback":
            out = np.zeros_like(x)
            p = np.clip(x[:, 1], 1e-9, 1 - 1e-9)
            p0 = min(max(self.priors.late_rate, 1e-9), 1 - 1e-9)
            out[:, 1] = np.log(p / (1 - p)) - math.log(p0 / (1 - p0))
            return out
        return np.asarray(
            (x - np.array(self.mean)) / np.array(self.scale) * np.array(self.coef),
            dtype=np.float64,
        )

    def to_params(self) -> dict[str, Any]:
        return {
            "priors": {
                "late_rate": self.priors.late_rate,
                "dispute_rate": self.priors.dispute_rate,
            },
            "mean": list(self.mean),
            "scale": list(self.scale),
            "coef": list(self.coef),
            "intercept": self.intercept,
            "shrinkage": SHRINKAGE,
            "days_late_cap": DAYS_LATE_CAP,
            "open_past_due_cap": OPEN_PAST_DUE_CAP,
            "fallback_reason": self.fallback_reason,
        }

    @classmethod
    def from_version(cls, row: RiskModelVersion) -> RiskModel:
        p = row.params
        if list(row.features) != list(FEATURES):
            raise ValueError(
                f"risk model v{row.version} was trained on other features; run `plixo risk train`"
            )
        kind: Literal["logistic", "fallback"] = "logistic" if row.kind == "logistic" else "fallback"
        return cls(
            kind=kind,
            priors=Priors(float(p["priors"]["late_rate"]), float(p["priors"]["dispute_rate"])),
            mean=tuple(float(v) for v in p.get("mean", [])),
            scale=tuple(float(v) for v in p.get("scale", [])),
            coef=tuple(float(v) for v in p.get("coef", [])),
            intercept=float(p.get("intercept", 0.0)),
            fallback_reason=p.get("fallback_reason"),
            version=row.version,
            trained_at=row.trained_at,
            trained_through=row.trained_through,
            metrics=dict(row.metrics or {}),
        )


def priors_from(examples: Sequence[HistoryRecord], as_of: date) -> Priors:
    """Organisation late and dispute rates over outcomes known on ``as_of``."""
    labels = [outcome_as_of(r, as_of) for r in examples]
    known = [bool(v) for v in labels if v is not None]
    settled = [
        r
        for r in examples
        if r.outcome_known and r.settled_date is not None and r.settled_date <= as_of
    ]
    late_rate = sum(known) / len(known) if known else NO_PRIOR_LATE_RATE
    disputed = [
        r for r in settled if r.disputed and (r.disputed_on is None or r.disputed_on <= as_of)
    ]
    dispute_rate = len(disputed) / len(settled) if settled else 0.0
    return Priors(late_rate=late_rate, dispute_rate=dispute_rate)


@dataclass
class TrainingSet:
    records: list[HistoryRecord]
    labels: NDArray[np.int64]
    features: FeatureMatrix


def training_set(
    history: Sequence[HistoryRecord],
    as_of: date,
    priors: Priors,
    max_examples: int | None = None,
) -> TrainingSet:
    """Every invoice issued before ``as_of`` whose outcome was known on ``as_of``, featurized as
    of its own issue date (what was known when it went out). With ``max_examples``, only the
    most recent ones: they teach the most about today, and training time stays bounded."""
    examples = [r for r in history if outcome_as_of(r, as_of) is not None]
    examples.sort(key=lambda r: (r.issue_date, r.key))
    if max_examples is not None and len(examples) > max_examples:
        examples = examples[-max_examples:]
    labels = np.array([1 if outcome_as_of(r, as_of) else 0 for r in examples], dtype=np.int64)
    feats = build_features(history, examples, [r.issue_date for r in examples], priors)
    return TrainingSet(examples, labels, feats)


def fit(ts: TrainingSet, priors: Priors) -> RiskModel:
    """Fit the logistic model, or return the named fallback when the history is too thin."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    n = len(ts.labels)
    n_late = int(ts.labels.sum())
    n_on_time = n - n_late
    if n < MIN_TRAINING_EXAMPLES or n_late < MIN_PER_CLASS or n_on_time < MIN_PER_CLASS:
        reason = (
            f"{n} paid invoices with a known outcome ({n_late} late, {n_on_time} on time); "
            f"a learned model needs at least {MIN_TRAINING_EXAMPLES}, "
            f"with {MIN_PER_CLASS} of each. "
            "The score is the customer's earlier late rate, shrunk toward the organisation's "
            f"({priors.late_rate:.0%})."
        )
        return RiskModel(kind="fallback", priors=priors, fallback_reason=reason)
    scaler = StandardScaler().fit(ts.features.x)
    model = LogisticRegression(random_state=RANDOM_STATE, max_iter=1000, solver="lbfgs")
    model.fit(scaler.transform(ts.features.x), ts.labels)
    return RiskModel(
        kind="logistic",
        priors=priors,
        mean=tuple(float(v) for v in scaler.mean_),
        scale=tuple(float(v) for v in scaler.scale_),
        coef=tuple(float(v) for v in model.coef_[0]),
        intercept=float(model.intercept_[0]),
    )


def train_on_history(
    history: Sequence[HistoryRecord], as_of: date
) -> tuple[RiskModel, TrainingSet]:
    """Priors, training set and model from the outcomes known on ``as_of``."""
    priors = priors_from(history, as_of)
    ts = training_set(history, as_of, priors)
    return fit(ts, priors), ts


# --- evaluation -------------------------------------------------------------------------------


def auc(labels: Sequence[int] | NDArray[np.int64], scores: NDArray[np.float64]) -> float | None:
    """Area under the ROC curve; None when only one class is present (not enough data)."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(labels)
    if len(set(y.tolist())) < 2:
        return None
    return float(roc_auc_score(y, scores))


def brier(labels: Sequence[int] | NDArray[np.int64], probs: NDArray[np.float64]) -> float | None:
    y = np.asarray(labels, dtype=np.float64)
    if len(y) == 0:
        return None
    return float(np.mean((probs - y) ** 2))


def calibration_table(
    labels: Sequence[int] | NDArray[np.int64], probs: NDArray[np.float64], bins: int = 10
) -> list[dict[str, Any]]:
    """Equal-width probability bins: how many invoices, mean predicted, observed late rate."""
    y = np.asarray(labels, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(probs, edges[1:-1], right=False), 0, bins - 1)
    rows = []
    for b in range(bins):
        mask = which == b
        count = int(mask.sum())
        rows.append(
            {
                "bin": f"{edges[b]:.1f}-{edges[b + 1]:.1f}",
                "count": count,
                "mean_predicted": round(float(probs[mask].mean()), 4) if count else None,
                "observed_late_rate": round(float(y[mask].mean()), 4) if count else None,
            }
        )
    return rows


@dataclass
class BacktestResult:
    fraction: float
    cut_date: date
    n_train: int
    n_test: int
    test_late_rate: float
    model_kind: str
    auc: float | None
    brier: float | None
    baseline_auc: float | None
    history_only_auc: float | None
    calibration: list[dict[str, Any]]
    coefficients: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "fraction": self.fraction,
            "cut_date": self.cut_date.isoformat(),
            "n_train": self.n_train,
            "n_test": self.n_test,
            "test_late_rate": round(self.test_late_rate, 4),
            "model_kind": self.model_kind,
            "auc": _r(self.auc),
            "brier": _r(self.brier),
            "baseline_auc_earlier_late_rate": _r(self.baseline_auc),
            "auc_without_invoice_dispute_flag": _r(self.history_only_auc),
            "calibration": self.calibration,
            "coefficients": self.coefficients,
        }


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 4)


class NotEnoughHistory(ValueError):
    """The history cannot support the request; the message says what is missing."""


def backtest(records: Sequence[HistoryRecord], fraction: float = 0.7) -> BacktestResult:
    """Replay a history: train with what was known at the cut, score the rest as of the cut.

    The cut is the invoice date of the first invoice after the first ``fraction`` of invoices by
    invoice date (ties stay together). Training uses only outcomes known on the cut date; every
    held-out invoice is scored with the customer history as known on the cut date. Its label is its
    real outcome (late or not), which is what the scores are judged against.
    """
    if not 0.0 < fraction < 1.0:
        raise NotEnoughHistory(f"--fraction must be between 0 and 1 (got {fraction})")
    ordered = sorted(records, key=lambda r: (r.issue_date, r.key))
    if len(ordered) < 2:
        raise NotEnoughHistory(f"{len(ordered)} invoices; a backtest needs a history to split")
    k = min(max(int(fraction * len(ordered)), 1), len(ordered) - 1)
    cut = ordered[k].issue_date
    test = [r for r in ordered if r.issue_date >= cut and r.late() is not None]
    if not test:
        raise NotEnoughHistory(
            "no settled invoice after the cut to score; choose a smaller fraction"
        )
    model, ts = train_on_history(ordered, cut)
    feats = build_features(ordered, test, cut, model.priors)
    labels = np.array([1 if r.late() else 0 for r in test], dtype=np.int64)
    probs = model.predict(feats.x)
    history_only_auc: float | None = None
    if model.kind == "logistic":
        ablated = fit(
            TrainingSet(ts.records, ts.labels, _without_dispute(ts.features)), model.priors
        )
        history_only_auc = auc(labels, ablated.predict(_without_dispute(feats).x))
    coefficients = (
        {f: round(c, 4) for f, c in zip(FEATURES, model.coef, strict=True)}
        if model.kind == "logistic"
        else {}
    )
    return BacktestResult(
        fraction=fraction,
        cut_date=cut,
        n_train=len(ts.labels),
        n_test=len(test),
        test_late_rate=float(labels.mean()),
        model_kind=model.kind,
        auc=auc(labels, probs),
        brier=brier(labels, probs),
        baseline_auc=auc(labels, feats.x[:, FEATURES.index("earlier_late_rate")]),
        history_only_auc=history_only_auc,
        calibration=calibration_table(labels, probs),
        coefficients=coefficients,
    )


def _without_dispute(fm: FeatureMatrix) -> FeatureMatrix:
    x = fm.x.copy()
    x[:, FEATURES.index("disputed")] = 0.0
    return FeatureMatrix(x, fm.n_known, fm.n_late, fm.n_settled, fm.n_disputed, fm.n_open_past_due)


# --- reasons ----------------------------------------------------------------------------------


def reasons_for(
    model: RiskModel, fm: FeatureMatrix, row: int, top: int = 3, min_weight: float = 0.05
) -> list[Reason]:
    """The ``top`` features that moved this score most, in words a collector can check."""
    x = fm.x[row]
    contrib = model.contributions(fm.x[row : row + 1])[0]
    n_known = int(fm.n_known[row])
    if model.kind == "fallback":
        text = (
            f"Paid {int(fm.n_late[row])} of {n_known} earlier invoices late"
            if n_known
            else "No earlier payment history: the organisation average is used"
        )
        return [
            Reason(
                "earlier_late_rate",
                text,
                "raises" if contrib[1] >= 0 else "lowers",
                round(float(contrib[1]), 3),
            )
        ]
    order = np.argsort(-np.abs(contrib))
    out: list[Reason] = []
    for j in order:
        w = float(contrib[j])
        if abs(w) < min_weight or len(out) >= top:
            break
        text = _reason_text(FEATURES[j], x, fm, row)
        out.append(Reason(FEATURES[j], text, "raises" if w > 0 else "lowers", round(w, 3)))
    if not out:
        out.append(
            Reason("earlier_late_rate", "Close to the organisation's average", "raises", 0.0)
        )
    return out


def _reason_text(feature: str, x: NDArray[np.float64], fm: FeatureMatrix, row: int) -> str:
    n_known = int(fm.n_known[row])
    if feature == "earlier_invoices":
        return (
            f"{n_known} earlier invoices with a known outcome"
            if n_known
            else "No earlier payment history for this customer"
        )
    if feature == "earlier_late_rate":
        if not n_known:
            return "No earlier payment history: the organisation average is used"
        return f"Paid {int(fm.n_late[row])} of {n_known} earlier invoices late"
    if feature == "earlier_avg_days_late":
        return f"Earlier invoices averaged {x[2]:.0f} days late"
    if feature == "earlier_dispute_rate":
        return f"Disputed {int(fm.n_disputed[row])} of {int(fm.n_settled[row])} settled invoices"
    if feature == "amount_vs_usual":
        ratio = math.exp(x[4])
        return f"Amount is {ratio:.1f}× this customer's usual"
    if feature == "terms_days":
        return f"{x[5]:.0f}-day payment terms"
    if feature == "paperless":
        return "Sent electronically" if x[6] else "Sent on paper"
    if feature == "open_past_due":
        k = int(fm.n_open_past_due[row])
        return (
            f"{k} other invoice{'s' if k != 1 else ''} already past due"
            if k
            else ("No other invoice past due")
        )
    if feature == "disputed":
        return "This invoice is or was in dispute" if x[8] else "Never disputed"
    return feature


class ParsedInvoice(Protocol):
    """The fields of a parsed CSV invoice row the model reads
    (``tools.imports.importer.ParsedInvoiceRow``; the importer is above insights, so this says what
    it needs instead of importing it)."""

    @property
    def invoice_number(self) -> str: ...
    @property
    def customer_ref(self) -> str: ...
    @property
    def issue_date(self) -> date: ...
    @property
    def due_date(self) -> date: ...
    @property
    def amount_minor(self) -> int: ...
    @property
    def settled_date(self) -> date | None: ...
    @property
    def disputed(self) -> bool: ...
    @property
    def paperless(self) -> bool | None: ...


def records_from_parsed(rows: Iterable[ParsedInvoice]) -> list[HistoryRecord]:
    """History records from the importer's parsed CSV rows (one place parses CSV: the importer).

    The file's dispute flags are undated: they are taken as known when an invoice is scored, which
    is what the ledger knows of an open invoice in dispute today.
    """
    return [
        HistoryRecord(
            key=r.invoice_number,
            customer=r.customer_ref,
            issue_date=r.issue_date,
            due_date=r.due_date,
            amount_minor=r.amount_minor,
            settled_date=r.settled_date,
            disputed=r.disputed,
            paperless=r.paperless,
        )
        for r in rows
    ]


# --- the ledger -------------------------------------------------------------------------------


def _was_disputed_ids(session: Session, org_id: int) -> set[int]:
    return set(session.scalars(select(Dispute.invoice_id).where(Dispute.org_id == org_id)))


def ledger_history(
    session: Session, org_id: int, customer_ids: Sequence[int] | None = None
) -> list[HistoryRecord]:
    """The organisation's invoices as history records (void invoices never happened).

    A paid invoice without a settlement date keeps its amount but no outcome. The dispute state is
    the ledger's current one (``Invoice.disputed`` or any dispute opened on it): scoring is always
    as of today, when it is known.
    """
    disputed_ids = _was_disputed_ids(session, org_id)
    q = select(
        Invoice.id,
        Invoice.customer_id,
        Invoice.issue_date,
        Invoice.due_date,
        Invoice.amount_minor,
        Invoice.settled_date,
        Invoice.status,
        Invoice.disputed,
        Invoice.paperless,
    ).where(Invoice.org_id == org_id, Invoice.status != InvoiceStatus.VOID)
    if customer_ids is not None:
        q = q.where(Invoice.customer_id.in_(list(customer_ids)))
    out = []
    for row in session.execute(q):
        closed_undated = row.status == InvoiceStatus.PAID and row.settled_date is None
        out.append(
            HistoryRecord(
                key=str(row.id),
                customer=str(row.customer_id),
                issue_date=row.issue_date,
                due_date=row.due_date,
                amount_minor=int(row.amount_minor),
                # An open invoice is unsettled whatever a stale settlement date says.
                settled_date=None if row.status == InvoiceStatus.OPEN else row.settled_date,
                disputed=bool(row.disputed) or row.id in disputed_ids,
                paperless=row.paperless,
                outcome_known=not closed_undated,
            )
        )
    return out


def latest_version(session: Session, org_id: int) -> RiskModelVersion | None:
    return session.scalars(
        select(RiskModelVersion)
        .where(RiskModelVersion.org_id == org_id)
        .order_by(RiskModelVersion.version.desc())
        .limit(1)
    ).first()


def train(
    session: Session, org_id: int, as_of: date | None = None, *, max_examples: int = 200_000
) -> RiskModelVersion:
    """Train on the organisation's paid history known on ``as_of`` and store a new version.

    Metrics hold a time-ordered holdout (fit on the earliest 80% of examples, judged on the rest)
    so a new version can be compared with the last before anyone relies on it. The caller commits.
    """
    as_of = as_of or business_day.org_business_date(session, org_id)
    history = ledger_history(session, org_id)
    priors = priors_from(history, as_of)
    ts = training_set(history, as_of, priors, max_examples)
    model = fit(ts, priors)
    metrics: dict[str, Any] = {
        "examples": len(ts.labels),
        "late": int(ts.labels.sum()),
        "late_rate": round(float(ts.labels.mean()), 4) if len(ts.labels) else None,
    }
    if model.kind == "logistic":
        probs = model.predict(ts.features.x)
        metrics["train_auc"] = _r(auc(ts.labels, probs))
        metrics["train_brier"] = _r(brier(ts.labels, probs))
        split = int(len(ts.labels) * 0.8)
        head = TrainingSet(
            ts.records[:split],
            ts.labels[:split],
            FeatureMatrix(ts.features.x[:split], *(np.zeros(split, np.int64) for _ in range(5))),
        )
        holdout_model = fit(head, priors)
        hp = holdout_model.predict(ts.features.x[split:])
        metrics["holdout_auc"] = _r(auc(ts.labels[split:], hp))
        metrics["holdout_brier"] = _r(brier(ts.labels[split:], hp))
    previous = latest_version(session, org_id)
    row = RiskModelVersion(
        org_id=org_id,
        version=(previous.version + 1) if previous else 1,
        trained_at=clock.now(),
        trained_through=as_of,
        kind=model.kind,
        features=list(FEATURES),
        params=model.to_params(),
        metrics=metrics,
    )
    session.add(row)
    session.flush()
    return row


def current_model(session: Session, org_id: int) -> RiskModel:
    """The latest trained version, or (never trained) the named fallback."""
    row = latest_version(session, org_id)
    if row is not None:
        try:
            return RiskModel.from_version(row)
        except ValueError:
            pass  # trained on another feature set: fall back until it is retrained
    priors = Priors(late_rate=NO_PRIOR_LATE_RATE, dispute_rate=0.0)
    return RiskModel(
        kind="fallback",
        priors=priors,
        fallback_reason=(
            "No risk model has been trained for this organisation yet (run `plixo risk train`). "
            "The score is the customer's earlier late rate, shrunk toward 50% (no information)."
        ),
    )


@dataclass(frozen=True)
class InvoiceRisk:
    invoice_id: int
    probability: float
    reasons: list[Reason]


def score_customer_invoices(
    session: Session,
    org_id: int,
    customer_id: int,
    as_of: date | None = None,
    model: RiskModel | None = None,
) -> dict[int, InvoiceRisk]:
    """Risk with reasons for each open invoice of one customer (Account 360)."""
    as_of = as_of or business_day.org_business_date(session, org_id)
    model = model or current_model(session, org_id)
    history = ledger_history(session, org_id, [customer_id])
    open_ids = set(
        session.scalars(
            select(Invoice.id).where(
                Invoice.org_id == org_id,
                Invoice.customer_id == customer_id,
                Invoice.status == InvoiceStatus.OPEN,
            )
        )
    )
    targets = [r for r in history if int(r.key) in open_ids]
    if not targets:
        return {}
    fm = build_features(history, targets, as_of, model.priors)
    probs = model.predict(fm.x)
    return {
        int(t.key): InvoiceRisk(int(t.key), float(probs[i]), reasons_for(model, fm, i))
        for i, t in enumerate(targets)
    }


# --- the same arithmetic in SQL ---------------------------------------------------------------
#
# Today's Focus scores every open invoice in the database. The customer-level part of the model
# (everything but amount, terms, channel and the invoice's own dispute) is kept per customer in
# ``customer_risk_snapshot`` (refreshed when the day, the model or the ledger changes); each open
# invoice adds its own terms live. An open invoice issued before the scoring date sits in its
# customer's aggregates and is taken back out: being unsettled, it only ever counts as "open and
# past due" (variant B) or not at all (variant A).

AGGREGATES = (
    "n_earlier",
    "sum_amount",
    "n_settled",
    "n_late_settled",
    "dl_settled",
    "n_disp",
    "n_open_pd",
    "dl_open",
)


def sql_days(later: Any, earlier: Any, dialect: str) -> ColumnElement[Any]:
    """Whole days from ``earlier`` to ``later``: date − date on PostgreSQL, julianday on SQLite."""
    if dialect == "sqlite":
        return cast(func.julianday(later) - func.julianday(earlier), Integer)
    return cast(later - earlier, Integer)


def _clip(expr: Any, low: float, high: float, dialect: str) -> ColumnElement[Any]:
    """low ≤ expr ≤ high, evaluating ``expr`` once (greatest/least; SQLite's max/min)."""
    if dialect == "sqlite":
        return func.max(func.min(expr, high), low)
    return func.greatest(func.least(expr, high), low)


def _f(value: float) -> ColumnElement[float]:
    return literal(float(value), Float)


def _fl(expr: Any) -> ColumnElement[float]:
    return cast(expr, Float)


def _weights(model: RiskModel) -> tuple[dict[str, float], float]:
    w, bias = model.linear_terms()
    return {name: float(w[j]) for j, name in enumerate(FEATURES)}, bias


def _customer_terms(
    model: RiskModel,
    n_known: Any,
    n_late: Any,
    dl_sum: Any,
    n_open_pd: Any,
    dispute_rate: Any,
    dialect: str,
) -> tuple[ColumnElement[Any], ColumnElement[Any]]:
    """(logit part from the customer-level features, slope of the days-late term per day).

    For the fallback model the first is the shrunk late rate and the slope is zero.
    """
    a, p0 = SHRINKAGE, model.priors.late_rate
    n_known = _clip(n_known, 0, 10**12, dialect)
    late_rate = (_fl(n_late) + _f(a * p0)) / (_fl(n_known) + _f(a))
    if model.kind == "fallback":
        return late_rate, _f(0.0)
    w, bias = _weights(model)
    per_day = case((n_known > 0, _f(w["earlier_avg_days_late"]) / _fl(n_known)), else_=_f(0.0))
    z = (
        _f(bias)
        + _f(w["earlier_invoices"]) * func.ln(_f(1.0) + _fl(n_known))
        + _f(w["earlier_late_rate"]) * late_rate
        + per_day * _fl(dl_sum)
        + _f(w["earlier_dispute_rate"]) * dispute_rate
        + _f(w["open_past_due"]) * _fl(_clip(n_open_pd, 0, OPEN_PAST_DUE_CAP, dialect))
    )
    return z, per_day


def model_fingerprint(model: RiskModel) -> str:
    """Changes whenever the arithmetic changes (version, priors, weights)."""
    blob = json.dumps([model.kind, model.version, model.to_params()], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _history_aggregates(
    org_id: int, d: Any, dialect: str, customer_ids: Sequence[int] | None
) -> Any:
    """Per customer, the payment history as of ``d``: invoices issued before it, those settled
    by it (late or not, disputed or not, days late capped), those open and past due on it, and
    the currencies of what is still open."""
    inv = aliased(Invoice)
    disputed = (
        select(Dispute.invoice_id.label("invoice_id"))
        .where(Dispute.org_id == org_id)
        .distinct()
        .subquery("hist_dispute")
    )
    earlier = inv.issue_date < d
    is_open = inv.status == InvoiceStatus.OPEN
    settled_by = and_(earlier, ~is_open, inv.settled_date.is_not(None), inv.settled_date <= d)
    closed_undated = and_(inv.status == InvoiceStatus.PAID, inv.settled_date.is_(None))
    open_pd = and_(
        earlier,
        ~closed_undated,
        or_(is_open, inv.settled_date.is_(None), inv.settled_date > d),
        inv.due_date < d,
    )
    was_disputed = or_(inv.disputed.is_(True), disputed.c.invoice_id.is_not(None))
    open_currency = case((and_(is_open, inv.balance_minor > 0), inv.currency)).distinct()
    currencies = (
        func.group_concat(open_currency)
        if dialect == "sqlite"
        else func.string_agg(open_currency, literal(","))
    )
    h = (
        select(
            inv.customer_id.label("customer_id"),
            func.sum(case((earlier, 1), else_=0)).label("n_earlier"),
            func.sum(case((earlier, inv.amount_minor), else_=0)).label("sum_amount"),
            func.sum(case((settled_by, 1), else_=0)).label("n_settled"),
            func.sum(case((and_(settled_by, inv.settled_date > inv.due_date), 1), else_=0)).label(
                "n_late_settled"
            ),
            func.sum(
                case(
                    (
                        settled_by,
                        _clip(
                            sql_days(inv.settled_date, inv.due_date, dialect),
                            0,
                            DAYS_LATE_CAP,
                            dialect,
                        ),
                    ),
                    else_=0,
                )
            ).label("dl_settled"),
            func.sum(case((and_(settled_by, was_disputed), 1), else_=0)).label("n_disp"),
            func.sum(case((open_pd, 1), else_=0)).label("n_open_pd"),
            func.sum(
                case(
                    (open_pd, _clip(sql_days(d, inv.due_date, dialect), 0, DAYS_LATE_CAP, dialect)),
                    else_=0,
                )
            ).label("dl_open"),
            func.coalesce(currencies, "").label("open_currencies"),
        )
        .select_from(inv)
        .outerjoin(disputed, disputed.c.invoice_id == inv.id)
        .where(
            inv.org_id == org_id,
            inv.status != InvoiceStatus.VOID,
            *([inv.customer_id.in_(customer_ids)] if customer_ids is not None else []),
        )
        .group_by(inv.customer_id)
        .subquery("risk_hist")
    )
    return h


def snapshot_select(
    org_id: int,
    as_of: date,
    model: RiskModel,
    dialect: str,
    customer_ids: Sequence[int] | None = None,
) -> Any:
    """One row per customer with any invoice: history aggregates as of ``as_of`` and the model's
    customer part (``base_a``: the scored invoice is not in the history; ``base_b − slope_b × its
    days late``: it is in it as open and past due, and is taken back out). ``customer_ids``
    narrows it to those customers (an import refreshing what it touched)."""
    d = literal(as_of, Date)
    h = _history_aggregates(org_id, d, dialect, customer_ids)
    a, d0 = SHRINKAGE, model.priors.dispute_rate
    dispute_rate = (_fl(h.c.n_disp) + _f(a * d0)) / (_fl(h.c.n_settled) + _f(a))
    n_known = h.c.n_settled + h.c.n_open_pd
    n_late = h.c.n_late_settled + h.c.n_open_pd
    dl_sum = h.c.dl_settled + h.c.dl_open
    base_a, _ = _customer_terms(
        model, n_known, n_late, dl_sum, h.c.n_open_pd, dispute_rate, dialect
    )
    base_b, slope_b = _customer_terms(
        model, n_known - 1, n_late - 1, dl_sum, h.c.n_open_pd - 1, dispute_rate, dialect
    )
    return select(
        h.c.customer_id,
        *(h.c[name] for name in AGGREGATES),
        h.c.open_currencies,
        base_a.label("base_a"),
        base_b.label("base_b"),
        slope_b.label("slope_b"),
    )


@dataclass(frozen=True)
class SnapshotState:
    """Which history the scores rest on: its day, when it was computed, and whether just now."""

    as_of: date
    computed_at: datetime
    model_version: int | None
    refreshed: bool


def ledger_mark(session: Session, org_id: int, model: RiskModel) -> str:
    """A cheap fingerprint of what the snapshot depends on: the model and the newest rows."""
    org = session.get(Organisation, org_id)
    parts = [model_fingerprint(model), str(org.last_import_at if org else None)]
    for table in (Invoice, Payment, Dispute, PromiseToPay):
        parts.append(str(session.scalar(select(func.max(table.id)).where(table.org_id == org_id))))
    return "|".join(parts)[:120]


def ensure_snapshot(
    session: Session,
    org_id: int,
    as_of: date,
    model: RiskModel,
    *,
    force: bool = False,
    max_age: timedelta = SNAPSHOT_MAX_AGE,
    now: datetime | None = None,
) -> SnapshotState:
    """Refresh the organisation's customer risk snapshot when it no longer fits.

    Always when the scoring day or the model changed; when only the ledger changed (a payment, a
    new invoice or dispute), once the snapshot is older than ``max_age``, so a busy organisation
    is not re-aggregated on every page view. The refresh runs in the caller's transaction (the
    caller commits); on PostgreSQL an advisory lock serializes concurrent refreshes of one
    organisation, and the second finds the first's result fresh.
    """
    now = now or clock.now()
    mark = ledger_mark(session, org_id, model)

    def fresh(head: tuple[date, datetime, str] | None) -> bool:
        if force or head is None or head[0] != as_of:
            return False
        same_model = head[2].split("|", 1)[0] == mark.split("|", 1)[0]
        return same_model and (head[2] == mark or now - _utc(head[1]) < max_age)

    current = _snapshot_head(session, org_id)
    if fresh(current):
        assert current is not None
        return SnapshotState(as_of, _utc(current[1]), model.version, refreshed=False)
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(literal(_LOCK_SPACE), literal(org_id))))
        current = _snapshot_head(session, org_id)
        if fresh(current):
            assert current is not None
            return SnapshotState(as_of, _utc(current[1]), model.version, refreshed=False)
    session.execute(delete(CustomerRiskSnapshot).where(CustomerRiskSnapshot.org_id == org_id))
    _insert_snapshot_rows(session, org_id, as_of, model, mark, now)
    session.flush()
    return SnapshotState(as_of, now, model.version, refreshed=True)


def _insert_snapshot_rows(
    session: Session,
    org_id: int,
    as_of: date,
    model: RiskModel,
    mark: str,
    computed_at: datetime,
    customer_ids: Sequence[int] | None = None,
) -> None:
    src = snapshot_select(
        org_id, as_of, model, session.get_bind().dialect.name, customer_ids
    ).subquery("snap")
    names = ["customer_id", *AGGREGATES, "open_currencies", "base_a", "base_b", "slope_b"]
    session.execute(
        insert(CustomerRiskSnapshot).from_select(
            ["org_id", "as_of", "model_version", "ledger_mark", "computed_at", *names],
            select(
                literal(org_id, Integer),
                literal(as_of, Date),
                literal(model.version, Integer),
                literal(mark, String),
                literal(computed_at, CustomerRiskSnapshot.computed_at.type),
                *(src.c[n] for n in names),
            ),
        )
    )


#: Above this many touched customers an import rebuilds the whole snapshot in one pass.
TOUCHED_REFRESH_LIMIT = 2_000


def refresh_snapshot_for(session: Session, org_id: int, customer_ids: Iterable[int]) -> bool:
    """Bring the snapshot rows of ``customer_ids`` up to date with the ledger (after an import).

    Only when a snapshot exists for the current model: its scoring day and ledger mark are kept,
    so the rest of the organisation still refreshes on the usual schedule, while the touched
    customers (a new one included) are scored on their real history at once instead of up to
    ``SNAPSHOT_MAX_AGE`` later. Runs in the caller's transaction. Returns whether it refreshed.
    """
    ids = sorted(set(customer_ids))
    head = _snapshot_head(session, org_id)
    if not ids or head is None:
        return False  # no snapshot yet: the first Focus builds it whole
    model = current_model(session, org_id)
    as_of, computed_at, mark = head
    if mark.split("|", 1)[0] != model_fingerprint(model):
        return False  # another model: the next Focus rebuilds everything anyway
    if len(ids) > TOUCHED_REFRESH_LIMIT:
        ensure_snapshot(session, org_id, as_of, model, force=True)
        return True
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(literal(_LOCK_SPACE), literal(org_id))))
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        session.execute(
            delete(CustomerRiskSnapshot).where(
                CustomerRiskSnapshot.org_id == org_id, CustomerRiskSnapshot.customer_id.in_(chunk)
            )
        )
        _insert_snapshot_rows(session, org_id, as_of, model, mark, _utc(computed_at), chunk)
    session.flush()
    return True


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


_LOCK_SPACE = 0x504C58  # "PLX": advisory-lock namespace for snapshot refreshes


def _snapshot_head(session: Session, org_id: int) -> tuple[date, datetime, str] | None:
    row = session.execute(
        select(
            CustomerRiskSnapshot.as_of,
            CustomerRiskSnapshot.computed_at,
            CustomerRiskSnapshot.ledger_mark,
        )
        .where(CustomerRiskSnapshot.org_id == org_id)
        .limit(1)
    ).first()
    return (row[0], row[1], row[2]) if row is not None else None


def snapshot_currencies(session: Session, org_id: int, customer_ids: Any = None) -> list[str]:
    """Currencies with open invoices, from the snapshot (no pass over the invoices)."""
    q = select(CustomerRiskSnapshot.open_currencies).where(
        CustomerRiskSnapshot.org_id == org_id, CustomerRiskSnapshot.open_currencies != ""
    )
    if customer_ids is not None:
        q = q.where(CustomerRiskSnapshot.customer_id.in_(customer_ids))
    found: set[str] = set()
    for value in session.scalars(q.distinct()):
        found.update(c for c in value.split(",") if c)
    return sorted(found)


def _empty_history_base(model: RiskModel) -> float:
    """The customer part for a customer with no history before the scoring date."""
    p0, d0 = model.priors.late_rate, model.priors.dispute_rate
    if model.kind == "fallback":
        return p0
    w, bias = model.linear_terms()
    idx = {name: j for j, name in enumerate(FEATURES)}
    return (
        bias + float(w[idx["earlier_late_rate"]]) * p0 + float(w[idx["earlier_dispute_rate"]]) * d0
    )


@dataclass
class SqlRisk:
    """Per-invoice risk over ``target`` LEFT JOIN ``customers`` (the organisation's snapshot rows,
    ON customer_id)."""

    customers: Any
    probability: ColumnElement[Any]


def dispute_ids_subquery(org_id: int) -> Any:
    """Invoices of the organisation with any dispute (open or closed), for the dispute feature."""
    return (
        select(Dispute.invoice_id.label("invoice_id"))
        .where(Dispute.org_id == org_id)
        .distinct()
        .subquery("dispute_ids")
    )


def sql_risk(
    org_id: int,
    as_of: date,
    model: RiskModel,
    target: Any,
    dialect: str,
    own_disputed: ColumnElement[Any],
) -> SqlRisk:
    """The probability of late payment of ``target`` (an aliased open ``Invoice``) on ``as_of``,
    from the snapshot (:func:`ensure_snapshot` must have run for ``as_of``). ``own_disputed`` says
    whether the target is or was in dispute (``Invoice.disputed`` or a dispute row)."""
    d = literal(as_of, Date)
    cr = (
        select(CustomerRiskSnapshot)
        .where(CustomerRiskSnapshot.org_id == org_id)
        .subquery("customer_risk")
    )
    own_in = target.issue_date < d
    own_pd = and_(own_in, target.due_date < d)
    own_days = _clip(sql_days(d, target.due_date, dialect), 0, DAYS_LATE_CAP, dialect)
    customer_part = case(
        (cr.c.customer_id.is_(None), _f(_empty_history_base(model))),
        (own_pd, cr.c.base_b - cr.c.slope_b * _fl(own_days)),
        else_=cr.c.base_a,
    )
    if model.kind == "fallback":
        return SqlRisk(cr, customer_part)
    w, _ = _weights(model)
    z: ColumnElement[Any] = customer_part
    if w["amount_vs_usual"] != 0.0:
        own = case((own_in, 1), else_=0)
        n_e = func.coalesce(cr.c.n_earlier, 0) - own
        s_e = func.coalesce(cr.c.sum_amount, 0) - own * target.amount_minor
        ratio = case(
            (
                and_(n_e > 0, s_e > 0, target.amount_minor > 0),
                func.ln(_fl(target.amount_minor) * _fl(n_e) / _fl(s_e)),
            ),
            else_=_f(0.0),
        )
        z = z + _f(w["amount_vs_usual"]) * ratio
    if w["terms_days"] != 0.0:
        z = z + _f(w["terms_days"]) * _fl(sql_days(target.due_date, target.issue_date, dialect))
    if w["paperless"] != 0.0:
        z = z + case((target.paperless.is_(True), _f(w["paperless"])), else_=_f(0.0))
    if w["disputed"] != 0.0:
        z = z + case((own_disputed, _f(w["disputed"])), else_=_f(0.0))
    z = _clip(z, -LOGIT_CLIP, LOGIT_CLIP, dialect)
    return SqlRisk(cr, _f(1.0) / (_f(1.0) + func.exp(-z)))


def features_from_aggregates(rows: Sequence[Any], as_of: date, priors: Priors) -> FeatureMatrix:
    """Feature vectors of open invoices from their customers' SQL aggregates (for the reasons).

    Each row needs the AGGREGATES columns (None when the customer has no history) and the invoice's
    ``amount_minor``, ``issue_date``, ``due_date``, ``paperless`` and ``own_disputed``. The
    arithmetic mirrors :func:`build_features` exactly; the tests hold the two together.
    """
    n = len(rows)
    x = np.zeros((n, len(FEATURES)), dtype=np.float64)
    counts = {k: np.zeros(n, dtype=np.int64) for k in ("known", "late", "settled", "disp", "opd")}
    a, p0, d0 = SHRINKAGE, priors.late_rate, priors.dispute_rate
    for i, r in enumerate(rows):
        agg = {k: int(getattr(r, k) or 0) for k in AGGREGATES}
        # A customer without a snapshot row (new since the snapshot) has no history to take the
        # invoice back out of: nothing is subtracted, as the SQL scores it (empty history).
        in_snapshot = getattr(r, "n_earlier", None) is not None
        own_in = in_snapshot and r.issue_date < as_of
        own_pd = own_in and r.due_date < as_of
        own_days = min(max((as_of - r.due_date).days, 0), DAYS_LATE_CAP) if own_pd else 0
        # Counts never go below zero (a row older than the invoice: the SQL clips them too).
        n_earlier = max(agg["n_earlier"] - own_in, 0)
        sum_amount = agg["sum_amount"] - (r.amount_minor if own_in else 0)
        n_settled = agg["n_settled"]
        n_open = max(agg["n_open_pd"] - own_pd, 0)
        n_known = n_settled + n_open
        n_late = agg["n_late_settled"] + n_open
        dl_sum = agg["dl_settled"] + agg["dl_open"] - own_days
        ratio = 0.0
        if n_earlier > 0 and sum_amount > 0 and r.amount_minor > 0:
            ratio = math.log(r.amount_minor * n_earlier / sum_amount)
        x[i] = (
            math.log1p(n_known),
            (n_late + a * p0) / (n_known + a),
            dl_sum / n_known if n_known else 0.0,
            (agg["n_disp"] + a * d0) / (n_settled + a),
            ratio,
            float((r.due_date - r.issue_date).days),
            1.0 if r.paperless else 0.0,
            float(min(n_open, OPEN_PAST_DUE_CAP)),
            1.0 if r.own_disputed else 0.0,
        )
        counts["known"][i] = n_known
        counts["late"][i] = n_late
        counts["settled"][i] = n_settled
        counts["disp"][i] = agg["n_disp"]
        counts["opd"][i] = n_open
    return FeatureMatrix(
        x=x,
        n_known=counts["known"],
        n_late=counts["late"],
        n_settled=counts["settled"],
        n_disputed=counts["disp"],
        n_open_past_due=counts["opd"],
    )
