"""Every fenced ``bash`` / ``sh`` block of the README and the bundles' docs runs as written (issue 22, item 1).

The blocks are collected from ``README.md`` and ``bundles/*/docs/*.md`` and run with ``bash`` from the root of a
sandbox: a folder in ``tmp_path`` whose entries are symbolic links to the checkout's files (``scripts/``,
``modan_monai/``, each bundle's ``configs/`` ...), with real, empty folders where the commands write (the root,
``bundles/<name>/``), and ``../shared/datasets`` linked to the shared real datasets. A command therefore reads
what the checkout holds and writes nothing into it. All blocks share one sandbox and run in :data:`DOC_ORDER`, so
a block reads what an earlier one wrote (the pretraining docs' encoders feed the classify and segment docs).

A block whose first line is ``# illustrative: <why>`` is not run (a placeholder path such as ``/data/...``, a
GPU, a job of hours, a server); the mark is visible in the docs. Blocks that use ``../shared/datasets``, or what a
block on them writes, skip when the shared datasets are absent (a fresh clone).

What the test changes, and only this (``python -m monai.bundle run`` and the scripts take the LAST value of a
repeated option, so an appended setting overrides the documented one; the product has no test-only switch):

==================================================  ======================================================
command (the first matching row of :data:`SHRINK`)  appended
==================================================  ======================================================
pretrain ``monai.bundle run``, Adam-v2 DINO phase   ``--image_size 32 --batch_size 16`` (its ``--dino_epochs``
                                                    name the checkpoint the joint phase starts from)
pretrain ``monai.bundle run``, Adam-v2              ``--epochs 1 --image_size 32 --batch_size 16
                                                    --level_schedule "[[0, 1]]"``
pretrain ``monai.bundle run``, other methods        ``--epochs 1 --image_size 32 --batch_size 16``
classify ``monai.bundle run`` (training)            ``--epochs 1``
segment ``monai.bundle run`` (training)             ``--epochs 1 --image_size 64``
``scripts/run_cv.py`` at 20-32 px                   ``--epochs 1 --folds 2 --repeats 1``
``scripts/run_cv.py``                               ``--epochs 1 --folds 2 --repeats 1 --image-size 32``
``scripts/run_segmentation.py``                     ``--epochs 1 --few-shot 3 --seeds 0 --samples-per-epoch 4
                                                    --val-interval 1 --jobs 1 --image-size 32``
``scripts/build_manifest.py shared-pretrain``       ``--max-per-dataset 12``
``scripts/embed.py``                                ``--image-size 32``
``scripts/zero_shot.py``                            ``--max-images 4 --image-size 32 --load-size 64
                                                    --bootstrap-resamples 20``
``scripts/bench_pretrain_step.py``                  ``--rounds 1 --image_size 32 --batch_size 4``
==================================================  ======================================================

and :data:`REWRITE` replaces three kinds of command: the install (``python3 -m venv ... pip install ...``: CI
has just done it), the test suite itself (``python -m pytest tests``: CI's next step) and ``tensorboard --logdir
<dir>`` (a server that runs until stopped: ``test -d <dir>`` checks the folder it would read). A command that an
earlier block already ran, identical after these changes (same folder, same text up to blanks and
``--logging_file``), runs once: later blocks reuse its outputs.

The blocks run in a background thread from the start of the session (``tests/docs/conftest.py``), one after
another on one core, while the rest of the suite runs; each block's test waits for its result. Each block's
wall time is printed at the end of the session (shown with ``pytest -s``).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

#: documents in run order: producers first (the pretraining docs write the encoders the others read)
DOC_ORDER = (
    "bundles/pretrain/docs/data.md",
    "bundles/pretrain/docs/README.md",
    "bundles/pretrain/docs/reference.md",
    "bundles/segment/docs/README.md",
    "bundles/classify/docs/README.md",
    "README.md",
)
FENCE = re.compile(r"^```(bash|sh)\s*$")
ILLUSTRATIVE = re.compile(r"^#\s*illustrative:\s*(\S.*)$")

#: (pattern searched in "<folder>$ <command>", settings appended); the first match wins
SHRINK: tuple[tuple[str, str], ...] = (
    (r"bundles/pretrain\S*\$ .*monai\.bundle run.*adamv2_dino", "--image_size 32 --batch_size 16"),
    (
        r"bundles/pretrain\S*\$ .*monai\.bundle run.*adamv2",
        '--epochs 1 --image_size 32 --batch_size 16 --level_schedule "[[0, 1]]"',
    ),
    (r"bundles/pretrain\S*\$ .*monai\.bundle run .*configs/train\.json", "--epochs 1 --image_size 32 --batch_size 16"),
    (r"monai\.bundle run.*bundles/pretrain/configs/train\.json", "--epochs 1 --image_size 32 --batch_size 16"),
    (r"bundles/classify\S*\$ .*monai\.bundle run .*configs/train\.json(?!.*evaluate\.json)", "--epochs 1"),
    (r"bundles/segment\S*\$ .*monai\.bundle run .*configs/train\.json(?!.*evaluate\.json)", "--epochs 1 --image_size 64"),
    (r"scripts/run_cv\.py.* --image-size (2[0-9]|3[0-2])\b", "--epochs 1 --folds 2 --repeats 1"),
    (r"scripts/run_cv\.py", "--epochs 1 --folds 2 --repeats 1 --image-size 32"),
    (
        r"scripts/run_segmentation\.py",
        "--epochs 1 --few-shot 3 --seeds 0 --samples-per-epoch 4 --val-interval 1 --jobs 1 --image-size 32",
    ),
    (r"scripts/build_manifest\.py shared[-_]pretrain", "--max-per-dataset 12"),
    (r"scripts/embed\.py", "--image-size 32"),
    (r"scripts/zero_shot\.py", "--max-images 4 --image-size 32 --load-size 64 --bootstrap-resamples 20"),
    (r"scripts/bench_pretrain_step\.py", "--rounds 1 --image_size 32 --batch_size 4"),
)

#: (pattern, replacement, why): commands the test replaces; a replacement "" drops the command
REWRITE: tuple[tuple[str, str, str], ...] = (
    (r"^python3 -m venv \.venv && .*?pip install -e \S+ && ", "", "the install: CI has just run it (.ci/run)"),
    (r"^python -m pytest tests\b.*$", "", "the test suite itself: CI runs it"),
    (r"^tensorboard --logdir (\S+).*$", r"test -d \1", "a server: check the folder it would read"),
)

#: commands worth running once only (the rest: cd, export, variables, cat, test, are cheap and set state)
COSTLY = re.compile(r"^(python|torchrun)\b")


@dataclass(frozen=True)
class Block:
    """One fenced shell block of a doc."""

    doc: str
    line: int
    text: str

    @property
    def name(self) -> str:
        return f"{self.doc}:{self.line}"

    @property
    def illustrative(self) -> str | None:
        """The reason of the block's ``# illustrative: <why>`` first line, or ``None``."""
        lines = [line for line in self.text.splitlines() if line.strip()]
        match = ILLUSTRATIVE.match(lines[0].strip()) if lines else None
        return match.group(1) if match else None


