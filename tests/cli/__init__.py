"""lightning_xai.cli: the lightning-xai command."""
