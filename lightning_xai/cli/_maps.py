"""The side-by-side picture of ``lightning-xai compare``: each probe's map in every run's last snapshot."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from lightning_xai.cli._errors import open_store, write_png

__all__ = ["write_compare_maps"]

_KEEP = "keep/"  # the drift callback stores token masks under this prefix


def write_compare_maps(store_path: str, runs: Sequence[str], out: str | Path) -> Path | None:
    """Write ``<out stem>_maps.png`` next to ``out``: rows are probes, columns the runs' last snapshots (maps on
    one relative colour scale; token attributions as snapshots x tokens). ``None`` when the runs' last snapshots
    do not share an array of one shape (nothing comparable to draw).

    Example:
        >>> import tempfile, pathlib
        >>> from lightning_xai.sinks.store import AttributionStore
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> with AttributionStore(folder / "s.sqlite") as store:
        ...     for run in ("v1", "v2"):
        ...         _ = store.write(run, {"gradcam": torch.rand(2, 4, 4)}, epoch=0, global_step=0,
        ...                         method="gradcam", probe_fingerprint="f")
        >>> write_compare_maps(str(folder / "s.sqlite"), ["v1", "v2"], folder / "compare.png").name
        'compare_maps.png'
    """
    from lightning_xai.render import figure_to_png_bytes
    from lightning_xai.render.drift import snapshot_grid, token_snapshot_grid

    with open_store(store_path) as store:
        snaps = [store.load(run) for run in runs]
    keys = [k for k in snaps[0].arrays if not k.startswith(_KEEP)]
    key = next(
        (
            k
            for k in keys
            if all(k in s.arrays and s.arrays[k].shape == snaps[0].arrays[k].shape for s in snaps)
        ),
        None,
    )
    if key is None:
        return None
    stack = torch.stack([s.arrays[key].float() for s in snaps], dim=1)  # (P, runs, ...)
    rows = [f"probe {i}" for i in range(stack.shape[0])]
    columns = [f"{s.info.run} · epoch {s.info.epoch}" for s in snaps]
    what = snaps[0].info.method if key == snaps[0].info.method else f"{snaps[0].info.method} · {key}"
    suptitle = f"{what}: last snapshot of each run · {Path(store_path).name}"
    if stack.dim() == 4:
        fig = snapshot_grid(stack, rows, columns, suptitle=suptitle)
    else:
        flat = stack.flatten(2)
        keep = snaps[0].arrays.get(_KEEP + key)
        labels = [[f"t{j}" for j in range(flat.shape[-1])] for _ in rows]
        fig = token_snapshot_grid(
            flat, labels, rows, columns, keep=keep.bool() if keep is not None else None, suptitle=suptitle
        )
    path = Path(out).with_name(Path(out).stem + "_maps.png")
    write_png(path, figure_to_png_bytes(fig))
    return path
