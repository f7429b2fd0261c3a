"""The YAML presets in callbacks/ configure the callbacks through LightningCLI."""

from __future__ import annotations

import pytest
from lightning.pytorch.cli import LightningCLI

from lightning_xai import (
    AttentionCallback,
    AttributionCallback,
    AttributionDriftCallback,
    CalibrationCallback,
    GradCAMCallback,
    ProbingCallback,
    SHAPCallback,
)
from lightning_xai.datasets import SyntheticShapesDataModule
from lightning_xai.demo import ShapesCNN
from tests.helpers import ROOT

PRESETS = sorted((ROOT / "callbacks").glob("*.yaml"))


def test_presets_exist_and_callbacks_folder_is_configuration_only():
    folder = ROOT / "callbacks"
    assert PRESETS, "callbacks/ holds the LightningCLI presets"
    assert not list(folder.glob("*.py"))


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_preset_instantiates_through_lightning_cli(preset, tmp_path):
    cli = LightningCLI(
        ShapesCNN, SyntheticShapesDataModule, run=False, save_config_callback=None,
        args=["--config", str(preset), "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false"],
    )
    expected = {"gradcam.yaml": GradCAMCallback, "calibration.yaml": CalibrationCallback,
                "shap.yaml": SHAPCallback, "drift.yaml": AttributionDriftCallback,
                "probing.yaml": ProbingCallback, "attention.yaml": AttentionCallback,
                "attribution.yaml": AttributionCallback}[preset.name]
    ours = [cb for cb in cli.trainer.callbacks if isinstance(cb, expected)]
    assert len(ours) == 1
    if expected is GradCAMCallback:
        assert ours[0].methods == ("gradcam", "gradcam++") and ours[0].num_samples == 8
    elif expected is AttributionDriftCallback:
        assert ours[0].method == "auto" and ours[0].alert_below == 0.8 and ours[0].target == "label"
    elif expected is ProbingCallback:
        assert ours[0].layers == "auto" and ours[0].cv == 5 and ours[0].concepts == () and ours[0].time_budget == 300
    elif expected is AttentionCallback:
        assert ours[0].methods == ("attention", "rollout", "grad_rollout") and ours[0].num_samples == 8
        assert ours[0].explainers["rollout"].head_fusion == "mean" and ours[0].explainers["attention"].max_raw == 2
    elif expected is AttributionCallback:
        assert ours[0].methods == ("integrated_gradients", "saliency", "occlusion") and ours[0].num_samples == 8
        assert ours[0].explainers["integrated_gradients"].max_steps == 256
        assert ours[0].explainers["occlusion"].patch == (4, 4)
    elif expected is CalibrationCallback:
        assert ours[0].n_bins == 15 and ours[0].gallery_size == 8
    else:
        assert ours[0].n_background == 32 and ours[0].completeness_tol == 0.01


def test_cli_arguments_override_preset(tmp_path):
    cli = LightningCLI(
        ShapesCNN, SyntheticShapesDataModule, run=False, save_config_callback=None,
        args=["--config", str(next(p for p in PRESETS if p.name == "gradcam.yaml")), "--trainer.logger", "false",
              "--trainer.callbacks.init_args.methods", "[layercam]",
              "--trainer.callbacks.init_args.target", "lightning_xai.adapters.default_forward_fn"],
    )
    cb = next(cb for cb in cli.trainer.callbacks if isinstance(cb, GradCAMCallback))
    assert cb.methods == ("layercam",)
    assert callable(cb.target)
