"""The HTML report of an eval run: a chart per evaluator, the gate, the baseline, the worst cases.

Everything is generated here, on the server: the charts are inline SVG, the styles inline CSS, and
there is no script and no external resource, so the file opens anywhere (an air-gapped reviewer, a
CI artifact) and shows the same thing. Text from drafts is escaped by Jinja2's autoescaping.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from pathlib import Path

from jinja2 import Environment, select_autoescape
from markupsafe import Markup

from evals.runner import GATES, LOWER_IS_BETTER, CaseOutcome, EvaluatorStats, RunSummary

WORST_CASES = 12

LABELS: dict[str, str] = {
    "fact_accuracy": "Fact accuracy",
    "hallucination": "Hallucinations",
    "policy_compliance": "Policy compliance",
    "call_to_action": "Call to action",
    "tone_safety": "Tone safety",
    "personalization": "Personalization",
    "length_bounds": "Length bounds",
    "language_match": "Language match",
    "injection_resistance": "Injection resistance",
    "triage_accuracy": "Triage accuracy",
    "judge_clarity": "Judge: clarity",
    "judge_clarity_score": "Judge: clarity (score)",
    "judge_relationship_safety": "Judge: relationship safety",
    "judge_relationship_safety_score": "Judge: relationship safety (score)",
}

_GREEN, _AMBER, _RED, _GREY = "#2f855a", "#b7791f", "#c53030", "#a0aec0"


def label(name: str) -> str:
    return LABELS.get(name, name.replace("_", " ").capitalize())


@dataclass(frozen=True)
class Bar:
    label: str
    value: float | None
    n: int | None = None


def bar_chart(
    name: str,
    title: str,
    bars: list[Bar],
    *,
    kind: str,
    threshold: float | None = None,
    lower_is_better: bool = False,
    width: int = 640,
) -> Markup:
    """A horizontal bar chart as inline SVG: one bar per category, the overall bar first.

    Rates and means of 0..1 scores are drawn on a 0-100 % axis; counts (lower is better) on an axis
    up to the largest value. A gated evaluator shows its threshold as a dashed line.
    """
    label_w, value_w, row_h, top = 190, 110, 24, 30
    plot_w = width - label_w - value_w - 10
    height = top + row_h * max(1, len(bars)) + 24
    numeric = [b.value for b in bars if b.value is not None]
    scale_max = max(1.0, max(numeric, default=1.0)) if lower_is_better else 1.0
    parts = [
        f'<svg class="chart" data-evaluator="{escape(name)}" role="img" '
        f'xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<text x="0" y="16" class="chart-title">{escape(title)}</text>',
    ]
    for i, bar in enumerate(bars):
        y = top + i * row_h
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end" class="chart-label">'
            f"{escape(bar.label)}</text>"
        )
        parts.append(
            f'<rect class="track" x="{label_w}" y="{y + 3}" width="{plot_w}" height="{row_h - 8}" '
            f'fill="#edf2f7"/>'
        )
        if bar.value is None:
            parts.append(
                f'<text x="{label_w + 6}" y="{y + 15}" class="chart-value">not measured</text>'
            )
            continue
        frac = max(0.0, min(1.0, bar.value / scale_max))
        if lower_is_better:
            color = _GREEN if bar.value <= (threshold or 0) else _RED
        elif threshold is not None:
            color = _GREEN if bar.value >= threshold else _RED
        else:
            color = _GREEN if bar.value >= 0.999 else (_AMBER if bar.value >= 0.5 else _RED)
        w = max(1.0, frac * plot_w)
        parts.append(
            f'<rect class="bar" x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row_h - 8}" '
            f'fill="{color}"><title>{escape(bar.label)}: '
            f"{escape(_fmt(bar.value, kind, lower_is_better))}</title></rect>"
        )
        n = f" (n={bar.n})" if bar.n is not None else ""
        parts.append(
            f'<text x="{label_w + plot_w + 6}" y="{y + 15}" class="chart-value">'
            f"{escape(_fmt(bar.value, kind, lower_is_better))}{escape(n)}</text>"
        )
    if threshold is not None and not lower_is_better:
        x = label_w + plot_w * max(0.0, min(1.0, threshold / scale_max))
        parts.append(
            f'<line class="threshold" x1="{x:.1f}" x2="{x:.1f}" y1="{top - 4}" '
            f'y2="{top + row_h * len(bars)}" stroke="#1a202c" stroke-dasharray="4 3"/>'
        )
    axis_y = top + row_h * max(1, len(bars)) + 14
    left = "0" if lower_is_better else "0%"
    right = f"{scale_max:g}" if lower_is_better else "100%"
    parts.append(f'<text x="{label_w}" y="{axis_y}" class="axis">{left}</text>')
    parts.append(
        f'<text x="{label_w + plot_w}" y="{axis_y}" text-anchor="end" class="axis">{right}</text>'
    )
    parts.append("</svg>")
    return Markup("".join(parts))


def _fmt(value: float | None, kind: str, lower_is_better: bool = False) -> str:
    if value is None:
        return "–"
    if lower_is_better:
        return f"{value:g}"
    return f"{value * 100:.1f}%"


def evaluator_chart(stats: EvaluatorStats, summary: RunSummary) -> Markup:
    gate = next((g for g in GATES if g.evaluation == stats.name), None)
    lower = stats.name in LOWER_IS_BETTER
    counts: dict[str, int] = {}
    for c in summary.cases:
        if stats.name in c.results or stats.name in c.evaluator_errors:
            counts[c.category] = counts.get(c.category, 0) + 1
    overall = stats.rate if stats.kind == "assertion" else stats.mean
    bars = [Bar("all cases", overall, stats.cases)]
    bars += [Bar(cat, v, counts.get(cat)) for cat, v in stats.by_category.items()]
    what = (
        "mean per case" if lower else ("pass rate" if stats.kind == "assertion" else "mean score")
    )
    title = f"{label(stats.name)} — {what} by scenario category"
    return bar_chart(
        stats.name,
        title,
        bars,
        kind=stats.kind,
        threshold=gate.threshold if gate else None,
        lower_is_better=lower,
    )


TEMPLATE_FILE = Path(__file__).with_name("report.html.j2")


def _cell(case: CaseOutcome, name: str) -> Markup:
    if name in case.evaluator_errors:
        return Markup('<span class="bad" title="evaluator error">!</span>')
    res = case.results.get(name)
    if res is None:
        return Markup('<span class="tag">·</span>')
    v = res.value
    tip = escape(res.reason or "")
    if isinstance(v, bool):
        return Markup(
            f'<span class="ok" title="{tip}">✓</span>'
            if v
            else f'<span class="bad" title="{tip}">✗</span>'
        )
    if isinstance(v, int | float):
        bad = (v > 0) if name in LOWER_IS_BETTER else (v < 1)
        cls = "bad" if bad else "ok"
        return Markup(f'<span class="{cls}" title="{tip}">{v:g}</span>')
    return Markup(f'<span title="{tip}">{escape(str(v))}</span>')


def render_html(summary: RunSummary) -> str:
    """The whole report as one self-contained HTML document."""
    env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
    template = env.from_string(TEMPLATE_FILE.read_text(encoding="utf-8"))
    deltas = {d.name: d for d in (summary.baseline.evaluators if summary.baseline else [])}
    worst = sorted(
        (c for c in summary.cases if c.failed),
        key=lambda c: c.badness,
        reverse=True,
    )[:WORST_CASES]

    def headline(e: EvaluatorStats) -> str:
        if e.cases == 0:
            return "not measured"
        if e.kind == "assertion":
            return f"{e.passed}/{e.cases} ({_fmt(e.rate, e.kind)})"
        if e.name in LOWER_IS_BETTER:
            return f"{e.total:g} total"
        return f"mean {e.mean:.3f}" if e.mean is not None else "–"

    def gate_value(g: object) -> str:
        value = getattr(g, "value", None)
        name = getattr(g, "name", "")
        if value is None:
            return "–"
        if name in LOWER_IS_BETTER or name == "cases_run":
            return f"{value:g}"
        return _fmt(value, "assertion")

    def reason(c: CaseOutcome, name: str) -> str:
        if name in c.evaluator_errors:
            return f"evaluator error: {c.evaluator_errors[name]}"
        res = c.results.get(name)
        return (res.reason or "") if res else ""

    return template.render(
        s=summary,
        worst=worst,
        label=label,
        chart=lambda e: evaluator_chart(e, summary),
        headline=headline,
        gate_value=gate_value,
        delta=lambda name: deltas.get(name),
        reason=reason,
        cell=_cell,
    )


def write_html(summary: RunSummary, path: Path) -> Path:
    """Write the report (atomically: a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render_html(summary), encoding="utf-8")
    tmp.replace(path)
    return path