def doc_files(root: Path = REPO) -> list[str]:
    """:data:`DOC_ORDER`, then any other ``bundles/*/docs/*.md`` (sorted)."""
    others = sorted(str(p.relative_to(root)) for p in root.glob("bundles/*/docs/*.md"))
    return [d for d in DOC_ORDER if (root / d).is_file()] + [d for d in others if d not in DOC_ORDER]


def collect_blocks(root: Path = REPO) -> list[Block]:
    """Every fenced ``bash`` / ``sh`` block of the docs, in run order."""
    blocks = []
    for doc in doc_files(root):
        lines = (root / doc).read_text(encoding="utf-8").splitlines()
        start = None
        for number, line in enumerate(lines, 1):
            if start is None and FENCE.match(line.strip()):
                start, body = number, []
            elif start is not None and line.strip().startswith("```"):
                blocks.append(Block(doc, start, "\n".join(body)))
                start = None
            elif start is not None:
                body.append(line)
        assert start is None, f"{doc}:{start}: fenced block never closed"
    return blocks


def strip_comment(line: str) -> str:
    """The line without its ``# comment`` (a ``#`` at the start or after a blank, outside quotes)."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def commands(text: str) -> list[str]:
    """The block's commands: continuation lines joined, comments and blank lines dropped."""
    found, pending = [], ""
    for raw in text.splitlines():
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        line = strip_comment(pending + raw)
        pending = ""
        if line.strip():
            found.append(line.strip())
    return found


def _split_cd(command: str, folder: str) -> tuple[str, str, bool]:
    """``(folder the command runs in, the command without leading cd's, whether it is a subshell)``."""
    subshell = command.startswith("(") and command.endswith(")")
    body = command[1:-1].strip() if subshell else command
    while True:
        match = re.match(r"^cd (\S+)(?:\s*&&\s*|\s*$)", body)
        if not match:
            return folder, body, subshell
        folder = os.path.normpath(os.path.join(folder, match.group(1)))
        body = body[match.end():]
        if not body:
            return folder, body, subshell


