"""Training: turn bot data into a versioned model artifact (may import torch)."""
