"""The command-line tools beside train.py: `python -m cellexp.commands.<runs|compare|team|configs>`."""
