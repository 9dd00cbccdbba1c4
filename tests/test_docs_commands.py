"""Every command in README.md and docs/*.md runs as written: each fenced ```bash / ```sh / ```console block is
run by bash with `set -eo pipefail` (a failing line, or a pipe whose producer fails, fails its test), in a scratch
copy of the repository with its own $HOME, so nothing lands in the checkout or in your home.

A block that cannot run here says so in an HTML comment right before it (invisible on GitHub). Every marker
gives its reason after the kind:

    <!-- doc-test: skip: needs Euler (module, sbatch) -->
    <!-- doc-test: dry-run: the demo trains for ~4 minutes -->        the block as written, but `snakemake` is
                                                                       `snakemake -n` and `make` is `make -n`
    <!-- doc-test: setup: the config the block names                  these commands first, then the block
    cp tests/configs/tiny.yaml my_study.yaml
    -->
    <!-- doc-test: run-as: needs a finished sweep, so the tiny one    these commands instead of the block
    snakemake --report report.html --configfile tests/configs/tiny.yaml
    -->

In a marker's commands $TINY_SWEEP is the folder of a finished sweep of tests/configs/tiny.yaml (the session's
`tiny_sweep`, conftest.py), for commands that need results. The blocks of one document share one scratch copy,
in document order, as a reader's shell would; a block whose commands need files from earlier ones makes them in
its `setup`, so it also runs alone (`-k README.md:63`).
Blocks in any other language are not run, and a block with no language is an error (a command could hide in it).
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import ROOT, copy_repository

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_LANGUAGES = {"bash", "sh", "console"}
KINDS = {"skip", "dry-run", "setup", "run-as"}
# What a dry-run block's commands mean: everything else runs for real.
DRY_RUN = 'snakemake() { command snakemake -n "$@"; }\nmake() { command make -n "$@"; }\n'
BLOCK_TIMEOUT_S = 600


class DocTestError(ValueError):
    """A document's blocks or markers break the rules above."""


@dataclass
class Marker:
    kind: str
    reason: str
    body: str
    line: int


@dataclass
class Block:
    doc: str
    line: int  # of the opening fence, 1-based
    language: str
    text: str
    markers: list[Marker] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"

    def marker(self, kind: str) -> Marker | None:
        return next((m for m in self.markers if m.kind == kind), None)

    def commands(self) -> str:
        if self.language == "console":  # prompts are commands, the rest is output
            return "\n".join(line[2:] for line in self.text.splitlines() if line.startswith("$ "))
        return self.text

    def script(self) -> str | None:
        """What bash runs for this block, or None for a skipped one."""
        if self.marker("skip"):
            return None
        parts = ["set -eo pipefail"]
        if setup := self.marker("setup"):
            parts.append(setup.body)
        if self.marker("dry-run"):
            parts.append(DRY_RUN)
        run_as = self.marker("run-as")
        parts.append(run_as.body if run_as else self.commands())
        return "\n".join(parts) + "\n"


def parse_marker(comment: str, line: int, doc: str) -> Marker:
    first, _, body = comment.partition("\n")
    kind, sep, reason = first.removeprefix("doc-test:").strip().partition(":")
    kind, reason = kind.strip(), reason.strip()
    if kind not in KINDS or not sep:
        raise DocTestError(f"{doc}:{line}: unknown doc-test marker {first!r}; expected one of {sorted(KINDS)}")
    if not reason:
        raise DocTestError(f"{doc}:{line}: doc-test {kind} marker without a reason")
    if kind in {"setup", "run-as"} and not body.strip():
        raise DocTestError(f"{doc}:{line}: doc-test {kind} marker without commands")
    return Marker(kind, reason, body.strip("\n"), line)


def parse(text: str, doc: str) -> list[Block]:
    """The fenced blocks of a Markdown text, each with the doc-test markers right before it."""
    lines = text.splitlines()
    blocks: list[Block] = []
    pending: list[Marker] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith("<!-- doc-test:"):
            start = i
            while "-->" not in lines[i]:
                i += 1
                if i == len(lines):
                    raise DocTestError(f"{doc}:{start + 1}: doc-test marker never closed with -->")
            comment = "\n".join(lines[start:i + 1]).strip().removeprefix("<!--").removesuffix("-->").strip()
            pending.append(parse_marker(comment, start + 1, doc))
        elif line.startswith("```"):
            language = line[3:].strip()
            start = i
            i += 1
            while i < len(lines) and lines[i].strip() != "```":
                i += 1
            if i == len(lines):
                raise DocTestError(f"{doc}:{start + 1}: code block never closed")
            blocks.append(Block(doc, start + 1, language, "\n".join(lines[start + 1:i]), pending))
            pending = []
        elif line.strip() and pending:
            raise DocTestError(f"{doc}:{pending[0].line}: doc-test marker not right before a code block")
        i += 1
    if pending:
        raise DocTestError(f"{doc}:{pending[0].line}: doc-test marker not right before a code block")
    for block in blocks:
        check(block)
    return blocks


def check(block: Block) -> None:
    if not block.language:
        raise DocTestError(f"{block.id}: code block without a language: ```bash to run it, ```text if it is none")
    kinds = [m.kind for m in block.markers]
    if block.markers and block.language not in SHELL_LANGUAGES:
        raise DocTestError(f"{block.id}: doc-test marker on a {block.language} block, which is never run")
    if len(kinds) != len(set(kinds)) or sum(k in kinds for k in ("skip", "dry-run", "run-as")) > 1:
        raise DocTestError(f"{block.id}: conflicting doc-test markers {kinds}")
    if "skip" in kinds and "setup" in kinds:
        raise DocTestError(f"{block.id}: a skipped block needs no setup")


