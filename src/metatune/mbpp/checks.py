"""Split MBPP asserts so that the untrusted process never sees an expected value.

`assert f(x) == [1, 2]` becomes the untrusted expression `f(x)` (run in the sandbox, its value sent back as
plain data) and the trusted check `_v0 == [1, 2]` (evaluated here, on that plain data). Because the sandbox
only ever receives `f(x)`, no trick inside it (an object whose __eq__ is always True, a patched builtin, a
walk over gc.get_objects() looking for the expected list) can turn into a pass: the value that comes back is
data, and the comparison runs in a process the completion never touched.

The rule, applied top-down to the assert's expression:
  - a subexpression that uses only trusted names (builtins the completion does not redefine, and names bound
    by the task's own test imports) stays on the trusted side (expected values, `set(...)`, `math.isclose`);
  - comparisons, `not`/`and`/`or`, arithmetic, container displays and calls of trusted functions are split
    into their parts, so `math.isclose(f(x), 3.0, rel_tol=1e-3)`, `set(f(x)) == set(...)`, `not f(x)` and
    a bare `assert f(x)` all work;
  - anything else that mentions an untrusted name (the call of the task's function, a setup variable) is
    cut out whole and evaluated in the sandbox.
Tests the rule cannot split safely raise UnsupportedTest and the task is scored `error`, never `passed`:
statements other than a single `assert`, and cut-out expressions that use names bound by a comprehension or
lambda inside the test (`all(f(x) for x in xs)`), which only exist on the trusted side. MBPP's full and
sanitized test lists need no fallback (every one of their asserts splits).
"""

from __future__ import annotations

import ast
import builtins
import warnings
from dataclasses import dataclass

from metatune.mbpp.data import Problem

VALUE_PREFIX = "_mbpp_v"


class UnsupportedTest(ValueError):
    """A test line this module cannot split into untrusted expressions and a trusted check."""


@dataclass(frozen=True)
class SplitTest:
    source: str  # the original assert line
    exprs: tuple[str, ...]  # evaluated in the sandbox, in order
    check: str  # evaluated here, with _mbpp_v{i} bound to the decoded value of exprs[i]


@dataclass(frozen=True)
class TaskChecks:
    task_id: int
    tests: tuple[SplitTest, ...]

    @property
    def exprs(self) -> tuple[str, ...]:
        """Every untrusted expression of the task, in test order (what the sandbox evaluates)."""
        return tuple(e for t in self.tests for e in t.exprs)


def bound_names(source: str) -> set[str]:
    """Every name `source` binds anywhere (defs, classes, assignments, imports). Over-approximates on purpose:
    a name in this set is evaluated in the sandbox, which is where the original assert ran anyway."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return set()  # the completion won't run at all; the split is never used
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def _locally_bound(tree: ast.AST) -> set[str]:
    """Names bound inside the test by comprehensions and lambdas: they exist only where the test runs."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.comprehension):
            names.update(n.id for n in ast.walk(node.target) if isinstance(n, ast.Name))
        elif isinstance(node, ast.Lambda):
            names.update(a.arg for a in ast.walk(node.args) if isinstance(a, ast.arg))
    return names


# Node types whose own operation is safe to perform on plain data on the trusted side.
_SPLITTABLE = (ast.Compare, ast.BoolOp, ast.UnaryOp, ast.BinOp, ast.Tuple, ast.List, ast.Set, ast.Dict)


class _Splitter(ast.NodeTransformer):
    def __init__(self, trusted: set[str], local: set[str]):
        self.trusted, self.local = trusted, local
        self.exprs: list[str] = []

    def _untrusted_names(self, node: ast.AST) -> set[str]:
        loaded = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
        return loaded - self.trusted - self.local

    def visit(self, node: ast.AST) -> ast.AST:
        if not self._untrusted_names(node):
            return node
        if isinstance(node, _SPLITTABLE) or (isinstance(node, ast.Call) and not self._untrusted_names(node.func)):
            return self.generic_visit(node)
        if isinstance(node, ast.expr):
            return self._cut(node)
        return self.generic_visit(node)  # keywords, comprehensions: visit the expressions inside them

    def _cut(self, node: ast.expr) -> ast.Name:
        src = ast.unparse(node)
        # A comprehension cut out whole keeps its own variables; only names bound outside the cut are lost.
        loaded = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
        used_local = (loaded & self.local) - _locally_bound(node)
        if used_local or isinstance(node, (ast.GeneratorExp, ast.Lambda)):
            raise UnsupportedTest(f"{src!r} uses names bound inside the test ({', '.join(sorted(used_local))})")
        self.exprs.append(src)
        return ast.Name(id=f"{VALUE_PREFIX}{len(self.exprs) - 1}", ctx=ast.Load())


def split_test(line: str, trusted: set[str]) -> SplitTest:
    """Split one assert line; `trusted` are the names the trusted side may evaluate."""
    try:
        tree = ast.parse(line.strip())
    except SyntaxError as e:
        raise UnsupportedTest(f"{line!r}: not valid Python ({e.msg})") from None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Assert):
        raise UnsupportedTest(f"{line!r}: not a single assert statement")
    test = tree.body[0].test
    splitter = _Splitter(trusted, _locally_bound(test))
    check = splitter.visit(test)
    return SplitTest(source=line, exprs=tuple(splitter.exprs), check=ast.unparse(check))


def trusted_names(problem: Problem, completion: str) -> set[str]:
    """Builtins and the task's test imports, minus every name the completion or setup code binds."""
    imported = set()
    for line in problem.test_imports:
        imported |= bound_names(line)
    shadowed = bound_names(completion) | bound_names(problem.setup_code)
    return (set(dir(builtins)) | imported) - shadowed


def split_task(problem: Problem, completion: str) -> TaskChecks:
    """All of a task's tests split for this completion (which builtins it shadows decides the split)."""
    trusted = trusted_names(problem, completion)
    try:
        tests = tuple(split_test(line, trusted) for line in problem.tests)
    except UnsupportedTest as e:
        raise UnsupportedTest(f"task {problem.task_id}: {e}") from None
    return TaskChecks(task_id=problem.task_id, tests=tests)
