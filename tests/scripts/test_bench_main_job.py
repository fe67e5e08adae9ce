"""scripts/bench_main_job.py: its argument checks refuse before any bundle run, naming the folder at fault."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def bench(load_script):
    return load_script("bench_main_job")


@pytest.mark.parametrize("make_file", [False, True])
def test_workdir_that_is_not_a_folder_is_refused_naming_it(bench, tmp_path: Path, capsys, make_file: bool) -> None:
    workdir = tmp_path / "absent"
    if make_file:
        workdir.write_text("not a folder")
    with pytest.raises(SystemExit) as err:
        bench.main(["--workdir", str(workdir)])
    assert err.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert f"--workdir {workdir} " in lines[-1]
    assert ("is not a folder" if make_file else "does not exist") in lines[-1]


def test_repeats_below_one_is_refused(bench, capsys) -> None:
    with pytest.raises(SystemExit):
        bench.main(["--repeats", "0"])
    assert "--repeats must be >= 1, got 0" in capsys.readouterr().err.strip().splitlines()[-1]
