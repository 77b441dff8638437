"""DINO as CLANet publishes it: a teacher without stochastic depth, a kNN probe that never sees its own queries."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import cellexp
from cellexp.data.datamodule import load_patch_data
from cellexp.engine.checkpoint import BEST, read_meta
from cellexp.engine.dino import LastEpoch
from cellexp.engine.settings import Selection
from cellexp.errors import ConfigError
from cellexp.models.backbones import timm_backbone
from cellexp.models.dino import Dino, DinoHead
from cellexp.tasks.ssl import probe_bank
from tests.conftest import tracked_run
from tests.test_ssl import DINO, TIMELAPSE, _client


def test_the_teacher_has_no_stochastic_depth_or_dropout_in_training_mode():
    torch.manual_seed(0)
    backbone = timm_backbone("test_vit", "vit", in_chans=1, image_size=32, drop_rate=0.3, drop_path_rate=0.5)
    dino = Dino(backbone, DinoHead(backbone.num_features, out_dim=32, hidden_dim=16, bottleneck_dim=8), 2).train()
    views = [torch.randn(4, 1, 32, 32)]
    with torch.no_grad():
        assert not torch.equal(dino.student(views), dino.student(views))  # the student keeps its drop path
        assert torch.equal(dino.teacher(views), dino.teacher(views))
    # nothing of the student's state is lost: the teacher starts as its copy and follows it parameter by parameter
    assert dino.teacher.state_dict().keys() == dino.student.state_dict().keys()
    assert all(torch.equal(t, s) for t, s in zip(dino.teacher.parameters(), dino.student.parameters(), strict=True))


def test_the_knn_bank_holds_no_evaluated_cell_even_when_pretraining_is_transductive(make_cfg, data_dir):
    cfg = make_cfg([*TIMELAPSE, f"dataset.root={data_dir / 'timelapse'}"], tiny=False)
    data = load_patch_data(cfg.dataset, seed=0, transductive=True)
    train, val, test = (data.splits[split] for split in ("train", "val", "test"))
    assert set(val.indices) <= set(train.indices) and set(test.indices) <= set(train.indices)  # pretrains on them
    bank = probe_bank(data.splits)
    held_out = np.concatenate([val.indices, test.indices])
    assert not np.isin(bank.indices, held_out).any()  # no query can meet itself, no test label votes
    assert sorted(bank.indices) == sorted(set(train.indices) - set(held_out))
    assert np.array_equal(bank.labels, train.labels[np.isin(train.indices, bank.indices)])
    crops, labels = bank.__getitems__([0])
    assert torch.equal(crops, train.__getitems__([int(np.flatnonzero(train.indices == bank.indices[0])[0])])[0])
    # without transduction the train split is the bank already
    inductive = load_patch_data(cfg.dataset, seed=0)
    assert np.array_equal(probe_bank(inductive.splits).indices, inductive.splits["train"].indices)


@pytest.mark.parametrize(("selection", "kept"), [(Selection("val/knn_accuracy", "maximize"), 1), (None, 3)])
def test_task_keep_last_keeps_the_last_epochs_teacher_whatever_the_probe_says(selection, kept):
    selection = selection or LastEpoch("val/knn_accuracy", "maximize")
    best, best_epoch = None, 0
    for epoch, accuracy in enumerate([0.9, 0.5, 0.4], start=1):
        if selection.improves(accuracy, best):
            best, best_epoch = accuracy, epoch
    assert best_epoch == kept


@pytest.mark.slow
def test_a_transductive_run_keeps_its_last_teacher(make_cfg, data_dir):
    """clanet_published_dino's choices on the test time-lapse: pretrained on every sequence, the last teacher kept
    (two patches a frame: the claim is which teacher is kept, not how well it learns)."""
    data = [*TIMELAPSE, f"dataset.root={data_dir / 'timelapse'}", "task.timelapse.transductive=true"]
    cfg = make_cfg(
        [*DINO, *data, "trainer.max_epochs=2", "task.keep=last", "dataset.patches.top_k=2"], run_name="last", tiny=False
    )
    objective = cellexp.run(cfg)
    run_id = tracked_run(cfg).info.run_id
    history = {m.step: m.value for m in _client(cfg).get_metric_history(run_id, "val/knn_accuracy")}
    assert sorted(history) == [0, 1, 2] and objective == history[2]
    assert read_meta(Path(cfg.paths.output_dir) / "checkpoints" / BEST)["epoch"] == 2


def test_task_keep_names_what_it_takes(make_cfg):
    with pytest.raises(ConfigError, match="task.keep=first must be best .* or last"):
        cellexp.run(make_cfg(["task=ssl", "task.keep=first", "logger=none"]))
