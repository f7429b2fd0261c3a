"""Figures drawn off the training path (lightning_xai.sinks._worker): same bytes, nothing lost, failures said."""

from __future__ import annotations

import hashlib
import os
import pickle
import signal
import warnings
from functools import partial
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from lightning.pytorch import LightningModule

from lightning_xai import CalibrationCallback, GradCAMCallback
from lightning_xai.demo import ShapesCNN
from lightning_xai.render import draw_png, overlay_grid
from lightning_xai.render.calibration import reliability_diagram
from lightning_xai.sinks import ArtifactSink, Event, read_manifest
from lightning_xai.sinks._worker import FigureWorker, figure_worker
from tests.helpers import read_events, shapes_loaders, tiny_trainer


def warning_figure(message: str):
    """A builder that warns while it builds (in the drawing process) and then draws a figure."""
    warnings.warn(message, RuntimeWarning, stacklevel=1)
    return _builders()["reliability"]()


def broken_figure(message: str) -> None:
    """A builder that fails in the drawing process (module level, so the process can import it)."""
    raise ValueError(message)


def _builders() -> dict[str, partial]:
    gen = torch.Generator().manual_seed(0)
    images, maps = torch.rand(3, 3, 16, 16, generator=gen), torch.rand(3, 16, 16, generator=gen)
    return {
        "overlay": partial(overlay_grid, images, maps, titles=["a", "$x_1_2$", "c"], suptitle="Grad-CAM · epoch 1"),
        "reliability": partial(reliability_diagram, torch.tensor([3.0, 0.0, 5.0]), torch.tensor([0.2, 0.0, 0.9]),
                               torch.tensor([0.3, 0.0, 0.7]), 0.1),
    }


def _sink(tmp_path: Path, worker: FigureWorker | None, step: int = 4) -> ArtifactSink:
    return ArtifactSink([], str(tmp_path), Event("gradcam", "fit", 0, step), worker=worker)


def test_the_drawing_process_gives_the_same_png_bytes_and_manifest_line(tmp_path):
    worker = FigureWorker(help_flush=False)  # the drawing process alone
    try:
        for name, builder in _builders().items():
            here = draw_png(builder, 100)
            sink = _sink(tmp_path / name, worker)
            sink.figure(name, builder)
            sink.array("maps", np.zeros((2, 2), dtype=np.float32))
            record = sink.commit(method="gradcam")
            assert record["files"] == ["gradcam/fit-epoch=0-step=4/maps.npy"]  # the PNG is written later
            worker.flush()
            (line,) = read_manifest(tmp_path / name / "xai" / "manifest.jsonl")
            assert line["files"] == ["gradcam/fit-epoch=0-step=4/maps.npy", f"gradcam/fit-epoch=0-step=4/{name}.png"]
            assert (tmp_path / name / "xai" / "gradcam" / "fit-epoch=0-step=4" / f"{name}.png").read_bytes() == here
        assert worker.drawn_in_process == 2  # drawn by the process, not by this one
    finally:
        worker.close()


def test_a_flush_draws_queued_figures_on_two_cores_with_the_same_bytes_and_order(tmp_path):
    """While a flush waits, the flushing thread draws queued figures too (newest first); every PNG is the one the
    drawing process gives, delivered and listed in its event's order, each event's manifest line complete."""
    builders = list(_builders().items()) * 3  # 6 figures in 3 events of 2
    alone, helped = FigureWorker(help_flush=False), FigureWorker()
    try:
        for worker, root in ((alone, tmp_path / "alone"), (helped, tmp_path / "helped")):
            for event in range(3):
                sink = _sink(root, worker, step=event)
                for name, builder in builders[2 * event:2 * event + 2]:
                    sink.figure(name, builder)
                sink.commit(method="gradcam")
            worker.flush()
        assert alone.drawn_while_flushing == 0 and alone.drawn_in_process == 6
        assert helped.drawn_while_flushing >= 1 and helped.drawn_in_process + helped.drawn_while_flushing == 6
        lines = [list(read_manifest(root / "xai" / "manifest.jsonl")) for root in (tmp_path / "alone",
                                                                                    tmp_path / "helped")]
        assert [line["files"] for line in lines[0]] == [line["files"] for line in lines[1]]
        assert [len(line["files"]) for line in lines[1]] == [2, 2, 2]
        for line in lines[0]:
            for file in line["files"]:
                assert (tmp_path / "alone" / "xai" / file).read_bytes() == (tmp_path / "helped" / "xai" / file).read_bytes()
    finally:
        alone.close()
        helped.close()


