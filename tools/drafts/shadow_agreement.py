"""Shadow Mode agreement: how often people approve Autopilot's drafts as written.

Why: Shadow Mode puts a human on every draft until the organisation trusts Autopilot; this module
turns those decisions into evidence a Controller can read before switching Autopilot on. For the
organisation, each segment and each cadence step it counts the Autopilot drafts a person decided:
**approved unchanged**, **edited** (then approved: the Levenshtein distance between what the
model wrote and what was approved, and what changed: amounts, dates, tone, length, wording) and
**rejected** (with the reasons), over the last ``window`` decisions of that scope (the policy's
``autopilot.shadow_window_drafts``) and week by week (the organisation's business weeks).

What counts, read from the ledger (nothing is stored twice):

* Autopilot drafts (``persona = autopilot``) with a person's decision: the latest ``Approval``
  row of the draft, *and* the draft still in the matching state (approved, queued, sent or failed
  for an approval; rejected for a rejection). A draft approved and later sent back to review
  (held at send time) counts again only once it is decided again.
* What the model wrote is the first turn of the review chat (``DraftRevision`` seq 1, kept before
  any edit or co-pilot rewrite by ``tools.drafts.service.ensure_original_turn``); a draft with no
  turns
  was never changed. Texts are compared with line endings and trailing spaces normalised.

"What changed" on an edit: *amounts* / *dates* when the figures read back from the two texts by
the grounding reader differ; *tone* when the firm or courteous markers below (in the draft's
language, matched by stem after normalisation) differ in count; *length* when the word count
moved by at least 10 % (and 3 words); *wording* when none of these did.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Any

from rapidfuzz.distance import Levenshtein
from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session, aliased

from memory import business_day, clock
from memory.models import (
    Approval,
    CadenceStep,
    Draft,
    DraftPersona,
    DraftRevision,
    DraftStatus,
    Segment,
)
from policies.textscan import PhraseMatcher
from tools.grounding.extraction import extract_facts
from tools.ledger.policy_overrides import policy_set_for

APPROVED_STATES = frozenset(
    {DraftStatus.APPROVED, DraftStatus.QUEUED, DraftStatus.SENT, DraftStatus.FAILED}
)
CHANGE_KINDS = ("amounts", "dates", "tone", "length", "wording")
#: How many recent decisions one report reads at most (the newest first).
MAX_DECISIONS = 20_000
TOP_REASONS = 5

# Markers of a firm or a courteous register, per supported language (matched by stem).
TONE_MARKERS: dict[str, dict[str, list[str]]] = {
    "firm": {
        "en": ["immediately", "urgent", "final notice", "must", "overdue", "failure to",
               "no later than", "without further delay", "require", "demand"],
        "de": ["sofort", "umgehend", "dringend", "letzte mahnung", "müssen", "unverzüglich",
               "spätestens", "fordern"],
        "fr": ["immédiatement", "urgent", "dernier rappel", "devez", "sans délai", "au plus tard",
               "exigeons", "mise en demeure"],
        "es": ["inmediatamente", "urgente", "último aviso", "debe", "sin demora", "a más tardar",
               "exigimos"],
    },
    "courteous": {
        "en": ["please", "thank you", "thanks", "kindly", "appreciate", "sorry", "happy to help",
               "let us know", "we understand"],
        "de": ["bitte", "vielen dank", "danke", "gerne", "entschuldigen", "wir verstehen"],
        "fr": ["s'il vous plaît", "merci", "veuillez", "volontiers", "désolé", "nous comprenons"],
        "es": ["por favor", "gracias", "le agradecemos", "con gusto", "disculpe",
               "entendemos"],
    },
}  # fmt: skip


@lru_cache(maxsize=8)
def _matcher(language: str) -> tuple[PhraseMatcher, frozenset[str]]:
    """One matcher for both registers in ``language`` (English when it has no markers), and the
    firm phrases among them: a text is stemmed once, in its own language."""
    lang = language if language in TONE_MARKERS["firm"] else "en"
    firm = TONE_MARKERS["firm"][lang]
    return PhraseMatcher({lang: [*firm, *TONE_MARKERS["courteous"][lang]]}), frozenset(firm)


# --- one decided draft --------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """One Autopilot draft a person decided, and how its text compares with the model's."""

    draft_id: int
    segment_id: int | None
    step_id: int | None
    decided_at: datetime
    week: date  # the Monday of the organisation's business week it was decided in
    outcome: str  # "unchanged" | "edited" | "rejected"
    reason: str | None = None
    distance: int | None = None
    changes: tuple[str, ...] = ()


