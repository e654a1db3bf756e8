"""The model server: FastAPI app, batcher, limits, metrics, prediction log, W&B logger and web page."""
