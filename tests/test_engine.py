"""Engine pieces on their own: early stopping, best-epoch selection, checkpoints, metrics, precision."""

from __future__ import annotations

import logging

import pytest
import torch
from omegaconf import OmegaConf

from cellexp.engine.accelerator import make_accelerator
from cellexp.engine.checkpoint import CheckpointManager, load_model_state, load_training_state
from cellexp.engine.cpu_bf16 import guard_small_strided_convs
from cellexp.engine.metrics import batch_averaged_metrics, classification_metrics, confusion_matrix
from cellexp.engine.settings import EarlyStopping, Selection
from cellexp.errors import ConfigError


def test_early_stopping_counts_epochs_without_improvement():
    rule = EarlyStopping(monitor="val/loss", direction="minimize", patience=2)
    best, bad = None, 0
    stops = []
    for loss in (1.0, 0.8, 0.9, 0.85, 0.7, 0.75, 0.8):
        best, bad = rule.update(loss, best, bad)
        stops.append(bad >= rule.patience)
    assert best == 0.7
    assert stops == [False, False, False, True, False, False, True]
    with pytest.raises(ConfigError, match="direction='lowest'"):
        EarlyStopping(direction="lowest")


def test_selection_direction():
    assert Selection("val/accuracy", "maximize").improves(0.6, 0.5)
    assert not Selection("val/loss", "minimize").improves(0.6, 0.5)
    with pytest.raises(ConfigError, match="direction='up'"):
        Selection("val/loss", "up")


def test_checkpoints_keep_the_last_k_and_load_with_weights_only(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=2)
    weights = {"w": torch.arange(6.0).reshape(2, 3)}
    for epoch in (1, 2, 3):
        state = {"loop": {"epoch": epoch}, "torch_rng": torch.get_rng_state(), "optimizer": {"lr": [0.1]}}
        manager.save(f"epoch_{epoch:04d}", weights, state, {"epoch": epoch, "step_in_epoch": 0})
    manager.save("epoch_0002_step_000005", weights, {"loop": {"epoch": 2}}, {"epoch": 2, "step_in_epoch": 5})
    manager.save("best", weights, None, {"epoch": 3})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best", "epoch_0002_step_000005", "epoch_0003"]
    assert [p.name for p in manager.resumable()] == ["epoch_0002_step_000005", "epoch_0003"]
    assert manager.latest().name == "epoch_0003"
    assert load_training_state(manager.latest())["loop"]["epoch"] == 3  # torch.load(weights_only=True) inside
    assert torch.equal(load_model_state(tmp_path / "best")["w"], weights["w"])


def test_metrics_over_a_whole_split_match_a_hand_count():
    names = ["a", "b", "c"]
    targets = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2])
    predicted = torch.tensor([0, 0, 0, 1, 1, 1, 2, 0])
    logits = torch.nn.functional.one_hot(predicted, 3).float() * 5
    metrics = classification_metrics(logits, targets, names)
    assert metrics["accuracy"] == pytest.approx(6 / 8)
    assert metrics["balanced_accuracy"] == pytest.approx((3 / 4 + 1 + 1 / 2) / 3)
    assert metrics["recall/a"] == pytest.approx(3 / 4) and metrics["recall/c"] == pytest.approx(1 / 2)
    assert confusion_matrix(logits, targets, 3).tolist() == [[3, 1, 0], [0, 2, 0], [1, 0, 1]]


def test_batch_averaged_metrics_weigh_each_batch_by_its_size_as_the_published_figures_do():
    from sklearn.metrics import f1_score

    generator = torch.Generator().manual_seed(1)
    targets = torch.randint(0, 3, (10,), generator=generator)
    logits = torch.randn(10, 3, generator=generator) + torch.nn.functional.one_hot(targets, 3)
    y, p = targets.numpy(), logits.argmax(1).numpy()
    batches = [slice(0, 4), slice(4, 8), slice(8, 10)]  # batch 4: the last one holds 2
    expected = sum(f1_score(y[b], p[b], average="weighted") * len(y[b]) for b in batches) / 10
    metrics = batch_averaged_metrics(logits, targets, 3, batch=4)
    assert metrics["batched/weighted_f1"] == pytest.approx(expected, abs=1e-6)
    assert metrics["batched/weighted_f1"] != pytest.approx(f1_score(y, p, average="weighted"), abs=1e-3)
    assert metrics["batched/accuracy"] == pytest.approx((y == p).mean())  # accuracy alone averages to the split's
    names = ("accuracy", "weighted_f1", "weighted_auroc", "weighted_precision", "weighted_recall")
    assert set(metrics) == {f"batched/{name}" for name in names}


