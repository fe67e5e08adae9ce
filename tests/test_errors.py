"""The last line a user reads is the project's own explanation, naming the file at fault (issue 19, items 10, 12).

The error hook (:mod:`modan_monai._excepthook`), the loaders' messages, and Ctrl-C / SIGTERM during a real
``python -m monai.bundle run``.
"""

from __future__ import annotations

import errno
import io
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from modan_monai import _excepthook
from modan_monai.data import ensure_demo_corpus, read_manifest
from modan_monai.data.readers import NpyVolumeReader, PILImageReader
from modan_monai.networks import ResNet18Encoder, save_encoder
from modan_monai.networks.checkpoint import load_weights_file
from modan_monai.utils import LOCK_NAME, atomic_save

PRETRAIN = Path(__file__).resolve().parents[1] / "bundles" / "pretrain"


def _truncated(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _hook_output(exc: BaseException) -> list[str]:
    stderr = io.StringIO()
    saved, sys.stderr = sys.stderr, stderr
    try:
        _excepthook._hook(type(exc), exc, exc.__traceback__)
    finally:
        sys.stderr = saved
    return [line for line in stderr.getvalue().splitlines() if line.strip()]


def test_hook_ends_with_the_projects_explanation_not_the_library_error(tmp_path: Path) -> None:
    path = _truncated(save_encoder(ResNet18Encoder(), tmp_path / "encoder.pt", method="modan"))
    try:
        try:
            load_weights_file(path)  # the project's ValueError, raised from torch's PytorchStreamReader error
        except ValueError as err:
            raise RuntimeError("Failed to evaluate ConfigExpression: $x") from err
    except RuntimeError as wrapper:
        lines = _hook_output(wrapper)
    assert "PytorchStreamReader" in "\n".join(lines)  # the whole traceback is still there
    assert str(path) in lines[-1] and "truncated" in lines[-1], lines[-3:]


def test_hook_prints_one_line_for_an_interrupt() -> None:
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt as err:
        lines = _hook_output(err)
    _excepthook.sys.modules["modan_monai.utils.interrupt"]._RECEIVED.clear()  # nothing to end by at exit
    assert lines == ["interrupted (SIGINT); run the same command to resume"]


def test_a_refused_pickle_is_called_unsafe_naming_the_file(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo never",))

    path = tmp_path / "evil.pt"
    torch.save({"network": Evil()}, path)
    with pytest.raises(ValueError) as err:
        load_weights_file(path)
    message = str(err.value)
    assert str(path) in message and "refused as unsafe" in message and "corrupt" not in message


def test_damaged_images_volumes_and_manifests_name_the_file(tmp_path: Path) -> None:
    png = tmp_path / "a.png"
    Image.fromarray((np.arange(32 * 32) % 251).reshape(32, 32).astype(np.uint8)).save(png)
    data = png.read_bytes()
    for name, size in (("cut.png", len(data) // 2), ("head.png", 40)):
        (tmp_path / name).write_bytes(data[:size])
        reader = PILImageReader()
        with pytest.raises(ValueError, match="damaged or truncated") as err:
            reader.get_data(reader.read(tmp_path / name))
        assert str(tmp_path / name) in str(err.value)
    npy = tmp_path / "objects.npy"
    np.save(npy, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="not a numeric .npy volume") as err:
        NpyVolumeReader().read(npy)
    assert str(npy) in str(err.value)
    (tmp_path / "empty.csv").write_bytes(b"")
    (tmp_path / "latin1.csv").write_bytes("path,modality\nimg\xe9.png,CT\n".encode("latin-1"))
    for name, match in (("empty.csv", "is empty"), ("latin1.csv", "is not UTF-8")):
        with pytest.raises(ValueError, match=match) as err:
            read_manifest(tmp_path / name)
        assert str(tmp_path / name) in str(err.value)


def test_a_full_disk_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_space(obj, f) -> None:
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", no_space)
    target = tmp_path / "checkpoint_epoch=3.pt"
    with pytest.raises(OSError) as err:
        atomic_save({"x": 1}, target)
    assert err.value.errno == errno.ENOSPC
    assert str(target) in str(err.value) and "no space left on device" in str(err.value)
    assert not list(tmp_path.iterdir())  # no temporary left


def test_scripts_end_with_the_file_at_fault(tmp_path: Path, capsys: pytest.CaptureFixture,
                                            load_script: Callable) -> None:
    taken = tmp_path / "taken"
    taken.write_text("a file where the output folder should go")
    manifest = tmp_path / "latin1.csv"
    manifest.write_bytes("path,modality,label\nimg\xe9.png,CT,1\n".encode("latin-1"))
    rc = load_script("run_cv").main(["--manifest", str(manifest), "--label-column", "label", "--init", "scratch",
                                     "--out", str(taken / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and str(taken) in err[-1] and "is a file, not a folder" in err[-1]
    rc = load_script("embed").main(["--manifest", str(manifest), "--encoder", "scratch", "--out", str(tmp_path / "e")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and str(manifest) in err[-1] and "not UTF-8" in err[-1]


def _pretrain_command(out: Path, demo: Path, epochs: int) -> list[str]:
    return [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/train.json", "--logging_file",
            "configs/logging.conf", "--output_dir", str(out), "--epochs", str(epochs), "--image_size", "32",
            "--log_interval", "1", "--seed", "0", "--dataset_dir", str(demo), "--manifest",
            str(demo / "manifest.csv"), "--batch_size", "8"]


def _interrupted_run(out: Path, demo: Path, signum: int) -> tuple[int, str, str]:
    """Start a pretraining run, send ``signum`` in epoch 2 (after the first checkpoint); return rc, stdout, stderr."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    # SIGINT back to its default in the child (a test run started in the background inherits it ignored)
    proc = subprocess.Popen(_pretrain_command(out, demo, 20), cwd=PRETRAIN, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "epoch 2/" in line:
            proc.send_signal(signum)
            break
    stdout, stderr = proc.communicate(timeout=300)
    return proc.returncode, "".join(lines) + stdout, stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_ends_with_one_line_and_releases_the_lock(tmp_path_factory: pytest.TempPathFactory,
                                                           signum: int) -> None:
    root = tmp_path_factory.mktemp("interrupt")
    demo = Path(ensure_demo_corpus(root / "demo", size=32, per_pair=4)).parent
    out = root / "out"
    rc, stdout, stderr = _interrupted_run(out, demo, signum)
    assert rc in (-signum, 128 + signum), (rc, stderr[-3000:])
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stdout + stderr, (stdout + stderr)[-3000:]
    checkpoint = out / "checkpoint_epoch=1.pt"
    assert lines[-1] == (f"interrupted at epoch 2, iteration {lines[-1].split('iteration ')[1].split(';')[0]}; last "
                         f"checkpoint: {checkpoint}; run the same command to resume ({signal.Signals(signum).name})")
    assert checkpoint.is_file() and not (out / LOCK_NAME).exists()
    if signum == signal.SIGINT:
        # the newest checkpoint truncated: the last line is the project's "damaged: delete it", not torch's error
        _truncated(checkpoint)
        proc = subprocess.run(_pretrain_command(out, demo, 2), cwd=PRETRAIN, capture_output=True, text=True,
                              timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
        last = [line for line in proc.stderr.splitlines() if line.strip()][-1]
        assert proc.returncode != 0 and str(checkpoint) in last and "damaged" in last, proc.stderr[-3000:]
        assert not (out / LOCK_NAME).exists()
