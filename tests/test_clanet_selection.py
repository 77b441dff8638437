"""CLANet's published preprocessing, mask and patch selection (cellexp.data.timelapse.clanet_selection): the whole-array
code
against a literal per-pixel reference written from the published behaviour, its helpers against the library
calls the published code made, and its place in the patch store."""

from __future__ import annotations

import inspect
import math
import warnings
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from skimage import measure, morphology
from skimage.exposure import rescale_intensity
from skimage.feature import canny, local_binary_pattern
from skimage.filters import threshold_otsu
from skimage.transform import resize

from cellexp.data.timelapse import clanet_selection as cs
from cellexp.data.timelapse import clanet_texture
from cellexp.data.timelapse.clanet_selection import published_frame, published_mask, published_windows
from cellexp.data.timelapse.folders import scan
from cellexp.data.timelapse.patches import PatchSettings, _select, _select_ours, prepare_patch_store, select_patches
from cellexp.errors import ConfigError, DataError

PUBLISHED = PatchSettings(size=32, top_k=20, method="published", crop_bottom=40, components=40)


# ---------------------------------------------------------------------------------------------------------------
# a literal reference, pixel by pixel and region by region as the published code goes (slow; small frames only)


def literal_windows(frame, mask, size, components, keep):
    height, width = mask.shape
    image = frame[:height]
    labels = measure.label(mask, background=0)  # 8-connected
    pixels = np.bincount(labels.ravel())
    top = np.argsort(pixels, kind="stable")[::-1][:components]
    kept = np.where(np.isin(labels, top), labels, 0)
    regions = {}  # label -> [min_x, min_y, max_x, max_y], in order of first appearance
    for y in range(height):
        for x in range(width):
            label = int(kept[y, x])
            if label == 0:
                continue
            if label not in regions:
                regions[label] = [0xFFFF, 0xFFFF, 0, 0]
            box = regions[label]
            box[0], box[1] = min(box[0], x), min(box[1], y)
            box[2], box[3] = max(box[2], x), max(box[3], y)
    boxes = dict(regions)
    for box in list(regions.values()):
        min_x, min_y, max_x, max_y = box
        if mask[min_y:max_y, min_x:max_x].sum() > 2 * size * size:
            for i in range(math.ceil((max_y - min_y) / size)):
                ty = min_y + size * i
                for j in range(math.ceil((max_x - min_x) / size)):
                    tx = min_x + size * j
                    if tx + size > width:
                        tx = width - size
                    if ty + size > height:
                        ty = height - size
                    boxes[max(boxes) + 1] = [tx, ty, tx + size, ty + size]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        texture = local_binary_pattern(image, 8, 1.0)
    windows = {}
    for key, (min_x, min_y, max_x, max_y) in boxes.items():
        if max_x - min_x == size and max_y - min_y == size:
            x, y = min_x, min_y
        else:
            inside = np.zeros(mask.shape)
            inside[min_y : max_y + 1, min_x : max_x + 1] = 1
            cy, cx = ndimage.center_of_mass(inside * mask)
            x, y = int(cx - size / 2), int(cy - size / 2)
            x = 0 if x < 0 else (width - size if x + size > width else x)
            y = 0 if y < 0 else (height - size if y + size > height else y)
        cut = (slice(y, y + size), slice(x, x + size))
        windows[key] = {
            "x": x,
            "y": y,
            "confluency": mask[cut].sum() / (size * size),
            "colour": np.histogram(image[cut].ravel(), 25, (0.0, 255.0))[0] / (size * size),
            "texture": np.histogram(texture[cut].ravel(), 10, (0.0, 255.0))[0] / (size * size),
        }

    def corner_in(a, b, ax, by):  # a's x-range holds ax, b's y-range holds by
        return a["x"] <= ax < a["x"] + size and b["y"] <= by < b["y"] + size

    def overlap(a, b):
        return (
            corner_in(a, a, b["x"], b["y"])
            or corner_in(b, b, a["x"], a["y"])
            or corner_in(b, a, a["x"], b["y"])
            or corner_in(a, b, b["x"], a["y"])
        )

    def iou(a, b):
        w = min(a["x"], b["x"]) + size - max(a["x"], b["x"])
        h = min(a["y"], b["y"]) + size - max(a["y"], b["y"])
        if w < 0 or h < 0:
            return 0.0
        return w * h / float(2 * size * size - w * h)

    keys = list(windows)
    similarity = {}
    for n, i in enumerate(keys[:-1]):
        for j in keys[n + 1 :]:
            a, b = windows[i], windows[j]
            if overlap(a, b):
                colour = sum([min(p, q) for p, q in zip(a["colour"], b["colour"], strict=True)])
                texture_sim = sum([min(p, q) for p, q in zip(a["texture"], b["texture"], strict=True)])
                similarity[(i, j)] = colour + texture_sim + iou(a, b)
    if similarity:
        mean = np.average(list(similarity.values()))
        gone = []
        for (i, j), s in similarity.items():
            if s >= mean and i not in gone and j not in gone:
                gone.append(j if windows[i]["confluency"] >= windows[j]["confluency"] else i)
        for key in gone:
            del windows[key]
    ranked = sorted(windows.values(), key=lambda w: w["confluency"])[::-1][:keep]
    return np.array([[w["y"], w["x"]] for w in ranked], np.int64).reshape(-1, 2), np.array(
        [w["confluency"] for w in ranked]
    )


