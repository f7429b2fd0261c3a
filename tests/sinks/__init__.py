"""lightning_xai.sinks: the attribution store, artifact files, manifests and loggers."""
