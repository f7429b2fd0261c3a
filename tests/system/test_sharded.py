"""Sharded models (FSDP2: Lightning's ModelParallelStrategy with ``fully_shard``), 2 CPU processes: the callbacks
gather the model for their step and give the numbers, the model hash and the training of one unsharded process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_xai.sinks import read_manifest
from tests.helpers import ROOT

SCRIPT = Path(__file__).with_name("sharded_script.py")


def _run(out: Path, devices: int, accelerator: str = "cpu") -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), str(SCRIPT.parent)])}
    proc = subprocess.run([sys.executable, str(SCRIPT), str(out), str(devices), accelerator], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]


def _compare(single: Path, sharded: Path) -> None:
    one, two = single / "validate", sharded / "validate"
    for method in ("gradcam", "scorecam"):
        a, b = (np.load(next(d.rglob(f"gradcam_{method}.npy"))) for d in (one, two))
        assert a.shape == (4, 32, 32)
        np.testing.assert_allclose(a, b, atol=1e-5, err_msg=method)
    a, b = (np.load(next(d.rglob("shap_values.npz")))["input"] for d in (one, two))
    np.testing.assert_allclose(a, b, atol=1e-5)
    for method in ("integrated_gradients", "saliency", "occlusion", "lime"):
        a, b = (np.load(next(d.rglob(f"attribution_{method}.npz")))["input"] for d in (one, two))
        assert a.shape == (4, 3, 32, 32) and np.abs(a).max() > 0
        np.testing.assert_allclose(a, b, atol=1e-5, err_msg=method)
    a, b = (torch.load(d / "explain_direct.pt") for d in (single, sharded))  # the public explain(), every rank
    assert a.shape == (3, 32, 32) and float(a.abs().max()) > 0
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    records = [[r for m in d.rglob("manifest.jsonl") for r in read_manifest(m)] for d in (one, two)]
    assert len(records[1]) == len(records[0]) == 10  # one writer: rank zero
    hashes = [{r["model_hash"] for r in rs} for rs in records]
    assert hashes[1] == hashes[0] and len(hashes[0]) == 1  # the gathered weights hash like the unsharded ones
    metrics = [json.loads(p.read_text()) for p in (single / "callback_metrics_rank0.json",
                                                   sharded / "callback_metrics_rank0.json",
                                                   sharded / "callback_metrics_rank1.json")]
    assert metrics[1] == metrics[2] and set(metrics[1]) == set(metrics[0])
    for key, value in metrics[0].items():
        if not key.endswith("/seconds"):
            assert metrics[1][key] == pytest.approx(value, rel=1e-3, abs=1e-5), key
    # the sharded fit with callbacks ends with the weights of the one without, and it did train
    bare, observed = (torch.load(sharded / f"weights_{run}.pt") for run in ("bare", "observed"))
    start = torch.load(sharded / "weights_start.pt")
    assert bare.keys() == observed.keys() == start.keys()
    for key in bare:
        assert torch.equal(bare[key], observed[key]), key
    assert any(not torch.allclose(bare[k], start[k]) for k in bare)  # it did train
    for rank in (0, 1):  # FSDP's settings put back after every step: as at the start of fit
        before, after = json.loads((sharded / f"fsdp_settings_rank{rank}.json").read_text())
        assert before == after and len(before) == 4, before  # 3 convolutions and the root


@pytest.mark.slow
@pytest.mark.ddp
def test_fsdp2_two_cpu_processes_match_one_process(tmp_path):
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    single.mkdir(), sharded.mkdir()
    _run(single, 1)
    _run(sharded, 2)
    _compare(single, sharded)


@pytest.mark.slow
@pytest.mark.ddp
def test_fsdp2_hugging_face_vit_attention_shap_and_attribution_match_one_process(tmp_path):
    """A sharded Hugging Face model: raw attention captured under eager (switched for the pass), rollout, SHAP and
    integrated gradients give one unsharded process's maps and scalars."""
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    single.mkdir(), sharded.mkdir()
    for out, devices in ((single, 1), (sharded, 2)):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        proc = subprocess.run([sys.executable, str(SCRIPT.with_name("sharded_hf_script.py")), str(out), str(devices)],
                              env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-4000:]
    one, two = (json.loads((d / "metrics.json").read_text()) for d in (single, sharded))
    assert set(one) == set(two) and len(one) >= 20
    for key, value in one.items():
        assert two[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
    for name, field in (("attention_attention.npz", "raw"), ("attention_rollout.npz", "maps"),
                        ("attention_grad_rollout.npz", "maps"), ("shap_values.npz", "input"),
                        ("attribution_integrated_gradients.npz", "input")):
        a, b = (np.load(next(d.rglob(name))) for d in (single, sharded))
        assert field in a.files, (name, a.files)
        assert np.abs(a[field]).max() > 0, name
        np.testing.assert_allclose(a[field], b[field], atol=1e-5, err_msg=name)


@pytest.mark.slow
@pytest.mark.ddp
def test_tensor_parallel_is_refused_on_every_rank_with_the_reason(tmp_path):
    _run(tmp_path, 2, "tensor_parallel")
    for rank in (0, 1):
        message = (tmp_path / f"refused_rank{rank}.txt").read_text()
        assert "['head.weight', 'head.bias'] stay sharded" in message, message
        assert "tensor_parallel_size=1" in message and "strategy='ddp'" in message


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA devices (FSDP2 on GPUs, NCCL)")
def test_fsdp2_two_gpus_match_one_gpu(tmp_path):  # pragma: no cover - runs where 2 GPUs are present
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    single.mkdir(), sharded.mkdir()
    _run(single, 1, "gpu")
    _run(sharded, 2, "gpu")
    _compare(single, sharded)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="Lightning's FSDPStrategy (FSDP1) needs a GPU")
def test_fsdp1_is_refused_with_the_way_out(tmp_path):  # pragma: no cover - runs where a GPU is present
    from lightning.pytorch import Trainer

    from lightning_xai import GradCAMCallback
    from lightning_xai.demo import ShapesCNN

    trainer = Trainer(accelerator="gpu", devices=1, strategy="fsdp", callbacks=[GradCAMCallback()],
                      default_root_dir=tmp_path, max_epochs=1, logger=False)
    with pytest.raises(RuntimeError, match=r"FSDPStrategy.*ModelParallelStrategy"):
        trainer.fit(ShapesCNN())
