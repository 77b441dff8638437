"""Every preset that names a published model computes with the published file's values.

The tables below hold, for each published file, the values it sets and where (line numbers in the file at
NeuRoNeLab/connectome-livecell-cls e675f76, `_configs/`, or LeiTong02/CLANet f7d6aff), written in the published
vocabulary; `TRANSLATE` says what each published word is called here. Each preset is composed with Hydra as train.py
composes it and compared field by field. A difference docs/presets.md documents as deliberate is listed in
`DELIBERATE` with the words of its row there (which must be there, and the difference must still exist); any other
difference fails. Rows with no published config (`ANALOGY`) are held to the file their preset names as their analogy.
"""

from __future__ import annotations

import pytest
from omegaconf import DictConfig

from tests.conftest import CONF, ROOT

# Published values, as written in the file: field -> (value, line); a line in another file names that file.
# (kept as a table, one file's values together)
# fmt: off
PUBLISHED: dict[str, dict[str, tuple]] = {
    "custom_vit_b16_livecell.yaml": {
        "seed": (42, 2), "precision": ("16-mixed", 8), "max_epochs": (80, 81), "min_epochs": (None, 82),
        "grad_accum": (8, 98), "sync_batchnorm": (False, 109), "optimizer": ("ADAMW", 135), "lr": (0.0001, 138),
        "weight_decay": (0.0, 142), "scheduler": ("REDUCE_LR_PLATEAU", 146), "factor": (0.1, 149),
        "patience": (2, 150), "monitor": ("val/final_loss", 159), "stop_patience": (10, 63),
        "batch_size": (200, 168), "image_size": (224, "ds/livecell_datamodule.py:30"), "in_chans": (1, 118),
        "selected": ("val/final_loss", 48), "grad_clip": (None, 99),
        "head_trains": (True, "models/vision/vit_lit_wrapper.py:168"),
    },
    "custom_vit_b32_livecell.yaml": {
        "seed": (42, 2), "precision": ("16-mixed", 8), "max_epochs": (80, 81), "min_epochs": (None, 82),
        "grad_accum": (8, 98), "sync_batchnorm": (False, 109), "optimizer": ("ADAMW", 135), "lr": (0.0001, 138),
        "weight_decay": (0.0, 142), "scheduler": ("REDUCE_LR_PLATEAU", 146), "factor": (0.1, 149),
        "patience": (2, 150), "monitor": ("val/final_loss", 159), "stop_patience": (10, 63),
        "batch_size": (256, 168), "image_size": (224, "ds/livecell_datamodule.py:30"), "in_chans": (1, 118),
        "selected": ("val/final_loss", 48), "grad_clip": (None, 99),
        "head_trains": (True, "models/vision/vit_lit_wrapper.py:168"),
    },
    "densenet121-deep.yaml": {
        "seed": (42, 2), "precision": ("16-mixed", 9), "max_epochs": (250, 80), "min_epochs": (25, 81),
        "grad_accum": (1, 97), "sync_batchnorm": (True, 108), "optimizer": ("ADAMW", 135), "lr": (0.0001, 138),
        "weight_decay": (0.1, 142), "scheduler": ("REDUCE_LR_PLATEAU", 146), "factor": (0.5, 149),
        "patience": (2, 150), "monitor": ("val/final_loss", 159), "stop_patience": (10, 69),
        "batch_size": (256, 168), "image_size": (224, 175), "in_chans": (3, 177),
        "selected": ("val/final_loss", 49), "grad_clip": (None, 98),
        "head_trains": (False, "models/vision/backbone_lit_wrapper.py:214"),
    },
    "densenet121-wide.yaml": {
        "seed": (42, 2), "precision": ("16-mixed", 9), "max_epochs": (250, 80), "min_epochs": (25, 81),
        "grad_accum": (1, 97), "sync_batchnorm": (True, 108), "optimizer": ("ADAMW", 131), "lr": (0.0001, 134),
        "weight_decay": (0.1, 138), "scheduler": ("REDUCE_LR_PLATEAU", 142), "factor": (0.5, 145),
        "patience": (2, 146), "monitor": ("val/final_loss", 155), "stop_patience": (10, 69),
        "batch_size": (256, 164), "image_size": (224, 171), "in_chans": (3, 173),
        "selected": ("val/final_loss", 49), "grad_clip": (None, 98),
        "head_trains": (False, "models/vision/backbone_lit_wrapper.py:214"),
    },
    "densenet161.yaml": {
        "seed": (42, 2), "precision": ("16-mixed", 8), "max_epochs": (250, 79), "min_epochs": (25, 80),
        "grad_accum": (2, 96), "sync_batchnorm": (True, 107), "optimizer": ("ADAMW", 121), "lr": (0.0001, 124),
        "weight_decay": (0.1, 128), "scheduler": ("REDUCE_LR_PLATEAU", 132), "factor": (0.5, 135),
        "patience": (2, 136), "monitor": ("val/final_loss", 145), "stop_patience": (10, 68),
        "batch_size": (128, 154), "image_size": (224, 161), "in_chans": (3, 163),
        "selected": ("val/final_loss", 48), "grad_clip": (None, 97),
        "head_trains": (True, "models/vision/backbone_lit_wrapper.py:214"),
    },
    "densenet169.yaml": {
        "seed": (42, 2), "precision": ("16-mixed", 8), "max_epochs": (250, 79), "min_epochs": (25, 80),
        "grad_accum": (2, 96), "sync_batchnorm": (True, 107), "optimizer": ("ADAMW", 121), "lr": (0.0001, 124),
        "weight_decay": (0.1, 128), "scheduler": ("REDUCE_LR_PLATEAU", 132), "factor": (0.5, 135),
        "patience": (2, 136), "monitor": ("val/final_loss", 145), "stop_patience": (10, 68),
        "batch_size": (128, 154), "image_size": (224, 161), "in_chans": (3, 163),
        "selected": ("val/final_loss", 48), "grad_clip": (None, 97),
        "head_trains": (True, "models/vision/backbone_lit_wrapper.py:214"),
    },
    "efficientnetb0-deep.yaml": {
        "seed": (42, 2), "precision": ("16-mixed", 9), "max_epochs": (250, 80), "min_epochs": (25, 81),
        "grad_accum": (1, 97), "sync_batchnorm": (True, 108), "optimizer": ("ADAMW", 135), "lr": (0.0001, 138),
        "weight_decay": (0.1, 142), "scheduler": ("REDUCE_LR_PLATEAU", 146), "factor": (0.5, 149),
        "patience": (2, 150), "monitor": ("val/final_loss", 159), "stop_patience": (10, 69),
        "batch_size": (256, 168), "image_size": (224, 175), "in_chans": (3, 177),
        "selected": ("val/final_loss", 49), "grad_clip": (None, 98),
        "head_trains": (False, "models/vision/backbone_lit_wrapper.py:214"),
    },
    "efficientnetb0-wide.yaml": {
        "seed": (42, 2), "precision": ("16-mixed", 9), "max_epochs": (250, 80), "min_epochs": (25, 81),
        "grad_accum": (1, 97), "sync_batchnorm": (True, 108), "optimizer": ("ADAMW", 131), "lr": (0.0001, 134),
        "weight_decay": (0.1, 138), "scheduler": ("REDUCE_LR_PLATEAU", 142), "factor": (0.5, 145),
        "patience": (2, 146), "monitor": ("val/final_loss", 155), "stop_patience": (10, 69),
        "batch_size": (256, 164), "image_size": (224, 171), "in_chans": (3, 173),
        "selected": ("val/final_loss", 49), "grad_clip": (None, 98),
        "head_trains": (False, "models/vision/backbone_lit_wrapper.py:214"),
    },
    "efficientnetv2_s.yaml": {
        "seed": (42, 2), "precision": ("16-mixed", 8), "max_epochs": (250, 79), "min_epochs": (25, 80),
        "grad_accum": (2, 96), "sync_batchnorm": (True, 107), "optimizer": ("ADAMW", 121), "lr": (0.0001, 124),
        "weight_decay": (0.1, 128), "scheduler": ("REDUCE_LR_PLATEAU", 132), "factor": (0.5, 135),
        "patience": (2, 136), "monitor": ("val/final_loss", 145), "stop_patience": (10, 68),
        "batch_size": (256, 154), "image_size": (224, 161), "in_chans": (3, 163),
        "selected": ("val/final_loss", 48), "grad_clip": (None, 97),
        "head_trains": (True, "models/vision/backbone_lit_wrapper.py:214"),
    },
    "elegans_densenet121.yaml": {
        "seed": (42, 2), "precision": ("16-mixed", 8), "max_epochs": (250, 86), "min_epochs": (25, 87),
        "grad_accum": (1, 103), "sync_batchnorm": (True, 114), "optimizer": ("ADAMW", 159), "lr": (0.0001, 162),
        "weight_decay": (0.1, 166), "scheduler": ("REDUCE_LR_PLATEAU", 170), "factor": (0.5, 173),
        "patience": (2, 174), "monitor": ("val/final_loss", 183), "stop_patience": (10, 68),
        "batch_size": (256, 192), "image_size": (224, 199), "in_chans": (3, 201),
        "selected": ("val/final_loss", 48), "grad_clip": (None, 104),
        "head_trains": (True, "models/elegans_vision/elegans_vision_lit_wrapper.py:179"),
    },
    "elegans_densenet161.yaml": {
        "seed": (42, 2), "precision": ("16-mixed", 8), "max_epochs": (250, 86), "min_epochs": (25, 87),
        "grad_accum": (2, 103), "sync_batchnorm": (True, 114), "optimizer": ("ADAMW", 159), "lr": (0.0001, 162),
        "weight_decay": (0.1, 166), "scheduler": ("REDUCE_LR_PLATEAU", 170), "factor": (0.5, 173),
        "patience": (2, 174), "monitor": ("val/final_loss", 183), "stop_patience": (10, 68),
        "batch_size": (128, 192), "image_size": (224, 199), "in_chans": (3, 201),
        "selected": ("val/final_loss", 48), "grad_clip": (None, 104),
        "head_trains": (True, "models/elegans_vision/elegans_vision_lit_wrapper.py:179"),
    },
    "elegans_efficientnet_b0.yaml": {
        "seed": (42, 2), "precision": ("16-mixed", 8), "max_epochs": (250, 86), "min_epochs": (25, 87),
        "grad_accum": (1, 103), "sync_batchnorm": (True, 114), "optimizer": ("ADAMW", 159), "lr": (0.0001, 162),
        "weight_decay": (0.1, 166), "scheduler": ("REDUCE_LR_PLATEAU", 170), "factor": (0.5, 173),
        "patience": (2, 174), "monitor": ("val/final_loss", 183), "stop_patience": (10, 68),
        "batch_size": (256, 192), "image_size": (224, 199), "in_chans": (3, 201),
        "selected": ("val/final_loss", 48), "grad_clip": (None, 104),
        "head_trains": (True, "models/elegans_vision/elegans_vision_lit_wrapper.py:179"),
    },
    "elegans_efficientnet_b0_random.yaml": {
        "seed": (42, 2), "precision": ("16-mixed", 9), "max_epochs": (250, 87), "min_epochs": (25, 88),
        "grad_accum": (1, 104), "sync_batchnorm": (True, 115), "optimizer": ("ADAMW", 160), "lr": (0.0001, 163),
        "weight_decay": (0.1, 167), "scheduler": ("REDUCE_LR_PLATEAU", 171), "factor": (0.5, 174),
        "patience": (2, 175), "monitor": ("val/final_loss", 184), "stop_patience": (10, 69),
        "batch_size": (256, 193), "image_size": (224, 200), "in_chans": (3, 202),
        "selected": ("val/final_loss", 49), "grad_clip": (None, 105),
        "head_trains": (True, "models/elegans_vision/elegans_vision_lit_wrapper.py:179"),
    },
    "elegans_efficientnet_b1.yaml": {
        "seed": (42, 2), "precision": ("16-mixed", 8), "max_epochs": (250, 86), "min_epochs": (25, 87),
        "grad_accum": (1, 103), "sync_batchnorm": (True, 114), "optimizer": ("ADAMW", 159), "lr": (0.0001, 162),
        "weight_decay": (0.1, 166), "scheduler": ("REDUCE_LR_PLATEAU", 170), "factor": (0.5, 173),
        "patience": (2, 174), "monitor": ("val/final_loss", 183), "stop_patience": (10, 68),
        "batch_size": (256, 192), "image_size": (224, 199), "in_chans": (3, 201),
        "selected": ("val/final_loss", 48), "grad_clip": (None, 104),
        "head_trains": (True, "models/elegans_vision/elegans_vision_lit_wrapper.py:179"),
    },
    "elegans_efficientnetv2_m.yaml": {
        "seed": (42, 2), "precision": ("16-mixed", 9), "max_epochs": (250, 87), "min_epochs": (25, 88),
        "grad_accum": (1, 104), "sync_batchnorm": (True, 115), "optimizer": ("ADAMW", 160), "lr": (0.0001, 163),
        "weight_decay": (0.1, 167), "scheduler": ("REDUCE_LR_PLATEAU", 171), "factor": (0.5, 174),
        "patience": (2, 175), "monitor": ("val/final_loss", 184), "stop_patience": (10, 69),
        "batch_size": (128, 193), "image_size": (224, 200), "in_chans": (3, 202),
        "selected": ("val/final_loss", 49), "grad_clip": (None, 105),
        "head_trains": (True, "models/elegans_vision/elegans_vision_lit_wrapper.py:179"),
    },
    "elegans_efficientnetv2_s.yaml": {
        "seed": (42, 2), "precision": ("16-mixed", 8), "max_epochs": (250, 86), "min_epochs": (25, 87),
        "grad_accum": (1, 103), "sync_batchnorm": (True, 114), "optimizer": ("ADAMW", 159), "lr": (0.0001, 162),
        "weight_decay": (0.1, 166), "scheduler": ("REDUCE_LR_PLATEAU", 170), "factor": (0.5, 173),
        "patience": (2, 174), "monitor": ("val/final_loss", 183), "stop_patience": (10, 68),
        "batch_size": (256, 192), "image_size": (224, 199), "in_chans": (3, 201),
        "selected": ("val/final_loss", 48), "grad_clip": (None, 104),
        "head_trains": (True, "models/elegans_vision/elegans_vision_lit_wrapper.py:179"),
    },
    "elegans_resnet18.yaml": {
        "seed": (42, 2), "precision": ("16-mixed", 9), "max_epochs": (250, 87), "min_epochs": (25, 88),
        "grad_accum": (1, 104), "sync_batchnorm": (True, 115), "optimizer": ("ADAMW", 160), "lr": (0.0001, 163),
        "weight_decay": (0.1, 167), "scheduler": ("REDUCE_LR_PLATEAU", 171), "factor": (0.5, 174),
        "patience": (2, 175), "monitor": ("val/final_loss", 184), "stop_patience": (10, 69),
        "batch_size": (256, 193), "image_size": (224, 200), "in_chans": (3, 202),
        "selected": ("val/final_loss", 49), "grad_clip": (None, 105),
        "head_trains": (True, "models/elegans_vision/elegans_vision_lit_wrapper.py:179"),
    },
    "elegans_resnet18_random_ba.yaml": {
        "seed": (42, 2), "precision": ("16-mixed", 9), "max_epochs": (250, 87), "min_epochs": (25, 88),
        "grad_accum": (1, 104), "sync_batchnorm": (True, 115), "optimizer": ("ADAMW", 160), "lr": (0.0001, 163),
        "weight_decay": (0.1, 167), "scheduler": ("REDUCE_LR_PLATEAU", 171), "factor": (0.5, 174),
        "patience": (2, 175), "monitor": ("val/final_loss", 184), "stop_patience": (10, 69),
        "batch_size": (256, 193), "image_size": (224, 200), "in_chans": (3, 202),
        "selected": ("val/final_loss", 49), "grad_clip": (None, 105),
        "head_trains": (True, "models/elegans_vision/elegans_vision_lit_wrapper.py:179"),
    },
    "elegans_resnet18_random_er.yaml": {
        "seed": (42, 2), "precision": ("16-mixed", 9), "max_epochs": (250, 87), "min_epochs": (25, 88),
        "grad_accum": (1, 104), "sync_batchnorm": (True, 115), "optimizer": ("ADAMW", 160), "lr": (0.0001, 163),
        "weight_decay": (0.1, 167), "scheduler": ("REDUCE_LR_PLATEAU", 171), "factor": (0.5, 174),
        "patience": (2, 175), "monitor": ("val/final_loss", 184), "stop_patience": (10, 69),
        "batch_size": (256, 193), "image_size": (224, 200), "in_chans": (3, 202),
        "selected": ("val/final_loss", 49), "grad_clip": (None, 105),
        "head_trains": (True, "models/elegans_vision/elegans_vision_lit_wrapper.py:179"),
    },
    "elegans_resnet18_random_ws.yaml": {
        "seed": (42, 2), "precision": ("16-mixed", 9), "max_epochs": (250, 87), "min_epochs": (25, 88),
        "grad_accum": (1, 104), "sync_batchnorm": (True, 115), "optimizer": ("ADAMW", 160), "lr": (0.0001, 163),
        "weight_decay": (0.1, 167), "scheduler": ("REDUCE_LR_PLATEAU", 171), "factor": (0.5, 174),
        "patience": (2, 175), "monitor": ("val/final_loss", 184), "stop_patience": (10, 69),
        "batch_size": (256, 193), "image_size": (224, 200), "in_chans": (3, 202),
        "selected": ("val/final_loss", 49), "grad_clip": (None, 105),
        "head_trains": (True, "models/elegans_vision/elegans_vision_lit_wrapper.py:179"),
    },
    "elegansformer_b16_livecell.yaml": {
        "seed": (42, 2), "precision": ("16-mixed", 8), "max_epochs": (80, 81), "min_epochs": (None, 82),
        "grad_accum": (8, 98), "sync_batchnorm": (False, 109), "optimizer": ("ADAMW", 160), "lr": (0.0001, 163),
        "weight_decay": (0.0, 167), "scheduler": ("REDUCE_LR_PLATEAU", 171), "factor": (0.1, 174),
        "patience": (2, 175), "monitor": ("val/final_loss", 184), "stop_patience": (10, 63),
        "batch_size": (256, 196), "image_size": (224, 194), "in_chans": (1, 118),
        "selected": ("val/final_loss", 48), "grad_clip": (None, 99),
        "head_trains": (True, "models/elegansformer/elegansformer_lit_wrapper.py:169"),
    },
    "elegansformer_b32_livecell.yaml": {
        "seed": (42, 2), "precision": ("16-mixed", 8), "max_epochs": (80, 86), "min_epochs": (None, 87),
        "grad_accum": (1, 103), "sync_batchnorm": (False, 114), "optimizer": ("ADAMW", 165), "lr": (0.0001, 168),
        "weight_decay": (0.1, 172), "scheduler": ("REDUCE_LR_PLATEAU", 176), "factor": (0.5, 179),
        "patience": (2, 180), "monitor": ("val/final_loss", 189), "stop_patience": (10, 68),
        "batch_size": (256, 201), "image_size": (224, "ds/livecell_datamodule.py:30"), "in_chans": (1, 123),
        "selected": ("val/final_loss", 48), "grad_clip": (None, 104),
        "head_trains": (True, "models/elegansformer/elegansformer_lit_wrapper.py:169"),
    },
    "elegansmlpmixer_b16_livecell.yaml": {
        "seed": (42, 2), "precision": ("16-mixed", 8), "max_epochs": (80, 81), "min_epochs": (None, 82),
        "grad_accum": (8, 98), "sync_batchnorm": (False, 109), "optimizer": ("ADAMW", 161), "lr": (0.0001, 164),
        "weight_decay": (0.0, 168), "scheduler": ("REDUCE_LR_PLATEAU", 172), "factor": (0.1, 175),
        "patience": (2, 176), "monitor": ("val/final_loss", 185), "stop_patience": (10, 63),
        "batch_size": (256, 194), "image_size": (224, "ds/livecell_datamodule.py:30"), "in_chans": (1, 118),
        "selected": ("val/final_loss", 48), "grad_clip": (None, 99),
        "head_trains": (True, "models/elegansmixer/elegansmlpmixer_lit_wrapper.py:166"),
    },
    "elegansmlpmixer_b32_livecell.yaml": {
        "seed": (42, 2), "precision": ("16-mixed", 8), "max_epochs": (80, 86), "min_epochs": (None, 87),
        "grad_accum": (1, 103), "sync_batchnorm": (False, 114), "optimizer": ("ADAMW", 166), "lr": (0.0001, 169),
        "weight_decay": (0.0, 173), "scheduler": ("REDUCE_LR_PLATEAU", 177), "factor": (0.1, 180),
        "patience": (2, 181), "monitor": ("val/final_loss", 190), "stop_patience": (10, 68),
        "batch_size": (256, 199), "image_size": (224, "ds/livecell_datamodule.py:30"), "in_chans": (1, 123),
        "selected": ("val/final_loss", 48), "grad_clip": (None, 104),
        "head_trains": (True, "models/elegansmixer/elegansmlpmixer_lit_wrapper.py:166"),
    },
    "mlpmixer_b16_livecell.yaml": {
        "seed": (42, 2), "precision": ("16-mixed", 8), "max_epochs": (80, 81), "min_epochs": (None, 82),
        "grad_accum": (8, 98), "sync_batchnorm": (False, 109), "optimizer": ("ADAMW", 136), "lr": (0.0001, 139),
        "weight_decay": (0.0, 143), "scheduler": ("REDUCE_LR_PLATEAU", 147), "factor": (0.1, 150),
        "patience": (2, 151), "monitor": ("val/final_loss", 160), "stop_patience": (10, 63),
        "batch_size": (256, 169), "image_size": (224, "ds/livecell_datamodule.py:30"), "in_chans": (1, 118),
        "selected": ("val/final_loss", 48), "grad_clip": (None, 99),
        "head_trains": (True, "models/vision/mlpmixer_lit_wrapper.py:166"),
    },
    "mlpmixer_b32_livecell.yaml": {
        "seed": (42, 2), "precision": ("16-mixed", 8), "max_epochs": (80, 81), "min_epochs": (None, 82),
        "grad_accum": (8, 98), "sync_batchnorm": (False, 109), "optimizer": ("ADAMW", 136), "lr": (0.0001, 139),
        "weight_decay": (0.0, 143), "scheduler": ("REDUCE_LR_PLATEAU", 147), "factor": (0.1, 150),
        "patience": (2, 151), "monitor": ("val/final_loss", 160), "stop_patience": (10, 63),
        "batch_size": (512, 169), "image_size": (224, "ds/livecell_datamodule.py:30"), "in_chans": (1, 118),
        "selected": ("val/final_loss", 48), "grad_clip": (None, 99),
        "head_trains": (True, "models/vision/mlpmixer_lit_wrapper.py:166"),
    },
    "resnet101-vit-b1.yaml": {
        "seed": (47, 2), "precision": ("16-mixed", 8), "max_epochs": (120, 86), "min_epochs": (25, 87),
        "grad_accum": (2, 103), "sync_batchnorm": (True, 114), "optimizer": ("ADAMW", 151), "lr": (0.0001, 154),
        "weight_decay": (0.0, 158), "scheduler": ("REDUCE_LR_PLATEAU", 162), "factor": (0.5, 165),
        "patience": (2, 166), "monitor": ("val/final_loss", 175), "stop_patience": (10, 68),
        "batch_size": (256, 184), "image_size": (224, 191), "in_chans": (3, 193),
        "selected": ("val/final_loss", 53), "grad_clip": (None, 104),
        "head_trains": (True, "models/vision/backbone_vit_lit_wrapper.py:168"),
    },
    "resnet18-deep.yaml": {
        "seed": (42, 2), "precision": ("16-mixed", 9), "max_epochs": (250, 80), "min_epochs": (25, 81),
        "grad_accum": (1, 97), "sync_batchnorm": (True, 108), "optimizer": ("ADAMW", 135), "lr": (0.0001, 138),
        "weight_decay": (0.1, 142), "scheduler": ("REDUCE_LR_PLATEAU", 146), "factor": (0.5, 149),
        "patience": (2, 150), "monitor": ("val/final_loss", 159), "stop_patience": (10, 69),
        "batch_size": (256, 168), "image_size": (224, 175), "in_chans": (3, 177),
        "selected": ("val/final_loss", 49), "grad_clip": (None, 98),
        "head_trains": (False, "models/vision/backbone_lit_wrapper.py:214"),
    },
    "resnet18-wide.yaml": {
        "seed": (42, 2), "precision": ("16-mixed", 9), "max_epochs": (250, 80), "min_epochs": (25, 81),
        "grad_accum": (1, 97), "sync_batchnorm": (True, 108), "optimizer": ("ADAMW", 131), "lr": (0.0001, 134),
        "weight_decay": (0.1, 138), "scheduler": ("REDUCE_LR_PLATEAU", 142), "factor": (0.5, 145),
        "patience": (2, 146), "monitor": ("val/final_loss", 155), "stop_patience": (10, 69),
        "batch_size": (256, 164), "image_size": (224, 171), "in_chans": (3, 173),
        "selected": ("val/final_loss", 49), "grad_clip": (None, 98),
        "head_trains": (False, "models/vision/backbone_lit_wrapper.py:214"),
    },
    "resnet18.yaml": {
        "seed": (42, 2), "precision": ("16-mixed", 8), "max_epochs": (250, 79), "min_epochs": (25, 80),
        "grad_accum": (1, 96), "sync_batchnorm": (True, 107), "optimizer": ("ADAMW", 122), "lr": (0.0001, 125),
        "weight_decay": (0.1, 129), "scheduler": ("REDUCE_LR_PLATEAU", 133), "factor": (0.5, 136),
        "patience": (2, 137), "monitor": ("val/final_loss", 146), "stop_patience": (10, 68),
        "batch_size": (256, 155), "image_size": (224, 162), "in_chans": (3, 164),
        "selected": ("val/final_loss", 48), "grad_clip": (None, 97),
        "head_trains": (True, "models/vision/backbone_lit_wrapper.py:214"),
    },
    # LeiTong02/CLANet f7d6aff: DINO patch pretraining (dino/main_dino_patch.py) and the MIL (train_TSS_MIL.py)
    "dino/main_dino_patch.py": {
        "lr": (5e-05, 84), "weight_decay": (0.04, 70), "optimizer": ("adamw", 91), "batch_size": (128, 78),
        "max_epochs": (200, 80), "scheduler": ("cosine", 232), "min_lr": (1e-06, 89), "warmup_epochs": (0, 87),
        "precision": (False, 66), "image_size": (112, 432), "grad_clip": (0, 75), "drop_path": (0.1, 93),
        "head_trains": (True, 219), "selected": ("last", "dino/get_patch_prediction.py:240"),
    },
    "train_TSS_MIL.py": {
        "lr": (0.0005, 25), "optimizer": ("SGD", 106), "weight_decay": (5e-4, 106), "momentum": (0.9, 106),
        "batch_size": (32, 29), "max_epochs": (2000, "train_TSS_MIL.py:31-32,143"), "scheduler": ("none", 106),
        "precision": (False, "train_TSS_MIL.py: no autocast"), "head_trains": (True, 106), "drop_last": (False, 88),
        "selected": ("test/loss", "train_TSS_MIL.py:152-159"),
    },
}
# fmt: on

