"""The 3-D Cell Painting field readers: each layout's round trip, the same plate read alike from all three, and
damaged fields refused with the file named."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import tifffile
from ome_zarr.format import FormatV04
from ome_zarr.writer import write_image, write_plate_metadata, write_well_metadata

from cellexp.data.cellpainting.fields import (
    FIELD_ERRORS,
    LAYOUTS,
    FieldError,
    FieldRef,
    find_fields,
    read_field,
    write_field,
)
from cellexp.errors import DataError

VOXEL = (2.0, 0.5, 0.25)
# the layouts that record the voxel size; planes (Harmony's TIFFs) do not
RECORDED = {"ome-tiff": VOXEL, "ome-zarr": VOXEL, "planes": None}


def _stack(seed: int = 0, channels: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2**16, (channels, 4, 16, 20), dtype=np.uint16)


def _plate(root, layout, channels: int = 5) -> dict[tuple[str, str, int], np.ndarray]:
    """Three fields of plate P1 in two wells, written in `layout`; the pixels by (plate, well, site)."""
    stacks = {("P1", "A01", 1): _stack(1, channels), ("P1", "A01", 2): _stack(2, channels)}
    stacks[("P1", "B12", 1)] = _stack(3, channels)
    for key, pixels in stacks.items():
        write_field(root, layout, key, pixels, VOXEL)
    return stacks


@pytest.mark.parametrize("layout", LAYOUTS)
def test_round_trip(tmp_path, layout):
    stacks = _plate(tmp_path, layout)
    fields = find_fields(tmp_path, layout)
    assert [(f.plate, f.well, f.site, f.layout) for f in fields] == [(*key, layout) for key in sorted(stacks)]
    for field in fields:
        read = read_field(field, channels=5)
        assert read.pixels.dtype == np.uint16
        np.testing.assert_array_equal(read.pixels, stacks[(field.plate, field.well, field.site)])
        assert read.voxel_size == RECORDED[layout]


def test_one_plate_reads_alike_in_every_layout(tmp_path):
    stacks = {layout: _plate(tmp_path / layout, layout) for layout in LAYOUTS}
    read = {
        layout: {f.name: read_field(f).pixels.tobytes() for f in find_fields(tmp_path / layout, layout)}
        for layout in LAYOUTS
    }
    assert read["ome-tiff"] == read["ome-zarr"] == read["planes"]
    assert sorted(read["planes"]) == ["P1_A01_s1", "P1_A01_s2", "P1_B12_s1"]
    assert read["planes"]["P1_B12_s1"] == stacks["planes"][("P1", "B12", 1)].tobytes()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_well_written_a1_reads_a01(tmp_path, layout):
    write_field(tmp_path, layout, ("P1", "A1", 3), _stack(), VOXEL)
    (field,) = find_fields(tmp_path, layout)
    assert (field.plate, field.well, field.site, field.name) == ("P1", "A01", 3, "P1_A01_s3")


def test_a_wrong_layout_is_refused_naming_the_allowed(tmp_path):
    with pytest.raises(DataError, match=r"dataset.layout='zarr' is not one of ome-tiff, ome-zarr, planes"):
        find_fields(tmp_path, "zarr")
    with pytest.raises(DataError, match=r"dataset.layout='tiff' is not one of ome-tiff, ome-zarr, planes"):
        write_field(tmp_path, "tiff", ("P1", "A01", 1), _stack(), VOXEL)


def _first_chunk(image):
    return next(p for p in sorted((image / "s0").rglob("*")) if p.is_file() and p.name != "zarr.json")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("keep", [0.3, 0.9])
def test_a_truncated_file_is_named(tmp_path, layout, keep):
    _plate(tmp_path, layout)
    field = find_fields(tmp_path, layout)[0]
    damaged = {"ome-tiff": field.path, "planes": field.path, "ome-zarr": None}[layout] or _first_chunk(field.path)
    size = damaged.stat().st_size
    with open(damaged, "r+b") as f:
        f.truncate(int(size * keep))
    with pytest.raises(FIELD_ERRORS) as caught:
        read_field(field, channels=5)
    assert str(field.path) in str(caught.value)


def test_a_truncated_ome_tiff_is_never_read_as_fewer_planes(tmp_path):
    """tifffile writes the OME-XML last: a file cut anywhere loses it, and must not read as its first planes."""
    _plate(tmp_path, "ome-tiff")
    field = find_fields(tmp_path, "ome-tiff")[0]
    whole = field.path.read_bytes()
    for keep in range(0, len(whole), 997):
        field.path.write_bytes(whole[:keep])
        with pytest.raises(FieldError, match=str(field.path)):
            read_field(field)


def test_a_damaged_zarr_metadata_is_named(tmp_path):
    _plate(tmp_path, "ome-zarr")
    field = find_fields(tmp_path, "ome-zarr")[0]
    with open(field.path / "zarr.json", "r+b") as f:
        f.truncate(100)
    with pytest.raises(FieldError, match=f"{field.path}: no OME-Zarr group"):
        read_field(field)


def test_a_missing_plane_is_named(tmp_path):
    _plate(tmp_path, "planes")
    field = find_fields(tmp_path, "planes")[0]
    (field.path.parent / "r01c01f01p03-ch2sk1fk1fl1.tiff").unlink()
    with pytest.raises(FieldError, match=r"P1_A01_s1 lacks 1 of its 5x4 channel-plane files: r01c01f01p03-ch2sk1"):
        read_field(field)


def test_a_missing_channel_is_named(tmp_path):
    _plate(tmp_path, "planes")
    field = find_fields(tmp_path, "planes")[0]
    for plane in range(1, 5):
        (field.path.parent / f"r01c01f01p{plane:02d}-ch3sk1fk1fl1.tiff").unlink()
    with pytest.raises(FieldError) as caught:
        read_field(field)
    assert "lacks 4 of its 5x4" in str(caught.value)
    assert all(f"r01c01f01p{plane:02d}-ch3sk1fk1fl1.tiff" in str(caught.value) for plane in range(1, 5))
    # the last channel gone is only seen against the plate's channel count
    for plane in range(1, 5):
        for channel in (3, 4, 5):
            (field.path.parent / f"r01c01f01p{plane:02d}-ch{channel}sk1fk1fl1.tiff").unlink(missing_ok=True)
    assert read_field(field).pixels.shape == (2, 4, 16, 20)
    with pytest.raises(FieldError, match=f"{field.path}: 2 channels, the plate's fields have 5"):
        read_field(field, channels=5)


def test_two_time_points_of_a_plane_are_refused(tmp_path):
    _plate(tmp_path, "planes")
    field = find_fields(tmp_path, "planes")[0]
    again = field.path.parent / "r01c01f01p01-ch1sk2fk1fl1.tiff"
    again.write_bytes(field.path.read_bytes())
    with pytest.raises(FieldError, match=r"channel 1 plane 1 again"):
        read_field(field)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_stack_of_another_channel_count_is_named(tmp_path, layout):
    _plate(tmp_path, layout, channels=4)
    field = find_fields(tmp_path, layout)[0]
    with pytest.raises(FieldError, match=f"{field.path}: 4 channels, the plate's fields have 5"):
        read_field(field, channels=5)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_stack_over_max_voxels_is_refused(tmp_path, layout):
    _plate(tmp_path, layout)
    field = find_fields(tmp_path, layout)[0]
    with pytest.raises(FieldError, match=r"declares a 5x4x16x20 stack \(6400 voxels\), over read_field's max_voxels"):
        read_field(field, max_voxels=6399)
    assert read_field(field, max_voxels=6400).pixels.shape == (5, 4, 16, 20)


def test_hostile_headers_are_refused_before_reading(tmp_path):
    """Headers that declare terabytes are refused at the default limit, without allocating them."""
    _plate(tmp_path / "z", "ome-zarr")
    field = find_fields(tmp_path / "z", "ome-zarr")[0]
    metadata = json.loads((field.path / "s0" / "zarr.json").read_text())
    metadata["shape"] = [5, 4000, 100000, 100000]
    (field.path / "s0" / "zarr.json").write_text(json.dumps(metadata))
    with pytest.raises(FieldError, match=r"5x4000x100000x100000 stack"):
        read_field(field)

    _plate(tmp_path / "p", "planes")
    field = find_fields(tmp_path / "p", "planes")[0]
    with tifffile.TiffFile(field.path, mode="r+b") as tif:
        tif.pages[0].tags["ImageWidth"].overwrite(100000)
        tif.pages[0].tags["ImageLength"].overwrite(100000)
    with pytest.raises(FieldError, match=r"5x4x100000x100000 stack"):
        read_field(field)


def test_planes_channels_and_planes_sort_numerically(tmp_path):
    stack = np.arange(11 * 12 * 3 * 2, dtype=np.uint16).reshape(11, 12, 3, 2)
    write_field(tmp_path, "planes", ("P1", "C03", 1), stack, VOXEL)
    assert (tmp_path / "P1" / "r03c03f01p10-ch11sk1fk1fl1.tiff").is_file()
    (field,) = find_fields(tmp_path, "planes")
    assert field.path.name == "r03c03f01p01-ch1sk1fk1fl1.tiff"
    np.testing.assert_array_equal(read_field(field).pixels, stack)


def test_planes_take_a_pattern_and_the_root_as_plate(tmp_path):
    root = tmp_path / "MyPlate"
    root.mkdir()
    stack = _stack()
    for c, channel in enumerate(stack, start=1):
        for z, plane in enumerate(channel, start=1):
            tifffile.imwrite(root / f"b7_site2_z{z}_w{c}.tif", plane)
    pattern = r"(?P<well>[a-z]\d+)_site(?P<site>\d+)_z(?P<plane>\d+)_w(?P<channel>\d+)\.tif"
    (field,) = find_fields(root, "planes", pattern)
    assert (field.plate, field.well, field.site, field.path.name) == ("MyPlate", "B07", 2, "b7_site2_z1_w1.tif")
    np.testing.assert_array_equal(read_field(field).pixels, stack)
    with pytest.raises(DataError, match=r"needs the groups row and col \(or well\), field \(or site\), plane"):
        find_fields(root, "planes", r"(?P<well>[a-z]\d+)_site(?P<site>\d+)_.*\.tif")


def test_ome_zarr_plate_metadata(tmp_path):
    """The plate's metadata lists its wells and fields; rewriting a field replaces it and leaves nothing behind."""
    stacks = _plate(tmp_path, "ome-zarr")
    write_field(tmp_path, "ome-zarr", ("P1", "A01", 1), stacks[("P1", "A01", 2)], VOXEL)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["P1.zarr"]
    plate = json.loads((tmp_path / "P1.zarr" / "zarr.json").read_text())["attributes"]["ome"]["plate"]
    assert [w["path"] for w in plate["wells"]] == ["A/1", "B/12"]
    assert (plate["name"], plate["field_count"]) == ("P1", 2)
    fields = find_fields(tmp_path / "P1.zarr", "ome-zarr")  # the root may be the plate itself
    assert [f.name for f in fields] == ["P1_A01_s1", "P1_A01_s2", "P1_B12_s1"]
    np.testing.assert_array_equal(read_field(fields[0]).pixels, stacks[("P1", "A01", 2)])


