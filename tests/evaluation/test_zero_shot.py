"""Zero-shot analyses: identities on synthetic images with tiny encoders defined here, errors, and the CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from modan_monai.evaluation.zero_shot import (
    JSRT_LANDMARKS,
    Landmark,
    bootstrap_interval,
    centre_boxes,
    composability,
    crop_boxes,
    cross_level_retrieval,
    distances_to_centroid,
    embed_patches,
    guillotine_parts,
    hierarchy_embeddings,
    interpolation,
    interpolation_controls,
    landmarks_from_masks,
    localizability,
    nearest_centroid_accuracy,
    prepare_encoder,
    sample_interpolation_points,
)
from modan_monai.networks.registry import build_encoder


def mean_pool(x: torch.Tensor) -> torch.Tensor:
    """(B, C, S, S) -> (B, C): an encoder linear in the patch content."""
    return x.mean(dim=(-2, -1))


def ramp_images(n: int = 1, size: int = 64) -> torch.Tensor:
    """(n, 3, H, W): channels x / H, y / H and 1, so a patch's mean is (cx, cy, 1) / affine in its centre."""
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    return torch.stack([xs / size, ys / size, torch.ones_like(xs)])[None].repeat(n, 1, 1, 1)


def test_landmarks_extremes_ties_and_lateral() -> None:
    mask = np.zeros((64, 64), bool)
    mask[10:20, 40:50] = True  # a block right of the midline: top row 10 ties over columns 40..49
    mask[30, 44] = True  # single bottom pixel
    spec = [Landmark(k, "s", k) for k in ("top", "bottom", "left", "right", "lateral", "medial", "centroid")]
    got = landmarks_from_masks({"s": mask}, spec)
    rows, cols = np.nonzero(mask)
    expected = [(10, 44), (30, 44), (14, 40), (14, 49), (14, 49), (14, 40), (rows.mean(), cols.mean())]
    np.testing.assert_allclose(got, expected)  # lower median of 40..49 is 44, of rows 10..19 is 14
    mirrored = landmarks_from_masks({"s": mask[:, ::-1]}, spec)
    assert tuple(mirrored[4]) == (14, 63 - 49) and tuple(mirrored[5]) == (14, 63 - 40)  # lateral = away from midline


@pytest.mark.parametrize("masks", [{"heart": np.zeros((8, 8))}, {}])
def test_missing_structure_names_file_and_structure(masks) -> None:
    with pytest.raises(ValueError, match=r"JPCLN001\.png.*'heart'"):
        landmarks_from_masks(masks, [Landmark("heart_centroid", "heart", "centroid")], source="JPCLN001.png")


def test_interpolation_and_extrapolation_of_affine_encoder_is_one() -> None:
    images = ramp_images(2)
    rng = np.random.default_rng(0)
    ts = np.array([0.25, 0.5, 0.75, 0.25])
    samples = [sample_interpolation_points(rng, (64, 64), t, side=10.0) for t in ts]
    points = np.stack([s[0] for s in samples])
    cos_c, cos_d = interpolation(mean_pool, images, points, np.array([0, 1, 0, 1]), ts, 10.0, 16)
    np.testing.assert_allclose(cos_c, 1.0, atol=1e-9)
    np.testing.assert_allclose(cos_d, 1.0, atol=1e-9)
    # the weights matter: swapped ones miss C
    cos_wrong, _ = interpolation(mean_pool, images, points, np.array([0, 1, 0, 1]), 1 - ts, 10.0, 16)
    assert cos_wrong[0] < 1 - 1e-6


