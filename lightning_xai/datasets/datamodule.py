"""A LightningDataModule of synthetic shapes with train/val/test splits."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from lightning_xai._checks import check_non_negative_int, check_positive_int
from lightning_xai.datasets._draw import _CLASS_NAMES, _check_common
from lightning_xai.datasets.shapes import SyntheticShapes

__all__ = ["SyntheticShapesDataModule"]


def _split_seed(seed: int, split: int) -> int:
    """Independent dataset seeds for the splits of one data module seed."""
    return int(np.random.SeedSequence([seed, split]).generate_state(1, dtype=np.uint32)[0])


class SyntheticShapesDataModule(LightningDataModule):
    """Train, validation and test splits of :class:`SyntheticShapes`, each from its own seed.

    The training loader shuffles with a generator seeded from ``seed`` (the global RNG is not used); the
    validation and test loaders keep the dataset order, so the first samples of the validation set make a
    stable, class-balanced probe set.

    Args:
        batch_size: Samples per batch.
        num_train: Training samples.
        num_val: Validation samples.
        num_test: Test samples.
        image_size: Side of the square images in pixels.
        num_classes: Number of classes, 2 to 4.
        num_workers: ``DataLoader`` worker processes.
        seed: Seed from which the three splits' seeds and the shuffling are derived.
        noise: Passed to :class:`SyntheticShapes`.
        normalize: Passed to :class:`SyntheticShapes`.
        distractors: Passed to :class:`SyntheticShapes`.
        return_dict: Passed to :class:`SyntheticShapes`.

    Example:
        >>> dm = SyntheticShapesDataModule(batch_size=4, num_train=8, num_val=4, num_test=4, image_size=16)
        >>> dm.setup("fit")
        >>> images, labels, masks = next(iter(dm.val_dataloader()))
        >>> images.shape, labels.tolist(), masks.shape
        (torch.Size([4, 3, 16, 16]), [0, 1, 2, 0], torch.Size([4, 16, 16]))
    """

    def __init__(
        self,
        batch_size: int = 32,
        num_train: int = 1024,
        num_val: int = 128,
        num_test: int = 128,
        image_size: int = 32,
        num_classes: int = 3,
        num_workers: int = 0,
        seed: int = 0,
        noise: float = 0.3,
        normalize: bool = True,
        distractors: bool = True,
        return_dict: bool = False,
    ) -> None:
        super().__init__()
        check_positive_int("batch_size", batch_size)
        check_positive_int("num_train", num_train)
        check_positive_int("num_val", num_val)
        check_positive_int("num_test", num_test)
        check_non_negative_int("num_workers", num_workers)
        _check_common(
            num_train,
            image_size,
            num_classes,
            noise,
            seed,
            {"normalize": normalize, "distractors": distractors, "return_dict": return_dict},
        )
        self.save_hyperparameters()
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self._sizes = {"train": num_train, "val": num_val, "test": num_test}
        self._options: dict[str, Any] = {
            "image_size": image_size,
            "num_classes": num_classes,
            "noise": noise,
            "normalize": normalize,
            "distractors": distractors,
            "return_dict": return_dict,
        }
        self.class_names: list[str] = list(_CLASS_NAMES[:num_classes])
        self.mean = SyntheticShapes.mean
        self.std = SyntheticShapes.std
        self.train_set: SyntheticShapes | None = None
        self.val_set: SyntheticShapes | None = None
        self.test_set: SyntheticShapes | None = None

    def _dataset(self, split: str) -> SyntheticShapes:
        index = ("train", "val", "test").index(split)
        return SyntheticShapes(
            num_samples=self._sizes[split], seed=_split_seed(self.seed, index), **self._options
        )

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets the stage needs (cheap: samples are drawn lazily)."""
        if stage in (None, "fit") and self.train_set is None:
            self.train_set = self._dataset("train")
        if stage in (None, "fit", "validate") and self.val_set is None:
            self.val_set = self._dataset("val")
        if stage in (None, "test") and self.test_set is None:
            self.test_set = self._dataset("test")

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        dataset = getattr(self, f"{split}_set")
        if dataset is None:
            dataset = self._dataset(split)
            setattr(self, f"{split}_set", dataset)
        # A private generator even without shuffling: iterating a DataLoader draws its base seed from it,
        # and from the global RNG when there is none.
        generator = torch.Generator().manual_seed(_split_seed(self.seed, 3))
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            generator=generator,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches, reproducible from ``seed``."""
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches in dataset order."""
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Test batches in dataset order."""
        return self._loader("test", shuffle=False)
