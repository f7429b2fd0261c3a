"""What AttributionDriftCallback does with one explanation: compare, store, log, alert, draw."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from lightning_xai.explainers import Explanation
from lightning_xai.functional._fingerprint import tensor_fingerprint
from lightning_xai.functional.drift import drift_metrics
from lightning_xai.probe import Probe
from lightning_xai.sinks import ArtifactSink

if TYPE_CHECKING:
    from lightning_xai.sinks.store import AttributionStore, Snapshot, SnapshotInfo

__all__ = ["DriftOptions", "emit_drift", "probe_fingerprint"]


@dataclass(frozen=True)
class DriftOptions:
    """What one drift event needs to know: the run and store it writes, the method, how to compare and draw."""

    store: AttributionStore
    run_name: str
    method: str
    reference_run: str | None = None
    other_probe_noted: set[str] = field(default_factory=set)  # the runs already said to hold another probe's maps
    dtype: str = "float16"
    k_fraction: float = 0.1
    top_tokens: int = 5
    alert_below: float | None = None
    alert_against: tuple[str, ...] = ("previous", "reference")
    grid_snapshots: int = 6
    on_error: str = "warn"
    mean: Any = None
    std: Any = None

_KEEP = "keep/"


def probe_fingerprint(probe: Probe) -> str:
    """Hash of the probe's tensors: snapshots of different probes are never compared.

    Example:
        >>> probe_fingerprint(Probe((torch.zeros(2, 3), torch.tensor([0, 1])), [0, 1])) == probe_fingerprint(
        ...     Probe((torch.zeros(2, 3), torch.tensor([0, 1])), [5, 6]))
        True
    """
    tensors: list[Tensor] = []

    def collect(value: Any) -> None:
        if isinstance(value, Tensor):
            tensors.append(value)
        elif isinstance(value, dict):
            for key in sorted(value):
                collect(value[key])
        elif isinstance(value, (tuple, list)):
            for item in value:
                collect(item)

    collect(probe.batch)
    return tensor_fingerprint(*tensors)


def _as_stored(values: Tensor, dtype: str) -> Tensor:
    """The values as the store will give them back, so that live and stored snapshots compare exactly."""
    return values.detach().float().cpu().to(getattr(torch, dtype)).float()


def _kind(key: str, values: Tensor, keep: dict[str, Tensor]) -> str:
    return "tokens" if key in keep else ("map" if values.dim() >= 3 else "vector")


def _comparisons(cb: DriftOptions, store: AttributionStore, epoch: int, fingerprint: str) -> tuple[
        dict[str, Snapshot], list[str]]:
    """The snapshots of this probe to compare with (``previous``, ``first``, ``reference``), and what is missing.

    Snapshots of another probe (a retrain at another image size appended to the run, a resume with another
    ``num_samples``) are left out; the run's are named once, the reference run's every time it has none of this
    probe.
    """
    found: dict[str, Snapshot] = {}
    problems: list[str] = []
    run, runs = cb.run_name, [r.name for r in store.runs()]
    history = store.snapshots(run, method=cb.method) if run in runs else []
    same = [i for i in history if i.probe_fingerprint == fingerprint]
    if same:
        found["previous"] = store.load_snapshot(same[-1])
        found["first"] = found["previous"] if len(same) == 1 else store.load_snapshot(same[0])
    other = [i for i in history if i.probe_fingerprint != fingerprint]
    if other and run not in cb.other_probe_noted:
        cb.other_probe_noted.add(run)
        epochs = sorted({i.epoch for i in other})
        problems.append(f"{len(other)} earlier snapshot(s) of run {run!r} (epochs {epochs}) were taken on another "
                        f"probe (fingerprint {other[-1].probe_fingerprint} != {fingerprint}): they are not compared "
                        "or drawn with this probe's; give the run the same `probe` or validation data, or start a "
                        "new run (if_exists='new')")
    if cb.reference_run is not None:
        ref = cb.reference_run
        if ref not in runs:
            problems.append(f"reference_run={ref!r} is not in the store {store.path} (runs: {runs})")
            return found, problems
        infos = store.snapshots(ref, method=cb.method)
        if any(i.probe_fingerprint == fingerprint for i in infos):
            found["reference"] = store.reference_snapshot(ref, epoch, method=cb.method, probe_fingerprint=fingerprint)
        elif infos:
            problems.append(f"the reference snapshot ({ref!r}, epoch {infos[-1].epoch}) was taken on another probe "
                            f"(fingerprint {infos[-1].probe_fingerprint} != {fingerprint}); give both runs the same "
                            "`probe` or validation data")
        else:
            problems.append(f"reference_run={ref!r} has no {cb.method} snapshots in the store {store.path}")
    return found, problems


def emit_drift(cb: DriftOptions, expl: Explanation, probe: Probe, sink: ArtifactSink) -> None:
    """Compare the new maps with the previous/first/reference snapshots, store them, log numbers and figures."""
    store: AttributionStore = cb.store
    run: str = cb.run_name
    ev = sink.event
    fingerprint = probe_fingerprint(probe)
    keep: dict[str, Tensor] = {k: v.bool().cpu() for k, v in expl.keep.items()}
    arrays = {k: _as_stored(v, cb.dtype) for k, v in expl.drift_arrays().items()}
    found, problems = _comparisons(cb, store, ev.epoch, fingerprint)
    made_by = {k: expl.settings[k] for k in ("layer", "reshape") if expl.settings.get(k) is not None}  # its layer
    flat = {key: _flat(values, keep.get(key)) for key, values in arrays.items()}
    _warn_flat(cb, flat, probe, made_by, sink)
    per_probe: dict[str, dict[str, list[float]]] = {}
    means: dict[str, dict[str, float]] = {}
    for against, snap in found.items():
        for key, values in arrays.items():
            if key not in snap.arrays or snap.arrays[key].shape != values.shape:
                problems.append(f"the {against} snapshot has no array {key!r} of shape {tuple(values.shape)}")
                continue
            metrics = drift_metrics(snap.arrays[key], values, kind=_kind(key, values, keep),  # type: ignore[arg-type]
                                    k_fraction=cb.k_fraction, top_tokens=cb.top_tokens, keep=keep.get(key))
            undefined = flat[key] | _flat(snap.arrays[key], keep.get(key))  # a flat map is not "stable": no ranking
            prefix = "" if len(arrays) == 1 else f"{key}/"
            for metric, value in metrics.items():
                tag = f"{prefix}{metric}"
                value = value.float().masked_fill(undefined, float("nan"))
                mean = float(value.nanmean()) if not bool(undefined.all()) else float("nan")
                means.setdefault(against, {})[tag] = mean
                per_probe.setdefault(against, {})[tag] = value.tolist()
                sink.scalar(f"{tag}/{against}", mean)
    meta = {"stage": ev.stage, "drift": means, **made_by,
            "flat": {key: f.tolist() for key, f in flat.items()},
            "against": {a: {"run": s.info.run, "epoch": s.info.epoch, "global_step": s.info.global_step}
                        for a, s in found.items() if a in means}}
    info = store.write(run, {**arrays, **{_KEEP + k: v for k, v in keep.items()}}, epoch=ev.epoch,
                       global_step=ev.global_step, method=cb.method, probe_fingerprint=fingerprint,
                       checkpoint_path=ev.ckpt_path, model_hash=ev.model_hash or None, meta=meta,
                       run_meta={"reference_run": cb.reference_run}, dtype=cb.dtype)
    _alert(cb, per_probe, probe, sink)
    sink.json("drift", {"run": run, "store": str(store.path), "snapshot_id": info.id, "method": cb.method,
                        **made_by, "probe_fingerprint": fingerprint, "dataset_index": probe.indices,
                        "against": meta["against"], "flat": meta["flat"], "mean": means, "per_probe": per_probe})
    failed: Exception | None = None
    try:  # the figures read the store back: after the data, and a failure costs only them
        _figures(cb, store, info, expl, arrays, keep, found, probe, sink)
    except Exception as err:
        failed = err
        if cb.on_error != "raise":
            rank_zero_warn(f"lightning_xai: the drift figures of run {run!r} at epoch {ev.epoch} could not be drawn "
                           f"({type(err).__name__}: {err}); the snapshot and drift.json are written.",
                           category=RuntimeWarning)
    sink.commit(method=cb.method, run=run, store=str(store.path), snapshot_id=info.id, **made_by)
    if failed is not None and cb.on_error == "raise":
        raise failed
    if problems:
        raise ValueError("lightning_xai: AttributionDriftCallback stored the snapshot but could not compare: "
                         + "; ".join(problems) + ".")


def _flat(values: Tensor, keep: Tensor | None = None) -> Tensor:
    """Per probe: is the map (or the kept tokens' values) constant, zero or not finite? Such a map ranks nothing.

    Example:
        >>> _flat(torch.tensor([[1.0, 1.0], [0.0, 2.0]])).tolist()
        [True, False]
    """
    v = values.detach().float().flatten(1)
    if keep is not None:
        k = keep.bool().flatten(1)
        hi = torch.where(k, v, float("-inf")).amax(1)
        lo = torch.where(k, v, float("inf")).amin(1)
    else:
        hi, lo = v.amax(1), v.amin(1)
    return ~((hi > lo) & torch.isfinite(hi) & torch.isfinite(lo))


def _warn_flat(cb: DriftOptions, flat: dict[str, Tensor], probe: Probe, made_by: dict[str, Any],
               sink: ArtifactSink) -> None:
    """Log the share of flat maps (``xai/drift/flat``) and say loudly which probes gave one."""
    ev = sink.event
    for key, f in flat.items():
        sink.scalar("flat" if len(flat) == 1 else f"{key}/flat", float(f.float().mean()))
        if bool(f.any()):
            which = [probe.indices[i] if probe.indices[i] >= 0 else i for i in f.nonzero().flatten().tolist()]
            layer = f" at layer {made_by['layer']!r}" if "layer" in made_by else ""
            hint = (" set `target_layer=` (or method_kwargs={'target_layer': ...}) to a layer with spatial extent"
                    if "layer" in made_by else " check the model and `target`")
            rank_zero_warn(
                f"lightning_xai: AttributionDriftCallback got flat (constant) {cb.method} maps{layer} for probes "
                f"{which} of {key!r} at {ev.stage} epoch {ev.epoch}: drift against them is undefined (logged as NaN, "
                f"not as stable);{hint}.", category=RuntimeWarning)


def _alert(cb: DriftOptions, per_probe: dict[str, dict[str, list[float]]], probe: Probe,
           sink: ArtifactSink) -> None:
    if cb.alert_below is None:
        return
    ev, lines = sink.event, []
    for against, metrics in per_probe.items():
        for tag, values in metrics.items():
            if against not in cb.alert_against or not tag.endswith("spearman"):
                continue
            finite = [v for v in values if v == v]  # probes with a flat map have no Spearman (NaN)
            if not finite:
                continue
            mean = sum(finite) / len(finite)
            if mean < cb.alert_below:
                ranked = [i for i in range(len(values)) if values[i] == values[i]]
                worst = sorted(ranked, key=lambda i: values[i])[:3]
                moved = ", ".join(f"#{probe.indices[i]} (rho {values[i]:.2f})" for i in worst)
                lines.append(f"Spearman of {tag.removesuffix('spearman') or ''}maps vs {against} = {mean:.3f} < "
                             f"alert_below={cb.alert_below}; moved most: {moved}")
    if lines:
        text = (f"Attribution drift alert · run {cb.run_name} · {ev.stage} · epoch {ev.epoch} · step "
                f"{ev.global_step}\n\n" + "\n".join(f"- {line}" for line in lines))
        rank_zero_warn(f"lightning_xai: {text}", category=RuntimeWarning)
        sink.text("alert", text)


def _figures(cb: DriftOptions, store: AttributionStore, info: SnapshotInfo, expl: Explanation,
             arrays: dict[str, Tensor], keep: dict[str, Tensor], found: dict[str, Snapshot], probe: Probe,
             sink: ArtifactSink) -> None:
    """The timeline and the probe x snapshot grid of the run's snapshots of this probe (``info``: the new one)."""
    from lightning_xai.render.drift import drift_timeline, snapshot_grid, token_snapshot_grid
    from lightning_xai.render.overlay import denormalize

    ev, run = sink.event, info.run
    history = store.snapshots(run, method=cb.method, probe_fingerprint=info.probe_fingerprint)
    series: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for past in history:
        for against, metrics in past.meta.get("drift", {}).items():
            for tag, value in metrics.items():
                series.setdefault(tag, {}).setdefault(against, []).append((past.epoch, value))
    if series:
        reference = f" vs {cb.reference_run}" if cb.reference_run else ""
        sink.figure("timeline", partial(drift_timeline, series, title=f"{cb.method} attribution drift · run {run}"
                                        f"{reference}", alert_below=cb.alert_below))
    key = next(iter(arrays))
    earlier = [i for i in sorted(history, key=lambda i: i.id) if i.id != info.id]
    snaps, titles = [], []
    for past in earlier[max(0, len(earlier) - cb.grid_snapshots + 1):]:  # the latest written, then the new one
        values = store.load_snapshot(past).arrays.get(key)
        if values is not None and values.shape == arrays[key].shape:
            snaps.append(values)
            titles.append(f"epoch {past.epoch}")
    snaps.append(arrays[key])
    titles.append(f"epoch {info.epoch}")
    ref = found.get("reference")
    if ref is not None and key in ref.arrays and ref.arrays[key].shape == arrays[key].shape:
        snaps.append(ref.arrays[key])
        titles.append(f"{cb.reference_run} · epoch {ref.info.epoch}")
    stack = torch.stack(snaps, dim=1)
    rows = [f"#{i}" if i >= 0 else f"probe {n}" for n, i in enumerate(probe.indices)]
    what = cb.method if key == cb.method else f"{cb.method} · {key}"
    suptitle = f"{what} across snapshots · run {run} · {ev.stage} · epoch {ev.epoch}"
    if key in keep:
        fig = partial(token_snapshot_grid, stack, expl.tokens[key], rows, titles, keep=keep[key], suptitle=suptitle)
    elif stack.dim() == 4:
        image = next((x for n in expl.values if (x := expl.inputs[n]).is_floating_point() and x.dim() == 4), None)
        mean, std = cb.mean, cb.std
        images = denormalize(image, mean, std) if image is not None and image.dim() == 4 else None
        fig = partial(snapshot_grid, stack, rows, titles, suptitle=suptitle, images=images)
    else:
        features = [[f"x{j}" for j in range(stack.shape[-1])] for _ in rows]
        fig = partial(token_snapshot_grid, stack.flatten(2), features, rows, titles, suptitle=suptitle)
    sink.figure("snapshots", fig)
