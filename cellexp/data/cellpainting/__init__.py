"""3-D Cell Painting plates (the Grad-CAMO paper's data): five-channel z-stacks per field, a metadata table of
treatments per well, 3-D segmentation, single-cell 3-D crops in a crop store, and splits disjoint by well."""
