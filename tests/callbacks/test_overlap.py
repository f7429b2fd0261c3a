"""Explaining alongside training (``overlap``): the same artifacts and numbers as in the loop, at the epoch's own
step, the weights untouched, and every reason it must not happen caught."""

from __future__ import annotations

import sys
import time
import warnings

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch import nn

from lightning_xai import SHAPCallback
from lightning_xai.callbacks import _overlap
from lightning_xai.demo import ShapesCNN
from lightning_xai.sinks import read_manifest
from tests.helpers import scalar_values, seeded, tiny_trainer

EPOCHS = 3


def _fit(folder, overlap, model=None, extra=(), **trainer_kw):
    with seeded(0):
        model = model or ShapesCNN(num_classes=3)
    cb = SHAPCallback(num_samples=3, n_background=4, nsamples=8, max_nsamples=32, overlap=overlap)
    from lightning_xai.datasets import SyntheticShapesDataModule

    dm = SyntheticShapesDataModule(batch_size=16, num_train=64, num_val=32, image_size=32, num_classes=3)
    trainer = tiny_trainer(folder, [cb, *extra], max_epochs=EPOCHS, limit_train_batches=3, limit_val_batches=1,
                           **trainer_kw)
    trainer.fit(model, dm)
    return trainer, cb, model


def _arrays(log_dir):
    rows = [r for r in read_manifest(f"{log_dir}/xai/manifest.jsonl") if r["callback"] == "shap"]
    out = []
    for row in sorted(rows, key=lambda r: r["epoch"]):
        npz = next(f for f in row["files"] if f.endswith("shap_values.npz"))
        with np.load(f"{log_dir}/xai/{npz}") as z:
            out.append((row["epoch"], row["global_step"], row["model_hash"], row["scalars"], {k: z[k].copy() for k in z.files}))
    return out


def test_overlapped_explanations_equal_the_loops_at_the_same_steps_and_weights_are_untouched(tmp_path, monkeypatch):
    threads = []
    real = _overlap.submit

    def spy(fn, epoch, **context):
        def recorded():
            import threading

            threads.append(threading.current_thread().name)
            return fn()
        return real(recorded, epoch, **context)

    monkeypatch.setattr("lightning_xai.callbacks._overlap_steps.submit", spy)
    inline, _, m_inline = _fit(tmp_path / "inline", overlap=False)
    assert threads == []
    along, cb, m_along = _fit(tmp_path / "along", overlap=True)
    assert len(threads) == EPOCHS and all(t.startswith("lightning_xai-explain") for t in threads)
    a, b = _arrays(inline.log_dir), _arrays(along.log_dir)
    assert [r[:3] for r in a] == [r[:3] for r in b] and len(a) == EPOCHS  # epoch, step, model hash
    for ra, rb in zip(a, b):  # the manifest's scalars
        assert ra[3].keys() == rb[3].keys()
        np.testing.assert_allclose([ra[3][k] for k in ra[3]], [rb[3][k] for k in ra[3]], rtol=1e-5, atol=1e-7)
    for (*_, x), (*_, y) in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_allclose(x[k], y[k], rtol=1e-5, atol=1e-7, err_msg=k)
    for key in ("xai/shap/completeness/relative_median", "xai/shap/seconds"):
        steps_a = [s for s, _ in scalar_values(inline.log_dir, key)]
        assert steps_a and steps_a == [s for s, _ in scalar_values(along.log_dir, key)], key
    va = [v for _, v in scalar_values(inline.log_dir, "xai/shap/completeness/relative_median")]
    vb = [v for _, v in scalar_values(along.log_dir, "xai/shap/completeness/relative_median")]
    np.testing.assert_allclose(va, vb, rtol=1e-5)
    assert "xai/shap/completeness/relative_median" in along.callback_metrics  # the last epoch's, after fit
    for k, v in m_inline.state_dict().items():  # training was not touched (the RNG included)
        assert torch.equal(v, m_along.state_dict()[k]), k


def test_a_monitored_xai_metric_keeps_the_explanation_in_the_loop(tmp_path):
    monitor = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="xai/shap/completeness/relative_median")
    with pytest.warns(RuntimeWarning, match=r"overlap=True\) explains in the training loop: .*ModelCheckpoint"):
        trainer, cb, _ = _fit(tmp_path, overlap=True, extra=[monitor], enable_checkpointing=True)
    assert monitor.best_model_path  # it saw the metric in its own epoch


def test_auto_keeps_it_in_the_loop_without_a_spare_core_or_with_on_error_raise(tmp_path, monkeypatch):
    model = ShapesCNN(num_classes=3)
    trainer = tiny_trainer(tmp_path, [])
    monkeypatch.setattr(_overlap, "_usable_cores", lambda: torch.get_num_threads())
    assert "no spare core" in _overlap.refusal("auto", trainer, model, "fit", "warn", True)
    assert _overlap.refusal(True, trainer, model, "fit", "warn", True) is None
    monkeypatch.setattr(_overlap, "_usable_cores", lambda: torch.get_num_threads() + 1)
    assert _overlap.refusal("auto", trainer, model, "fit", "warn", True) is None
    assert "on_error='raise'" in _overlap.refusal("auto", trainer, model, "fit", "raise", True)
    assert "validate has no training" in _overlap.refusal(True, trainer, model, "validate", "warn", True)
    assert "overlappable" in _overlap.refusal(True, trainer, model, "fit", "warn", False)
    monkeypatch.setattr(_overlap, "AUTO_MAX_BYTES", 10)
    assert "larger than" in _overlap.refusal("auto", trainer, model, "fit", "warn", True)


