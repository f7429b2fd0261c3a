"""Where pictures, numbers and arrays go: TensorBoard, other loggers, files and the manifest."""

from lightning_xai.sinks.files import append_manifest, atomic_write_bytes, read_manifest, save_json, save_npy
from lightning_xai.sinks.loggers import ArtifactSink, Event

__all__ = ["ArtifactSink", "Event", "append_manifest", "atomic_write_bytes", "read_manifest", "save_json", "save_npy"]