# The published words, as this project's config says them.
TRANSLATE = {
    "16-mixed": "fp16",
    "ADAMW": "torch.optim.AdamW",
    "adamw": "torch.optim.AdamW",
    "SGD": "torch.optim.SGD",
    "REDUCE_LR_PLATEAU": "cellexp.engine.schedulers.PlateauOnMetric",
    "cosine": "cellexp.engine.dino.DinoSchedules",
    "none": "torch.optim.lr_scheduler.ConstantLR",
    "val/final_loss": "val/loss",
}
# Values spelt otherwise in one field: min_epochs null is 0, DINO's clip_grad 0 is no clipping, and precision false
# (use_fp16: false; the MIL has no autocast) is fp32.
SPELLED = {"min_epochs": (None, 0), "grad_clip": (0, None), "precision": (False, "no")}

# How each field reads off a composed config.
OURS = {
    "seed": lambda c: c.seed,
    "precision": lambda c: c.trainer.precision,
    "max_epochs": lambda c: c.trainer.max_epochs,
    "min_epochs": lambda c: c.trainer.early_stopping.min_epochs,
    "grad_accum": lambda c: c.trainer.grad_accum_steps,
    "sync_batchnorm": lambda c: c.trainer.sync_batchnorm,
    "optimizer": lambda c: c.optim.optimizer._target_,
    "lr": lambda c: c.optim.optimizer.lr,
    "weight_decay": lambda c: c.optim.optimizer.weight_decay,
    "momentum": lambda c: c.optim.optimizer.momentum,
    "scheduler": lambda c: c.optim.scheduler._target_,
    "factor": lambda c: c.optim.scheduler.factor,
    "patience": lambda c: c.optim.scheduler.patience,
    "monitor": lambda c: c.optim.scheduler.monitor,
    "min_lr": lambda c: c.optim.scheduler.min_lr,
    "warmup_epochs": lambda c: c.optim.scheduler.warmup_epochs,
    "stop_patience": lambda c: c.trainer.early_stopping.patience,
    "batch_size": lambda c: c.trainer.batch_size,
    "image_size": lambda c: c.dataset.image_size,
    "in_chans": lambda c: c.dataset.in_chans,
    "grad_clip": lambda c: c.trainer.grad_clip,
    "drop_path": lambda c: c.backbone.drop_path_rate,
    "drop_last": lambda c: c.task.drop_last,
    "head_trains": lambda c: c.head.get("trained", True),
    # the checkpoint kept: the metric that picks it (task=ssl: the probe's best, or the last epoch's)
    "selected": lambda c: "last" if c.task.get("keep") == "last" else c.task.optimized_metric,
}

