"""No project import inside a function unless a ``# lazy:`` comment says why.

Why: an import inside a function hides a dependency from the reader and, when it only dodges a
cycle, hides a layering problem too (the cycle is still there, it just waits for the first call).
What may stay lazy is a documented optional or deferred dependency: a heavy library the process
may never need (the agent's pydantic-ai in the app), DBOS workflow registration (in a worker only),
CLI start-up, or a genuine cycle at the bottom of ``memory``. The reason goes in a ``# lazy: ...``
comment on the import's line or the line above it (one comment can head a run of imports), so this
count cannot creep back up unnoticed.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("memory", "policies", "prompts", "tools", "agent", "evals", "api")
MARKER = re.compile(r"#\s*lazy:\s*\S")

#: Files other branches are rewriting at the same time; their in-function imports are tolerated
#: here until those branches are merged, then this list shrinks (a directory ends with "/").
NOT_YET_CHECKED = ("policies/",)


def _is_project(node: ast.Import | ast.ImportFrom) -> bool:
    if isinstance(node, ast.ImportFrom):
        return node.level > 0 or (node.module or "").split(".")[0] in PACKAGES
    return any(alias.name.split(".")[0] in PACKAGES for alias in node.names)


def _function_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Project imports anywhere inside a function body (nested functions included, once each)."""
    found: dict[int, ast.Import | ast.ImportFrom] = {}
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            for node in ast.walk(fn):
                if isinstance(node, ast.Import | ast.ImportFrom) and _is_project(node):
                    found[id(node)] = node
    return sorted(found.values(), key=lambda n: n.lineno)


def _documented(imports: list[ast.Import | ast.ImportFrom], lines: list[str]) -> list[int]:
    """Line numbers of the imports without a ``# lazy:`` reason: on one of the statement's own
    lines, on the line above it, or heading the run of imports it directly follows."""

    def own(node: ast.Import | ast.ImportFrom) -> bool:
        span = lines[node.lineno - 2 : node.end_lineno or node.lineno]
        return any(MARKER.search(line) for line in span)

    undocumented = []
    previous: ast.Import | ast.ImportFrom | None = None
    previous_ok = False
    for node in imports:
        follows = previous is not None and previous.end_lineno == node.lineno - 1
        ok = own(node) or (follows and previous_ok)
        if not ok:
            undocumented.append(node.lineno)
        previous, previous_ok = node, ok
    return undocumented


def undocumented_imports(root: Path = ROOT) -> list[str]:
    out = []
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            if "/migrations/" in rel or rel.startswith(NOT_YET_CHECKED):
                continue
            text = path.read_text(encoding="utf-8")
            lines = text.splitlines()
            for lineno in _documented(_function_imports(ast.parse(text)), lines):
                out.append(f"{rel}:{lineno}: {lines[lineno - 1].strip()}")
    return out


def test_every_project_import_inside_a_function_says_why() -> None:
    found = undocumented_imports()
    assert found == [], (
        "imports inside functions without a '# lazy: <why>' comment (move them to the top of "
        "the module; if that makes a cycle, move the shared name down a layer or use a hook, "
        "tools/kit/hooks.py):\n" + "\n".join(found)
    )


def test_the_check_tells_documented_from_undocumented(tmp_path: Path) -> None:
    """The walker itself: a bare import in a function is reported, a commented one, one in a run
    under a comment, a module-level one and a third-party one are not; a run broken by code is."""
    pkg = tmp_path / "tools"
    pkg.mkdir()
    (pkg / "sample.py").write_text(
        "import memory.models\n"
        "def bare():\n"
        "    from tools.kit import audit\n"
        "def commented():\n"
        "    from tools.kit import audit  # lazy: a reason\n"
        "def headed():\n"
        "    # lazy: DBOS workflow registration\n"
        "    import tools.a\n"
        "    import tools.b\n"
        "    x = 1\n"
        "    import tools.c\n"
        "def third_party():\n"
        "    import numpy\n"
        "def relative():\n"
        "    from . import x\n"
        "def nested():\n"
        "    def inner():\n"
        "        from tools import y\n"
        "def noqa_only():\n"
        "    import tools.d  # noqa: F401 - not a reason this check reads\n",
        encoding="utf-8",
    )
    found = [line.split(":")[1] for line in undocumented_imports(tmp_path)]
    assert found == ["3", "11", "15", "18", "20"]
