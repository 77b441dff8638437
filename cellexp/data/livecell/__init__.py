"""LIVECell (COCO annotations) and LIVECell-CLS crop folders into the crop store."""