class _NoisyEval(ShapesCNN):
    """Draws from the global torch stream in eval mode too (MC dropout)."""

    def forward(self, x):
        return nn.functional.dropout(super().forward(x), 0.1, training=True)


def test_a_forward_that_draws_random_numbers_stays_in_the_loop(tmp_path):
    with seeded(0):
        model = _NoisyEval(num_classes=3)
    with pytest.warns(RuntimeWarning, match="draws from the global random streams"):
        _fit(tmp_path, overlap=True, model=model)


def test_shap_peers_and_a_module_embedding_layer_do_not_overlap():
    assert SHAPCallback().explainer.overlappable
    assert not SHAPCallback(engine="shap-gradient").explainer.overlappable
    assert not SHAPCallback(engine="deep").explainer.overlappable
    from lightning_xai.explainers import ShapExplainer

    assert not ShapExplainer(embedding_layer=nn.Embedding(4, 2)).overlappable  # a module of the model, not its copy


def test_an_error_in_the_background_is_warned_with_its_epoch_and_training_goes_on(tmp_path, monkeypatch):
    calls = []

    def boom(self, model, inputs):
        calls.append(1)
        raise RuntimeError("kaputt in the thread")

    monkeypatch.setattr(SHAPCallback, "_explain", boom)
    with pytest.warns(RuntimeWarning, match=r"SHAPCallback failed during fit at epoch 0: RuntimeError: kaputt") as rec:
        trainer, _, _ = _fit(tmp_path, overlap=True)
    assert len(calls) == EPOCHS and trainer.current_epoch == EPOCHS
    assert any("in boom" in str(w.message) for w in rec)  # the traceback reaches into the failing frame


def test_an_interrupt_writes_the_explanation_running_in_the_background(tmp_path):
    class Stop(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.current_epoch == 1:
                raise KeyboardInterrupt

    with warnings.catch_warnings(), pytest.raises(SystemExit):  # Lightning exits after a graceful shutdown
        warnings.simplefilter("ignore")
        _fit(tmp_path, overlap=True, extra=[Stop()])
    (manifest,) = tmp_path.rglob("manifest.jsonl")
    arrays = _arrays(manifest.parents[1])
    assert [r[0] for r in arrays] == [0]  # epoch 0's explanation, finished and written at the interrupt


def test_overlap_is_checked():
    with pytest.raises(ValueError, match="overlap"):
        SHAPCallback(overlap="sometimes")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread priorities are Linux's")
def test_background_work_runs_below_the_training_loops_priority():
    import os
    import threading

    from lightning_xai.sinks._worker import figure_worker

    own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    job = _overlap.submit(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id()), epoch=0)
    assert job.future.result()[0] > own or own == 19  # the explaining thread
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == own  # this thread is untouched
    worker = figure_worker()
    proc = worker._process_handle()  # the drawing process, started on demand
    if proc is not None:
        deadline = time.monotonic() + 20
        while os.getpriority(os.PRIO_PROCESS, proc.pid) <= own and time.monotonic() < deadline:
            time.sleep(0.05)  # it lowers itself as it starts
        assert os.getpriority(os.PRIO_PROCESS, proc.pid) > own or own == 19


def test_a_slow_background_explanation_does_not_rewind_the_training_rng(tmp_path, monkeypatch):
    """Engines guard themselves (``observer_guard`` in the layer search, the token hooks, ...: they save and restore
    the global RNG); in the background thread such a restore would rewind the shuffles training drew meanwhile (a fit
    of all callbacks under load ended with other weights): there the guards leave the RNG alone."""
    import threading

    from lightning_xai.functional import observer_guard

    real = SHAPCallback._explain

    def slow(self, model, inputs):  # a nested guard that spans the next epoch's start (its shuffle)
        with observer_guard(model):
            if threading.current_thread() is not threading.main_thread():
                time.sleep(0.6)
            return real(self, model, inputs)

    monkeypatch.setattr(SHAPCallback, "_explain", slow)
    without = tiny_trainer(tmp_path / "bare", [], max_epochs=EPOCHS, limit_train_batches=3, limit_val_batches=1)
    def dropout_model():  # training draws from the global stream at every step
        with seeded(0):
            model = ShapesCNN(num_classes=3)
        model.head = nn.Sequential(nn.Dropout(0.3), model.head)
        return model

    from lightning_xai.datasets import SyntheticShapesDataModule

    torch.manual_seed(7)
    bare = dropout_model()
    without.fit(bare, SyntheticShapesDataModule(batch_size=16, num_train=64, num_val=32, image_size=32, num_classes=3))
    torch.manual_seed(7)
    _, _, along = _fit(tmp_path / "along", overlap=True, model=dropout_model())
    for k, v in bare.state_dict().items():
        assert torch.equal(v, along.state_dict()[k]), k
