"""``plixo eval``: score the co-pilot's drafts and triage on the eval suite, gate on the result.

- ``plixo eval run``: every dataset in ``evals/datasets`` (or ``--dataset``) against one model;
  a table per evaluator and overall, the gate (exit 1 when a threshold is missed), the stored
  baseline's deltas, ``--json`` for CI and ``--html`` for a report with charts.
- ``plixo eval compare A B``: two models or prompt versions (``offline@v1``), or two saved
  ``run --json`` files, side by side on the same cases.
- ``plixo eval export-rejections``: drafts rejected in the review panel, as new cases.

Exit codes: 0 all thresholds met, 1 a threshold missed (or a case did not run), 2 bad input (a
dataset file, an unreachable or misconfigured model, a ledger that cannot be read).
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlparse

import typer
from rich.table import Table

from api.cli.common import console, err_console, fail, open_ledger, print_json
from evals.evaluators import EvalSetupError
from evals.export import ExportError, export_rejections
from evals.loader import (
    DATASETS_DIR,
    DEVELOPMENT,
    HELDOUT,
    DatasetError,
    LoadedDataset,
    load_datasets,
)
from evals.report import write_html
from evals.runner import (
    BASELINE_FILE,
    LOWER_IS_BETTER,
    EvaluatorStats,
    GateResult,
    ModelUnavailable,
    RunCost,
    RunSummary,
    compare_baseline,
    compare_runs,
    load_baseline,
    resolve_judge,
    run_suite,
    update_baseline,
)
from evals.task import PlixoAgent, split_label
from memory.config import Settings, get_settings

eval_app = typer.Typer(
    help="Score drafts and reply triage on the eval suite: the gate on every model or prompt "
    "change.",
    no_args_is_help=True,
)

ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="offline (default: PLIXO_MODEL), openai:<name>, litellm:<name>, "
        "openai-compatible:<name>; add @v2 to pick a prompt version.",
    ),
]
DatasetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--dataset", "-d", help="A dataset name, file stem or path (repeatable); default: all."
    ),
]
ConcurrencyOpt = Annotated[
    int | None,
    typer.Option("--concurrency", min=1, help="Cases at once (default: PLIXO_MODEL_CONCURRENCY)."),
]
TimeoutOpt = Annotated[
    float, typer.Option("--case-timeout", min=1.0, help="Seconds one case may take.")
]


# --- helpers --------------------------------------------------------------------------------------


def _load(datasets: list[str] | None) -> list[LoadedDataset]:
    try:
        return load_datasets(datasets or ())
    except DatasetError as exc:
        fail(str(exc))


def _check_reachable(settings: Settings) -> None:
    """Fail fast, with the setting to fix, when a model server's port does not answer."""
    base = (settings.model_base_url or "").strip()
    if not base or settings.model.strip() == "offline":
        return
    url = urlparse(base)
    if not url.hostname:
        raise ModelUnavailable(
            f"PLIXO_MODEL_BASE_URL={base!r} is not a URL (e.g. http://127.0.0.1:8080/v1)"
        )
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=3):
            pass
    except OSError as exc:
        raise ModelUnavailable(
            f"the model server at {base} is unreachable ({exc.strerror or exc}). Start it, fix "
            "PLIXO_MODEL_BASE_URL, or run with --model offline."
        ) from exc


def _agent(label: str, settings: Settings) -> Any:
    model, version = split_label(label)
    run_settings = settings.model_copy(update={"model": model})
    _check_reachable(run_settings)
    return PlixoAgent(run_settings, prompt_version=version)


def _run(
    label: str,
    datasets: list[LoadedDataset],
    settings: Settings,
    *,
    concurrency: int | None,
    case_timeout: float,
    quiet: bool,
    judge: bool = True,
) -> RunSummary:
    try:
        agent = _agent(label, settings)
        judge_model, judge_info = resolve_judge(settings) if judge else (None, None)
    except ModelUnavailable as exc:
        fail(str(exc))
    if not quiet:
        offline = (
            " (the offline model: deterministic, no network)" if "offline" in agent.model else ""
        )
        n = sum(len(d.cases) for d in datasets)
        console.print(f"Evaluating [bold]{agent.model}[/]{offline} on {n} cases …")
    try:
        run = asyncio.run(
            run_suite(
                datasets,
                agent,
                settings,
                concurrency=concurrency or max(1, settings.model_concurrency),
                case_timeout_s=case_timeout,
                judge_model=judge_model,
                judge=judge_info,
            )
        )
    except ModelUnavailable as exc:
        fail(str(exc))
    except EvalSetupError as exc:
        fail(str(exc))
    return run.summary


