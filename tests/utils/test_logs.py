"""One log format for scripts and bundles (``modan_monai.utils.logs``, ``bundles/*/configs/logging.conf``): MONAI's
``StatsHandler`` lines included, and a console that shows only a script's own progress lines (issue 22)."""

from __future__ import annotations

import configparser
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from modan_monai.utils.logs import LOG_FORMAT

ROOT = Path(__file__).resolve().parents[2]
#: a line in LOG_FORMAT: "2026-12-07 18:24:08,596 - logger.name - LEVEL - message"
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} - (?P<name>[\w.]+) - (?P<level>[A-Z]+) - (?P<message>.*)$")


def run_python(code: str) -> list[str]:
    """Output lines (stdout then stderr) of ``code`` in a fresh interpreter (logging set up from nothing)."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return (done.stdout + done.stderr).splitlines()


@pytest.mark.parametrize("bundle", ["classify", "pretrain", "segment"])
def test_bundle_logging_conf_formats_monai_lines_alike(bundle: str) -> None:
    conf = ROOT / "bundles" / bundle / "configs" / "logging.conf"
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(conf)
    assert parser["formatter_fullFormatter"]["format"] == LOG_FORMAT
    # as `python -m monai.bundle run --logging_file` does: fileConfig(disable_existing_loggers=False) after
    # monai.bundle.scripts made its logger, then the StatsHandler of the engines is built
    lines = run_python(f"""
        import logging, logging.config
        import monai.bundle.scripts
        from monai.handlers import StatsHandler
        logging.config.fileConfig({str(conf)!r}, disable_existing_loggers=False)
        logging.getLogger("monai.bundle.scripts").info("--- input summary ---")
        StatsHandler(iteration_log=False).logger.info("Epoch[1] Metrics -- val_auc: 0.5000")
        logging.getLogger("modan_monai.progress").info("epoch 1/1")
    """)
    parsed = [LOG_LINE.match(line) for line in lines]
    assert all(parsed), lines
    assert [(m["name"], m["message"]) for m in parsed] == [
        ("monai.bundle.scripts", "--- input summary ---"),
        ("monai.handlers.StatsHandler", "Epoch[1] Metrics -- val_auc: 0.5000"),
        ("modan_monai.progress", "epoch 1/1"),
    ]


def test_setup_logging_and_progress_only() -> None:
    lines = run_python("""
        import logging
        from monai.handlers import StatsHandler
        from modan_monai.utils.logs import progress_only, setup_logging
        setup_logging()
        with progress_only(["modan_monai.evaluation"]):
            stats = StatsHandler(iteration_log=False).logger  # built inside the run, as the bundle does per fold
            stats.info("Epoch[1] Metrics -- val_auc: 0.5000")
            stats.info("Key metric: val_auc best value: 0.5 at epoch: 1")
            logging.getLogger("modan_monai.networks.registry").info("encoder initialised")
            logging.getLogger("ignite.engine.engine.Trainer").info("Engine run resuming")
            logging.getLogger("modan_monai.evaluation").info("[1/2] fold 0")
            logging.getLogger("modan_monai.evaluation.metrics").info("child line")
            logging.getLogger("modan_monai.evaluationx").info("not a child")
            stats.warning("stats warning")
            logging.getLogger("modan_monai.networks").warning("networks warning")
        logging.getLogger("modan_monai.networks").info("after the block")
        stats.info("stats after the block")
    """)
    parsed = [LOG_LINE.match(line) for line in lines]
    assert all(parsed), lines
    assert [(m["name"], m["level"], m["message"]) for m in parsed] == [
        ("modan_monai.evaluation", "INFO", "[1/2] fold 0"),
        ("modan_monai.evaluation.metrics", "INFO", "child line"),
        ("monai.handlers.StatsHandler", "WARNING", "stats warning"),
        ("modan_monai.networks", "WARNING", "networks warning"),
        ("modan_monai.networks", "INFO", "after the block"),
        ("monai.handlers.StatsHandler", "INFO", "stats after the block"),
    ]