# ---------------------------------------------------------------------------------------------------------------
# frames


def blob_frame(rng, height, width, blobs, radius=(3, 9), dark=False):
    """A smooth grey frame in [0, 1] with round cells, and the cells' mask."""
    yy, xx = np.mgrid[:height, :width]
    mask = np.zeros((height, width), bool)
    for _ in range(blobs):
        cy, cx, r = rng.integers(0, height), rng.integers(0, width), rng.integers(*radius)
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    frame = 0.3 + 0.4 * ndimage.gaussian_filter(mask.astype(float), 1.0) + 0.02 * rng.random((height, width))
    return (1 - frame if dark else frame), mask


def check_literal(frame, mask, size=32, components=40, keep=20):
    got = published_windows(frame, mask, size, components, keep)
    corners, confluency = literal_windows(frame, mask, size, components, keep)
    assert np.array_equal(got.corners, corners)
    assert np.array_equal(got.confluency, confluency)
    return got


def test_vectorised_selection_is_the_literal_one_on_random_frames():
    rng = np.random.default_rng(0)
    for blobs, size, components in [(40, 32, 40), (90, 32, 12), (25, 48, 40), (60, 24, 6)]:
        frame, _ = blob_frame(rng, 200, 300, blobs)
        mask = published_mask(frame, crop_bottom=20)
        assert mask.any()
        check_literal(frame, mask, size, components)


def test_vectorised_selection_is_the_literal_one_on_synthetic_masks():
    rng = np.random.default_rng(1)
    frame = rng.random((200, 300))
    edges = np.zeros((200, 300), bool)  # blobs touching every border and corner
    edges[:5, 10:30] = edges[190:, :12] = edges[60:90, 293:] = edges[:9, 290:] = edges[150:200, 280:300] = True
    check_literal(frame, edges, 32)
    big = np.zeros((200, 300), bool)  # one large component: tiled, some tiles clamped at the right and bottom
    big[20:190, 15:290] = rng.random((170, 275)) < 0.9
    big[20:190, 15:290] |= ndimage.binary_dilation(big[20:190, 15:290], iterations=2)
    tiled = check_literal(frame, big, 32, keep=200)
    assert len(tiled.corners) > 10
    check_literal(frame, big, 112, keep=200)
    sparse = np.zeros((200, 300), bool)  # windows that never overlap: no pairs, nothing pruned
    for y, x in [(10, 10), (10, 150), (100, 60), (150, 250)]:
        sparse[y : y + 6, x : x + 5] = True
    got = check_literal(frame, sparse, 16)
    assert len(got.corners) == 4
    ties = np.zeros((200, 300), bool)  # equal squares and equal confluencies: the cut and the ranking's ties
    for y in range(5, 190, 20):
        for x in range(5, 290, 24):
            ties[y : y + 4, x : x + 4] = True
    check_literal(frame, ties, 16, components=9, keep=5)
    check_literal(frame, ties, 32, components=30)
    exact = np.zeros((200, 300), bool)  # a box of max - min == size stays at its corner, not at its centre of mass
    exact[40, 50:83] = exact[40:73, 50] = True
    exact[100:104, 200:230] = True
    got = check_literal(frame, exact, 32)
    assert [40, 50] in got.corners.tolist()
    edge = np.zeros((200, 300), bool)  # 17 x 33 px: 561 in the inclusive box, 512 = 2 * 16^2 in the half-open one
    edge[20:37, 40:73] = True
    assert len(check_literal(frame, edge, 16, keep=100).corners) == 1  # so not tiled
    ring = np.zeros((200, 300), bool)  # a thin frame around blobs: its box counts their pixels too, and is tiled
    ring[30, 30:150] = ring[130, 30:150] = ring[30:131, 30] = ring[30:131, 149] = True
    ring[50:110, 50:130] = rng.random((60, 80)) < 0.5  # 218 + about 2,400 px > 2,048 in its half-open box
    tiles = {(30 + 32 * i, 30 + 32 * j) for i in range(4) for j in range(4)}
    assert tiles & {tuple(c) for c in check_literal(frame, ring, 32, components=3, keep=100).corners.tolist()}
    pair = np.zeros((200, 300), bool)  # one overlapping pair: its similarity is the mean, and prunes
    pair[50:60, 50:60] = pair[52:58, 64:68] = pair[150:155, 200:205] = True
    assert len(check_literal(frame, pair, 32).corners) == 2
    check_literal(frame, np.zeros((200, 300), bool), 32)  # no foreground