def test_ome_zarr_well_without_metadata_is_skipped(tmp_path, caplog):
    _plate(tmp_path, "ome-zarr")
    (tmp_path / "P1.zarr" / "B" / "12" / "zarr.json").unlink()
    with caplog.at_level(logging.WARNING):
        fields = find_fields(tmp_path, "ome-zarr")
    assert [f.name for f in fields] == ["P1_A01_s1", "P1_A01_s2"]
    assert "lists well B/12, which has no well metadata" in caplog.text


def test_ome_zarr_reads_a_zarr_v2_plate_named_in_its_metadata(tmp_path, caplog):
    """An OME-Zarr 0.4 plate (Zarr v2, as IDR serves them) with t in its axes and nanometre units."""
    stack = _stack()
    fmt = FormatV04()
    write_plate_metadata(str(tmp_path / "export.zarr"), ["C"], ["4"], ["C/4"], fmt=fmt, name="Screen 7")
    write_well_metadata(str(tmp_path / "export.zarr" / "C" / "4"), ["0"], fmt=fmt)
    write_image(
        stack[None],
        str(tmp_path / "export.zarr" / "C" / "4" / "0"),
        scale_factors=[2],
        fmt=fmt,
        axes=["t", "c", "z", "y", "x"],
        scale={"t": 1.0, "c": 1.0, "z": 2000.0, "y": 500.0, "x": 250.0},
        axes_units=dict.fromkeys("zyx", "nanometer"),
    )
    assert (tmp_path / "export.zarr" / ".zattrs").is_file()
    (field,) = find_fields(tmp_path, "ome-zarr")
    assert (field.plate, field.well, field.site) == ("Screen 7", "C04", 0)
    read = read_field(field)
    np.testing.assert_array_equal(read.pixels, stack)
    assert read.voxel_size == pytest.approx(VOXEL)
    # a field added to it is written as 0.4 too, the plate keeping its version and its name
    write_field(tmp_path, "ome-zarr", ("export", "C04", 1), stack[::-1], VOXEL)
    assert (tmp_path / "export.zarr" / "C" / "4" / "1" / ".zattrs").is_file()
    added = find_fields(tmp_path, "ome-zarr")[1]
    assert (added.plate, added.well, added.site) == ("Screen 7", "C04", 1)
    np.testing.assert_array_equal(read_field(added).pixels, stack[::-1])
    assert "version mismatch" not in caplog.text


def test_a_field_ref_built_by_hand_reads(tmp_path):
    """The caller may keep FieldRefs in a manifest: path and layout are enough to read one."""
    stacks = _plate(tmp_path, "planes")
    first = tmp_path / "P1" / "r02c12f01p01-ch1sk1fk1fl1.tiff"
    read = read_field(FieldRef("P1", "B12", 1, "planes", first))
    np.testing.assert_array_equal(read.pixels, stacks[("P1", "B12", 1)])
