"""Small synthetic datasets with known ground truth, to sanity-check explainers.

Every sample holds one *decisive* object whose shape is the class (square, circle, triangle, cross),
drawn at a random size, position and colour on a noisy background, and, by default, one *distractor*: a
thin bar at a random angle, of the same colour distribution, that never decides the class. A model that
classifies well has to look at the decisive object, and the returned mask says where that object is, so
localisation metrics (:func:`~lightning_xai.functional.pointing_game`,
:func:`~lightning_xai.functional.energy_in_mask`) have an answer to compare against.

Samples are generated lazily and deterministically from ``(seed, index)`` with a private
:class:`torch.Generator`; the global random state is never read or written.
"""

from __future__ import annotations

import colorsys
import math
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lightning_xai._checks import check_non_negative_int, check_positive_int, expected

__all__ = ["SyntheticShapes", "SyntheticShapesVideo", "SyntheticShapesDataModule"]

_CLASS_NAMES = ("square", "circle", "triangle", "cross")
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_MIN_IMAGE_SIZE = 16
# Half-extent of the decisive object, as a fraction of the image side.
_OBJECT_SIZE = (0.2, 0.3)
# Length of the distractor bar, as a fraction of the image side, and its width in pixels per 32 pixels.
_BAR_LENGTH = (0.35, 0.55)
_BAR_WIDTH = 1.6 / 32
_PLACEMENT_TRIES = 24


def _check_common(
    num_samples: Any, image_size: Any, num_classes: Any, noise: Any, seed: Any, flags: dict[str, Any]
) -> None:
    check_positive_int("num_samples", num_samples)
    check_positive_int("image_size", image_size)
    if image_size < _MIN_IMAGE_SIZE:
        raise ValueError(expected("image_size", f"an integer of at least {_MIN_IMAGE_SIZE}", image_size))
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or not 2 <= num_classes <= 4:
        raise ValueError(expected("num_classes", "an integer in [2, 4]", num_classes))
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0.0 <= float(noise) <= 1.0:
        raise ValueError(expected("noise", "a number in [0, 1]", noise))
    check_non_negative_int("seed", seed)
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise TypeError(expected(name, "a bool", value))


