"""Image+text pairs whose class needs both: the colour of a patch in a noise image and a keyword in a sentence."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset

from lightning_xai._checks import check_positive_int

__all__ = ["PatchKeywordPairs"]


class PatchKeywordPairs(Dataset):
    """Noise images with one coloured 6×6 patch, paired with token sentences holding one keyword.

    The class is ``2 * colour + keyword``: the patch is red (``colour = 0``) or green (``1``), the keyword is
    token 7 (``keyword = 0``) or token 8 (``1``), both at random places; the other tokens are ids 10..59. So a
    model must read both modalities, and each one's ground truth is known: ``mask`` (the patch, ``(H, W)``) and
    ``keyword_position``.

    Items: ``{"pixel_values": (3, H, W), "input_ids": (length,), "labels", "mask": (H, W)}``.

    Args:
        num_samples: Number of pairs.
        image_size: Side of the images (at least 8).
        length: Tokens per sentence (at least 2).
        seed: Seed of the samples (a private generator; the global RNG is untouched).

    Example:
        >>> ds = PatchKeywordPairs(8, image_size=16)
        >>> item = ds[0]
        >>> item["pixel_values"].shape, item["input_ids"].shape, int(item["mask"].sum()), ds.num_classes
        (torch.Size([3, 16, 16]), torch.Size([12]), 36, 4)
    """

    num_classes = 4
    class_names = ("red patch + keyword 7", "red patch + keyword 8", "green patch + keyword 7",
                   "green patch + keyword 8")

    def __init__(self, num_samples: int, image_size: int = 24, length: int = 12, seed: int = 0) -> None:
        check_positive_int("num_samples", num_samples)
        if check_positive_int("image_size", image_size) < 8:
            raise ValueError(f"Expected argument `image_size` to be at least 8, but got {image_size}.")
        if check_positive_int("length", length) < 2:
            raise ValueError(f"Expected argument `length` to be at least 2, but got {length}.")
        g = torch.Generator().manual_seed(seed)
        n = num_samples
        self.colour = torch.randint(0, 2, (n,), generator=g)
        self.keyword = torch.randint(0, 2, (n,), generator=g)
        self.labels = 2 * self.colour + self.keyword
        self.images = 0.3 * torch.randn(n, 3, image_size, image_size, generator=g)
        self.masks = torch.zeros(n, image_size, image_size)
        corners = torch.randint(0, image_size - 5, (n, 2), generator=g)
        for i, (r, c) in enumerate(corners.tolist()):
            self.images[i, int(self.colour[i]), r : r + 6, c : c + 6] += 1.5
            self.masks[i, r : r + 6, c : c + 6] = 1.0
        self.ids = torch.randint(10, 60, (n, length), generator=g)
        self.keyword_position = torch.randint(0, length, (n,), generator=g)
        self.ids[torch.arange(n), self.keyword_position] = 7 + self.keyword

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {"pixel_values": self.images[index], "input_ids": self.ids[index], "labels": self.labels[index],
                "mask": self.masks[index]}
