"""lightning_xai.callbacks: each callback under a real Trainer; inputs, outputs, checkpoints, observer hygiene."""