def test_auroc_and_balanced_accuracy_are_over_the_classes_present_as_scikit_learn_has_them():
    """A split without some classes (a subset of lines, a small val split) must not score them 0 and average that in."""
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    from cellexp.mil.metrics import ranking_metrics

    generator = torch.Generator().manual_seed(0)
    targets = torch.tensor([0, 0, 0, 1, 1, 1, 3, 3, 3, 3])  # classes 2 and 4 absent
    logits = torch.randn(10, 5, generator=generator) + 2.0 * torch.nn.functional.one_hot(targets, 5)
    probs = logits.softmax(1)
    y, p = targets.numpy(), probs.numpy()
    expected_auc = sum(roc_auc_score(y == c, p[:, c]) for c in (0, 1, 3)) / 3
    metrics = classification_metrics(logits, targets, list("abcde"))
    assert metrics["auroc"] == pytest.approx(expected_auc, abs=1e-6)
    assert metrics["classes_present"] == 3
    assert metrics["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, p.argmax(1)), abs=1e-6)
    assert "recall/c" not in metrics and "recall/d" in metrics
    assert ranking_metrics(probs, targets, 5)["auc"] == pytest.approx(expected_auc, abs=1e-6)
    # what the torchmetrics macro average gave: the absent classes in at 0
    from torchmetrics.functional.classification import multiclass_auroc

    assert multiclass_auroc(probs, targets, 5, average="macro").item() < expected_auc - 0.3


def test_unknown_precision_is_named():
    with pytest.raises(ConfigError, match="trainer.precision='fp8'"):
        make_accelerator(OmegaConf.create({"precision": "fp8", "cpu": True, "grad_accum_steps": 1, "compile": False}))


def test_bf16_weight_gradients_of_a_strided_conv_on_a_1px_map_match_float32():
    # Unguarded, oneDNN's AVX-512 bf16 kernel returns garbage (often NaN) for this gradient on most calls.
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(48, 48, 3, stride=2, padding=1, bias=False)
    x, upstream = torch.randn(32, 48, 1, 1).relu(), torch.randn(32, 48, 1, 1) * 1e-3
    (conv(x) * upstream).sum().backward()
    reference, conv.weight.grad = conv.weight.grad.clone(), None
    guard_small_strided_convs(conv)
    for _ in range(20):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = conv(x)
        (out * upstream).sum().backward()
        assert out.dtype == torch.float32 and torch.allclose(conv.weight.grad, reference, atol=1e-6)
        conv.weight.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert conv(torch.randn(2, 48, 4, 4)).dtype == torch.bfloat16  # maps at least the stride stay in bf16


def test_progress_is_a_bar_on_a_terminal_and_log_lines_elsewhere(monkeypatch, caplog):
    from tqdm.auto import tqdm

    from cellexp import progress

    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: True)
    bar = progress.progress(range(3), desc="work")
    assert isinstance(bar, tqdm)
    bar.close()
    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: False)
    monkeypatch.setattr(progress, "FIRST_LINE_S", 0.0)
    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)
    with caplog.at_level(logging.INFO, logger="cellexp.progress"):
        assert list(progress.progress(range(3), desc="work", unit="img")) == [0, 1, 2]
    assert caplog.messages[-1].startswith("work: 3/3 img")


def test_a_log_gets_a_line_ten_seconds_in_then_every_thirty_with_the_rate_and_the_time_left(monkeypatch, caplog):
    from cellexp import progress

    clock = [1000.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: False)
    with caplog.at_level(logging.INFO, logger="cellexp.progress"):
        bar = progress.progress(total=100, desc="epoch 1/1", unit="batch")
        for seconds in (4, 8, 12, 30, 44):  # a slow start: each batch's end, in seconds
            clock[0] = 1000.0 + seconds
            bar.update(1)
    assert caplog.messages == [
        "epoch 1/1: 3/100 batch, 0.25 batch/s (4 s/batch), 6m28s left",
        "epoch 1/1: 5/100 batch, 0.114 batch/s (8.8 s/batch), 13m56s left",
    ]
