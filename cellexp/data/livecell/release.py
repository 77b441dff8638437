"""Facts about the LIVECell release that every reader and writer of its format shares."""

from __future__ import annotations

import re

# The 8 cell lines, in LIVECell's order; an image's class is its file-name prefix.
CELL_LINES: tuple[str, ...] = ("A172", "BT474", "BV2", "Huh7", "MCF7", "SHSY5Y", "SkBr3", "SKOV3")

TRAIN_VAL_IMAGE_DIR = "images/livecell_train_val_images"
TEST_IMAGE_DIR = "images/livecell_test_images"
ANNOTATION_DIR = "annotations/LIVECell"
SPLITS: tuple[str, ...] = ("train", "val", "test")

# e.g. A172_Phase_C7_1_00d04h00m_2.tif: line, modality, well, location, elapsed time, tile
_NAME = re.compile(
    r"^(?P<line>[A-Za-z0-9]+)_(?P<modality>[A-Za-z]+)_(?P<well>[A-Z]\d+)_(?P<location>\d+)_"
    r"(?P<days>\d+)d(?P<hours>\d+)h(?P<minutes>\d+)m_(?P<tile>\d+)\.\w+$"
)


def annotation_file_name(split: str) -> str:
    return f"livecell_coco_{split}.json"


def image_dir_for_split(split: str) -> str:
    """Train and val images share one folder; test has its own."""
    return TEST_IMAGE_DIR if split == "test" else TRAIN_VAL_IMAGE_DIR


def image_file_name(line: str, well: str, location: int, hours: int, tile: int) -> str:
    days, hours = divmod(hours, 24)
    return f"{line}_Phase_{well}_{location}_{days:02d}d{hours:02d}h00m_{tile}.tif"


def parse_image_name(name: str) -> dict:
    """Split a LIVECell image name into its fields; raise ValueError naming the file if it does not fit."""
    match = _NAME.match(name.rsplit("/", 1)[-1])
    if match is None or match["line"] not in CELL_LINES:
        raise ValueError(
            f"image name {name!r} does not look like a LIVECell name "
            f"(<line>_Phase_<well>_<location>_<DD>d<HH>h<MM>m_<tile>.tif with line one of {', '.join(CELL_LINES)})"
        )
    fields = match.groupdict()
    elapsed_h = int(fields["days"]) * 24 + int(fields["hours"]) + int(fields["minutes"]) / 60
    return {
        "line": fields["line"],
        "well": fields["well"],
        "location": int(fields["location"]),
        "elapsed_hours": elapsed_h,
        "tile": int(fields["tile"]),
    }