def test_composability_matched_one_mismatched_is_the_other_image() -> None:
    colours = torch.tensor([[1.0, 0.2, 0.0], [0.1, 1.0, 0.5]])
    images = colours[:, :, None, None].expand(-1, -1, 48, 48).contiguous()  # constant images
    rng = np.random.default_rng(1)
    wholes = np.array([[4.0, 6.0, 40.0, 42.0], [0.0, 0.0, 48.0, 48.0]])
    parts = [guillotine_parts(rng, wholes[0], 3), guillotine_parts(rng, wholes[1], 4)]
    area = lambda b: ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).sum()  # noqa: E731
    np.testing.assert_allclose([area(p) for p in parts], [36.0 * 36.0, 48.0 * 48.0])  # parts tile the whole
    matched, mismatched = composability(mean_pool, images, wholes, parts, np.array([0, 1]), np.array([1, 0]), 16)
    np.testing.assert_allclose(matched, 1.0, atol=1e-6)
    ref = float(torch.nn.functional.cosine_similarity(colours[0], colours[1], dim=0))
    np.testing.assert_allclose(mismatched, ref, atol=1e-6)


def test_localizability_zero_for_identical_images_and_retrieval_one() -> None:
    torch.manual_seed(0)
    images = torch.rand(1, 1, 64, 64).repeat(3, 1, 1, 1)  # identical images, landmarks at the same places
    landmarks = np.tile(np.array([[20.0, 20.0], [24.0, 40.0], [40.0, 30.0]])[None], (3, 1, 1))
    conv = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten())
    np.testing.assert_allclose(localizability(conv, images, landmarks, 16), 0.0, atol=1e-6)
    noisy = images + 0.5 * torch.rand_like(images)
    assert localizability(conv, noisy, landmarks, 16).mean() > 1e-4
    # an encoder of the patch centre: same landmark at every level is the nearest
    emb = hierarchy_embeddings(mean_pool, ramp_images(3), landmarks, 16, levels=(1, 2, 3))
    correct = cross_level_retrieval(emb)
    off = ~np.eye(3, dtype=bool)
    assert correct[:, off].all() and not correct[:, ~off].any()
    shuffled = emb.copy()
    shuffled[:, 1] = emb[:, 1, ::-1]  # level 2 landmarks reversed: only the middle one still matches
    assert cross_level_retrieval(shuffled)[:, 0, 1].mean() == pytest.approx(1 / 3)


def constant_encoder(x: torch.Tensor) -> torch.Tensor:
    """A degenerate encoder: the same embedding for every patch."""
    return torch.tensor([0.3, 1.0, 0.2, 0.7]).expand(len(x), -1)


def test_degenerate_embedding_looks_good_raw_but_scores_chance_on_the_controls() -> None:
    torch.manual_seed(0)
    images = torch.rand(6, 1, 48, 48)
    rng = np.random.default_rng(0)
    landmarks = rng.uniform(12, 36, (6, 4, 2))
    emb = embed_patches(constant_encoder, crop_boxes(images, centre_boxes(landmarks.reshape(-1, 2), 10.0),
                                                     np.repeat(np.arange(6), 4), 16)).reshape(6, 4, -1)
    np.testing.assert_allclose(distances_to_centroid(emb), 0.0, atol=1e-12)  # the paper's figure: perfect
    np.testing.assert_allclose(nearest_centroid_accuracy(emb), 1 / 4)  # its control: chance, 1 / L, every patch
    correct = cross_level_retrieval(hierarchy_embeddings(constant_encoder, images, landmarks, 16))
    assert correct[:, ~np.eye(3, dtype=bool)].mean() == pytest.approx(1 / 4)  # hierarchy: chance too
    # composability: matched = mismatched = 1, so the control (difference) is 0
    wholes = np.array([[4.0, 4.0, 40.0, 40.0], [0.0, 0.0, 48.0, 48.0]])
    parts = [guillotine_parts(rng, w, 3) for w in wholes]
    matched, mismatched = composability(constant_encoder, images, wholes, parts, np.array([0, 1]), np.array([1, 0]), 16)
    np.testing.assert_allclose(matched, 1.0)
    np.testing.assert_allclose(matched - mismatched, 0.0, atol=1e-12)
    # interpolation / extrapolation: cosine 1 (looks perfect), gain over the mean predictor 0, centred cosine 0
    ts = np.array([0.25, 0.5, 0.75])
    e = np.broadcast_to(np.array([0.3, 1.0, 0.2, 0.7]) * 3.7, (3, 4, 4))
    scores = interpolation_controls(e, ts)
    for kind in ("interpolation", "extrapolation"):
        np.testing.assert_allclose(scores[kind], 1.0)
        np.testing.assert_allclose(scores[f"{kind}_mean"], 1.0)
        np.testing.assert_allclose(scores[f"{kind}_gain"], 0.0, atol=1e-12)
        np.testing.assert_allclose(scores[f"{kind}_centred"], 0.0, atol=1e-12)