def _norm(text: str | None) -> str:
    lines = (text or "").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join(line.rstrip() for line in lines).strip()


def _full(subject: str | None, body: str | None) -> str:
    return _norm(subject) + "\n\n" + _norm(body)


def _figures(text: str, language: str) -> tuple[Counter[tuple[str, str]], Counter[date]]:
    facts = extract_facts(text, language=language)
    amounts = Counter((a.value, ",".join(sorted(a.currencies))) for a in facts.amounts)
    return amounts, Counter(facts.dates)


def _tone(text: str, language: str) -> tuple[int, int]:
    """How many firm and how many courteous markers ``text`` carries."""
    matcher, firm = _matcher(language)
    hits = matcher.find_all(text)
    n_firm = sum(1 for h in hits if h.phrase.text in firm)
    return n_firm, len(hits) - n_firm


def what_changed(before: str, after: str, language: str = "en") -> tuple[str, ...]:
    """The kinds of change between the model's text and the approved one (see the module doc)."""
    kinds: list[str] = []
    lang = (language or "en").split("-")[0].lower()
    a_amt, a_dates = _figures(before, lang)
    b_amt, b_dates = _figures(after, lang)
    if a_amt != b_amt:
        kinds.append("amounts")
    if a_dates != b_dates:
        kinds.append("dates")
    if _tone(before, lang) != _tone(after, lang):
        kinds.append("tone")
    words_before, words_after = len(before.split()), len(after.split())
    moved = abs(words_after - words_before)
    if moved >= 3 and moved * 10 >= max(words_before, 1):
        kinds.append("length")
    return tuple(kinds) or ("wording",)


# --- figures for one scope -----------------------------------------------------------------------


@dataclass
class Figures:
    """Counts over a set of decisions; shares in percent (one decimal) or None when none."""

    decided: int = 0
    unchanged: int = 0
    edited: int = 0
    rejected: int = 0
    unchanged_pct: float | None = None
    edit_distance_mean: float | None = None
    edit_distance_median: float | None = None
    edit_distance_max: int | None = None
    changes: dict[str, int] = field(default_factory=dict)
    rejection_reasons: list[dict[str, Any]] = field(default_factory=list)


def figures(decisions: Sequence[Decision]) -> Figures:
    """Count ``decisions``: unchanged, edited (distances, what changed), rejected (reasons)."""
    out = Figures(decided=len(decisions))
    distances: list[int] = []
    changes: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    shown: dict[str, str] = {}
    for d in decisions:
        if d.outcome == "unchanged":
            out.unchanged += 1
        elif d.outcome == "edited":
            out.edited += 1
            changes.update(d.changes)
            if d.distance is not None:
                distances.append(d.distance)
        else:
            out.rejected += 1
            text = " ".join((d.reason or "no reason given").split())
            key = text.casefold()
            reasons[key] += 1
            shown.setdefault(key, text)
    if out.decided:
        out.unchanged_pct = round(out.unchanged * 100 / out.decided, 1)
    if distances:
        out.edit_distance_mean = round(statistics.fmean(distances), 1)
        out.edit_distance_median = float(statistics.median(distances))
        out.edit_distance_max = max(distances)
    # edits read without classification (the gate's counts) say nothing about what changed
    out.changes = {k: changes[k] for k in CHANGE_KINDS} if changes or not out.edited else {}
    out.rejection_reasons = [
        {"reason": shown[k], "count": n} for k, n in reasons.most_common(TOP_REASONS)
    ]
    return out


@dataclass
class Week:
    week: date
    decided: int
    unchanged: int
    edited: int
    rejected: int
    unchanged_pct: float | None


