"""`cellexp runs|compare|team|configs ...`: the tools beside train.py under one name (the `cellexp` command the install
puts in the venv; `python -m cellexp.commands ...` does the same)."""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "runs": "the store's recent runs, their ids and objectives",
    "compare": "tables and figures of finished runs (an experiment or a sweep)",
    "team": "a lab's head node: PostgreSQL for MLflow and Optuna, and mlflow server",
    "configs": "the configuration reference: every group, option and key of conf/ with its comment",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        listed = "\n".join(f"  {name:<9}{what}" for name, what in COMMANDS.items())
        print(f"usage: cellexp <command> [--help]\n\ncommands:\n{listed}", file=sys.stderr)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    return importlib.import_module(f"cellexp.commands.{argv[0]}").main(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