def shrink(command: str, folder: str) -> str:
    """The command with :data:`REWRITE` applied and :data:`SHRINK`'s settings appended."""
    for pattern, replacement, _ in REWRITE:
        command = re.sub(pattern, replacement, command)
    if not command:
        return command
    where, body, subshell = _split_cd(command, folder)
    for pattern, settings in SHRINK:
        if re.search(pattern, f"{where}$ {body}"):
            return f"{command[:-1].rstrip()} {settings})" if subshell else f"{command} {settings}"
    return command


def _key(folder: str, command: str) -> str:
    return folder + "$ " + " ".join(re.sub(r"--logging_file \S+", "", command).split())


def block_script(block: Block, seen: set[str]) -> str:
    """The bash script the test runs for a block; commands already in ``seen`` are left out (and ``seen`` grows)."""
    lines, folder = ["set -euo pipefail"], "."
    for command in commands(block.text):
        command = shrink(command, folder)
        if not command:
            continue
        where, body, subshell = _split_cd(command, folder)
        key = _key(where, body)
        if body and COSTLY.match(body) and key in seen:
            lines.append(f": already run by an earlier block: {shlex.quote(key)}")
            if not subshell and where != folder:
                lines.append(f"cd {shlex.quote(os.path.relpath(where, folder))}")
        else:
            if body and COSTLY.match(body):
                seen.add(key)
            lines.append(f"echo {shlex.quote('+ ' + command)} >&2")
            lines.append(command)
        if not subshell:
            folder = where
    return "\n".join(lines) + "\n"


#: entries of the checkout left out of the sandbox (outputs the docs' commands write, and git's own)
_NOT_LINKED = {".git", ".venv", "runs", "results", "manifests", "embeddings", "models", "outputs", "__pycache__"}


def build_sandbox(root: Path, shared: Path | None) -> Path:
    """``root/repo``: links to the checkout's files, real folders where commands write; ``root/shared/datasets``."""
    sandbox = root / "repo"
    sandbox.mkdir()
    for entry in REPO.iterdir():
        if entry.name in _NOT_LINKED or entry.name.startswith(".") or entry.name == "bundles":
            continue
        (sandbox / entry.name).symlink_to(entry)
    for bundle in (REPO / "bundles").iterdir():
        if not bundle.is_dir():
            (sandbox / "bundles").mkdir(exist_ok=True)
            (sandbox / "bundles" / bundle.name).symlink_to(bundle)
            continue
        (sandbox / "bundles" / bundle.name).mkdir(parents=True)
        for entry in bundle.iterdir():
            if entry.name not in {"models", "eval", "__pycache__"}:
                (sandbox / "bundles" / bundle.name / entry.name).symlink_to(entry)
    if shared is not None:
        (root / "shared").mkdir()
        (root / "shared" / "datasets").symlink_to(shared)
    return sandbox


BLOCKS = collect_blocks()
#: text that marks a block reading the shared datasets (bench_adamv2_gpu.py: its default --shared is them)
SHARED_READERS = ("../shared/datasets", "scripts/bench_adamv2_gpu.py")
_WRITES = re.compile(r"(?:^|\s)(?:-o|--out|--output_dir)\s+([^\s)]+)")


def needs_shared(blocks: list[Block]) -> set[str]:
    """Names of the blocks that read ``../shared/datasets``, or a file or folder such a block writes (transitively)."""
    found: set[str] = set()
    written: set[str] = set()
    changed = True
    while changed:
        changed = False
        for block in blocks:
            if block.name in found:
                continue
            text = _WRITES.sub(" ", block.text)  # what the block reads: its text less the paths it writes
            reads = any(marker in text for marker in SHARED_READERS) or any(
                re.search(re.escape(path.rstrip("/")) + r"(?![\w.-])", text) for path in written
            )
            if reads:
                found.add(block.name)
                written |= {m.strip("'\"") for c in commands(block.text) for m in _WRITES.findall(c)}
                changed = True
    return found


SHARED_BLOCKS = needs_shared(BLOCKS)


@dataclass
class BlockRun:
    """How a block ended: ``status`` ``ran`` / ``failed`` / ``illustrative`` / ``no shared``, with the details."""

    status: str
    reason: str = ""
    script: str = ""
    output: str = ""
    returncode: int = 0
    seconds: float | None = None


