"""CLANet's brightfield time-lapses: folders, splits, patch selection and bags."""