def test_no_foreground_gives_no_windows():
    frame = np.full((200, 300), 0.5)
    mask = published_mask(frame, crop_bottom=0)
    assert not mask.any()
    chosen = published_windows(frame, mask, 32)
    assert chosen.corners.shape == (0, 2) and not len(chosen.confluency) and not chosen.mask.any()


# ---------------------------------------------------------------------------------------------------------------
# the steps' behaviour


def test_bottom_cut_keeps_corners_in_the_full_frame():
    rng = np.random.default_rng(2)
    frame, cells = blob_frame(rng, 240, 300, 60)
    mask = published_mask(frame, crop_bottom=40)
    assert mask.shape == (200, 300)
    chosen = published_windows(frame, mask, 32)
    assert len(chosen.corners) and chosen.mask.shape == frame.shape
    assert (chosen.corners[:, 0] + 32 <= 200).all() and (chosen.corners[:, 1] + 32 <= 300).all()
    assert not chosen.mask[200:].any() and np.array_equal(chosen.mask[:200], mask)
    assert cells[200:].any()  # there were cells in the cut rows
    whole = published_mask(frame, crop_bottom=0)
    assert whole[200:].any()
    with pytest.raises(DataError):
        published_mask(frame, crop_bottom=240)


def test_frames_are_scaled_and_944x1280_resized():
    rng = np.random.default_rng(3)
    grey = rng.integers(0, 256, (200, 300), dtype=np.uint8)
    frame = published_frame(grey)
    assert frame.dtype == np.float64 and np.array_equal(frame, grey * (1 / 255))
    small = np.full((944, 1280), 51, np.uint8)
    small[100:300, 200:600] = 204
    big = published_frame(small)
    assert big.shape == (1040, 1408) and big.min() >= 0 and big.max() <= 1
    assert np.array_equal(big, resize(small / 255, (1040, 1408), order=1, anti_aliasing=True))
    assert big[0, 0] == pytest.approx(0.2) and big[250, 450] == pytest.approx(0.8)  # bilinear, no blur
    assert published_frame(np.zeros((944, 1281), np.uint8)).shape == (944, 1281)  # other sizes pass through


def test_keep_limits_and_ranks_by_confluency():
    rng = np.random.default_rng(4)
    frame, _ = blob_frame(rng, 200, 300, 80)
    mask = published_mask(frame, crop_bottom=0)
    every = published_windows(frame, mask, 24, keep=1000)
    few = published_windows(frame, mask, 24, keep=5)
    assert len(every.corners) > 5 and len(few.corners) == 5
    assert np.all(np.diff(every.confluency) <= 0)
    assert np.array_equal(few.corners, every.corners[:5])
    assert np.allclose(every.confluency, [mask[y : y + 24, x : x + 24].mean() for y, x in every.corners])