def trend(decisions: Iterable[Decision], weeks: Sequence[date]) -> list[Week]:
    """Per business week (Monday first), oldest first; a week without decisions shows zeros."""
    by_week: dict[date, list[Decision]] = {w: [] for w in weeks}
    for d in decisions:
        if d.week in by_week:
            by_week[d.week].append(d)
    out = []
    for w in weeks:
        f = figures(by_week[w])
        out.append(Week(w, f.decided, f.unchanged, f.edited, f.rejected, f.unchanged_pct))
    return out


@dataclass
class ScopeAgreement:
    """Figures over the scope's last ``window`` decisions, and its weekly trend."""

    window: Figures
    weeks: list[Week]


@dataclass
class StepAgreement(ScopeAgreement):
    step_id: int | None = None
    label: str = ""


@dataclass
class SegmentAgreement(ScopeAgreement):
    segment_id: int | None = None
    name: str = ""
    steps: list[StepAgreement] = field(default_factory=list)
    meets_minimum: bool = False
    requirement: str = ""


@dataclass
class AgreementReport:
    org_id: int
    computed_at: datetime
    window_drafts: int
    min_unchanged_pct: int
    organisation: ScopeAgreement
    segments: list[SegmentAgreement]

    def segment(self, segment_id: int) -> SegmentAgreement | None:
        return next((s for s in self.segments if s.segment_id == segment_id), None)


# --- reading the ledger ---------------------------------------------------------------------------


def _week_of(moment: datetime, tz_name: str) -> date:
    day = clock.business_date(tz_name, moment)
    return day - timedelta(days=day.weekday())


def decisions(
    session: Session,
    org_id: int,
    *,
    segment_id: int | None = None,
    limit: int = MAX_DECISIONS,
    classify: bool = True,
) -> list[Decision]:
    """The organisation's decided Autopilot drafts, newest decision first (see the module doc).

    ``classify=False`` skips the edit distance and what changed (the gate needs only counts)."""
    tz_name = business_day.org_zone(session, org_id)
    latest = (
        select(func.max(Approval.id).label("aid"))
        .where(Approval.org_id == org_id, Approval.subject_type == "draft")
        .group_by(Approval.subject_id)
        .subquery()
    )
    first = aliased(DraftRevision, name="first_turn")
    query = (
        select(
            Draft,
            Approval.outcome,
            Approval.reason,
            Approval.created_at,
            first.subject,
            first.body,
            first.author,
        )
        .join(Approval, and_(Approval.subject_id == Draft.id, Approval.subject_type == "draft"))
        .join(latest, latest.c.aid == Approval.id)
        .outerjoin(first, and_(first.draft_id == Draft.id, first.seq == 1))
        .where(Draft.org_id == org_id, Draft.persona == DraftPersona.AUTOPILOT)
        .order_by(Approval.created_at.desc(), Approval.id.desc())
        .limit(limit)
    )
    if segment_id is not None:
        query = query.where(Draft.segment_id == segment_id)
    out: list[Decision] = []
    for draft, outcome, reason, at, o_subject, o_body, o_author in session.execute(query):
        decided = _decision(draft, outcome, reason, o_subject, o_body, o_author, classify)
        if decided is None:
            continue
        kind, distance, changes = decided
        out.append(
            Decision(
                draft.id,
                draft.segment_id,
                draft.cadence_step_id,
                at,
                _week_of(at, tz_name),
                kind,
                reason if kind == "rejected" else None,
                distance,
                changes,
            )
        )
    return out


def _decision(
    draft: Draft,
    outcome: str,
    reason: str | None,
    o_subject: str | None,
    o_body: str | None,
    o_author: str | None,
    classify: bool = True,
) -> tuple[str, int | None, tuple[str, ...]] | None:
    """(kind, distance, changes) for a decided draft, None while it waits for a new decision."""
    if outcome == "rejected":
        return ("rejected", None, ()) if draft.status is DraftStatus.REJECTED else None
    if outcome != "approved" or draft.status not in APPROVED_STATES:
        return None
    final = _full(draft.subject, draft.body)
    if o_author is None:  # no review turns: the text is the model's
        return "unchanged", 0, ()
    if o_author != "copilot":  # an edit from before the first turn was kept: original unknown
        return "edited", None, ("wording",)
    original = _full(o_subject, o_body)
    if original == final:
        return "unchanged", 0, ()
    if not classify:
        return "edited", None, ()
    return (
        "edited",
        Levenshtein.distance(original, final),
        what_changed(original, final, draft.language),
    )


