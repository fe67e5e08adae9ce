"""One run per output folder: ``modan_monai.utils.RunLock`` (concurrent run refused, stale lock taken over)."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from modan_monai.utils import LOCK_NAME, RunLock, RunLockError, lock_output_dir

HOLDER = (
    "import sys, time; from modan_monai.utils import lock_output_dir; lock_output_dir(sys.argv[1]); "
    "print('held', flush=True); time.sleep(60)"
)


def test_second_run_is_refused_naming_folder_pid_and_host(tmp_path: Path) -> None:
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]), *sys.path])}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockError) as err:
            lock_output_dir(out)
        message = str(err.value)
        assert f"output_dir {out} is in use by another run" in message
        assert f"pid {holder.pid} on host {socket.gethostname()!r}" in message
        assert not RunLock(out).held
    finally:
        holder.kill()
        holder.wait()
    # the holder died without releasing: its lock is stale now and the next run takes it over
    lock = lock_output_dir(out)
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()
    lock.release()
    assert not (out / LOCK_NAME).exists()


def test_stale_lock_is_taken_over_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "command": "x"}))
    with caplog.at_level(logging.WARNING, logger="modan_monai.utils.lock"):
        with RunLock(tmp_path, what="--out") as lock:
            assert lock.held
    assert f"taking over the stale lock {tmp_path / LOCK_NAME} of --out {tmp_path}" in caplog.text
    assert f"pid {pid}" in caplog.text and not (tmp_path / LOCK_NAME).exists()


def test_same_process_reenters_and_nests_folders(tmp_path: Path) -> None:
    outer = lock_output_dir(tmp_path, what="--out")
    inner = lock_output_dir(tmp_path / "runs" / "fold0")  # run_cv: --out, then each fold's bundle
    again = lock_output_dir(tmp_path)  # the same process re-entering its own folder
    again.release()
    assert (tmp_path / LOCK_NAME).is_file() and outer.held
    inner.release()
    outer.release()
    assert not (tmp_path / LOCK_NAME).exists() and not (tmp_path / "runs" / "fold0" / LOCK_NAME).exists()


@pytest.mark.parametrize(
    "content, match",
    [({"pid": 1, "host": "another-host", "command": "x"}, "Its host is not this one"), (None, "cannot be read")],
)
def test_foreign_or_damaged_lock_is_refused(tmp_path: Path, content: dict | None, match: str) -> None:
    (tmp_path / LOCK_NAME).write_text(json.dumps(content) if content else "")
    with pytest.raises(RunLockError, match=match) as err:
        lock_output_dir(tmp_path)
    assert str(tmp_path / LOCK_NAME) in str(err.value)


def _race_for_the_lock(folder: str, start, done, results) -> None:
    """A racer: wait for the start, try the lock once, report, and hold it until every racer has reported."""
    start.wait()
    try:
        lock = RunLock(folder, what="--out").acquire()
    except RunLockError:
        results.put((os.getpid(), False))
        return
    results.put((os.getpid(), True))
    done.wait(30)  # a holder keeps the lock while the others try: two holders at once would both report True
    lock.release()


def test_racing_runs_take_a_stale_lock_exactly_once(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(), "started": 0.0, "command": "x"})
    context = multiprocessing.get_context("fork")
    racers, trials = 6, 20
    for trial in range(trials):
        folder = tmp_path / f"trial{trial}"
        folder.mkdir()
        (folder / LOCK_NAME).write_text(stale)
        start, done, results = context.Event(), context.Event(), context.Queue()
        procs = [context.Process(target=_race_for_the_lock, args=(str(folder), start, done, results))
                 for _ in range(racers)]
        for proc in procs:
            proc.start()
        start.set()
        try:
            outcomes = [results.get(timeout=30) for _ in procs]
        finally:
            done.set()
            for proc in procs:
                proc.join(30)
        holders = [pid for pid, held in outcomes if held]
        assert len(holders) == 1, f"trial {trial}: {len(holders)} racers hold the stale lock of {folder} at once"
        assert not (folder / LOCK_NAME).exists()  # the holder released it


def test_sigterm_while_a_lock_is_held_releases_it_with_one_line(tmp_path: Path) -> None:
    """SIGTERM at any point of a run (its start-up too, before the trainer runs) ends it with one line, unlocked."""
    code = ("import sys, time\nfrom modan_monai.utils import RunLock\nRunLock(sys.argv[1]).acquire()\n"
            "print('locked', flush=True)\ntime.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    assert (tmp_path / LOCK_NAME).is_file()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM, stderr
    assert stderr.strip().splitlines() == ["interrupted (SIGTERM); run the same command to resume"]
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_lock_released_in_another_thread_does_not_fail(tmp_path: Path) -> None:
    """The SIGTERM handler is installed by the main thread; a release from a worker thread must not raise."""
    import threading

    previous = signal.getsignal(signal.SIGTERM)
    lock = RunLock(tmp_path).acquire()
    errors: list[BaseException] = []

    def release() -> None:
        try:
            lock.release()
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    worker = threading.Thread(target=release)
    worker.start()
    worker.join()
    signal.signal(signal.SIGTERM, previous)  # the worker thread could not restore it
    assert not errors and not (tmp_path / LOCK_NAME).exists()
