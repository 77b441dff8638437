"""Where does a trained model look: CAM maps, LIME, attention rollout, Grad-CAMO, embeddings and their figures.

Each module does one job on tensors and arrays; `cellexp.tasks.xai` loads the model and the cells and
puts them together.
"""
