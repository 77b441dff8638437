"""What a run did (train, evaluate, explain, predict, embed; a sweep's parent: sweep), tagged on every MLflow run
as `kind`, so that `cellexp.commands.runs` shows it and `cellexp.commands.compare` compares training runs with
training runs only."""

from __future__ import annotations

KIND_TAG = "kind"
KINDS = ("train", "evaluate", "explain", "predict", "embed")


def run_kind(task: str, fit) -> str:
    """What a run of `task` did: train (classify, ssl, mil), evaluate (their task.fit=false), explain (xai), predict,
    embed. `fit` may be the string an MLflow param holds ('True'/'False'), for runs logged before the tag."""
    if task in ("classify", "ssl", "mil"):
        return "evaluate" if str(fit).lower() == "false" else "train"
    return {"xai": "explain"}.get(task, task)
