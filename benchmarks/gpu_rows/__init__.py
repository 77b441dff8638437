"""The rows of benchmarks/gpu_suite.py, a module each, and what they share (suite.py: sizes, timing, the task's
trainer; loops.py: the loops timed against each other)."""