def test_controls_reward_an_informative_embedding() -> None:
    # landmarks with their own direction plus small noise: nearest centroid is perfect
    rng = np.random.default_rng(0)
    emb = np.eye(5)[None] * 3 + 0.1 * rng.normal(size=(8, 5, 5))
    np.testing.assert_allclose(nearest_centroid_accuracy(emb), 1.0)
    emb[:, 1] = emb[:, 0]  # landmarks 0 and 1 indistinguishable: each scores 1/2 (a tie) and the rest 1
    np.testing.assert_allclose(nearest_centroid_accuracy(emb).mean(axis=0), [0.5, 0.5, 1, 1, 1])
    with pytest.raises(ValueError, match="2 images"):
        nearest_centroid_accuracy(emb[:1])
    # an embedding affine in the patch centre, on top of a large shared offset: the raw cosine is near 1 and
    # so is the mean predictor's; gain is small, but the centred cosine is exactly 1
    images = ramp_images(2)
    samples = [sample_interpolation_points(rng, (64, 64), t, side=10.0) for t in (0.25, 0.5, 0.75)]
    points = np.stack([s[0] for s in samples])

    def offset_encoder(x: torch.Tensor) -> torch.Tensor:
        return mean_pool(x)[:, :2] + torch.tensor([50.0, 50.0])

    cos_c, cos_d = interpolation(offset_encoder, images, points, np.array([0, 1, 0]), np.array([0.25, 0.5, 0.75]),
                                 10.0, 16)
    patches = crop_boxes(images, centre_boxes(points.reshape(-1, 2), 10.0), np.repeat([0, 1, 0], 4), 16)
    scores = interpolation_controls(embed_patches(offset_encoder, patches).reshape(3, 4, -1), [0.25, 0.5, 0.75])
    np.testing.assert_allclose(scores["interpolation"], cos_c)
    np.testing.assert_allclose(scores["extrapolation"], cos_d)
    assert (scores["interpolation_mean"] > 0.999).all()
    np.testing.assert_allclose(scores["interpolation_centred"], 1.0, atol=1e-9)
    np.testing.assert_allclose(scores["extrapolation_centred"], 1.0, atol=1e-9)


def _mean_pairwise_cosine(e: np.ndarray) -> float:
    z = e / np.linalg.norm(e, axis=1, keepdims=True)
    sims = z @ z.T
    return float(sims[~np.eye(len(z), dtype=bool)].mean())


