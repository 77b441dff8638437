"""Bad images and label images in task=predict: each is checked (size from its header, shape against its image,
label range) before anything is allocated for it, then skipped, named and counted; the others are predicted."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from cellexp.data.livecell.prepare import CropSettings
from cellexp.data.transforms import InputConfig
from cellexp.plates.files import PlateImage
from cellexp.plates.outlines import LabelFolder
from cellexp.plates.plate import predict_plate

MAX_PIXELS = 100_000_000  # conf/task/predict.yaml's task.max_pixels
SHAPE = (64, 80)


def _png_header(path: Path, width: int, height: int) -> None:
    """A valid PNG whose header claims width x height, with almost no data: what a decoder would allocate for."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 16)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def _zlib_tiff(path: Path, side: int) -> None:
    """A side x side zlib TIFF of zeros, written tile by tile (small on disk, side^2 bytes once decoded)."""
    tile = np.zeros((1024, 1024), np.uint8)
    count = (-(-side // 1024)) ** 2  # tiles per side, rounded up, squared
    with tifffile.TiffWriter(path) as tif:
        tif.write(shape=(side, side), dtype=np.uint8, compression="zlib", tile=(1024, 1024), data=iter([tile] * count))


def _cell_image(path: Path) -> None:
    pixels = np.full(SHAPE, 40, np.uint8)
    pixels[20:40, 20:40] = 200
    Image.fromarray(pixels).save(path)


def _labels(value: int, dtype=np.int32) -> np.ndarray:
    labels = np.zeros(SHAPE, dtype)
    labels[20:40, 20:40] = value
    return labels


def _predict(folder: Path, masks: Path, names: list[str]):
    images = [PlateImage(folder / name, "plate", {}) for name in names]
    seen = []

    def classify(crops):
        seen.append(len(crops))
        return np.full((len(crops), 2), 0.5), np.zeros((len(crops), 4))

    settings, inputs = CropSettings(crop_size=32), InputConfig(image_size=32)
    result = predict_plate(images, LabelFolder(masks, MAX_PIXELS), classify, settings, inputs, 8, MAX_PIXELS)
    return result, {Path(s["input"]).name: s["reason"] for s in result.skipped}


def test_bad_images_and_label_images_are_skipped_named_and_counted(tmp_path):
    folder, masks = tmp_path / "plate", tmp_path / "masks"
    folder.mkdir()
    masks.mkdir()
    good = ["good.png", "huge_id.png"]
    for name in [*good, "transposed.png", "colour_mask.png", "negative.png", "huge_mask.png"]:
        _cell_image(folder / name)
    tifffile.imwrite(masks / "good_masks.tif", _labels(1))
    tifffile.imwrite(masks / "huge_id_masks.tif", _labels(2**31 - 1))
    tifffile.imwrite(masks / "transposed_masks.tif", _labels(1).T.copy())
    tifffile.imwrite(masks / "colour_mask_masks.tif", np.stack([_labels(1, np.uint8)] * 3, axis=-1))
    tifffile.imwrite(masks / "negative_masks.tif", _labels(-3))
    _zlib_tiff(masks / "huge_mask_masks.tif", 12_000)
    _png_header(folder / "claims_30000.png", 30_000, 30_000)
    _zlib_tiff(folder / "zlib_40000.tif", 40_000)
    names = sorted([*good, "transposed.png", "colour_mask.png", "negative.png", "huge_mask.png"])
    names += ["claims_30000.png", "zlib_40000.tif"]

    result, reasons = _predict(folder, masks, names)

    assert sorted(reasons) == sorted(set(names) - set(good)), reasons
    assert "is 64x80, its image 80x64" in reasons["transposed.png"]
    assert "not a label image (2-D integers)" in reasons["colour_mask.png"]
    assert "negative labels (down to -3)" in reasons["negative.png"]
    assert "header declares 12000x12000, 144000000 values: over task.max_pixels=100000000" in reasons["huge_mask.png"]
    assert "DecompressionBombError" in reasons["claims_30000.png"] and "900000000 pixels" in reasons["claims_30000.png"]
    assert "header declares 40000x40000, 1600000000 values: over task.max_pixels" in reasons["zlib_40000.tif"]
    assert all("\n" not in reason for reason in reasons.values())
    assert result.images == 2 and len(result.skipped) == len(names) - 2
    ids = {row["Metadata_Image"]: row["Metadata_ObjectNumber"] for row in result.rows}
    assert ids == {"good.png": 1, "huge_id.png": 2**31 - 1}