def _step_labels(session: Session, step_ids: set[int]) -> dict[int, str]:
    if not step_ids:
        return {}
    rows = session.scalars(select(CadenceStep).where(CadenceStep.id.in_(step_ids))).all()
    labels = {}
    for s in rows:
        when = "on the due date" if s.day_offset == 0 else (
            f"{abs(s.day_offset)} days {'after' if s.day_offset > 0 else 'before'} due"
        )  # fmt: skip
        labels[s.id] = f"{s.cadence.name} · step {s.position} ({when}, {s.tone})"
    return labels


def _scope(ds: Sequence[Decision], window: int, weeks: Sequence[date]) -> ScopeAgreement:
    return ScopeAgreement(window=figures(ds[:window] if window else ds), weeks=trend(ds, weeks))


def meets_minimum(f: Figures, window: int, min_pct: int) -> bool:
    """The policy's bar, as the guardrails compute it (exact integers, never rounded up)."""
    if window == 0 and min_pct == 0:
        return True
    return f.decided >= window and f.decided > 0 and f.unchanged * 100 >= min_pct * f.decided


def agreement_report(
    session: Session,
    org_id: int,
    *,
    weeks: int = 12,
    now: datetime | None = None,
) -> AgreementReport:
    """Agreement for the organisation, each segment and each of its cadence steps."""
    if not 1 <= weeks <= 104:
        raise ValueError("weeks must be between 1 and 104")
    now = now or clock.now()
    ps = policy_set_for(session, org_id)
    window, min_pct = ps.autopilot.shadow_window_drafts, ps.autopilot.shadow_min_unchanged_pct
    ds = decisions(session, org_id)
    this_week = _week_of(now, business_day.org_zone(session, org_id))
    week_list = [this_week - timedelta(weeks=n) for n in range(weeks - 1, -1, -1)]
    labels = _step_labels(session, {d.step_id for d in ds if d.step_id is not None})
    segments = session.scalars(
        select(Segment).where(Segment.org_id == org_id).order_by(Segment.name)
    ).all()
    bar = f"{min_pct}% approved unchanged over the last {window} decided drafts"
    out: list[SegmentAgreement] = []
    for seg_id, name in [*((s.id, s.name) for s in segments), (None, "No segment")]:
        mine = [d for d in ds if d.segment_id == seg_id]
        if seg_id is None and not mine:
            continue
        scope = _scope(mine, window, week_list)
        steps = [
            StepAgreement(
                **vars(_scope([d for d in mine if d.step_id == step], window, week_list)),
                step_id=step,
                label=labels.get(step, "Step removed") if step is not None else "No cadence step",
            )
            for step in sorted({d.step_id for d in mine}, key=lambda s: (s is None, s or 0))
        ]
        out.append(
            SegmentAgreement(
                window=scope.window,
                weeks=scope.weeks,
                segment_id=seg_id,
                name=name,
                steps=steps,
                meets_minimum=meets_minimum(scope.window, window, min_pct),
                requirement=bar,
            )
        )
    return AgreementReport(
        org_id=org_id,
        computed_at=now,
        window_drafts=window,
        min_unchanged_pct=min_pct,
        organisation=_scope(ds, window, week_list),
        segments=out,
    )


def segment_record(session: Session, org_id: int, segment_id: int) -> Figures:
    """The figures the guardrails read when Autopilot is switched on: the segment's last
    ``shadow_window_drafts`` decisions (every decision when the window is 0); counts and
    rejection reasons only (no edit classification: the page shows that)."""
    window = policy_set_for(session, org_id).autopilot.shadow_window_drafts
    # a few more rows than the window: drafts sent back to review are read and skipped
    ds = decisions(
        session,
        org_id,
        segment_id=segment_id,
        limit=window * 2 + 50 if window else MAX_DECISIONS,
        classify=False,
    )
    return figures(ds[:window] if window else ds)
