"""CLANet-style multiple-instance learning over time-lapse sequences: patch embeddings, Time-series Segment
Samples, the gated-attention aggregator's training on the engine, sequence- and batch-level metrics, and the
per-image baseline it is compared with."""