def test_untrained_encoder_gets_batchnorm_statistics_of_the_analysis_patches() -> None:
    torch.manual_seed(0)
    encoder = build_encoder("scratch")
    patches = torch.rand(48, 1, 32, 32) * torch.rand(48, 1, 1, 1) + torch.rand(48, 1, 1, 1)
    raw = embed_patches(encoder, patches)
    prepared, estimated = prepare_encoder(encoder, patches)  # "auto": it has never been trained
    assert estimated and prepared is not encoder
    calibrated = embed_patches(prepared, patches)
    before, after = _mean_pairwise_cosine(raw), _mean_pairwise_cosine(calibrated)
    assert before > 0.99 and after < before - 0.02, (before, after)
    bn = next(m for m in prepared.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert int(bn.num_batches_tracked) > 0 and not bn.training
    # the encoder itself is untouched; a trained one (statistics tracked) keeps its own unless asked
    assert all(int(m.num_batches_tracked) == 0 for m in encoder.modules() if isinstance(m, torch.nn.BatchNorm2d))
    same, estimated = prepare_encoder(prepared, patches)
    assert same is prepared and not estimated
    assert prepare_encoder(prepared, patches, "recompute")[1] and not prepare_encoder(encoder, patches, "running")[1]
    with pytest.raises(ValueError, match="bn_stats"):
        prepare_encoder(encoder, patches, "precise")


def test_bootstrap_interval_contains_the_mean_and_is_seeded() -> None:
    values = np.random.default_rng(3).exponential(size=25)
    low, high = bootstrap_interval(values, seed=7)
    assert low < values.mean() < high
    assert bootstrap_interval(values, seed=7) == (low, high)  # deterministic for a seed
    assert bootstrap_interval(values, seed=8) != (low, high)
    assert np.isnan(bootstrap_interval(values[:1])).all()


def _write_png(path, array) -> str:
    Image.fromarray(array.astype(np.uint8)).save(path)
    return str(path)


def test_cli_writes_every_file(tmp_path) -> None:
    from scripts.zero_shot import main

    rng = np.random.default_rng(0)
    boxes = {"right_lung": (8, 6, 44, 26), "left_lung": (8, 38, 44, 58), "heart": (30, 26, 50, 44),
             "right_clavicle": (8, 10, 12, 30), "left_clavicle": (8, 34, 12, 54)}
    rows = []
    for i in range(3):
        image = _write_png(tmp_path / f"case{i}.png", rng.integers(0, 255, (64, 64)))
        row = {"path": image, "modality": "XR", "anatomy": "chest", "split": "test", "dataset": "synthetic",
               "case_id": f"case{i}"}
        for name, (t, l, b, r) in boxes.items():
            mask = np.zeros((64, 64))
            mask[t + i:b, l:r - i] = 255
            row[f"mask_{name}"] = _write_png(tmp_path / f"case{i}_{name}.png", mask)
        rows.append(row)
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    out = tmp_path / "out"
    assert main(["--manifest", str(tmp_path / "m.csv"), "--init", "scratch", "--image-size", "16", "--load-size",
                 "64", "--wholes-per-k", "1", "--samples-per-t", "1", "--out", str(out)]) == 0
    for name in ("localizability", "hierarchy", "composability", "interpolation"):
        for ext in ("csv", "png", "md"):
            assert (out / f"{name}.{ext}").stat().st_size > 0, f"{name}.{ext}"
    summary = (out / "summary.md").read_text()
    assert (out / "hierarchy_scratch.png").is_file() and "Composability" in summary
    assert "scratch: BatchNorm statistics estimated on" in summary and "never been trained" in summary
    loc = pd.read_csv(out / "localizability.csv")
    assert len(loc) == 3 * len(JSRT_LANDMARKS) and "path" not in loc.columns
    assert loc["nearest_centroid"].between(0, 1).all()
    controls = pd.read_csv(out / "controls.csv")
    assert controls["bn_stats_estimated"].all() and (controls["images"] == 3).all()
    assert (controls["ci_low"] <= controls["mean"] + 1e-12).all()
    assert (controls["mean"] <= controls["ci_high"] + 1e-12).all()
    assert {"leave-one-image-out nearest-centroid accuracy", "matched - mismatched", "cosine - mean-embedding "
            "predictor", "cosine after centring on the mean embedding"} <= set(controls["statistic"])
    interp = pd.read_csv(out / "interpolation.csv")
    np.testing.assert_allclose(interp["gain"], interp["cosine"] - interp["mean_cosine"])
    # bad input: a missing mask column names the image and structure
    pd.DataFrame(rows).drop(columns="mask_heart").to_csv(tmp_path / "bad.csv", index=False)
    assert main(["--manifest", str(tmp_path / "bad.csv"), "--init", "scratch", "--out", str(tmp_path / "o2")]) == 1
