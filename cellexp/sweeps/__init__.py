"""Multiruns and Optuna sweeps: the sweep's callback, its parent run, the sweeper and pruning."""
