"""Start the documented command blocks in the background as soon as the session knows which ones it runs."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the block tests last, so that the rest of the suite runs while the blocks run in the background
    (each block test waits for its block)."""
    is_block = [getattr(item, "originalname", "") == "test_doc_block_runs" for item in items]
    if any(is_block):
        items[:] = [i for i, b in zip(items, is_block) if not b] + [i for i, b in zip(items, is_block) if b]


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start :class:`test_doc_commands.BackgroundRunner` on the selected ``test_doc_block_runs`` items."""
    items = [item for item in session.items if getattr(item, "originalname", "") == "test_doc_block_runs"]
    if items and not session.config.option.collectonly:
        items[0].module.start_runner([item.callspec.params["block"] for item in items])


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop the runner; keep its sandbox when the session failed (like ``tmp_path_retention_policy = failed``)."""
    for item in session.items:
        runner = getattr(getattr(item, "module", None), "RUNNER", None)
        if runner is not None:
            runner.close(keep=exitstatus != 0)
            return
