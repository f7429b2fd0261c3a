"""Load SHAPCallback artifacts back, as arrays or as a ``shap.Explanation`` for shap's own plots."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from lightning_xai._checks import expected

__all__ = ["load_shap_explanation", "load_shap_values"]


def load_shap_values(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read a ``shap_values.npz`` (or the folder holding it) into a dict of arrays.

    Keys: one per explained input (e.g. ``pixel_values``, ``input_ids``), ``data_<input>`` (the probe inputs),
    ``base_values``, ``outputs``, ``predictions``, ``targets``, ``completeness_error``.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> np.savez(folder / "shap_values.npz", input=np.ones((2, 3)), base_values=np.zeros(2))
        >>> sorted(load_shap_values(folder))
        ['base_values', 'input']
    """
    path = Path(path)
    if path.is_dir():
        path = path / "shap_values.npz"
    if not path.exists():
        raise FileNotFoundError(f"No SHAP artifact at {path}: pass a shap_values.npz or the folder holding it.")
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def load_shap_explanation(path: str | os.PathLike[str], input: str | None = None,
                          top_k: bool = False) -> Any:
    """A ``shap.Explanation`` for one explained input of a SHAPCallback artifact, ready for shap's plots.

    Args:
        path: ``shap_values.npz`` or the folder holding it (with its ``summary.json``).
        input: which explained input (default: the first one listed in ``summary.json``).
        top_k: for a ``SHAPCallback(top_k=k)`` artifact: all ranks, in shap's multi-output layout (values
            ``(num_samples, ..., k)``, base values ``(num_samples, k)``, ``output_names`` the ranked classes of
            the first sample); otherwise the top class only.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> np.savez(folder / "shap_values.npz", x=np.ones((2, 3)), data_x=np.zeros((2, 3)), base_values=np.zeros(2))
        >>> _ = (folder / "summary.json").write_text('{"inputs": ["x"]}')
        >>> load_shap_explanation(folder).values.shape
        (2, 3)
    """
    import shap

    arrays = load_shap_values(path)
    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    summary_file = folder / "summary.json"
    names = json.loads(summary_file.read_text())["inputs"] if summary_file.exists() else [
        k for k in arrays if not k.startswith("data_") and not k.endswith("_top_k") and k not in ("top_k_classes",
            "base_values", "outputs", "predictions", "targets", "completeness_error")]
    name = input if input is not None else names[0]
    if name not in names:
        raise ValueError(expected("input", f"one of the explained inputs {names}", name))
    if top_k:
        if f"{name}_top_k" not in arrays:
            raise ValueError(expected("top_k", "True only for artifacts of SHAPCallback(top_k > 1)", top_k))
        return shap.Explanation(values=np.moveaxis(arrays[f"{name}_top_k"], 1, -1),
                                base_values=arrays["base_values_top_k"], data=arrays.get(f"data_{name}"),
                                output_names=[str(c) for c in arrays["top_k_classes"][0]])
    return shap.Explanation(values=arrays[name], base_values=arrays.get("base_values"),
                            data=arrays.get(f"data_{name}"))