class BackgroundRunner:
    """Runs the selected blocks one after another in a thread, from the start of the session, while the rest of
    the suite runs (the blocks take one core: ``OMP_NUM_THREADS=1``); each test waits for its block's result.

    The blocks share one sandbox (module doc) with its own demo corpus folder (``MODAN_MONAI_DEMO_DIR``), so that
    nothing they write meets what other tests write at the same time.
    """

    def __init__(self, blocks: list[Block]) -> None:
        env = os.environ.get("MODAN_SHARED_DATASETS")
        shared = Path(env) if env else REPO.parent / "shared" / "datasets"
        self.have_shared = shared.is_dir()
        self.root = Path(tempfile.mkdtemp(prefix="modan_docs_"))
        self.sandbox = build_sandbox(self.root, shared if self.have_shared else None)
        self.blocks = blocks
        self.results: dict[str, BlockRun] = {}
        self.done = {block.name: threading.Event() for block in blocks}
        self.process: subprocess.Popen | None = None
        self.stopped = False
        self.thread = threading.Thread(target=self._run_all, name="doc-blocks", daemon=True)
        self.thread.start()

    def _run_all(self) -> None:
        seen: set[str] = set()
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1",
                   MODAN_MONAI_DEMO_DIR=str(self.root / "demo"))
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        for block in self.blocks:
            try:
                self.results[block.name] = self._run(block, seen, env)
            except Exception as err:  # noqa: BLE001 - reported by the block's test
                self.results[block.name] = BlockRun("failed", output=f"{type(err).__name__}: {err}", returncode=-1)
            finally:
                self.done[block.name].set()

    def _run(self, block: Block, seen: set[str], env: dict[str, str]) -> BlockRun:
        if block.illustrative:
            return BlockRun("illustrative", block.illustrative)
        if block.name in SHARED_BLOCKS and not self.have_shared:
            return BlockRun("no shared", "it reads ../shared/datasets or what a block on them writes: absent here")
        script = block_script(block, seen)
        if self.stopped:
            return BlockRun("failed", script=script, output="the session ended first", returncode=-1)
        start = time.perf_counter()
        self.process = subprocess.Popen(["bash", "-c", script], cwd=self.sandbox, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            output, _ = self.process.communicate(timeout=900)
        except subprocess.TimeoutExpired:
            self.stop()
            output, _ = self.process.communicate()
        elapsed = time.perf_counter() - start
        code = self.process.returncode
        return BlockRun("ran" if code == 0 else "failed", script=script, output=output, returncode=code,
                        seconds=elapsed)

    def result(self, block: Block) -> BlockRun:
        self.done[block.name].wait()
        return self.results[block.name]

    def stop(self) -> None:
        """Stop the running block (its whole process group) and the blocks after it."""
        self.stopped = True
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)

    def close(self, keep: bool) -> None:
        """Stop, print the wall times, and remove the sandbox unless ``keep``."""
        self.stop()
        self.thread.join(timeout=60)
        rows = ["| block | wall time (s) | run |", "|---|---|---|"]
        rows += [f"| {block.name} | {'' if run.seconds is None else f'{run.seconds:.1f}'} | {run.status} |"
                 for block in self.blocks if (run := self.results.get(block.name))]
        total = sum(run.seconds or 0.0 for run in self.results.values())
        print("\n" + "\n".join(rows) + f"\n\ntotal run: {total:.1f} s\n")
        if not keep:
            shutil.rmtree(self.root, ignore_errors=True)


#: the session's runner (started by ``tests/docs/conftest.py`` once the blocks to run are known)
RUNNER: BackgroundRunner | None = None


def start_runner(blocks: list[Block]) -> BackgroundRunner:
    """Start running ``blocks`` (in :data:`BLOCKS` order) in the background; called once per session."""
    global RUNNER
    RUNNER = BackgroundRunner(sorted(set(blocks), key=BLOCKS.index))
    return RUNNER


@pytest.mark.parametrize("block", BLOCKS, ids=[b.name for b in BLOCKS])
def test_doc_block_runs(block: Block) -> None:
    """The block runs with bash from the sandbox root and exits 0 (shrunk as the module doc says)."""
    runner = RUNNER if RUNNER is not None and block.name in RUNNER.done else start_runner([block])
    run = runner.result(block)
    if run.status == "illustrative":
        pytest.skip(f"{block.name} is illustrative: {run.reason}")
    if run.status == "no shared":
        pytest.skip(f"{block.name} {run.reason}")
    assert run.returncode == 0, (
        f"{block.name}: the block fails as written (exit {run.returncode}); the script run:\n{run.script}\n"
        f"--- output (last 6000 characters) ---\n{run.output[-6000:]}"
    )