def _fmt(name: str, value: float | None) -> str:
    if value is None:
        return "–"
    if name in LOWER_IS_BETTER:
        return f"{value:g}"
    return f"{value * 100:.1f}%" if value <= 1 else f"{value:g}"


def _result(s: EvaluatorStats | None) -> str:
    if s is None or s.cases == 0:
        return "not measured"
    if s.kind == "assertion":
        return f"{s.passed}/{s.cases} {_fmt(s.name, s.rate)}"
    if s.name in LOWER_IS_BETTER:
        return f"{s.total:g} total"
    return f"mean {s.mean:.3f}" if s.mean is not None else "–"


def _per_100(cost: RunCost | None) -> str:
    if cost is None or cost.cost_per_100_drafts_usd is None:
        return "not in LiteLLM's price table"
    return f"${cost.cost_per_100_drafts_usd} ({cost.priced_as})"


def _print_summary(summary: RunSummary) -> None:
    """The development and held-out figures side by side; the gate is on ``gated_split``."""
    table = Table(title=f"plixo eval — {summary.label}", show_lines=False)
    splits = [name for name in (DEVELOPMENT, HELDOUT) if name in summary.splits]
    heads = [("Evaluator", "left")] + [(name, "right") for name in splits]
    for col, just in heads + [("Baseline", "right"), ("Δ", "right")]:
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    by_split = {n: {e.name: e for e in summary.splits[n].evaluators} for n in splits}
    deltas = {d.name: d for d in (summary.baseline.evaluators if summary.baseline else [])}
    for s in summary.evaluators:
        d = deltas.get(s.name)
        delta = "–" if d is None or d.delta is None else f"{d.delta:+g}"
        if d is not None and d.worse:
            delta = f"[red]{delta}[/]"
        cells = [_result(by_split[n].get(s.name)) for n in splits] or [_result(s)]
        table.add_row(s.name, *cells, "–" if d is None else _fmt(s.name, d.baseline), delta)
    clean = [f"{summary.splits[n].cases_clean}/{summary.splits[n].cases_run}" for n in splits] or [
        f"{summary.cases_clean}/{summary.cases_run}"
    ]
    table.add_row("[bold]overall[/] (every gated check)", *clean, "", "")
    console.print(table)
    console.print(f"The gate is on the [bold]{summary.gated_split}[/] set.")
    gates = Table(title="Gate")
    gates.add_column("Threshold")
    gates.add_column("Value", justify="right")
    gates.add_column("Result")
    gates.add_column("Detail")
    for g in summary.gates:
        gates.add_row(
            g.label, _fmt(g.name, g.value), "[green]pass[/]" if g.ok else "[red]FAIL[/]", g.detail
        )
    console.print(gates)
    if not summary.judge.enabled:
        console.print(f"[yellow]{summary.judge.note}[/]")
    for n in summary.not_run:
        console.print(f"[red]did not run[/] {n.case} ({n.dataset}): {n.error}")
    if summary.baseline:
        b = summary.baseline
        if b.note:
            console.print(b.note)
        for r in b.regressions[:20]:
            console.print(f"[red]regression[/] {r.case} {r.evaluation}: {r.before} -> {r.after}")
    worst = sorted(
        (c for c in summary.cases if c.gated_failed), key=lambda c: c.badness, reverse=True
    )
    for c in worst[:10]:
        for name in c.gated_failed:
            res = c.results.get(name)
            why = res.reason if res else c.evaluator_errors.get(name, "")
            console.print(f"[red]✗[/] {c.name} {name}: {why}")
    verdict = "[green]All thresholds met.[/]" if summary.passed else "[red]Gate failed.[/]"
    console.print(
        f"{verdict} {summary.cases_run}/{summary.cases_total} cases in {summary.duration_s:.1f} s "
        f"({summary.model})."
    )


