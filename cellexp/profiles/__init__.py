"""Profiles as the profiling field analyses them: sphering on controls, retrieval mAP (copairs), AnnData files."""
