"""Split MBPP asserts into the calls the sandbox makes and the check the trusted side evaluates.

`assert math.isclose(f(x), 3.0, rel_tol=1e-3)` becomes the cut `f(x)` (evaluated in the sandbox; its value
comes back as plain data) and the trusted check `math.isclose(_mbpp_v0, 3.0, rel_tol=1e-3)`, evaluated here
with this process's own `math`. Which names are the completion's is decided by the task alone, never by the
completion: the names the task's reference solution defines at its top level (its functions and classes,
`sum` in task 126 included) and every name its setup code binds. Every other name of a test (builtins, the
task's test imports, modules the reference imports) resolves on the trusted side to the trusted side's own
object, whatever the completion binds or patches, so no expected value and no comparison ever runs where the
completion could touch it.

The rule, applied top-down to the assert's expression:
  - a subexpression without the completion's names stays trusted (expected values, `set(...)`, `sys.getsizeof`);
  - a call of one of the completion's names (`f(x)`, `Pair(1, 2).area()`), or such a name or attribute on its
    own, is cut out whole: the sandbox evaluates it, arguments included (an argument only ever reaches the
    completion's own code, whose result it decides anyway), and only the resulting value crosses back;
  - everything around the cuts (comparisons, `not`/`and`/`or`, arithmetic, containers, trusted calls) is the
    check. A cut whose value only matters for its truth (a bare `assert f(x)`, the operand of `not`, of
    `and`/`or` in such a place) sends back just `bool(value)`: plain Python needs no more, and values that are
    no data (an `re.Match`) then pass exactly as they would in plain Python.
Tests the rule cannot split raise UnsupportedTest and the task is scored `error`, never `passed`: statements
other than a single `assert`, and the completion's names inside a comprehension or lambda of the test (their
variables only exist where the test runs). MBPP's full and sanitized test lists need no fallback.
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
_SCOPES = (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


class UnsupportedTest(ValueError):
    """A test line this module cannot split into cuts and a trusted check."""


@dataclass(frozen=True)
class Cut:
    source: str  # evaluated in the sandbox
    truth: bool  # only bool(value) is needed


@dataclass(frozen=True)
class SplitTest:
    source: str  # the original assert line
    cuts: tuple[Cut, ...]  # evaluated in the sandbox, in order
    check: str  # evaluated here, with _mbpp_v{i} bound to the decoded value of cuts[i]


@dataclass(frozen=True)
class TaskChecks:
    task_id: int
    tests: tuple[SplitTest, ...]
    trusted_imports: tuple[str, ...]  # import lines the trusted side runs before its checks

    @property
    def cuts(self) -> tuple[Cut, ...]:
        """Every cut of the task, in test order (what the sandbox evaluates)."""
        return tuple(c for t in self.tests for c in t.cuts)


def parse(source: str) -> ast.Module:
    """ast.parse, quiet about invalid escapes and such (generated code is the completion's business)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ast.parse(source)


def _top_level(stmts: list[ast.stmt]):
    """Statements run at module level: into if/for/while/try/with bodies, not into functions or classes."""
    for stmt in stmts:
        yield stmt
        if not isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            for field in ("body", "orelse", "finalbody"):
                yield from _top_level(getattr(stmt, field, []))
            for handler in getattr(stmt, "handlers", []):
                yield from _top_level(handler.body)


def _import_names(stmt: ast.Import | ast.ImportFrom) -> set[str]:
    return {(a.asname or a.name).split(".")[0] for a in stmt.names}


def defined_names(source: str) -> set[str]:
    """Names `source` binds at module level other than by importing (functions, classes, assignments)."""
    names: set[str] = set()
    for stmt in _top_level(parse(source).body):
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(stmt.name)
        elif not isinstance(stmt, (ast.Import, ast.ImportFrom)):
            targets = [n for n in ast.walk(stmt) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)]
            names.update(n.id for n in targets)
    return names


def bound_names(source: str) -> set[str]:
    """Every name `source` binds at module level, imports included."""
    imported = {n for s in _top_level(parse(source).body) if isinstance(s, (ast.Import, ast.ImportFrom))
                for n in _import_names(s)}
    return defined_names(source) | imported


def _used_imports(source: str, used: set[str]) -> list[str]:
    """`source`'s module-level import statements that bind a name in `used`, as lines."""
    lines = []
    for stmt in _top_level(parse(source).body):
        if isinstance(stmt, (ast.Import, ast.ImportFrom)) and _import_names(stmt) & used:
            lines.append(ast.unparse(stmt))
    return lines