def test_the_users_matplotlib_style_travels_with_the_figure(tmp_path):
    builder = _builders()["reliability"]
    worker = FigureWorker(help_flush=False)  # the drawing process alone
    try:
        with matplotlib.rc_context({"font.size": 14, "axes.facecolor": "#eeeeee"}):
            here = draw_png(builder, 100)
            sink = _sink(tmp_path, worker)
            sink.figure("reliability", builder)
            sink.commit(method="calibration")
        worker.flush()
        assert here != draw_png(builder, 100)  # the style changes the picture ...
        png = tmp_path / "xai" / "gradcam" / "fit-epoch=0-step=4" / "reliability.png"
        assert png.read_bytes() == here  # ... and the process drew it with the caller's style
    finally:
        worker.close()


def test_a_failing_figure_in_the_process_is_a_warning_naming_it_and_keeps_the_data(tmp_path):
    worker = FigureWorker(help_flush=False)  # the drawing process alone
    try:
        sink = _sink(tmp_path, worker)
        sink.figure("broken", partial(broken_figure, "no figure today"))
        sink.figure("fine", _builders()["reliability"])
        sink.array("maps", np.zeros((2, 2), dtype=np.float32))
        sink.commit(method="gradcam")
        with pytest.warns(RuntimeWarning) as caught:
            worker.flush()
        (message,) = [str(w.message) for w in caught if "could not be drawn" in str(w.message)]
        assert "'broken'" in message and "ValueError: no figure today" in message
        assert "broken_figure" in message  # the drawing process's traceback, with the builder's frame
        (line,) = read_manifest(tmp_path / "xai" / "manifest.jsonl")
        assert line["failed_figures"] == {"broken": "ValueError: no figure today"}
        assert line["files"] == ["gradcam/fit-epoch=0-step=4/maps.npy", "gradcam/fit-epoch=0-step=4/fine.png"]
    finally:
        worker.close()


def test_warnings_raised_in_the_drawing_process_are_said_here(tmp_path):
    worker = FigureWorker(help_flush=False)  # the drawing process alone
    try:
        sink = _sink(tmp_path, worker)
        sink.figure("warned", partial(warning_figure, "a tile had nothing to show"))
        sink.commit(method="gradcam")
        with pytest.warns(RuntimeWarning, match="a tile had nothing to show"):
            worker.flush()
        assert worker.drawn_in_process == 1
        (line,) = read_manifest(tmp_path / "xai" / "manifest.jsonl")
        assert line["files"] == ["gradcam/fit-epoch=0-step=4/warned.png"] and "failed_figures" not in line
    finally:
        worker.close()


def test_builders_the_process_cannot_import_are_drawn_here(tmp_path):
    worker = FigureWorker(help_flush=False)  # the drawing process alone
    try:
        sink = _sink(tmp_path, worker)
        sink.figure("lambda", lambda: _builders()["reliability"]())  # a closure cannot travel
        sink.commit(method="gradcam")
        worker.flush()
        assert worker.drawn_in_process == 0
        assert (tmp_path / "xai" / "gradcam" / "fit-epoch=0-step=4" / "lambda.png").exists()
    finally:
        worker.close()


def end_the_process() -> None:
    """A builder that takes the drawing process down (as a crash in a native library would)."""
    os._exit(3)


def test_a_drawing_process_that_dies_is_said_and_later_figures_are_drawn_here(tmp_path):
    worker = FigureWorker(help_flush=False)  # the drawing process alone
    try:
        sink = _sink(tmp_path, worker, step=1)
        sink.figure("crash", partial(end_the_process))
        sink.figure("after", _builders()["reliability"])
        sink.commit(method="gradcam")
        with pytest.warns(RuntimeWarning) as caught:
            worker.flush()
        messages = [str(w.message) for w in caught]
        assert any("background figure process is not used" in m and "exit code 3" in m for m in messages)
        assert any("'crash'" in m and "ended while drawing it" in m for m in messages)
        (line,) = read_manifest(tmp_path / "xai" / "manifest.jsonl")
        assert set(line["failed_figures"]) == {"crash"}  # not retried here: it could take the training down
        assert line["files"] == ["gradcam/fit-epoch=0-step=1/after.png"]  # drawn here instead
        assert worker.drawn_in_process == 0
    finally:
        worker.close()


def test_a_process_ended_between_events_is_started_again(tmp_path):
    worker = FigureWorker(help_flush=False)  # the drawing process alone
    try:
        for step in (1, 2):
            sink = _sink(tmp_path, worker, step=step)
            sink.figure("fig", _builders()["reliability"])
            sink.commit(method="gradcam")
            worker.flush()
            worker.close()  # ends the process; the next event starts a fresh one
        assert worker.drawn_in_process == 2
        assert (tmp_path / "xai" / "gradcam" / "fit-epoch=0-step=2" / "fig.png").exists()
    finally:
        worker.close()