def test_polarity_flip_makes_dark_cells_foreground():
    rng = np.random.default_rng(5)
    bright, cells = blob_frame(rng, 200, 300, 30, radius=(6, 12))
    dark = 1 - bright
    stretched = rescale_intensity(dark, in_range=tuple(np.percentile(dark, (0.2, 99.8))))
    assert (stretched > threshold_otsu(stretched)).mean() > 0.5  # Otsu alone takes the background here
    a, b = published_mask(bright, 0), published_mask(dark, 0)
    assert 0 < a.mean() < 0.5
    assert np.array_equal(a, b)  # the same mask: the rule flipped Otsu for the dark cells
    assert a[cells].mean() > 0.95 and b[cells].mean() > 0.95


def test_large_components_are_tiled():
    frame = np.full((200, 300), 0.4)
    mask = np.zeros((200, 300), bool)
    mask[10:150, 20:200] = True  # 25,200 px > 2 * 32^2: ceil(139 / 32) x ceil(179 / 32) = 5 x 6 tiles
    chosen = published_windows(frame, mask, 32, keep=100)
    tiles = {(10 + 32 * i, 20 + 32 * j) for i in range(5) for j in range(6)}
    found = {tuple(c) for c in chosen.corners.tolist()}
    assert (63, 93) in found  # the component's own window: its centre of mass (79.5, 109.5) - 16, truncated
    assert found - {(63, 93)} <= tiles and len(found & tiles) >= 25  # the tiles, bar those pruned next to it
    confluency = dict(zip(map(tuple, chosen.corners.tolist()), chosen.confluency, strict=True))
    assert confluency[(10, 20)] == 1 and confluency[(138, 20)] == 12 / 32  # the last row sticks out of the box
    small = np.zeros((200, 300), bool)
    small[10:50, 20:60] = True  # 1,600 px: not tiled, one window
    assert len(published_windows(frame, small, 32, keep=100).corners) == 1


def test_near_duplicates_are_pruned():
    frame = np.full((200, 300), 0.4)
    mask = np.zeros((200, 300), bool)
    mask[50:62, 50:62] = True  # a cell and a smaller neighbour: nearly the same window
    mask[50:58, 66:72] = True
    mask[150:160, 250:262] = True  # far away
    chosen = published_windows(frame, mask, 32)
    assert len(chosen.corners) == 2
    # the pair's windows (39, 39) and (37, 52) hold 184 and 168 px: the first survives; centres of mass - 16
    assert chosen.corners.tolist() == [[39, 39], [138, 239]]
    assert chosen.confluency.tolist() == [184 / 1024, 120 / 1024]


# ---------------------------------------------------------------------------------------------------------------
# the fast helpers against the library calls of the published code


def test_helpers_match_the_library_calls():
    rng = np.random.default_rng(6)
    for trial in range(60):
        h, w = rng.integers(12, 50, 2)  # scipy's fill with a 6x6 structure corrupts memory on narrower images
        m = rng.random((h, w)) < rng.uniform(0.2, 0.8)
        if trial % 2:
            m = ndimage.binary_dilation(rng.random((h, w)) < 0.05, iterations=int(rng.integers(1, 3)))
        assert np.array_equal(cs._close(m), ndimage.binary_erosion(ndimage.binary_dilation(m)))
        assert np.array_equal(cs._fill_holes(m), ndimage.binary_fill_holes(m, structure=np.ones((6, 6))))
        image = rng.random((h, w)) if trial % 3 else rng.integers(0, 3, (h, w)) / 2
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert np.array_equal(clanet_texture.lbp_codes(image), local_binary_pattern(image, 8, 1.0))
    y, x = rng.integers(0, 300, (2, 400))
    first, second = np.triu_indices(400, 1)
    near = (np.abs(y[first] - y[second]) < 32) & (np.abs(x[first] - x[second]) < 32)
    pairs = cs._overlapping_pairs(y, x, 32, block=7)  # blocks keep the published pair order
    assert np.array_equal(pairs[0], first[near]) and np.array_equal(pairs[1], second[near])


def _strict_small(name):
    """skimage's remove_small_holes / remove_small_objects as of the published 0.19.3: fewer than n px."""
    function = getattr(morphology, name)
    if "max_size" in inspect.signature(function).parameters:  # 0.26 on: "n px or fewer"
        return lambda m, n: function(m, max_size=n - 1)
    return lambda m, n: function(m, n)