# Each preset naming a published model, and its file.
PRESETS = {
    "paper/resnet18": "resnet18.yaml",
    "paper/resnet18_deep": "resnet18-deep.yaml",
    "paper/resnet18_wide": "resnet18-wide.yaml",
    "paper/densenet121_deep": "densenet121-deep.yaml",
    "paper/densenet121_wide": "densenet121-wide.yaml",
    "paper/densenet161": "densenet161.yaml",
    "paper/densenet169": "densenet169.yaml",
    "paper/efficientnet_b0_deep": "efficientnetb0-deep.yaml",
    "paper/efficientnet_b0_wide": "efficientnetb0-wide.yaml",
    "paper/efficientnetv2_s": "efficientnetv2_s.yaml",
    "paper/hybrid_resnet101_vit_b": "resnet101-vit-b1.yaml",
    "paper/vit_b16": "custom_vit_b16_livecell.yaml",
    "paper/vit_b32": "custom_vit_b32_livecell.yaml",
    "paper/mixer_b16": "mlpmixer_b16_livecell.yaml",
    "paper/mixer_b32": "mlpmixer_b32_livecell.yaml",
    "paper/elegans_resnet18": "elegans_resnet18.yaml",
    "paper/elegans_resnet18_random_ba": "elegans_resnet18_random_ba.yaml",
    "paper/elegans_resnet18_random_er": "elegans_resnet18_random_er.yaml",
    "paper/elegans_resnet18_random_ws": "elegans_resnet18_random_ws.yaml",
    "paper/elegans_densenet121": "elegans_densenet121.yaml",
    "paper/elegans_densenet161": "elegans_densenet161.yaml",
    "paper/elegans_efficientnet_b0": "elegans_efficientnet_b0.yaml",
    "paper/elegans_efficientnet_b0_random": "elegans_efficientnet_b0_random.yaml",
    "paper/elegans_efficientnet_b1": "elegans_efficientnet_b1.yaml",
    "paper/elegans_efficientnetv2_m": "elegans_efficientnetv2_m.yaml",
    "paper/elegans_efficientnetv2_s": "elegans_efficientnetv2_s.yaml",
    "paper/elegans_vit_b16": "elegansformer_b16_livecell.yaml",
    "paper/elegans_vit_b32": "elegansformer_b32_livecell.yaml",
    "paper/elegans_mixer_b16": "elegansmlpmixer_b16_livecell.yaml",
    "paper/elegans_mixer_b32": "elegansmlpmixer_b32_livecell.yaml",
    "clanet_published_dino": "dino/main_dino_patch.py",
    "clanet_published": "train_TSS_MIL.py",
}
# Rows of the paper's table with no published config, held to the file their preset names as their analogy.
ANALOGY = {
    **dict.fromkeys(
        [f"paper/{row}" for row in ("densenet121", "efficientnet_b0", "efficientnet_b1", "efficientnetv2_m")],
        "resnet18.yaml",
    ),
    "paper/resnet50": "resnet18.yaml",
    "paper/resnet101": "resnet18.yaml",
    **dict.fromkeys(
        [f"paper/elegans_{row}" for row in ("densenet169", "resnet50", "resnet101")], "elegans_resnet18.yaml"
    ),
    **dict.fromkeys(
        ["paper/hybrid_resnet18_vit_b", "paper/elegans_hybrid_resnet18_vit_b", "paper/elegans_hybrid_resnet101_vit_b"],
        "resnet101-vit-b1.yaml",
    ),
}
# Differences docs/presets.md's published | ours | why tables document: (preset, field) -> words of that row.
DELIBERATE = {
    ("clanet_published_dino", "batch_size"): "128 on each of 2 GPUs",
    ("clanet_published", "selected"): "lowest **test** loss every 5 epochs",
}
PUBLISHED_SECTIONS = ("## The paper's table", "## CLANet as published")


