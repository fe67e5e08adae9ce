"""A manifest built through a symbolically linked folder stores the path the user gave (through the link, relative
to the manifest), not the link's target (issue 22): it still loads after being moved together with the link."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from data_manifests import build_manifest
from modan_monai.data.manifest import read_manifest, write_manifest

FILES = ["benign/b0.png", "benign/b1.png", "malignant/m0.png"]


def class_tree(root: Path) -> Path:
    """Two class folders of tiny 16 px PNGs."""
    for i, rel in enumerate(FILES):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((16, 16), 40 * i, np.uint8)).save(root / rel)
    return root


def stored_paths(manifest: Path) -> list[str]:
    return pd.read_csv(manifest)["path"].tolist()


def test_manifest_through_a_linked_root_keeps_the_link_and_moves_with_it(tmp_path: Path) -> None:
    store = class_tree(tmp_path / "elsewhere" / "disk" / "isic")  # the real files, far from the project
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "data" / "isic").symlink_to(store, target_is_directory=True)
    manifest = project / "manifests" / "isic.csv"
    df = build_manifest("class_folders", project / "data" / "isic", modality="DMS", anatomy="skin")
    assert write_manifest(df, manifest) == manifest
    assert stored_paths(manifest) == [f"../data/isic/{rel}" for rel in FILES]  # through the link, relative

    # the manifest and the link move together (to another depth): the manifest still loads, every file found
    moved = tmp_path / "a" / "b" / "project"
    moved.parent.mkdir(parents=True)
    shutil.move(project, moved)
    loaded = read_manifest(moved / "manifests" / "isic.csv")
    assert loaded["path"].tolist() == [os.path.realpath(store / rel) for rel in FILES]
    assert loaded["label"].tolist() == ["benign", "benign", "malignant"]


def test_manifest_in_a_linked_folder_and_plain_folders(tmp_path: Path) -> None:
    store = class_tree(tmp_path / "elsewhere" / "disk" / "isic")
    df = build_manifest("class_folders", store, modality="DMS", anatomy="skin")
    # no link anywhere: relative to the manifest, as before
    plain = write_manifest(df, tmp_path / "elsewhere" / "manifests" / "isic.csv")
    assert stored_paths(plain) == [f"../disk/isic/{rel}" for rel in FILES]
    # the manifest's own folder is a link whose target lies elsewhere: the reader joins relative paths to the real
    # folder, where "../elsewhere/..." would miss, so the path is written absolute, as given (not resolved)
    real_out = tmp_path / "x" / "y" / "out"
    real_out.mkdir(parents=True)
    (tmp_path / "out_link").symlink_to(real_out, target_is_directory=True)
    linked = tmp_path / "data_link"
    linked.symlink_to(store, target_is_directory=True)
    df = build_manifest("class_folders", linked, modality="DMS", anatomy="skin")
    written = write_manifest(df, tmp_path / "out_link" / "isic.csv")
    assert written == tmp_path / "out_link" / "isic.csv"
    assert stored_paths(written) == [(linked / rel).as_posix() for rel in FILES]
    assert [os.path.realpath(p) for p in read_manifest(written)["path"]] == [os.path.realpath(store / r) for r in FILES]