# --- commands -------------------------------------------------------------------------------------


def _gate_regressions(summary: RunSummary) -> None:
    """``--fail-on-regression``: a case worse than the baseline fails the run, as its own gate."""
    if summary.baseline and summary.baseline.regressions:
        summary.gates.append(
            GateResult(
                name="regressions",
                label="no case worse than the baseline",
                threshold=0,
                value=len(summary.baseline.regressions),
                ok=False,
                detail=f"{len(summary.baseline.regressions)} regression(s)",
            )
        )
        summary.passed = False


def _store_baseline(summary: RunSummary, baseline: Path) -> None:
    """``--update-baseline``: store the run, unless some cases did not run (never a partial
    baseline)."""
    if summary.not_run:
        fail(
            f"{len(summary.not_run)} case(s) did not run; not storing a partial run as the "
            "baseline. Fix the model or the cases and run again."
        )
    try:
        update_baseline(summary, baseline)
    except OSError as exc:
        fail(f"cannot write the baseline {baseline}: {exc.strerror or exc}")


@eval_app.command("run")
def run_cmd(
    model: ModelOpt = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the summary as JSON (for CI), nothing else.")
    ] = False,
    html: Annotated[
        Path | None, typer.Option("--html", help="Write an HTML report with charts to this file.")
    ] = None,
    dataset: DatasetOpt = None,
    update_baseline_: Annotated[
        bool,
        typer.Option("--update-baseline", help="Store this run as the baseline of its model."),
    ] = False,
    baseline: Annotated[
        Path, typer.Option("--baseline", help="The baseline file to compare with and update.")
    ] = BASELINE_FILE,
    fail_on_regression: Annotated[
        bool,
        typer.Option(
            "--fail-on-regression", help="Also fail when a case got worse than the baseline."
        ),
    ] = False,
    full: Annotated[
        bool,
        typer.Option("--full", help="JSON with every case result (what `compare` can read back)."),
    ] = False,
    with_text: Annotated[
        bool, typer.Option("--with-text", help="JSON with every case result and the drafts' text.")
    ] = False,
    concurrency: ConcurrencyOpt = None,
    case_timeout: TimeoutOpt = 120.0,
) -> None:
    """Run the eval suite against one model and gate on the thresholds."""
    settings = get_settings()
    datasets = _load(dataset)
    label = (model or settings.model).strip()
    summary = _run(
        label,
        datasets,
        settings,
        concurrency=concurrency,
        case_timeout=case_timeout,
        quiet=json_out,
    )
    try:
        stored = load_baseline(baseline)
    except EvalSetupError as exc:
        fail(str(exc))
    summary.baseline = compare_baseline(summary, stored)
    if fail_on_regression:
        _gate_regressions(summary)
    if html is not None:
        try:
            write_html(summary, html)
        except OSError as exc:
            fail(f"cannot write the report to {html}: {exc.strerror or exc}")
    if update_baseline_:
        _store_baseline(summary, baseline)
    if json_out:
        print_json(summary.public(full=full, with_text=with_text))
    else:
        _print_summary(summary)
        if html is not None:
            console.print(f"Report: {html}")
        if update_baseline_:
            console.print(f"Baseline for {summary.label} stored in {baseline}.")
    raise typer.Exit(code=0 if summary.passed else 1)


def _side(
    spec: str, datasets: list[LoadedDataset] | None, settings: Settings, **kw: Any
) -> RunSummary:
    path = Path(spec)
    if path.suffix == ".json" and path.is_file():
        try:
            text = path.read_text(encoding="utf-8")
            if '"detail": "full"' not in text:
                fail(
                    f"{path} is a compact summary; save runs for compare with "
                    "`plixo eval run --json --full > FILE.json`"
                )
            return RunSummary.model_validate_json(text)
        except (OSError, ValueError) as exc:
            fail(
                f"{path}: not a saved `plixo eval run --json` summary ({str(exc).splitlines()[0]})"
            )
    if datasets is None:
        datasets = _load(None)
    return _run(spec, datasets, settings, judge=False, **kw)