def test_the_runner_reports_a_failing_block_with_its_output() -> None:
    """A block that exits non-zero is reported with its exit status and output; illustrative ones are not run."""
    failing = Block("docs/example.md", 3, "echo written > out.txt\necho broken >&2\nexit 3")
    shown = Block("docs/example.md", 9, "# illustrative: a placeholder path\nexit 1")
    runner = BackgroundRunner([failing, shown])
    try:
        run = runner.result(failing)
        assert (run.status, run.returncode) == ("failed", 3) and "broken" in run.output
        assert (runner.sandbox / "out.txt").read_text() == "written\n"  # it ran from the sandbox root
        assert runner.result(shown).status == "illustrative"
    finally:
        runner.close(keep=False)
    assert not runner.root.exists()


def test_every_table_row_reaches_a_documented_command() -> None:
    """No dead row in :data:`SHRINK` or :data:`REWRITE`: each one changes a command of a block that runs."""
    used_shrink, used_rewrite = set(), set()
    for block in BLOCKS:
        if block.illustrative:
            continue
        folder = "."
        for command in commands(block.text):
            used_rewrite |= {i for i, (pattern, _, _) in enumerate(REWRITE) if re.search(pattern, command)}
            for pattern, replacement, _ in REWRITE:
                command = re.sub(pattern, replacement, command)
            where, body, subshell = _split_cd(command, folder)
            for i, (pattern, _) in enumerate(SHRINK):
                if body and re.search(pattern, f"{where}$ {body}"):
                    used_shrink.add(i)
                    break
            if not subshell:
                folder = where
    assert used_rewrite == set(range(len(REWRITE))), [REWRITE[i] for i in set(range(len(REWRITE))) - used_rewrite]
    assert used_shrink == set(range(len(SHRINK))), [SHRINK[i] for i in set(range(len(SHRINK))) - used_shrink]


# --- the files, folders and config ids the docs quote exist (cheap: no command runs) ---------------------------------

#: a quoted path: starts at one of the checkout's folders (or ``configs/`` of a bundle)
QUOTED_PATH = re.compile(
    r"(?<![\w./<-])((?:\.\./)*(?:bundles|scripts|configs|modan_monai|data_manifests|tests)/[\w.*/-]*[\w*])"
)
#: folders the docs' commands write: a path through one of them is an output, not a file of the checkout
OUTPUT_PARTS = {"models", "eval", "runs", "results", "embeddings", "manifests", "logs", "models_busi3", "models_cxr14"}
#: quoted names that are not files or modules of the checkout on purpose, and why
NOT_IN_CHECKOUT = {
    "configs/....json": "MONAI's message for a misspelt override file",
    "modan_monai.encoder.v1": "the encoder checkpoint's format tag",
    "bundles/modan_pretrain": "the former name of bundles/pretrain",
    "bundles/mlvicx_pretrain": "the former name of bundles/pretrain with configs/mlvicx.json",
}
DOTTED = re.compile(r"(?<![\w.])(modan_monai(?:\.\w+)+)")
MARKDOWN_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def _inline_code(text: str) -> list[str]:
    """The text of the doc's fenced blocks and inline code spans."""
    spans = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
    spans += re.findall(r"`([^`\n]+)`", re.sub(r"```[a-z]*\n.*?```", "", text, flags=re.S))
    return spans


def _path_exists(path: str, bases: list[Path]) -> bool:
    return any(list(base.glob(path)) if "*" in path else (base / path).exists() for base in bases)


