"""The callbacks of one trainer read their validation data once (``probe_from_dataloader(..., shared=True)``): the
same probes as reading it once each, and nothing kept once the stage is over."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import seed_everything
from torch.utils.data import DataLoader, Dataset

from lightning_xai import AttributionDriftCallback, GradCAMCallback, SHAPCallback
from lightning_xai.adapters import default_batch_to_inputs
from lightning_xai.datasets import SyntheticShapes
from lightning_xai.demo import ShapesCNN
from lightning_xai.probe import forget_pools, probe_from_dataloader
from tests.helpers import tiny_trainer


class Counted(Dataset):
    """A dataset that counts its reads."""

    def __init__(self, data: Dataset) -> None:
        self.data, self.reads = data, 0

    def __len__(self) -> int:
        return len(self.data)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        self.reads += 1
        return self.data[index]


def _loader(n: int = 24, seed: int = 2) -> DataLoader:
    return DataLoader(Counted(SyntheticShapes(n, image_size=16, seed=seed)), batch_size=8)


def test_shared_pool_is_read_once_per_loader_and_pool_size_until_forgotten() -> None:
    forget_pools()
    loader, other = _loader(), _loader()
    alone = probe_from_dataloader(_loader(), 4, default_batch_to_inputs)
    first = probe_from_dataloader(loader, 4, default_batch_to_inputs, shared=True)
    second = probe_from_dataloader(loader, 6, default_batch_to_inputs, shared=True)  # same pool, more samples
    assert loader.dataset.reads == 24
    assert first.indices == alone.indices and torch.equal(first.batch[0], alone.batch[0])
    assert set(first.indices) <= set(second.indices) and len(second) == 6
    probe_from_dataloader(loader, 4, default_batch_to_inputs, pool_size=16, shared=True)  # another pool
    probe_from_dataloader(other, 4, default_batch_to_inputs, shared=True)  # another loader
    assert loader.dataset.reads == 24 + 16 and other.dataset.reads == 24
    probe_from_dataloader(loader, 4, default_batch_to_inputs)  # not shared: read, not kept
    assert loader.dataset.reads == 24 + 16 + 24
    batches = list(_loader())  # a list of batches as the "dataloader": read each time, not kept
    assert probe_from_dataloader(batches, 4, default_batch_to_inputs, shared=True).indices == [-1] * 4
    forget_pools()
    again = probe_from_dataloader(loader, 4, default_batch_to_inputs, shared=True)
    assert loader.dataset.reads == 24 + 16 + 24 + 24 and again.indices == first.indices
    forget_pools()


def test_three_callbacks_read_the_validation_data_once_and_forget_it(tmp_path: Path) -> None:
    seed_everything(0)
    train, val = DataLoader(SyntheticShapes(32, image_size=16, seed=1), batch_size=8), _loader(16)
    callbacks = [GradCAMCallback(num_samples=4), SHAPCallback(num_samples=2, n_background=4, overlap=False),
                 AttributionDriftCallback(num_samples=4, store=str(tmp_path / "store.sqlite"), run="r")]
    trainer = tiny_trainer(tmp_path, callbacks, max_epochs=2)
    trainer.fit(ShapesCNN(num_classes=3), train, val)
    explained = 2 * 8  # two validation epochs of one batch (tiny_trainer: limit_val_batches=1)
    assert val.dataset.reads == explained + 16  # the probes' pool: read once for the three callbacks
    probes = [cb.state_dict()["probe"]["indices"] for cb in callbacks]
    assert probes[0] == probes[2] == probe_from_dataloader(_loader(16), 4, default_batch_to_inputs).indices
    probe_from_dataloader(val, 4, default_batch_to_inputs, shared=True)  # the fit forgot its pool: read again
    assert val.dataset.reads == explained + 32
    forget_pools()
