"""Wrote tests/data/pre_explainers.ckpt with lightning_xai 58e5181 (before the explainer layer), run from an empty
folder: `PYTHONPATH=<checkout of 58e5181> python make_pre_explainers_ckpt.py pre_explainers.ckpt`."""
import sys
import warnings


def main(path: str) -> None:
    import lightning as L
    import torch
    from torch.utils.data import DataLoader

    from lightning_xai import AttributionDriftCallback, GradCAMCallback, SHAPCallback
    from lightning_xai.datasets import SyntheticShapes
    from lightning_xai.demo import ShapesCNN

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    tr = DataLoader(SyntheticShapes(32, image_size=16, seed=1), batch_size=8)
    va = DataLoader(SyntheticShapes(16, image_size=16, seed=2), batch_size=8)
    L.seed_everything(0)
    cbs = [GradCAMCallback(num_samples=2, on_error="raise"),
           SHAPCallback(num_samples=2, n_background=4, nsamples=8, completeness_tol=None, on_error="raise"),
           AttributionDriftCallback(method="shap", store="s.sqlite", run="old", num_samples=2,
                                    method_kwargs={"n_background": 4, "nsamples": 8, "completeness_tol": None},
                                    on_error="raise")]
    t = L.Trainer(accelerator="cpu", max_epochs=1, logger=False, default_root_dir=".", enable_progress_bar=False,
                  enable_model_summary=False, callbacks=cbs)
    t.fit(ShapesCNN(width=4), tr, va)
    t.save_checkpoint(path)


if __name__ == "__main__":
    main(sys.argv[1])
