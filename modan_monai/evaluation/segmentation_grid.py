"""Few-shot segmentation experiments: the segment bundle over inits x training-set sizes x seeds, and the table.

Adam-v2 (``../shared/papers``, JSRT heart / clavicle few-shot) and MLVICX compare encoders by training a U-Net
on 3, 6, 12, 24 (or all) labelled images. Every run here is the segment bundle's ``run``
(``monai.bundle.run``, what ``python -m monai.bundle run`` calls) of ``bundles/segment/configs/train.json``
followed by its ``evaluate.json`` on the test split. Runs go to a pool of ``jobs`` worker processes (spawned once,
so each pays the MONAI / torch import once, not every run), each run logging into its own ``run.log``, which also
holds the equivalent ``python -m monai.bundle run`` commands; a failed run names its log file. Each run's
``metrics.csv`` becomes one row of ``results.csv``; a rerun skips the rows already there, so an interrupted grid
resumes.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import signal
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from modan_monai.networks.nets.flexunet_encoders import check_unet_image_size
from modan_monai.networks.registry import build_encoder
from modan_monai.utils import atomic_append_text, safe_file_name

__all__ = [
    "SEGMENTATION_RESULT_COLUMNS",
    "SegmentationRun",
    "bundle_cli_value",
    "plan_runs",
    "run_grid",
    "segmentation_markdown",
    "segmentation_summary",
]

logger = logging.getLogger(__name__)

#: leading columns of ``results.csv``; ``test_mean_dice`` and one ``test_dice_<structure>`` per structure follow.
SEGMENTATION_RESULT_COLUMNS: tuple[str, ...] = ("init", "init_spec", "arch", "n_train", "seed")


@dataclass(frozen=True)
class SegmentationRun:
    """One training run of the segment bundle.

    Attributes:
        init: init name (table row), e.g. ``"mlvicx"``.
        spec: ``scratch``, ``imagenet:<file>`` or an encoder / training checkpoint path.
        arch: registered encoder architecture (``resnet18``, ``cb_resnet18``, ...), as the registry reads it from
            the checkpoint.
        n_train: few-shot training cases, or ``None`` for the whole training split.
        seed: subset and training seed.
        stem: encoder stem passed to the bundle (the checkpoint's, or the one asked for).
    """

    init: str
    spec: str
    arch: str
    n_train: int | None
    seed: int
    stem: str | None = None

    @property
    def name(self) -> str:
        """Folder name of the run: ``<init>/n<k>_s<seed>`` (``nall`` for the whole split), the init name made a safe
        file name (:func:`~modan_monai.utils.safe_file_name`)."""
        init = safe_file_name(self.init, fallback="init")
        return f"{init}/n{'all' if self.n_train is None else self.n_train}_s{self.seed}"


def plan_runs(
    inits: Mapping[str, str],
    few_shot: Sequence[int | None],
    seeds: Sequence[int],
    stem: str | None = None,
    image_size: int | None = None,
) -> list[SegmentationRun]:
    """All runs of the grid, each init's encoder built once by the registry to read its architecture and stem.

    Building the U-Net backbone of every init before any run starts (cheap: no training) makes a checkpoint that
    does not fit fail here, naming the file and keys, instead of in each run's log.

    Args:
        inits: init name -> spec (see :func:`modan_monai.evaluation.parse_init_specs`).
        few_shot: training-set sizes; ``None`` for the whole training split.
        seeds: seeds (each size is drawn once per seed; the subsets of one seed are nested).
        stem: encoder stem for every init; ``None``: each checkpoint's (``"3x3"`` for ``scratch`` / ImageNet).
        image_size: the runs' image size, checked against each init's U-Net (a multiple of 16 for the 3x3 stem,
            32 for the 7x7 stem); ``None``: not checked here.

    Returns:
        Runs ordered by seed, size, init (so a partial grid has every init at the sizes it reached).

    Raises:
        FileNotFoundError: a checkpoint that does not exist.
        ValueError: a checkpoint whose weights do not fit its (or the asked) architecture and stem, or an
            ``image_size`` the U-Net of an init cannot take (naming the init, the size and the multiple).
    """
    encoders: dict[str, tuple[str, str | None]] = {}
    for name, spec in inits.items():
        encoder = build_encoder(spec, unet_backbone=True, stem=stem, logger=logger)
        if image_size is not None:
            try:
                check_unet_image_size(encoder, image_size)
            except ValueError as err:
                raise ValueError(f"init {name} ({spec}): {err}") from err
        encoders[name] = (encoder.init_report["arch"], getattr(encoder, "stem", None))
    return [
        SegmentationRun(name, inits[name], encoders[name][0], n, seed, stem=encoders[name][1])
        for seed, n, name in itertools.product(seeds, few_shot, inits)
    ]


def bundle_cli_value(value: Any) -> str:
    """A config value as a ``python -m monai.bundle run --<id> <value>`` argument.

    monai.bundle's CLI parses override values with fire as Python literals: lists, dicts, None and numbers go as
    their repr, strings (paths, names) as they are.
    """
    return repr(value) if not isinstance(value, str) else value


def _bundle_args(run: SegmentationRun, bundle: Path, out: Path, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The bundle ids of one run."""
    return {
        **overrides,
        "init": run.spec,
        "arch": run.arch,
        **({"stem": run.stem} if run.stem is not None else {}),
        "few_shot": run.n_train,
        "seed": run.seed,
        "output_dir": str(out),
        "bundle_root": str(bundle),
    }


def _config_files(bundle: Path) -> list[list[str]]:
    """Config files of the two steps of a run: train, then evaluate on the test split."""
    configs = bundle / "configs"
    return [[str(configs / "train.json")], [str(configs / "train.json"), str(configs / "evaluate.json")]]


def _commands(run: SegmentationRun, bundle: Path, out: Path, overrides: Mapping[str, Any]) -> list[list[str]]:
    """The ``python -m monai.bundle run`` commands equivalent to one run (written into its ``run.log``)."""
    args = _bundle_args(run, bundle, out, overrides)
    flags = [item for key, value in args.items() for item in (f"--{key}", bundle_cli_value(value))]
    base = [sys.executable, "-m", "monai.bundle", "run", "--logging_file", str(bundle / "configs" / "logging.conf")]
    return [
        base + ["--config_file", files[0] if len(files) == 1 else str(files)] + flags for files in _config_files(bundle)
    ]


def _execute(run: SegmentationRun, bundle: Path, root: Path, overrides: Mapping[str, Any], threads: int) -> dict:
    """Train and test one run in this (worker) process, logging into its ``run.log``; returns its result row.

    Raises:
        RuntimeError: naming the run and its log, whose end holds the traceback.
    """
    import torch
    from monai.bundle import run as bundle_run

    out = root / run.name
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "run.log"
    handler = logging.FileHandler(log_path, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s - %(name)s - %(levelname)s - %(message)s"))
    root_logger = logging.getLogger()
    saved = root_logger.handlers[:], root_logger.level, torch.get_num_threads()
    root_logger.handlers, root_logger.level = [handler], logging.INFO
    torch.set_num_threads(threads)
    try:
        args = _bundle_args(run, bundle, out, overrides)
        for files, command in zip(_config_files(bundle), _commands(run, bundle, out, overrides)):
            logger.info("equivalent command: %s", " ".join(command))
            bundle_run(config_file=files, logging_file=False, **args)  # this function owns the logging
    except Exception as err:
        logger.exception("segmentation run %s failed", run.name)
        raise RuntimeError(f"segmentation run {run.name} failed ({type(err).__name__}); see {log_path}.") from err
    finally:
        handler.close()
        root_logger.handlers, root_logger.level = saved[0], saved[1]
        torch.set_num_threads(saved[2])
    metrics = pd.read_csv(out / "metrics.csv", header=None, index_col=0).iloc[:, 0].to_dict()
    keys = (run.init, run.spec, run.arch, "all" if run.n_train is None else run.n_train, run.seed)
    row = dict(zip(SEGMENTATION_RESULT_COLUMNS, keys))
    return {**row, **{str(k): float(v) for k, v in metrics.items()}}


def _stop_pool(pool: ProcessPoolExecutor) -> None:
    """Cancel the runs not started and end the running ones now (a rerun redoes them; checkpoints are atomic).

    SIGTERM first: a worker's run unwinds (its data loaders and their semaphores are released), then it is killed
    if it still lives after 30 s.
    """
    pool.shutdown(wait=False, cancel_futures=True)
    workers = multiprocessing.active_children()  # the pool's workers: run_grid starts no other process
    for child in workers:
        child.terminate()
    for child in workers:
        child.join(timeout=30)
        if child.is_alive():
            child.kill()
            child.join()


def run_grid(
    runs: Sequence[SegmentationRun],
    out: str | Path,
    bundle: str | Path,
    overrides: Mapping[str, Any] | None = None,
    jobs: int = 1,
    threads_per_job: int = 1,
) -> pd.DataFrame:
    """Train and test every run not yet in ``<out>/results.csv``; append each result as it finishes.

    Args:
        runs: from :func:`plan_runs`.
        out: output folder; run ``r`` writes ``<out>/<r.name>/`` (models, logs, ``metrics.csv``, ``run.log``).
        bundle: the segment bundle folder.
        overrides: bundle ids for every run (``manifest``, ``structures``, ``image_size``, ``epochs``, ...).
        jobs: worker processes, i.e. runs in parallel.
        threads_per_job: torch intra-op threads of each run.

    Returns:
        ``results.csv`` as a frame (all rows, old and new).

    Raises:
        RuntimeError: when a run fails (naming its log); the other runs finish and their results are kept.
    """
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    results_path = root / "results.csv"
    done: set[tuple[str, str, int]] = set()
    if results_path.is_file():
        previous = pd.read_csv(results_path, dtype={"init": str, "n_train": str, "init_spec": str})
        for row in previous.itertuples():
            done.add((row.init, row.n_train, int(row.seed)))
            if any(r.init == row.init and r.spec != row.init_spec for r in runs):
                raise ValueError(f"{results_path} holds init {row.init!r} from {row.init_spec!r}: give the new "
                                 "initialisation another name or use a new output folder.")
    todo = [r for r in runs if (r.init, "all" if r.n_train is None else str(r.n_train), r.seed) not in done]
    logger.info("%d of %d segmentation runs to do in %s", len(todo), len(runs), root)
    if not todo:
        return pd.read_csv(results_path, dtype={"init": str, "n_train": str, "init_spec": str})

    failures: dict[int, BaseException] = {}
    # spawned workers: no fork of a process holding torch threads; each imports the package once
    context = multiprocessing.get_context("spawn")
    # workers ignore Ctrl-C (a terminal sends it to the whole process group): this process stops them (_stop_pool)
    pool = ProcessPoolExecutor(max_workers=max(1, min(jobs, len(todo))), mp_context=context,
                               initializer=signal.signal, initargs=(signal.SIGINT, signal.SIG_IGN))
    try:
        futures: dict[Future, int] = {
            pool.submit(_execute, run, Path(bundle), root, dict(overrides or {}), threads_per_job): i
            for i, run in enumerate(todo)
        }
        for future in as_completed(futures):
            try:
                row = future.result()
            except Exception as err:  # keep the other runs going; the first failure (in run order) is raised
                failures[futures[future]] = err
                continue
            header = not results_path.is_file() or results_path.stat().st_size == 0
            # the resume key of the grid: appended atomically (a killed write leaves the previous rows)
            line = pd.DataFrame([row]).to_csv(header=header, index=False, lineterminator="\n")
            atomic_append_text(results_path, line)
            logger.info("%s: test_mean_dice %.4f", todo[futures[future]].name, row.get("test_mean_dice", float("nan")))
    except KeyboardInterrupt:  # Ctrl-C / SIGTERM: the finished runs are in results.csv, a rerun does the rest
        _stop_pool(pool)
        raise
    finally:
        pool.shutdown(wait=True)  # at once after _stop_pool
    if failures:
        raise failures[min(failures)]
    return pd.read_csv(results_path, dtype={"init": str, "n_train": str, "init_spec": str})


def segmentation_summary(results: pd.DataFrame, init_order: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean ± sd over seeds of every Dice column, per init and training-set size.

    Args:
        results: ``results.csv`` rows (columns :data:`SEGMENTATION_RESULT_COLUMNS` plus ``test_*dice*``).
        init_order: order of the inits within a size (default: first appearance in ``results``); inits not
            listed follow.

    Returns:
        Frame indexed by (``n_train``, ``init``), with ``<metric>`` cells formatted ``0.812 ± 0.031`` and
        ``seeds`` (runs averaged). Sizes are ordered numerically (``all`` last), then inits; the sd is the sample
        sd (NaN shown as ``-`` for one seed).
    """
    metrics = [c for c in results.columns if c.startswith("test_") and "dice" in c]
    frame = results.copy()
    frame["n_train"] = frame["n_train"].astype(str)
    grouped = frame.groupby(["n_train", "init"], sort=False)
    table = pd.DataFrame({"seeds": grouped.size()})
    for column in metrics:
        mean, sd = grouped[column].mean(), grouped[column].std()
        table[column] = [f"{m:.3f} ± {s:.3f}" if pd.notna(s) else f"{m:.3f} ± -" for m, s in zip(mean, sd)]
    inits = list(init_order or []) + [i for i in frame["init"].unique() if i not in (init_order or [])]
    order = sorted(table.index, key=lambda key: (key[0] == "all", int(key[0]) if key[0] != "all" else 0,
                                                  inits.index(key[1])))
    return table.loc[order]


def segmentation_markdown(table: pd.DataFrame) -> str:
    """A markdown table of :func:`segmentation_summary` (one row per training-set size and init).

    Args:
        table: the summary frame.

    Returns:
        The markdown text (test Dice columns named after their structure).
    """
    columns = [c for c in table.columns if c != "seeds"]
    names = [c.removeprefix("test_").removeprefix("dice_").replace("_", " ") for c in columns]
    lines = ["| training images | init | seeds | " + " | ".join(names) + " |",
             "|---|---|---|" + "---|" * len(columns)]
    for (n_train, init), row in table.iterrows():
        lines.append(f"| {n_train} | {init} | {row['seeds']} | " + " | ".join(str(row[c]) for c in columns) + " |")
    return "\n".join(lines)
