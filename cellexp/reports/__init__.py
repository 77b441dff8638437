"""What people read and look at after a run: tables (CSV) and figures (PNG), one module per kind of run.
Each writer takes plain results (arrays, tensors, stores) and a path; tasks decide what to write and log."""
