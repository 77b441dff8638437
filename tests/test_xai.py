"""task=xai on tiny trained models: every map method, Grad-CAMO by hand, embeddings, MLflow, and bad input."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys

import mlflow
import numpy as np
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from PIL import Image

import cellexp
from cellexp.data.datamodule import load_crop_data
from cellexp.data.sampling import stratified_subset
from cellexp.data.transforms import BatchTransform
from cellexp.errors import CheckpointError, ConfigError, DataError
from cellexp.models.backbones import hybrid_backbone, timm_backbone
from cellexp.models.classifier import CellClassifier
from cellexp.models.heads import LinearHead
from cellexp.tracking.loading import build_model, load_trained, resolve_checkpoint
from cellexp.xai.cams import CAM_METHODS, cam_maps
from cellexp.xai.embedding import knn_accuracy, silhouette, sphere
from cellexp.xai.gradcamo import gradcamo, per_class, score_batches, summarize
from cellexp.xai.lime_maps import lime_maps
from cellexp.xai.rollout import MODES, relevance, rollout_maps
from cellexp.xai.targets import default_target_layer, find_layer, reshape_transform, token_grid
from tests.conftest import CONF, TINY, compose_cfg

SIZE = 32  # TINY's dataset.image_size
# task=xai trains nothing and refuses training keys: TINY's data and model, without its trainer settings
XAI_TINY = [o for o in TINY if not o.startswith("trainer.")] + ["trainer.cpu=true"]


@pytest.fixture
def xai_cfg(make_cfg):
    return lambda overrides: make_cfg([*XAI_TINY, *overrides], tiny=False)


CELLS = 6  # two batches of BATCH, the second one short
BATCH = 4
TRAIN = ["logger=none", "trainer.max_epochs=1", "dataset.limit=256"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir) -> dict:
    """Two tiny trained runs shared by the module: a CNN with the connectome head, a ViT with a linear head."""
    root = tmp_path_factory.mktemp("xai_runs")
    for name, model in {
        "cnn": ["backbone=test_resnet", "head=elegans"],
        "vit": ["backbone=test_vit", "head=linear"],
    }.items():
        cellexp.run(compose_cfg([*model, *TRAIN], root / name, data_dir))
    GlobalHydra.instance().clear()
    return {name: root / name for name in ("cnn", "vit")}


@pytest.fixture(scope="module")
def loaded(runs) -> dict:
    """Per run: the trained model in eval mode, and uint8 crops (N, 1, S, S) of a few test cells."""
    out = {}
    for name, folder in runs.items():
        source = resolve_checkpoint(str(folder), OmegaConf.create({}), folder)
        store = load_crop_data(source.config.dataset, seed=0).store
        crops = torch.from_numpy(np.array(store.images("test")[:CELLS]))[:, None]
        out[name] = (load_trained(source, num_classes=8), crops)
    return out


def _inputs(crops: torch.Tensor, size: int = SIZE):
    transform = BatchTransform(size)
    return lambda chunk: transform(crops[chunk])


def _check_maps(maps: np.ndarray, count: int = CELLS, scaled: bool = True) -> None:
    assert maps.shape == (count, SIZE, SIZE)
    assert np.isfinite(maps).all() and maps.min() >= 0
    if scaled:
        assert maps.max() <= 1 + 1e-6


def _cams(model, crops, method="gradcam", batch_size=BATCH, size=SIZE, cam_map="normalized") -> np.ndarray:
    layer = find_layer(model, default_target_layer(model, size))
    targets = np.arange(len(crops)) % 8
    reshape = reshape_transform(model.backbone, size)
    maps = cam_maps(method, model, layer, reshape, _inputs(crops, size), targets, batch_size, cam_map=cam_map)
    return np.concatenate(list(maps))


# Grad-CAMO


def test_gradcamo_is_one_inside_the_mask_zero_outside_and_matches_a_hand_computation():
    mask = np.zeros((1, 4, 4), np.uint8)
    mask[0, 1:3, 1:3] = 1
    inside, outside = mask * 0.7, (1 - mask) * 0.3
    assert gradcamo(inside, mask)[0] == 1.0
    assert gradcamo(outside, mask)[0] == 0.0
    cam = np.array([[[-1.0, 2.0], [3.0, 0.5]]])
    # negative evidence is dropped: (2 + 0) / (0 + 2 + 3 + 0.5)
    assert gradcamo(cam, np.array([[[1, 1], [0, 0]]]))[0] == pytest.approx(2 / 5.5)
    # the mask is resized (nearest) to the map: each map pixel stands for a 2x2 block of a 4x4 mask
    big = np.kron(np.array([[1, 0], [0, 1]], np.uint8), np.ones((2, 2), np.uint8))[None]
    assert gradcamo(cam, big)[0] == pytest.approx(0.5 / 5.5)


def test_empty_maps_are_nan_left_out_of_the_summary_and_counted():
    maps = np.stack([np.ones((2, 2)), np.zeros((2, 2)), -np.ones((2, 2)), np.eye(2)])
    masks = np.stack([np.eye(2)] * 4).astype(np.uint8)
    scores = gradcamo(maps, masks)
    assert scores[0] == 0.5 and np.isnan(scores[1:3]).all() and scores[3] == 1.0
    summary = summarize(scores, threshold=0.5)
    assert summary == {
        "gradcamo_mean": 0.75,
        "gradcamo_median": 0.75,
        "gradcamo_frac_above_0.5": 0.5,
        "zero_maps": 2.0,
    }
    rows = per_class(scores, np.array([0, 0, 1, -1]), ["A", "B"], 0.5)
    assert [(r["class"], r["cells"], r["zero_maps"]) for r in rows] == [("unknown", 1, 0), ("A", 2, 1), ("B", 1, 1)]


def test_maps_stream_through_keeping_only_the_maps_figures_show(tmp_path):
    rng = np.random.default_rng(0)
    maps = rng.random((10, 4, 4)).astype(np.float32)
    masks = (rng.random((10, 4, 4)) > 0.5).astype(np.uint8)
    batches = (maps[i : i + 3] for i in range(0, 10, 3))
    scored = score_batches(batches, lambda rows: masks[rows], 10, keep={0, 9}, lowest=2, save=tmp_path / "maps.npy")
    np.testing.assert_allclose(scored.scores, gradcamo(maps, masks))
    lowest = [i for i in np.argsort(scored.scores) if i not in (0, 9)][:2]
    assert set(scored.maps) == {0, 9, *lowest}
    np.testing.assert_array_equal(scored.maps[9], maps[9])
    np.testing.assert_allclose(np.load(tmp_path / "maps.npy"), maps, atol=1e-3)  # every map, in float16


# maps


@pytest.mark.parametrize("method", sorted(CAM_METHODS))
@pytest.mark.parametrize("kind", ["cnn", "vit"])
def test_every_cam_method_gives_finite_maps_of_the_input_size(loaded, kind, method):
    model, crops = loaded[kind]
    if method in ("scorecam", "ablationcam"):
        # one forward pass per channel batch per image: two cells and whole-layer channel batches keep it quick
        _check_maps(_cams(model, crops[:2], method, batch_size=256), count=2)
        _check_maps(_cams(model, crops[:2], method, batch_size=256, cam_map="raw"), count=2, scaled=False)
    else:
        _check_maps(_cams(model, crops, method))
        _check_maps(_cams(model, crops, method, cam_map="raw"), scaled=False)


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "layercam", "hirescam", "xgradcam"])
def test_raw_maps_are_the_library_maps_before_its_min_max_scaling(loaded, method):
    """Ours: relu(get_cam_image), resized. The library then min-max scales per image: undo nothing, redo that."""
    model, crops = loaded["cnn"]
    raw = _cams(model, crops, method, cam_map="raw")
    lowest, highest = raw.min((1, 2), keepdims=True), raw.max((1, 2), keepdims=True)
    rescaled = (raw - lowest) / (highest - lowest + 1e-7)
    np.testing.assert_allclose(rescaled, _cams(model, crops, method), atol=2e-3)


def test_gradcamo_of_a_raw_map_with_a_floor_is_its_raw_share_not_the_min_max_share():
    """A 4x4 activation with a positive floor: Grad-CAM at a GAP + linear head is the activation itself (over 16), so
    the raw share is that of the activation; min-max scaling removes the floor and inflates the share."""
    activation = torch.ones(1, 1, 4, 4)
    activation[0, 0, 1:3, 1:3] = 4.0  # the cell: 4 of 16 pixels, 16 of the map's 28 units of mass
    mask = np.zeros((1, 4, 4), np.uint8)
    mask[0, 1:3, 1:3] = 1
    layer = torch.nn.Conv2d(1, 1, 1)
    with torch.no_grad():
        layer.weight.fill_(1.0), layer.bias.zero_()
    model = torch.nn.Sequential(layer, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(1, 2))
    targets = np.zeros(1, np.int64)
    with torch.no_grad():
        model[3].weight.copy_(torch.tensor([[1.0], [-1.0]])), model[3].bias.zero_()

    def maps(cam_map):
        return next(cam_maps("gradcam", model, layer, None, lambda chunk: activation, targets, 1, cam_map=cam_map))

    assert gradcamo(maps("raw"), mask)[0] == pytest.approx(16 / 28, abs=1e-6)
    assert gradcamo(maps("normalized"), mask)[0] == pytest.approx(1.0, abs=1e-6)  # the floor scaled away


def test_raw_maps_refuse_aug_smooth_and_fullgrad_falls_back_by_name(caplog):
    from cellexp.xai.cams import map_kind

    with pytest.raises(ConfigError, match="xai.aug_smooth.*xai.cam_map=normalized"):
        map_kind("gradcam", "raw", aug_smooth=True)
    with pytest.raises(ConfigError, match="xai.cam_map='unscaled'"):
        map_kind("gradcam", "unscaled", aug_smooth=False)
    assert map_kind("fullgrad", "raw", aug_smooth=False) == "normalized"
    assert map_kind("gradcam", "raw", aug_smooth=False) == "raw"


def test_batched_maps_equal_one_image_at_a_time(loaded):
    model, crops = loaded["cnn"]
    np.testing.assert_allclose(_cams(model, crops, batch_size=BATCH), _cams(model, crops, batch_size=1), atol=1e-5)


def test_lime_maps_the_target_class_evidence(loaded):
    model, crops = loaded["cnn"]

    def predict(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(batch).float().permute(0, 3, 1, 2)).softmax(dim=1).numpy()

    batches = lime_maps(
        _inputs(crops), np.array([0, 3]), predict, -2.0, num_samples=40, segments=16, batch_size=20, seed=0
    )
    maps = np.concatenate(list(batches))
    _check_maps(maps, count=2)
    assert (maps.reshape(2, -1).max(axis=1) == 1).all()  # some superpixel speaks for the class


@pytest.mark.parametrize("mode", MODES)
def test_attention_rollout_on_a_vit(loaded, mode):
    model, crops = loaded["vit"]
    _check_maps(np.concatenate(list(rollout_maps(model.backbone, _inputs(crops), CELLS, SIZE, BATCH, mode=mode))))


def test_rollout_by_hand():
    # one block, 2 heads, class token + 2 patches; head mean, then half identity (rows still sum to one)
    heads = torch.tensor([[[0.2, 0.3, 0.5], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]]]).repeat(2, 1, 1)[None]
    assert torch.allclose(relevance([heads], "all", "mean", prefix=1, class_token=True), torch.tensor([[0.15, 0.25]]))
    assert torch.allclose(relevance([heads], "last", "max", prefix=1, class_token=True), torch.tensor([[0.3, 0.5]]))
    # without a class token: the mean over the patch rows
    assert torch.allclose(relevance([heads, heads], "mean", "min", 1, False), torch.tensor([[0.55, 0.25]]))


def test_token_grid_follows_patch_and_image_size():
    for size, grid in ((32, (2, 2)), (64, (4, 4))):
        vit = timm_backbone("test_vit", "vit", in_chans=1, image_size=size)
        assert token_grid(vit, size) == grid
    assert token_grid(timm_backbone("test_resnet", "cnn", in_chans=1, image_size=32), 32) is None
    # a hybrid's patches are pixels of the CNN's stride-32 map (padded convolutions round up: 70 px -> 3x3)
    for size in (48, 64, 70):
        hybrid = hybrid_backbone("resnet18", in_chans=1, image_size=size, embed_dim=32, depth=1, num_heads=2)
        assert token_grid(hybrid, size) == hybrid.patch_embed.grid_size == (-(-size // 32),) * 2


@pytest.mark.parametrize(
    "backbone",
    [
        lambda: timm_backbone("mixer_s16_224", "mixer", 1, SIZE),
        lambda: hybrid_backbone("resnet18", in_chans=1, image_size=SIZE * 2, embed_dim=32, depth=1, num_heads=2),
    ],
    ids=["mixer", "hybrid"],
)
def test_token_layers_reshape_to_the_patch_grid(loaded, backbone):
    torch.manual_seed(0)
    backbone = backbone()
    size = SIZE * 2 if backbone.family == "hybrid" else SIZE
    model = CellClassifier(backbone, LinearHead(backbone.num_features, 8)).eval()
    maps = _cams(model, loaded["cnn"][1], size=size)
    assert maps.shape == (CELLS, size, size) and np.isfinite(maps).all()


@pytest.mark.parametrize("head", ["elegans", "ba", "er", "ws", "mlp", "linear"])
def test_maps_through_every_head(make_cfg, loaded, head):
    torch.manual_seed(0)
    model = build_model(make_cfg([f"head={head}"]), num_classes=8).eval()
    _check_maps(_cams(model, loaded["cnn"][1][:2]), count=2)


def test_bad_layer_names_list_close_matches(loaded):
    model = loaded["cnn"][0]
    with pytest.raises(ConfigError, match=r"xai.target_layer='layer5'.*close matches: .*layer4"):
        find_layer(model, "layer5")
    assert find_layer(model, "layer3") is find_layer(model, "backbone.layer3")


# embeddings and sampling


@pytest.mark.slow  # fresh processes that import torch, the first compiling UMAP's numba code: 20-27 s
def test_a_umap_leaves_torchs_thread_count_as_it_found_it_and_its_compiled_code_for_the_next_process(tmp_path):
    """In a fresh process that set torch's thread count and computed with it (as a run does before its UMAPs),
    numba's OpenMP threads, started by UMAP's first fit, set the count that torch shares back to every core. The
    numba code that fit compiled is cached (NUMBA_CACHE_DIR here), and the next process's UMAP is the same."""
    script = (
        "import numpy as np, torch\n"
        "from cellexp.xai.embedding import umap_2d\n"
        "torch.set_num_threads(1)\n"
        "torch.ones(1000, 1000) @ torch.ones(1000, 1000)\n"
        "xy = umap_2d(np.random.default_rng(0).random((300, 16), dtype=np.float32), 15, 0)\n"
        "print(xy[:3].round(4).tolist(), torch.get_num_threads())\n"
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    printed = []
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        printed.append(done.stdout.strip().splitlines()[-1])
        assert printed[-1].endswith(" 1")
        cached = {path.name.split("-")[0] for path in tmp_path.glob("umap_*/*.nbi")}  # module.function-line...
        assert {"umap_.smooth_knn_dist", "layouts._optimize_layout_euclidean_single_epoch"} <= cached
    assert printed[0] == printed[1]


def test_sphering_knn_and_silhouette():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 6)) * [10, 5, 1, 1, 0.1, 0.1] + 3
    whitened = sphere(x.astype(np.float32), regularization=1e-6)
    np.testing.assert_allclose(np.cov(whitened.T), np.eye(6), atol=0.01)
    controls = np.arange(400) < 200  # fit on these rows only: they come out white, the others follow their map
    on_controls = sphere(x.astype(np.float32) + 5 * ~controls[:, None], 1e-6, controls)
    np.testing.assert_allclose(on_controls[controls].mean(axis=0), 0, atol=1e-4)
    assert np.abs(on_controls[~controls].mean(axis=0)).max() > 1
    labels = np.repeat([0, 1], 50)
    clusters = np.concatenate([rng.normal(0, 1, (50, 4)), rng.normal(20, 1, (50, 4))])
    assert knn_accuracy(clusters, labels, k=5) == 1.0
    assert silhouette(clusters, labels, max_cells=60, seed=0) > 0.9
    shuffled = rng.permutation(labels)
    assert knn_accuracy(clusters, shuffled, k=5) < 0.8 and silhouette(clusters, shuffled, 100, 0) < 0.1


