"""The composed config checked before any work: every task's sections (sections.py) and the values that reach data,
generator, logger and heads (values.py)."""
