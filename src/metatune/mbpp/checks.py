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
import functools
import warnings
from dataclasses import dataclass

from metatune.mbpp.data import Problem

VALUE_PREFIX = "_mbpp_v"
_BUILTINS = frozenset(dir(builtins))


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


def parse(source: str) -> ast.Module:
    """ast.parse, quiet about invalid escapes and such (generated code is the completion's business)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ast.parse(source)


def bound_names(tree: ast.AST) -> set[str]:
    """Every name `tree` binds anywhere (defs, classes, assignments, imports). Over-approximates on purpose:
    a name in this set is evaluated in the sandbox, which is where the original assert ran anyway."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


@functools.lru_cache(maxsize=4096)
def _bound_in_source(source: str) -> frozenset[str]:
    """bound_names of a task's own code (setup, test imports): the same few strings again and again."""
    try:
        return frozenset(bound_names(parse(source)))
    except (SyntaxError, ValueError):
        return frozenset()


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
        self._memo: dict[int, set[str]] = {}

    def _names(self, node: ast.AST) -> set[str]:
        """Every name used in `node`'s subtree, computed once per node (tests hold large literals)."""
        key = id(node)
        if key not in self._memo:
            names = {node.id} if isinstance(node, ast.Name) else set()
            for child in ast.iter_child_nodes(node):
                names |= self._names(child)
            self._memo[key] = names
        return self._memo[key]

    def _untrusted_names(self, node: ast.AST) -> set[str]:
        return self._names(node) - self.trusted - self.local

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
        used_local = self._names(node) & self.local
        if used_local:
            used_local -= _locally_bound(node)
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


def trusted_names(problem: Problem, completion: ast.AST) -> set[str]:
    """Builtins and the task's test imports, minus every name the completion or setup code binds."""
    imported = _bound_in_source("\n".join(problem.test_imports))
    shadowed = bound_names(completion) | _bound_in_source(problem.setup_code)
    return (_BUILTINS | imported) - shadowed


def split_task(problem: Problem, completion: str | ast.AST) -> TaskChecks:
    """All of a task's tests split for this completion (which builtins it shadows decides the split).
    `completion` is its source or, when the caller has parsed it already, its syntax tree."""
    tree = completion if isinstance(completion, ast.AST) else parse(completion)
    trusted = trusted_names(problem, tree)
    try:
        tests = tuple(split_test(line, trusted) for line in problem.tests)
    except UnsupportedTest as e:
        raise UnsupportedTest(f"task {problem.task_id}: {e}") from None
    return TaskChecks(task_id=problem.task_id, tests=tests)
