"""What a run records in MLflow and reads back: its session, identity, model, folder and saved config."""