class _Splitter:
    def __init__(self, completion_names: frozenset[str]):
        self.completion_names = completion_names
        self.cuts: list[Cut] = []
        self._memo: dict[int, frozenset[str]] = {}

    def _names(self, node: ast.AST) -> frozenset[str]:
        """Every name used in `node`'s subtree, computed once per node (tests hold large literals)."""
        key = id(node)
        if key not in self._memo:
            names = {node.id} if isinstance(node, ast.Name) else set()
            for child in ast.iter_child_nodes(node):
                names |= self._names(child)
            self._memo[key] = frozenset(names)
        return self._memo[key]

    def _theirs(self, node: ast.AST) -> bool:
        return bool(self._names(node) & self.completion_names)

    def split(self, node: ast.expr, truth: bool) -> ast.expr:
        if not self._theirs(node):
            return node
        if isinstance(node, ast.Name) or (isinstance(node, ast.Call) and self._theirs(node.func)):
            return self._cut(node, truth)
        if isinstance(node, ast.Attribute) and isinstance(_chain_root(node), ast.Name):
            return self._cut(node, truth)
        if isinstance(node, _SCOPES):
            raise UnsupportedTest(f"{ast.unparse(node)!r} calls the completion inside a comprehension or lambda")
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            node.operand = self.split(node.operand, True)
        elif isinstance(node, ast.BoolOp):
            node.values = [self.split(v, truth) for v in node.values]
        elif isinstance(node, ast.IfExp):
            node.test = self.split(node.test, True)
            node.body, node.orelse = self.split(node.body, truth), self.split(node.orelse, truth)
        else:
            self._split_children(node)
        return node

    def _split_children(self, node: ast.AST) -> None:
        for field, value in ast.iter_fields(node):
            if isinstance(value, ast.expr):
                setattr(node, field, self.split(value, False))
            elif isinstance(value, list):
                for i, item in enumerate(value):
                    if isinstance(item, ast.expr):
                        value[i] = self.split(item, False)
                    elif isinstance(item, ast.keyword):
                        item.value = self.split(item.value, False)

    def _cut(self, node: ast.expr, truth: bool) -> ast.Name:
        self.cuts.append(Cut(ast.unparse(node), truth))
        return ast.Name(id=f"{VALUE_PREFIX}{len(self.cuts) - 1}", ctx=ast.Load())


def _chain_root(node: ast.expr) -> ast.expr:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node


def split_test(line: str, completion_names: frozenset[str]) -> SplitTest:
    """Split one assert line; `completion_names` are the names whose values live in the sandbox."""
    try:
        tree = ast.parse(line.strip())
    except SyntaxError as e:
        raise UnsupportedTest(f"{line!r}: not valid Python ({e.msg})") from None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Assert):
        raise UnsupportedTest(f"{line!r}: not a single assert statement")
    splitter = _Splitter(completion_names)
    check = splitter.split(tree.body[0].test, True)
    return SplitTest(source=line, cuts=tuple(splitter.cuts), check=ast.unparse(check))


@functools.lru_cache(maxsize=4096)
def split_task(problem: Problem) -> TaskChecks:
    """All of a task's tests split by the task's own code (see the module docstring); the same for every
    completion of the task."""
    try:
        theirs = defined_names(problem.code) | bound_names(problem.setup_code)
    except (SyntaxError, ValueError, RecursionError) as e:
        raise UnsupportedTest(f"task {problem.task_id}: its own code does not parse ({e})") from None
    used = {n.id for line in problem.tests for n in ast.walk(_parse_test(line)) if isinstance(n, ast.Name)}
    test_imports = set().union(*(bound_names(line) for line in problem.test_imports))
    reference_imports = _used_imports(problem.code, used - test_imports - theirs)
    trusted = (_BUILTINS | test_imports | set().union(*(bound_names(x) for x in reference_imports))) - theirs
    # A name that nothing trusted binds can only be the completion's (or a NameError, raised in the sandbox).
    completion_names = frozenset(used - trusted)
    try:
        tests = tuple(split_test(line, completion_names) for line in problem.tests)
    except UnsupportedTest as e:
        raise UnsupportedTest(f"task {problem.task_id}: {e}") from None
    return TaskChecks(problem.task_id, tests, tuple(problem.test_imports) + tuple(reference_imports))


def _parse_test(line: str) -> ast.AST:
    try:
        return ast.parse(line.strip())
    except SyntaxError:
        return ast.Module(body=[], type_ignores=[])  # split_test names the bad line
