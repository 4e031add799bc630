"""One concurrency model (issue 14): routes are synchronous (FastAPI runs them in its thread
pool), and the few ``async`` ones read the request body on the event loop and hand every ledger
call to the thread pool. This test reads the routes' source: an ``async`` route that passes its
database session to anything but ``run_in_threadpool`` would block every other request."""

from __future__ import annotations

import ast
import inspect
import textwrap

from fastapi.routing import iter_route_contexts

from api.app import create_app

SESSION_PARAMS = {"db", "session"}


def _own_nodes(fn: ast.AsyncFunctionDef) -> list[ast.AST]:
    out: list[ast.AST] = []
    todo: list[ast.AST] = list(fn.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        out.append(node)
        todo.extend(ast.iter_child_nodes(node))
    return out


def _blocking_uses(fn: ast.AsyncFunctionDef) -> list[str]:
    """Calls in ``fn`` that use the session outside ``run_in_threadpool(...)`` (a nested
    function's body is not run here: it is what gets handed to the thread pool)."""
    found: list[str] = []
    for call in _own_nodes(fn):
        if not isinstance(call, ast.Call):
            continue
        name = ast.unparse(call.func)
        if name == "run_in_threadpool":
            continue
        inside = [*call.args, *(k.value for k in call.keywords)]
        uses = any(isinstance(a, ast.Name) and a.id in SESSION_PARAMS for a in inside)
        if uses or name.split(".")[0] in SESSION_PARAMS:
            found.append(f"line {call.lineno}: {name}(...)")
    return found


def test_async_routes_never_use_the_ledger_on_the_event_loop() -> None:
    offenders: dict[str, list[str]] = {}
    checked = 0
    for route in iter_route_contexts(create_app().routes):
        endpoint = getattr(route, "endpoint", None)
        if endpoint is None or not inspect.iscoroutinefunction(endpoint):
            continue
        params = set(inspect.signature(endpoint).parameters)
        if not params & SESSION_PARAMS:
            continue
        checked += 1
        tree = ast.parse(textwrap.dedent(inspect.getsource(endpoint)))
        fn = tree.body[0]
        assert isinstance(fn, ast.AsyncFunctionDef)
        if bad := _blocking_uses(fn):
            offenders[f"{getattr(route, 'path', '?')} ({endpoint.__module__})"] = bad
    assert checked >= 3, "the async routes with a session were not found"
    assert not offenders, offenders


def test_the_check_finds_a_blocking_call() -> None:
    """The detector itself: a session used directly in an async route is reported."""
    src = "async def r(db):\n    body = await f()\n    db.commit()\n    g(db, 1)\n"
    fn = ast.parse(src).body[0]
    assert isinstance(fn, ast.AsyncFunctionDef)
    assert len(_blocking_uses(fn)) == 2
    ok = (
        "async def r(db):\n    def work():\n        db.commit()\n"
        "    return await run_in_threadpool(work)\n"
    )
    fn = ast.parse(ok).body[0]
    assert isinstance(fn, ast.AsyncFunctionDef)
    assert _blocking_uses(fn) == []
