"""Training: the loop, evaluation, callbacks (progress, W&B). Imports torch: train side only."""
