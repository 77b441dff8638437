"""What MLflow runs to load a cellexp classifier (models from code: cellexp.tracking.mlflow_model); nothing is
unpickled."""

import mlflow

from cellexp.tracking.mlflow_model import CellClassifierModel

mlflow.models.set_model(CellClassifierModel())
