"""Words, not identifiers: labels, plurals, dates in the reader's locale and money."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from pathlib import Path

from memory.models import DisputeStatus, DraftKind, DraftStatus, OutboxStatus, PromiseStatus
from tools.kit import labels


def test_every_status_and_kind_has_words() -> None:
    for enum in (DraftStatus, DraftKind, DisputeStatus, OutboxStatus, PromiseStatus):
        for member in enum:
            text = labels.label(member)
            assert text and "_" not in text and text[0].isupper(), (member, text)
    assert labels.label(DraftStatus.PENDING_REVIEW) == "Waiting for review"
    assert labels.label("follow_up") == "Follow-up"


def test_every_rule_the_engine_writes_has_a_label() -> None:
    root = Path(__file__).resolve().parents[3]
    ids = set()
    for source in [*(root / "policies").glob("*.py"), *(root / "tools").rglob("*.py")]:
        ids |= set(re.findall(r'rule_id="([a-z_]+\.[a-z_]+)"', source.read_text()))
    assert len(ids) > 40
    missing = sorted(i for i in ids if i not in labels.RULES)
    assert missing == [], f"rule ids without a label in tools/kit/labels.py: {missing}"


def test_rule_ids_read_as_words_and_unknown_ones_are_humanized() -> None:
    assert labels.rule_label("shadow.review_required") == "Shadow Mode: a person reviews"
    assert labels.rule_label("quiet_hours.window") == "Quiet hours"
    assert labels.rule_label("brand_new.some_rule") == "Brand new: some rule"
    assert labels.rule_label(None) == ""


def test_plurals_and_lists() -> None:
    assert labels.plural(1, "draft") == "1 draft"
    assert labels.plural(0, "draft") == "0 drafts"
    assert labels.plural(2, "reply", "replies") == "2 replies"
    assert labels.plural(1200, "draft") == "1,200 drafts"
    assert labels.listing(["INV-1"]) == "INV-1"
    assert labels.listing(["INV-1", "INV-2", "INV-3"]) == "INV-1, INV-2 and INV-3"


def test_money_keeps_its_digits_and_currency() -> None:
    assert labels.money(99_900, "USD") == "$999.00"
    assert labels.money(99_900, "AUD") == "A$999.00"
    assert labels.money(125_050, "EUR") == "€1,250.50"
    assert labels.money(1000, "JPY") == "¥1,000"
    assert labels.money(None, "USD") == ""


def test_dates_follow_the_readers_locale_in_the_organisations_zone() -> None:
    moment = datetime(2025, 10, 7, 18, 0, tzinfo=UTC)
    assert labels.locale_from_header("de-DE,de;q=0.9,en;q=0.8") == "de_DE"
    assert labels.locale_from_header("xx-YY, fr-FR") == "fr_FR"
    assert labels.locale_from_header(None) == "en_US"
    us = labels.when(moment, locale="en_US", tz="America/New_York")
    assert us.startswith("Oct 7, 2025") and "2:00" in us
    de = labels.when(moment, locale="de_DE", tz="Europe/Berlin")
    assert de.startswith("07.10.2025") and "20:00" in de
    assert labels.day(date(2025, 10, 7), locale="en_GB") == "7 Oct 2025"
    assert labels.hours(49.5) == "2 days 1 hour"
    assert labels.hours(-0.5) == "30 minutes"


def test_buckets_commitment_statuses_and_weekday_dates_read_as_words() -> None:
    from memory.models import AgingBucket, PlanStatus

    assert [labels.label(b) for b in AgingBucket] == [
        "Current", "1-30 days", "31-60 days", "61-90 days", "90+ days",
    ]  # fmt: skip
    for status in PlanStatus:
        text = labels.plan_label(status)
        assert text and "_" not in text and text[0].isupper(), (status, text)
    assert labels.plan_label(PlanStatus.PENDING_APPROVAL) == "Waiting for approval"
    assert labels.plan_label("defaulted") == "Behind schedule"
    assert labels.promise_label(PromiseStatus.CANCELLED) == "Withdrawn"
    assert labels.promise_label(PromiseStatus.OPEN, lapsed=True) == "Broken"
    assert labels.installment_label("paid") == "Paid"
    assert labels.day(date(2025, 10, 7), weekday=True) == "Tue, Oct 7, 2025"
    assert labels.day(date(2025, 10, 7), locale="de_DE", weekday=True) == "Di., 7. Okt. 2025"
    assert labels.day(None, weekday=True) == ""
    assert labels.language("de") == "German" and labels.language("pt-BR") == "Portuguese (Brazil)"
    assert labels.language("zz-not-a-language") == "zz-not-a-language"
    assert labels.language(None) == ""


def test_periods_and_iso_text_in_the_readers_locale() -> None:
    """A whole month by its name, any other span as an interval; ISO text some records keep (a
    dry run's example, a DNS check's time) is read, a naive time as UTC."""
    assert labels.period(date(2026, 12, 1), date(2026, 12, 31)) == "Dec 2026"
    assert labels.period(date(2026, 12, 1), date(2026, 12, 31), locale="de_DE") == "Dez. 2026"
    assert labels.period(date(2026, 2, 1), date(2026, 2, 28), locale="de_DE") == "Feb. 2026"
    assert labels.period(date(2026, 12, 1), date(2026, 12, 6)) == "Dec 1\u2009–\u20096, 2026"
    assert labels.period(date(2026, 12, 1), date(2026, 12, 6), locale="de_DE") == "1.–6. Dez. 2026"
    assert labels.day("2025-10-07", locale="de_DE") == "07.10.2025"
    assert labels.when("2025-10-07T18:00:00", locale="de_DE", tz="America/New_York").startswith(
        "07.10.2025, 14:00"
    )
    assert labels.when("2025-10-07", locale="en_US") == "Oct 7, 2025"
    assert labels.when("") == "" and labels.day(None) == ""