def test_stratified_subset_spreads_over_classes():
    labels = np.array([0] * 50 + [1] * 5 + [2] * 20)
    chosen = stratified_subset(labels, 12, seed=0)
    assert list(np.bincount(labels[chosen])) == [4, 4, 4]
    assert list(chosen) == sorted(chosen) and list(stratified_subset(labels, 12, seed=0)) == list(chosen)
    assert list(np.bincount(labels[stratified_subset(labels, 30, seed=1)])) == [13, 5, 12]


# the task end to end


def test_cli_form_composes(make_cfg):
    cfg = make_cfg(
        [
            "task=xai",
            "ckpt=x",
            "xai.methods=[gradcam,fullgrad,lime]",
            "xai.split=test",
            "xai.num_cells=64",
            "xai.images=[a.png,b.png]",
        ]
    )
    assert cfg.task.name == "xai" and list(cfg.xai.images) == ["a.png", "b.png"]
    assert cfg.task.optimized_metric == "xai/gradcam/gradcamo_mean"


def _artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        found |= _artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return found


@pytest.mark.slow
def test_xai_run_writes_and_logs_scores_figures_comparison_and_umap(xai_cfg, runs, tmp_path):
    cfg = xai_cfg(
        [
            "task=xai",
            f"ckpt={runs['cnn']}",
            "xai.methods=[gradcam++,lime]",  # MLflow keys allow no '+': logged as gradcampp
            "xai.num_cells=8",
            "xai.lime.num_samples=20",
            f"xai.compare_ckpt={runs['vit']}",
            "xai.head_state=true",
            "xai.sphere=true",
            "dataset.limit=256",
        ]
    )
    objective = cellexp.run(cfg)
    mlflow.set_tracking_uri(cfg.logger.tracking_uri)
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name(cfg.logger.experiment_name).experiment_id])
    metrics = run.data.metrics
    assert objective == pytest.approx(metrics["xai/gradcampp/gradcamo_mean"])
    assert 0 <= metrics["xai/accuracy"] <= 1
    for method in ("gradcampp", "lime"):
        for key in ("gradcamo_mean", "gradcamo_median", "gradcamo_frac_above_0.5", "zero_maps", "cells_per_s"):
            assert f"xai/{method}/{key}" in metrics and f"xai/compare/{method}/{key}" in metrics
        assert 0 <= metrics[f"xai/{method}/gradcamo_mean"] <= 1
    for space in ("embedding", "head_state"):
        assert -1 <= metrics[f"xai/{space}/silhouette"] <= 1 and 0 <= metrics[f"xai/{space}/knn_accuracy"] <= 1
    per_method = [
        "gradcamo.csv",
        "per_class.csv",
        "right_but_outside.csv",
        "gradcamo_hist.png",
        "grid.png",
        "compare.csv",
        "compare.png",
    ]
    expected = {f"xai/{m}/{f}" for m in ("gradcampp", "lime") for f in per_method}
    expected |= {"xai/cells.csv", *(f"xai/umap/{s}.{e}" for s in ("embedding", "head_state") for e in ("png", "csv"))}
    assert expected <= _artifacts(client, run.info.run_id)
    folder = tmp_path / "run" / "xai"
    assert (folder / "umap" / "embedding.png").read_bytes()[:4] == b"\x89PNG"
    with open(folder / "gradcampp" / "gradcamo.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and {"image_file", "annotation_id", "true", "predicted", "gradcamo"} <= set(rows[0])
    assert len({r["true"] for r in rows}) == 8  # spread over the 8 lines
    with open(folder / "umap" / "embedding.csv") as f:
        assert len(list(csv.DictReader(f))) == 256  # the whole (limited) test split


def test_xai_run_is_tagged_and_named_by_the_explained_model(xai_cfg, runs):
    """The ViT run has a linear head: the tags are its, not the xai config's default backbone and head."""
    cfg = xai_cfg(["task=xai", f"ckpt={runs['vit']}", "xai.methods=[gradcam]", "xai.num_cells=4", "xai.umap=false"])
    cellexp.run(cfg)
    mlflow.set_tracking_uri(cfg.logger.tracking_uri)
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name(cfg.logger.experiment_name).experiment_id])
    assert (run.data.tags["backbone"], run.data.tags["head"]) == ("test_vit", "linear")
    assert run.data.tags["explained"] == "test_vit/linear" and run.info.run_name == "test_vit linear xai"