def shell_blocks() -> list[Block]:
    return [b for doc in DOCS for b in parse(doc.read_text(), doc.relative_to(ROOT).as_posix())
            if b.language in SHELL_LANGUAGES]


def run_script(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=BLOCK_TIMEOUT_S)


@pytest.fixture(scope="session")
def scratch(tmp_path_factory, shared):
    """One scratch copy of the repository per document, with a $HOME of its own, and the environment its blocks
    run in: the copy's library first on PYTHONPATH, no Slurm account, the test data where the README says."""
    copies: dict[str, tuple[Path, dict[str, str]]] = {}

    def workspace(doc: str) -> tuple[Path, dict[str, str]]:
        if doc not in copies:
            base = tmp_path_factory.mktemp("doc-" + re.sub(r"\W", "-", doc))
            repo = copy_repository(base / "metatune")
            (base / "home").mkdir()
            env = {k: v for k, v in os.environ.items()
                   if k not in {"METATUNE_SLURM_ACCOUNT", "XDG_CONFIG_HOME", "PYTHONPATH"}}
            env |= {"HOME": str(base / "home"), "PYTHONPATH": str(repo / "src"), "METATUNE_SHARED_DATA": str(shared)}
            copies[doc] = (repo, env)
        return copies[doc]

    return workspace


def checkout_files() -> str:
    """Every file git sees in the checkout, ignored ones included: a block must add or change none."""
    proc = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "--ignored"], cwd=ROOT,
                          capture_output=True, text=True)
    return proc.stdout if proc.returncode == 0 else ""  # not a git checkout: nothing to compare


@pytest.mark.parametrize("block", shell_blocks(), ids=lambda b: b.id)
def test_doc_block_runs(block: Block, scratch, request):
    script = block.script()
    if script is None:
        pytest.skip(block.marker("skip").reason)
    repo, env = scratch(block.doc)
    if "$TINY_SWEEP" in script:  # built only for the blocks that ask for it
        env = env | {"TINY_SWEEP": str(request.getfixturevalue("tiny_sweep"))}
    before = checkout_files()
    proc = run_script(script, repo, env)
    assert checkout_files() == before, f"{block.id} wrote into the checkout"
    assert proc.returncode == 0, (f"{block.id} failed ({proc.returncode}):\n{script}\n--- stdout\n"
                                  f"{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-5000:]}")


# The mechanism itself.

def test_a_pipe_whose_producer_fails_fails(tmp_path):
    block = parse("```bash\nfalse | cat > out.txt\necho after\n```\n", "x.md")[0]
    proc = run_script(block.script(), tmp_path, dict(os.environ))
    assert proc.returncode != 0 and "after" not in proc.stdout


def test_dry_run_turns_snakemake_and_make_into_their_dry_runs(tmp_path):
    block = parse("<!-- doc-test: dry-run: slow -->\n```bash\ntype snakemake make\n```\n", "x.md")[0]
    proc = run_script(block.script(), tmp_path, dict(os.environ))
    assert proc.returncode == 0 and "command snakemake -n" in proc.stdout and "command make -n" in proc.stdout


def test_setup_runs_first_and_run_as_replaces_the_block(tmp_path):
    text = ("<!-- doc-test: setup: the file it reads\necho hello > in.txt\n-->\n"
            "<!-- doc-test: run-as: the real one needs a cluster\ncat in.txt\n-->\n\n```bash\nsbatch job.sh\n```\n")
    block = parse(text, "x.md")[0]
    proc = run_script(block.script(), tmp_path, dict(os.environ))
    assert proc.returncode == 0 and proc.stdout == "hello\n"


def test_console_blocks_run_their_prompts_only():
    block = parse("```console\n$ echo hi\nhi\n$ true\n```\n", "x.md")[0]
    assert block.commands() == "echo hi\ntrue"


@pytest.mark.parametrize("text, error", [
    ("<!-- doc-test: skip -->\n```bash\nx\n```\n", "unknown doc-test marker"),
    ("<!-- doc-test: skip:   -->\n```bash\nx\n```\n", "without a reason"),
    ("<!-- doc-test: run-as: slow -->\n```bash\nx\n```\n", "without commands"),
    ("<!-- doc-test: skipp: typo -->\n```bash\nx\n```\n", "unknown doc-test marker"),
    ("<!-- doc-test: skip: why -->\nsome prose\n```bash\nx\n```\n", "not right before a code block"),
    ("<!-- doc-test: skip: why -->\n", "not right before a code block"),
    ("```\nmake demo\n```\n", "without a language"),
    ("<!-- doc-test: skip: why -->\n```yaml\na: 1\n```\n", "never run"),
    ("<!-- doc-test: skip: a -->\n<!-- doc-test: dry-run: b -->\n```bash\nx\n```\n", "conflicting"),
    ("```bash\nx\n", "never closed"),
])
def test_bad_markup_is_an_error(text, error):
    with pytest.raises(DocTestError, match=error):
        parse(text, "x.md")


def test_every_skipped_block_says_why():
    skipped = [b for b in shell_blocks() if b.marker("skip")]
    assert all(b.marker("skip").reason for b in skipped)
    assert len(skipped) < len(shell_blocks()) / 2, "most documented commands must really run"