@eval_app.command("compare")
def compare_cmd(
    a: Annotated[
        str,
        typer.Argument(
            help="A model (offline, openai:gpt-4o, offline@v1) or a saved run --json file."
        ),
    ],
    b: Annotated[str, typer.Argument(help="The other model, prompt version or saved run.")],
    dataset: DatasetOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the comparison as JSON.")] = False,
    concurrency: ConcurrencyOpt = None,
    case_timeout: TimeoutOpt = 120.0,
) -> None:
    """Two models or prompt versions side by side on the same cases."""
    settings = get_settings()
    needs_run = [s for s in (a, b) if not (s.endswith(".json") and Path(s).is_file())]
    datasets = _load(dataset) if needs_run else None
    kw = {"concurrency": concurrency, "case_timeout": case_timeout, "quiet": json_out}
    left = _side(a, datasets, settings, **kw)
    right = _side(b, datasets, settings, **kw)
    result = compare_runs(left, right)
    if json_out:
        print_json(result.model_dump(mode="json"))
        return
    table = Table(title=f"{left.label} vs {right.label}")
    table.add_column("Evaluator")
    table.add_column(f"A: {left.label}", justify="right")
    table.add_column(f"B: {right.label}", justify="right")
    table.add_column("Δ (B - A)", justify="right")
    for row in result.evaluators:
        dtext = "–" if row.delta is None else f"{row.delta:+g}"
        table.add_row(
            row.evaluator,
            _fmt(row.evaluator, row.a),
            _fmt(row.evaluator, row.b),
            f"[red]{dtext}[/]" if row.worse else dtext,
        )
    console.print(table)
    gate = Table(title="Gate")
    gate.add_column("")
    gate.add_column("A")
    gate.add_column("B")
    gate.add_row("passed", str(left.passed), str(right.passed))
    console.print(gate)
    costs = Table(title="Cost")
    costs.add_column("")
    costs.add_column("A")
    costs.add_column("B")
    ca, cb = result.a.cost, result.b.cost
    costs.add_row("drafts", str(ca.drafts if ca else 0), str(cb.drafts if cb else 0))
    costs.add_row(
        "tokens per draft",
        f"{ca.tokens_per_draft:g}" if ca else "–",
        f"{cb.tokens_per_draft:g}" if cb else "–",
    )
    costs.add_row("cost per 100 drafts", _per_100(ca), _per_100(cb))
    console.print(costs)
    diffs = result.case_differences
    if diffs:
        cases = Table(title=f"Cases that differ ({len({d.case for d in diffs})})")
        for col in ("Case", "Evaluator", "A", "B", "Why (B)"):
            cases.add_column(col)
        for d in diffs[:60]:
            cases.add_row(d.case, d.evaluation, str(d.a), str(d.b), (d.b_reason or "")[:120])
        console.print(cases)
    else:
        console.print("Both give the same result on every case.")
    for side, only in (("A", result.only_in_a), ("B", result.only_in_b)):
        if only:
            err_console.print(f"Only in {side}: {', '.join(only)}")


@eval_app.command("export-rejections")
def export_rejections_cmd(
    out: Annotated[
        Path, typer.Option("--out", help="Dataset file to add the cases to (created if missing).")
    ] = DATASETS_DIR / "rejections.yaml",
    org: Annotated[str | None, typer.Option("--org", help="Only this organisation (slug).")] = None,
    keep_names: Annotated[
        bool,
        typer.Option(
            "--keep-names", help="Keep real names, e-mails and phones (default: placeholders)."
        ),
    ] = False,
) -> None:
    """Export the review panel's rejected drafts (with their reasons) as new eval cases."""
    from sqlalchemy.exc import SQLAlchemyError

    _, sessions = open_ledger(upgrade=False)
    try:
        with sessions() as session:
            result = export_rejections(session, out, org_slug=org, anonymize=not keep_names)
    except ExportError as exc:
        fail(str(exc))
    except SQLAlchemyError as exc:
        fail(
            f"cannot read the drafts from the ledger ({str(exc).splitlines()[0]}). "
            "Run `plixo db upgrade` first."
        )
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror or exc}")
    console.print(
        f"Exported {len(result.added)} rejected draft(s) to {result.path} "
        f"({result.existing} case(s) were already there)."
    )
    for line in result.skipped:
        err_console.print(f"skipped {line}")