def test_own_images_take_their_class_from_the_folder(xai_cfg, runs, loaded, tmp_path):
    crops = loaded["cnn"][1]
    for folder, i in (("A172", 0), ("mine", 1)):
        (tmp_path / folder).mkdir()
        Image.fromarray(crops[i, 0].numpy()[:, 4:40]).save(tmp_path / folder / f"{i}.png")
    images = f"xai.images=[{tmp_path / 'A172' / '0.png'},{tmp_path / 'mine' / '1.png'}]"
    cellexp.run(xai_cfg(["task=xai", f"ckpt={runs['cnn']}", images, "xai.umap=false", "logger=none"]))
    with open(tmp_path / "run" / "xai" / "cells.csv") as f:
        assert [row["true"] for row in csv.DictReader(f)] == ["A172", ""]
    with pytest.raises(ConfigError, match=r"xai.target=true needs the true class.*mine/1.png"):
        second = f"paths.output_dir={tmp_path / 'second'}"  # a run folder of its own
        cellexp.run(xai_cfg(["task=xai", f"ckpt={runs['cnn']}", images, "xai.target=true", "logger=none", second]))


def _mismatched_checkpoint(runs, tmp_path) -> str:
    """A copy of the CNN run whose config claims a linear head: the weights cannot fit it."""
    copy = tmp_path / "mismatch"
    shutil.copytree(runs["cnn"], copy)
    config = OmegaConf.load(copy / "config.yaml")
    config.head = OmegaConf.load(CONF / "head" / "linear.yaml")
    OmegaConf.save(config, copy / "config.yaml")
    return str(copy)


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        (
            lambda r, t: [f"ckpt={_mismatched_checkpoint(r, t)}"],
            CheckpointError,
            r"checkpoint .*mismatch/checkpoints/best does not fit the model built from its config",
        ),
        (
            lambda r, t: [f"ckpt={r['cnn']}", "xai.target_layer=layer5"],
            ConfigError,
            r"xai.target_layer='layer5' is not a module of the model; close matches: .*layer4",
        ),
        (
            lambda r, t: [f"ckpt={r['cnn']}", "xai.methods=[rollout]"],
            ConfigError,
            r"rollout needs a backbone with self-attention .*ckpt=.*cnn is a ResNet of family 'cnn'",
        ),
        (
            lambda r, t: [f"ckpt={r['cnn']}", "xai.methods=[gradcamm]"],
            ConfigError,
            r"unknown method 'gradcamm'; did you mean gradcam",
        ),
        (lambda r, t: [f"ckpt={r['cnn']}", "xai.methods=lime"], ConfigError, r"xai.methods=lime must be a list"),
        (
            lambda r, t: [f"ckpt={r['cnn']}", f"xai.images=[{t / 'missing.png'}]"],
            DataError,
            r"image file .*missing.png does not exist",
        ),
        (lambda r, t: [], ConfigError, r"task=xai explains a trained model: give ckpt="),
    ],
    ids=[
        "checkpoint-mismatch",
        "layer-name",
        "rollout-on-cnn",
        "method-name",
        "methods-not-a-list",
        "missing-image",
        "no-checkpoint",
    ],
)
def test_bad_input_is_named(xai_cfg, runs, tmp_path, overrides, error, message):
    with pytest.raises(error, match=message):
        cellexp.run(xai_cfg(["task=xai", "logger=none", *overrides(runs, tmp_path)]))
