"""Loading dataset files into pydantic-evals ``Dataset`` objects, with errors a person can act on.

A dataset file with a missing field, a wrong type, an unknown key or an unknown evaluator is refused
whole with a message naming the file, the case and the field (``DatasetError``); nothing runs on a
half-read suite. Evaluator specs use pydantic-evals' forms: ``FactAccuracy`` or
``{LengthBounds: {max_words: 180}}``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_evals import Case, Dataset
from pydantic_evals.evaluators import Evaluator

from evals.evaluators import REGISTRY, standard_evaluators
from evals.scenarios import CaseFile, CaseMeta, DatasetFile, ExpectedFacts, ScenarioInputs

DATASETS_DIR = Path(__file__).with_name("datasets")
#: The held-out set: written apart from the development set, from its own ledgers and phrasings,
#: never used to tune a prompt, a template or the offline model. The CI gate is on this set.
HELDOUT_DIR = Path(__file__).with_name("heldout")
DEVELOPMENT, HELDOUT = "development", "heldout"
SUFFIXES = (".yaml", ".yml", ".json")


class DatasetError(ValueError):
    """A dataset file cannot be used; the message names the file, the case and the field."""


class EvalInputs(BaseModel):
    """What the task receives: the scenario, and which case it is (to find its prepared ledger)."""

    model_config = ConfigDict(frozen=True)

    case: str
    dataset: str
    scenario: ScenarioInputs


EvalCase = Case[EvalInputs, Any, CaseMeta]
EvalDataset = Dataset[EvalInputs, Any, CaseMeta]


@dataclass
class LoadedDataset:
    name: str
    path: Path
    description: str
    dataset: EvalDataset
    file: DatasetFile
    split: str = DEVELOPMENT

    @property
    def cases(self) -> list[EvalCase]:
        return list(self.dataset.cases)


def _loc(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _explain(path: Path, raw: Any, exc: ValidationError) -> DatasetError:
    lines = []
    for err in exc.errors()[:12]:
        loc = list(err["loc"])
        # Drop pydantic's union tags ("draft"/"triage", function-after[...]) from the location.
        loc = [
            p for p in loc if not (isinstance(p, str) and ("[" in p or p in ("draft", "triage")))
        ]
        where = ""
        if len(loc) >= 2 and loc[0] == "cases" and isinstance(loc[1], int):
            idx = loc[1]
            name = None
            cases = raw.get("cases") if isinstance(raw, dict) else None
            if isinstance(cases, list) and idx < len(cases) and isinstance(cases[idx], dict):
                name = cases[idx].get("name")
            where = f"case {name!r} (cases[{idx}])" if name else f"cases[{idx}]"
            loc = loc[2:]
        field = _loc(loc)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            msg = "required field is missing"
        elif err["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling)"
        lines.append(f"{path}: {where + ' ' if where else ''}field {field}: {msg}")
    more = len(exc.errors()) - 12
    if more > 0:
        lines.append(f"... and {more} more problem(s) in {path}")
    return DatasetError("\n".join(lines))


def _read(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read the dataset file ({exc.strerror})") from exc
    try:
        if path.suffix == ".json":
            return json.loads(text)
        return yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: not valid {path.suffix[1:].upper()}: {exc}") from exc


def build_evaluator(spec: Any, path: Path, where: str) -> Evaluator[object, object, object]:
    """One evaluator from its spec (``Name`` or ``{Name: {arg: value}}``), or a DatasetError."""
    known = ", ".join(sorted(REGISTRY))
    args: dict[str, Any]
    if isinstance(spec, str):
        name, args = spec, {}
    elif isinstance(spec, dict) and len(spec) == 1:
        name, raw_args = next(iter(spec.items()))
        if raw_args is None:
            raw_args = {}
        if not isinstance(raw_args, dict):
            raise DatasetError(
                f"{path}: {where}: arguments of evaluator {name!r} must be a mapping, "
                f"e.g. {{{name}: {{max_words: 180}}}}"
            )
        args = raw_args
    else:
        raise DatasetError(
            f"{path}: {where}: an evaluator is a name or a one-key mapping, not {spec!r}"
        )
    cls = REGISTRY.get(str(name))
    if cls is None:
        raise DatasetError(f"{path}: {where}: unknown evaluator {name!r} (known: {known})")
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(args) - fields)
    if unknown:
        raise DatasetError(
            f"{path}: {where}: evaluator {name} has no argument {', '.join(unknown)} "
            f"(it takes: {', '.join(sorted(fields)) or 'no arguments'})"
        )
    try:
        return cls(**args)
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"{path}: {where}: evaluator {name}: {exc}") from exc


def _merge(
    base: Sequence[Evaluator[object, object, object]],
    extra: Sequence[Evaluator[object, object, object]],
) -> list[Evaluator[object, object, object]]:
    """``extra`` replaces the standard evaluator of the same class (e.g. other length bounds)."""
    kinds = {type(e) for e in extra}
    return [e for e in base if type(e) not in kinds] + list(extra)


def load_file(path: Path) -> LoadedDataset:
    """One dataset file, validated whole."""
    raw = _read(path)
    if not isinstance(raw, dict):
        raise DatasetError(f"{path}: a dataset file is a mapping with 'name' and 'cases'")
    try:
        parsed = DatasetFile.model_validate(raw)
    except ValidationError as exc:
        raise _explain(path, raw, exc) from None
    names = [c.name for c in parsed.cases]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DatasetError(f"{path}: case names must be unique, repeated: {', '.join(dupes)}")
    dataset_evaluators = [
        build_evaluator(spec, path, f"evaluators[{i}]") for i, spec in enumerate(parsed.evaluators)
    ]
    cases: list[EvalCase] = []
    for idx, cf in enumerate(parsed.cases):
        extra = [
            build_evaluator(spec, path, f"case {cf.name!r} (cases[{idx}]) evaluators[{i}]")
            for i, spec in enumerate(cf.evaluators)
        ]
        cases.append(_case(cf, parsed.name, extra))
    dataset: EvalDataset = Dataset(
        name=parsed.name,
        cases=cases,
        evaluators=_merge(standard_evaluators(), dataset_evaluators),
    )
    split = HELDOUT if path.resolve().parent == HELDOUT_DIR.resolve() else DEVELOPMENT
    return LoadedDataset(
        name=parsed.name,
        path=path,
        description=parsed.description,
        dataset=dataset,
        file=parsed,
        split=split,
    )


def _case(
    cf: CaseFile, dataset: str, evaluators: list[Evaluator[object, object, object]]
) -> EvalCase:
    expected: ExpectedFacts = cf.expected_output
    return Case(
        name=cf.name,
        inputs=EvalInputs(case=cf.name, dataset=dataset, scenario=cf.inputs),
        metadata=cf.metadata,
        expected_output=expected,
        evaluators=tuple(evaluators),
    )


def dataset_files(directory: Path = DATASETS_DIR) -> list[Path]:
    if not directory.is_dir():
        raise DatasetError(f"{directory}: the datasets folder does not exist")
    return sorted(p for p in directory.iterdir() if p.suffix in SUFFIXES and p.is_file())


def load_datasets(only: Sequence[str] = (), directory: Path | None = None) -> list[LoadedDataset]:
    """Every dataset (or those named in ``only``: a name, a file stem or a path).

    Without ``directory``: the development set (``evals/datasets``) and the held-out set
    (``evals/heldout``). Case names must be unique across the suite: the baseline and reports key
    on them.
    """
    directories = [directory] if directory is not None else [DATASETS_DIR, HELDOUT_DIR]
    selected: list[Path] = []
    if only:
        files = {p.stem: p for d in directories for p in dataset_files(d)}
        for item in only:
            as_path = Path(item)
            if as_path.suffix in SUFFIXES and as_path.is_file():
                selected.append(as_path)
            elif item in files:
                selected.append(files[item])
            else:
                loaded_names = {}
                for p in files.values():
                    raw = _read(p)
                    if isinstance(raw, dict) and isinstance(raw.get("name"), str):
                        loaded_names[raw["name"]] = p
                if item not in loaded_names:
                    known = ", ".join(sorted(files)) or "none"
                    where = " and ".join(str(d) for d in directories)
                    raise DatasetError(
                        f"no dataset {item!r} in {where} (known: {known}); "
                        "give a dataset name, a file stem or a path to a .yaml/.json file"
                    )
                selected.append(loaded_names[item])
    else:
        selected = [p for d in directories for p in dataset_files(d)]
    if not selected:
        raise DatasetError(f"{directories[0]}: no dataset files (*.yaml, *.json)")
    loaded = [load_file(p) for p in dict.fromkeys(selected)]
    seen: dict[str, Path] = {}
    for ds in loaded:
        for case in ds.cases:
            assert case.name is not None
            if case.name in seen:
                raise DatasetError(
                    f"{ds.path}: case {case.name!r} is also in {seen[case.name]}; "
                    "case names must be unique across the suite"
                )
            seen[case.name] = ds.path
    return loaded
