"""lightning_xai.explainers: the registry and explainers used without a Trainer."""