def test_quoted_paths_exist() -> None:
    """Every checkout path quoted in code (``scripts/x.py``, ``configs/x.json``, ``bundles/...``, ``tests/...``),
    every ``modan_monai.<name>`` and every relative Markdown link of the docs exists."""
    bundles = [p for p in (REPO / "bundles").iterdir() if p.is_dir()]
    missing, all_text = [], ""
    for doc in doc_files():
        path = REPO / doc
        text = path.read_text(encoding="utf-8")
        all_text += text
        own = [path.parents[1]] if doc.startswith("bundles/") else []
        for span in _inline_code(text):
            for quoted in QUOTED_PATH.findall(span):
                if quoted in NOT_IN_CHECKOUT:
                    continue
                quoted = quoted.rstrip(".")
                if OUTPUT_PARTS & set(Path(quoted).parts) or quoted.endswith((".csv", ".pt", ".ts")):
                    continue
                bases = [REPO, *own, *(own[0].parent / b.name for b in bundles)] if own else [REPO, *bundles]
                if quoted.startswith("../"):
                    bases = [REPO / "bundles" / b.name for b in bundles] + [REPO / "bundles" / b.name / "docs" for b in bundles]
                if not _path_exists(quoted, bases):
                    missing.append(f"{doc}: `{quoted}`")
            for dotted in DOTTED.findall(span):
                if dotted not in NOT_IN_CHECKOUT and not _importable(dotted):
                    missing.append(f"{doc}: `{dotted}`")
        for link in MARKDOWN_LINK.findall(text):
            if "://" not in link and not link.startswith("mailto:") and not (path.parent / link).exists():
                missing.append(f"{doc}: link ({link})")
    stale = [name for name in NOT_IN_CHECKOUT if name not in all_text]
    assert not stale, f"NOT_IN_CHECKOUT names no doc quotes any more: {stale}"
    assert not missing, "the docs quote files / names that do not exist:\n" + "\n".join(missing)


def _importable(dotted: str) -> bool:
    """``modan_monai.a.b.C``: the longest importable module prefix has the remaining attributes."""
    import importlib

    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            if not hasattr(target, name):
                return False
            target = getattr(target, name)
        return True
    return False


def _bundle_runs() -> Iterator[tuple[Block, str, str]]:
    """``(block, folder, command)`` of every ``monai.bundle run`` in the docs' blocks, illustrative ones included;
    ``$NAME`` set by a ``NAME="..."`` line of the block is expanded."""
    for block in BLOCKS:
        folder, variables = ".", {}
        for command in commands(block.text):
            assignment = re.match(r'^(\w+)="([^"]*)"$', command)
            if assignment:
                variables[assignment.group(1)] = assignment.group(2)
                continue
            subshell = command.startswith("(") and command.endswith(")")
            where = folder
            for part in (command[1:-1] if subshell else command).split(" && "):
                where, body, _ = _split_cd(part.strip(), where)
                if "monai.bundle run" in body:
                    for name, value in variables.items():
                        body = body.replace(f"${name}", value)
                    yield block, where, body
            if not subshell:
                folder = where


def _run_arguments(body: str) -> tuple[str | None, dict[str, object]]:
    """``(--config_file value, {id: value})`` of a ``monai.bundle run`` command, values parsed as fire parses them."""
    from fire.parser import DefaultParseValue

    words = shlex.split(body)
    words = words[words.index("run") + 1:]
    arguments: dict[str, object] = {}
    for i, word in enumerate(words):
        if word.startswith("--"):
            value = words[i + 1] if i + 1 < len(words) and not words[i + 1].startswith("--") else "True"
            arguments[word[2:]] = DefaultParseValue(value)
    return arguments.pop("config_file", None), arguments


def test_bundle_run_overrides_are_config_ids() -> None:
    """Each ``--<id>`` given to ``python -m monai.bundle run`` in the docs is an id of the config files that command
    loads, with a value of its type (``modan_monai.bundle.check_overrides``, which the bundles run at start-up)."""
    from monai.bundle import ConfigParser

    from modan_monai.bundle.overrides import check_overrides

    checked, errors = 0, []
    for block, folder, body in _bundle_runs():
        config_file, overrides = _run_arguments(body)
        assert config_file is not None, f"{block.name}: a monai.bundle run without --config_file: {body}"
        root = REPO / str(overrides.get("bundle_root", folder))
        files = [REPO / folder / f for f in (config_file if isinstance(config_file, list) else [config_file])]
        absent = [str(f.relative_to(REPO)) for f in files if not f.is_file()]
        if absent:
            errors.append(f"{block.name}: {body}\n    config files not found from {folder}: {absent}")
            continue
        parser = ConfigParser()
        parser.read_config([str(f) for f in files])
        new_ids = parser.get("new_ids") or []
        try:
            check_overrides([str(f) for f in files], overrides, new_ids)
        except ValueError as error:
            errors.append(f"{block.name}: {body}\n    {error}")
        checked += 1
        assert root.is_dir(), f"{block.name}: bundle_root {root} is not a folder"
    assert checked >= 10, f"only {checked} monai.bundle run commands found in the docs"
    assert not errors, "\n".join(errors)