def _generator(seed: int, index: int) -> torch.Generator:
    """A private generator whose stream depends only on ``(seed, index)``."""
    state = np.random.SeedSequence([seed, index]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


class _Uniforms:
    """Hand out uniform numbers drawn in one call from a private generator."""

    def __init__(self, generator: torch.Generator, n: int = 128) -> None:
        self._values = torch.rand(n, generator=generator, dtype=torch.float64).tolist()
        self._i = 0

    def __call__(self, low: float = 0.0, high: float = 1.0) -> float:
        u = self._values[self._i % len(self._values)]
        self._i += 1
        return low + (high - low) * u


def _colour(u: _Uniforms, value: tuple[float, float], saturation: tuple[float, float]) -> Tensor:
    rgb = colorsys.hsv_to_rgb(u(), u(*saturation), u(*value))
    return torch.tensor(rgb, dtype=torch.float32).view(3, 1, 1)


def _shape_mask(kind: int, yy: Tensor, xx: Tensor, cy: float, cx: float, r: float) -> Tensor:
    """Boolean (H, W) mask of a filled shape centred on ``(cy, cx)`` with half-extent ``r``."""
    dy, dx = yy - cy, xx - cx
    if kind == 0:  # square
        return (dy.abs() <= r * 0.9) & (dx.abs() <= r * 0.9)
    if kind == 1:  # circle
        return dy.square() + dx.square() <= r * r
    if kind == 2:  # triangle, apex up
        return (dy >= -r) & (dy <= r) & (dx.abs() <= (dy + r) * 0.5)
    arm = max(r / 3.0, 1.0)  # cross (plus sign)
    return ((dx.abs() <= arm) & (dy.abs() <= r)) | ((dy.abs() <= arm) & (dx.abs() <= r))


def _segment_distance(py: Tensor | float, px: Tensor | float, seg: tuple[float, float, float, float]) -> Any:
    """Euclidean distance from points ``(py, px)`` to the segment ``(y0, x0, y1, x1)``."""
    y0, x0, y1, x1 = seg
    vy, vx = y1 - y0, x1 - x0
    length2 = max(vy * vy + vx * vx, 1e-12)
    t = ((py - y0) * vy + (px - x0) * vx) / length2
    if isinstance(t, Tensor):
        t = t.clamp(0.0, 1.0)
    else:
        t = min(max(t, 0.0), 1.0)
    return ((py - (y0 + t * vy)) ** 2 + (px - (x0 + t * vx)) ** 2) ** 0.5


class _ShapeRenderer:
    """Shared drawing code of the image and the video dataset."""

    def __init__(
        self, image_size: int, num_classes: int, noise: float, normalize: bool, distractors: bool
    ) -> None:
        self.size = image_size
        self.num_classes = num_classes
        self.noise = float(noise)
        self.normalize = normalize
        self.distractors = distractors
        coords = torch.arange(image_size, dtype=torch.float32)
        self.yy, self.xx = torch.meshgrid(coords, coords, indexing="ij")
        self.mean = torch.tensor(_IMAGENET_MEAN).view(3, 1, 1)
        self.std = torch.tensor(_IMAGENET_STD).view(3, 1, 1)

    def centre(self, u: _Uniforms, r: float) -> tuple[float, float]:
        margin = r + 1.0
        return u(margin, self.size - 1 - margin), u(margin, self.size - 1 - margin)

    def bar(self, u: _Uniforms, centres: list[tuple[float, float]], r: float) -> tuple[float, ...]:
        """Place a bar that keeps clear of the object at every centre (best of a few tries, shorter and shorter)."""
        best: tuple[float, ...] = ()
        best_clearance = -math.inf
        for attempt in range(_PLACEMENT_TRIES):
            half = 0.5 * self.size * u(*_BAR_LENGTH) * (1.0 - 0.6 * attempt / _PLACEMENT_TRIES)
            angle = u(0.0, math.pi)
            dy, dx = half * math.sin(angle), half * math.cos(angle)
            lo_y, lo_x = abs(dy) + 1.0, abs(dx) + 1.0
            my, mx = u(lo_y, self.size - 1 - lo_y), u(lo_x, self.size - 1 - lo_x)
            seg = (my - dy, mx - dx, my + dy, mx + dx)
            clearance = min(_segment_distance(cy, cx, seg) for cy, cx in centres) - r * math.sqrt(2)
            if clearance > best_clearance:
                best, best_clearance = seg, clearance
            if clearance >= 2.0:
                break
        return best

    def frames(
        self, label: int, generator: torch.Generator, num_frames: int
    ) -> tuple[Tensor, Tensor]:
        """Draw ``num_frames`` frames; the object moves linearly from one random position to another."""
        u = _Uniforms(generator)
        r = self.size * u(*_OBJECT_SIZE)
        start = self.centre(u, r)
        end = self.centre(u, r) if num_frames > 1 else start
        steps = [i / max(num_frames - 1, 1) for i in range(num_frames)]
        centres = [(start[0] + s * (end[0] - start[0]), start[1] + s * (end[1] - start[1])) for s in steps]
        background = _colour(u, value=(0.0, 0.3), saturation=(0.0, 0.6))
        obj_colour = _colour(u, value=(0.75, 1.0), saturation=(0.2, 0.9))
        bar_mask = None
        if self.distractors:
            seg = self.bar(u, centres, r)
            bar_colour = _colour(u, value=(0.75, 1.0), saturation=(0.2, 0.9))
            bar_mask = _segment_distance(self.yy, self.xx, seg) <= 0.5 * _BAR_WIDTH * self.size + 0.5
        noise = torch.randn(num_frames, 3, self.size, self.size, generator=generator)
        images, masks = [], []
        for t, (cy, cx) in enumerate(centres):
            mask = _shape_mask(label, self.yy, self.xx, cy, cx, r)
            image = background.expand(3, self.size, self.size)
            if bar_mask is not None:
                image = torch.where(bar_mask, bar_colour, image)
            image = torch.where(mask, obj_colour, image)
            image = (image + self.noise * noise[t]).clamp(0.0, 1.0)
            if self.normalize:
                image = (image - self.mean) / self.std
            images.append(image)
            masks.append(mask.float())
        return torch.stack(images), torch.stack(masks)


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
