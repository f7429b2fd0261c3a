"""Synthetic image and video datasets whose class is decided by one object with a known mask."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from lightning_xai._checks import check_positive_int, expected
from lightning_xai.datasets._draw import (
    _CLASS_NAMES,
    _IMAGENET_MEAN,
    _IMAGENET_STD,
    _check_common,
    _generator,
    _ShapeRenderer,
)

__all__ = ["SyntheticShapes", "SyntheticShapesVideo"]


class SyntheticShapes(Dataset):
    """Images of one decisive shape (the class) plus an optional distractor bar, with the object's mask.

    Class ``k`` is the shape ``class_names[k]`` (square, circle, triangle, cross); labels cycle with the index
    (``index % num_classes``), so every prefix of the dataset is balanced. Size, position and colour of the
    object, the background colour, the distractor and the pixel noise are random but fixed by
    ``(seed, index)``: the same arguments always give the same samples, and the global RNG is untouched.

    Args:
        num_samples: Number of samples.
        image_size: Side of the square images in pixels (at least 16).
        num_classes: Number of classes, 2 to 4 (square, circle, triangle, cross in that order).
        noise: Standard deviation of the Gaussian pixel noise, on the [0, 1] pixel scale.
        seed: Seed of the samples.
        normalize: Normalise with the ImageNet mean and standard deviation (``SyntheticShapes.mean``/``std``);
            otherwise pixels lie in [0, 1].
        distractors: Add a thin bar at a random angle that does not decide the class.
        return_dict: Return ``{"pixel_values", "labels", "mask"}`` instead of a tuple.

    Returns (per item):
        ``(image, label, mask)``: ``image`` float32 ``(3, H, W)``, ``label`` int64 scalar, ``mask`` float32
        ``(H, W)`` with 1 on the decisive object.

    Example:
        >>> ds = SyntheticShapes(num_samples=4, image_size=16)
        >>> image, label, mask = ds[1]
        >>> image.shape, label.item(), ds.class_names[label], mask.shape
        (torch.Size([3, 16, 16]), 1, 'circle', torch.Size([16, 16]))
        >>> bool(mask.sum() > 0)
        True
    """

    mean: tuple[float, float, float] = _IMAGENET_MEAN
    std: tuple[float, float, float] = _IMAGENET_STD

    def __init__(
        self,
        num_samples: int = 1000,
        image_size: int = 32,
        num_classes: int = 3,
        noise: float = 0.3,
        seed: int = 0,
        normalize: bool = True,
        distractors: bool = True,
        return_dict: bool = False,
    ) -> None:
        _check_common(
            num_samples,
            image_size,
            num_classes,
            noise,
            seed,
            {"normalize": normalize, "distractors": distractors, "return_dict": return_dict},
        )
        self.num_samples = num_samples
        self.image_size = image_size
        self.num_classes = num_classes
        self.noise = float(noise)
        self.seed = seed
        self.normalize = normalize
        self.distractors = distractors
        self.return_dict = return_dict
        self.class_names: list[str] = list(_CLASS_NAMES[:num_classes])
        self._renderer = _ShapeRenderer(image_size, num_classes, noise, normalize, distractors)

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, Tensor] | dict[str, Tensor]:
        index = _check_index(index, self.num_samples)
        label = index % self.num_classes
        images, masks = self._renderer.frames(label, _generator(self.seed, index), num_frames=1)
        return _pack(images[0], torch.tensor(label, dtype=torch.int64), masks[0], self.return_dict)


class SyntheticShapesVideo(Dataset):
    """Clips in which the decisive shape moves in a straight line, past a static distractor bar.

    Same scenes as :class:`SyntheticShapes` (same arguments, same ``class_names``, ``mean`` and ``std``), with
    fresh pixel noise in every frame.

    Args:
        num_samples: Number of clips.
        num_frames: Frames per clip (``T``).
        image_size: Side of the square frames in pixels (at least 16).
        num_classes: Number of classes, 2 to 4.
        noise: Standard deviation of the Gaussian pixel noise, on the [0, 1] pixel scale.
        seed: Seed of the samples.
        normalize: Normalise with the ImageNet mean and standard deviation.
        distractors: Add a static bar that does not decide the class.
        channels_first_time: Return clips as ``(3, T, H, W)`` (the layout of 3D CNNs such as
            ``torchvision.models.video``) instead of ``(T, 3, H, W)``.
        return_dict: Return ``{"pixel_values", "labels", "mask"}`` instead of a tuple.

    Returns (per item):
        ``(clip, label, mask)``: ``clip`` float32 ``(T, 3, H, W)`` (or ``(3, T, H, W)``), ``label`` int64
        scalar, ``mask`` float32 ``(T, H, W)``.

    Example:
        >>> ds = SyntheticShapesVideo(num_samples=2, num_frames=3, image_size=16)
        >>> clip, label, mask = ds[0]
        >>> clip.shape, label.item(), mask.shape
        (torch.Size([3, 3, 16, 16]), 0, torch.Size([3, 16, 16]))
    """

    mean: tuple[float, float, float] = _IMAGENET_MEAN
    std: tuple[float, float, float] = _IMAGENET_STD

    def __init__(
        self,
        num_samples: int = 1000,
        num_frames: int = 4,
        image_size: int = 32,
        num_classes: int = 3,
        noise: float = 0.3,
        seed: int = 0,
        normalize: bool = True,
        distractors: bool = True,
        channels_first_time: bool = False,
        return_dict: bool = False,
    ) -> None:
        _check_common(
            num_samples,
            image_size,
            num_classes,
            noise,
            seed,
            {
                "normalize": normalize,
                "distractors": distractors,
                "channels_first_time": channels_first_time,
                "return_dict": return_dict,
            },
        )
        check_positive_int("num_frames", num_frames)
        self.num_samples = num_samples
        self.num_frames = num_frames
        self.image_size = image_size
        self.num_classes = num_classes
        self.noise = float(noise)
        self.seed = seed
        self.normalize = normalize
        self.distractors = distractors
        self.channels_first_time = channels_first_time
        self.return_dict = return_dict
        self.class_names: list[str] = list(_CLASS_NAMES[:num_classes])
        self._renderer = _ShapeRenderer(image_size, num_classes, noise, normalize, distractors)

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, Tensor] | dict[str, Tensor]:
        index = _check_index(index, self.num_samples)
        label = index % self.num_classes
        clip, masks = self._renderer.frames(label, _generator(self.seed, index), num_frames=self.num_frames)
        if self.channels_first_time:
            clip = clip.transpose(0, 1).contiguous()
        return _pack(clip, torch.tensor(label, dtype=torch.int64), masks, self.return_dict)


def _check_index(index: Any, length: int) -> int:
    if isinstance(index, Tensor) and index.numel() == 1:
        index = int(index.item())
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
        raise TypeError(expected("index", "an integer", index))
    index = int(index)
    if index < 0:
        index += length
    if not 0 <= index < length:
        raise IndexError(expected("index", f"an integer in [{-length}, {length - 1}]", index))
    return index


def _pack(
    x: Tensor, label: Tensor, mask: Tensor, as_dict: bool
) -> tuple[Tensor, Tensor, Tensor] | dict[str, Tensor]:
    if as_dict:
        return {"pixel_values": x, "labels": label, "mask": mask}
    return x, label, mask