class _StopsAt(ShapesCNN):
    """Interrupted in the training step of epoch ``epoch`` (KeyboardInterrupt or an error in the model)."""

    def __init__(self, epoch: int, error: type[BaseException]) -> None:
        super().__init__(num_classes=4, width=4)
        self.stop_epoch, self.error = epoch, error

    def training_step(self, batch, batch_idx):
        if self.current_epoch == self.stop_epoch:
            raise self.error("stopped by the test")
        return super().training_step(batch, batch_idx)


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_an_interrupted_fit_keeps_every_figure_of_the_completed_epochs(tmp_path, error):
    torch.manual_seed(0)
    tr, va = shapes_loaders()
    callbacks = [GradCAMCallback(num_samples=2), CalibrationCallback(n_bins=5)]
    trainer = tiny_trainer(tmp_path, callbacks, max_epochs=4)
    model: LightningModule = _StopsAt(2, error)
    handler = signal.getsignal(signal.SIGINT)
    try:  # Lightning: on_exception, teardown, then SystemExit(1) for Ctrl+C (SIGINT ignored from then on)
        with pytest.raises(SystemExit if error is KeyboardInterrupt else RuntimeError):
            trainer.fit(model, tr, va)
    finally:
        signal.signal(signal.SIGINT, handler)
    lines = list(read_manifest(Path(trainer.log_dir) / "xai" / "manifest.jsonl"))
    assert sorted((r["callback"], r["epoch"]) for r in lines) == [
        ("calibration", 0), ("calibration", 1), ("gradcam", 0), ("gradcam", 1)]
    for r in lines:
        pngs = [f for f in r["files"] if f.endswith(".png")]
        assert pngs and all((Path(trainer.log_dir) / "xai" / f).exists() for f in pngs)
    images = read_events(trainer.log_dir)["images"]
    assert sorted(images["xai/gradcam/gradcam"]) == [2, 4] and "xai/calibration/reliability" in images


def test_background_and_inline_fits_write_identical_figures(tmp_path):
    def run(mode: str) -> dict[str, str]:
        torch.manual_seed(0)
        tr, va = shapes_loaders()
        trainer = tiny_trainer(tmp_path / mode, [GradCAMCallback(num_samples=2, figures=mode),
                                                 CalibrationCallback(n_bins=5, figures=mode)])
        trainer.fit(ShapesCNN(num_classes=4, width=4), tr, va)
        root = Path(trainer.log_dir) / "xai"
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*.png")}

    before = figure_worker().drawn_in_process + figure_worker().drawn_while_flushing
    inline = run("inline")
    assert figure_worker().drawn_in_process + figure_worker().drawn_while_flushing == before
    background = run("background")
    assert len(inline) >= 3 and background == inline
    assert figure_worker().drawn_in_process + figure_worker().drawn_while_flushing >= before + len(inline)


@pytest.mark.parametrize("figures", ["background", "inline"])
def test_render_every_n_epochs_draws_less_often_and_keeps_every_epochs_data(tmp_path, figures):
    torch.manual_seed(0)
    tr, va = shapes_loaders()
    cb = GradCAMCallback(num_samples=2, render_every_n_epochs=2, figures=figures)
    trainer = tiny_trainer(tmp_path, [cb], max_epochs=4)
    trainer.fit(ShapesCNN(num_classes=4, width=4), tr, va)
    lines = sorted(read_manifest(Path(trainer.log_dir) / "xai" / "manifest.jsonl"), key=lambda r: r["epoch"])
    assert [r["epoch"] for r in lines] == [0, 1, 2, 3]  # data every explained epoch
    drawn = [r["epoch"] for r in lines if any(f.endswith(".png") for f in r["files"])]
    assert drawn == [1, 3]  # figures every second one
    assert all(any(f.endswith("gradcam_gradcam.npy") for f in r["files"]) for r in lines)
    assert sorted(read_events(trainer.log_dir)["images"]["xai/gradcam/gradcam"]) == [4, 8]


def test_figure_arguments_are_checked():
    with pytest.raises(ValueError, match="figures"):
        GradCAMCallback(figures="later")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="render_every_n_epochs"):
        CalibrationCallback(render_every_n_epochs=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device: CUDA tensors pickled as CPU copies")
def test_cuda_tensors_travel_to_the_drawing_process_as_cpu_copies(tmp_path):
    from lightning_xai.sinks._figure_jobs import cpu_pickle

    images, maps = torch.rand(2, 3, 16, 16, device="cuda"), torch.rand(2, 16, 16, device="cuda")
    job = pickle.loads(cpu_pickle(partial(overlay_grid, images, maps)))
    assert job.args[0].device.type == "cpu" and torch.equal(job.args[1], maps.cpu())
    worker = FigureWorker(help_flush=False)  # the drawing process alone
    try:
        sink = _sink(tmp_path, worker)
        sink.figure("overlay", partial(overlay_grid, images, maps))
        sink.commit(method="gradcam")
        worker.flush()
        assert worker.drawn_in_process == 1
        assert (tmp_path / "xai" / "gradcam" / "fit-epoch=0-step=4" / "overlay.png").exists()
    finally:
        worker.close()