def published_value(field: str, value):
    """A published value in this project's words."""
    if field in SPELLED and value == SPELLED[field][0] and type(value) is type(SPELLED[field][0]):
        return SPELLED[field][1]
    return TRANSLATE.get(value, value) if isinstance(value, str) else value


def differences(preset: str, cfg: DictConfig) -> dict[str, tuple]:
    """field -> (published, ours, where) for each field of the preset's file that the composed config differs on."""
    file = PRESETS.get(preset) or ANALOGY[preset]
    found = {}
    for field, (value, line) in PUBLISHED[file].items():
        expected, ours = published_value(field, value), OURS[field](cfg)
        if ours != expected or isinstance(ours, bool) != isinstance(expected, bool):
            found[field] = (expected, ours, line if isinstance(line, str) else f"{file}:{line}")
    return found


def _published_tables() -> str:
    text = (ROOT / "docs" / "presets.md").read_text()
    sections = [text.split(heading, 1)[1].split("\n## ", 1)[0] for heading in PUBLISHED_SECTIONS]
    return "\n".join(sections)


def test_every_preset_naming_a_published_model_is_tabulated():
    paper = {f"paper/{p.stem}" for p in (CONF / "experiment" / "paper").glob("*.yaml")}
    named = paper - {"paper/protocol", "paper/protocol_transformer"}
    named |= {p.stem for p in (CONF / "experiment").glob("clanet_published*.yaml")}
    assert named == set(PRESETS) | set(ANALOGY) and not set(PRESETS) & set(ANALOGY)
    assert set(PRESETS.values()) == set(PUBLISHED)  # every published file is some preset's


@pytest.mark.parametrize("preset", sorted({*PRESETS, *ANALOGY}))
def test_the_preset_computes_with_the_published_values(make_cfg, preset):
    cfg = make_cfg([f"experiment={preset}"], tiny=False)
    found = differences(preset, cfg)
    deliberate = {field for (row, field) in DELIBERATE if row == preset}
    assert deliberate <= set(found), f"{preset}: deliberate differences that are gone: {deliberate - set(found)}"
    undocumented = {field: found[field] for field in set(found) - deliberate}
    assert not undocumented, f"{preset} differs from the published file (published, ours, where): {undocumented}"


@pytest.mark.parametrize(("preset", "field"), sorted(DELIBERATE))
def test_each_deliberate_difference_has_its_docs_row(preset, field):
    assert DELIBERATE[(preset, field)] in _published_tables()
