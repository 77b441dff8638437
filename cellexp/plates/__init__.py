"""Plates: a trained classifier used on new microscopy: images read, cells found or taken from the user's masks,
cut as in training, and their predictions and profiles tabulated per cell, image and well (task=predict)."""