def test_mask_is_the_library_pipeline():
    rng = np.random.default_rng(7)
    frame, _ = blob_frame(rng, 230, 300, 50, dark=True)
    image = frame[:200]
    stretched = rescale_intensity(image, in_range=tuple(np.percentile(image, (0.2, 99.8))))
    otsu, edges = stretched > threshold_otsu(stretched), canny(stretched)
    if np.mean(edges != otsu) >= 0.5:
        otsu = ~otsu

    def close(m):
        return ndimage.binary_erosion(ndimage.binary_dilation(m))

    def fill(m):
        return ndimage.binary_fill_holes(m, structure=np.ones((6, 6)))

    masks = [fill(close(edges) | close(otsu))]
    for i in range(10):
        masks.append(fill(close(otsu) | close(edges) | close(masks[i])))
        if np.mean(masks[-1] != masks[-2]) < 1e-4:
            break
    expected = _strict_small("remove_small_objects")(_strict_small("remove_small_holes")(masks[-1], 64), 100)
    assert np.array_equal(published_mask(frame, crop_bottom=30), expected)


# ---------------------------------------------------------------------------------------------------------------
# select_patches and the store


def test_ours_is_unchanged():
    rng = np.random.default_rng(8)
    image = (255 * blob_frame(rng, 120, 160, 12)[0]).astype(np.uint8)
    for settings in [PatchSettings(), PatchSettings(size=32, top_k=6, downsample=1, min_object_px=8)]:
        assert settings.method == "ours"
        new, old = select_patches(image, settings), _select_ours(image, settings)
        assert len(old.corners)
        assert np.array_equal(new.corners, old.corners) and np.array_equal(new.confluency, old.confluency)
        assert np.array_equal(new.mask, old.mask)
        pixels, _ = _select(image, settings)
        assert pixels is image  # ours cuts its patches from the frame as read
        assert select_patches(image, replace(settings, components=7)).corners.tolist() == old.corners.tolist()


def test_unknown_method_and_bad_settings_are_refused():
    with pytest.raises(ConfigError, match=r"dataset\.patches\.method.*ours, published"):
        PatchSettings(method="selective_search")
    with pytest.raises(ConfigError, match=r"dataset\.patches\.method"):
        replace(PUBLISHED, method="Published")
    with pytest.raises(ConfigError, match=r"dataset\.patches\.crop_bottom"):
        PatchSettings(crop_bottom=150)  # ours would not cut it
    with pytest.raises(ConfigError, match=r"dataset\.patches\.components"):
        replace(PUBLISHED, components=1)


def test_published_method_stores_patches_of_the_resized_frame(tmp_path):
    rng = np.random.default_rng(9)
    folder = tmp_path / "frames" / "A549" / "batch_1"
    folder.mkdir(parents=True)
    small = (255 * blob_frame(rng, 944, 1280, 150, radius=(8, 20), dark=True)[0]).astype(np.uint8)
    Image.fromarray(small).save(folder / "VID1700_D1_1_00d00h00m.png")
    Image.fromarray(small[:300, :400]).save(folder / "VID1700_D1_1_00d02h00m.png")
    frames = sorted(scan(tmp_path / "frames")[0], key=lambda f: f.path)
    settings = replace(PUBLISHED, size=112, crop_bottom=150)
    pixels, chosen = _select(small, settings)
    expected = (published_frame(small) * 255).astype(np.uint8)
    assert pixels.shape == (1040, 1408) and np.array_equal(pixels, expected)
    assert chosen.mask.shape == (1040, 1408) and not chosen.mask[890:].any()
    store = prepare_patch_store(tmp_path / "frames", frames, settings, tmp_path / "patches")
    rows = store.manifest()
    assert len(rows) == len(store.images) and rows
    sources = {f.path: (published_frame(np.asarray(Image.open(tmp_path / "frames" / f.path))) * 255) for f in frames}
    for row, patch in zip(rows, store.images, strict=True):
        y, x = int(row["bbox_y"]), int(row["bbox_x"])
        source = sources[row["image_file"]].astype(np.uint8)  # truncated, as published
        assert np.array_equal(patch, source[y : y + 112, x : x + 112])
        assert y + 112 <= source.shape[0] - 150
    first = [r for r in rows if r["image_file"].endswith("00d00h00m.png")]
    assert [[int(r["bbox_y"]), int(r["bbox_x"])] for r in first] == chosen.corners.tolist()
