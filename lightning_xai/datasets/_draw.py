"""Drawing the synthetic scenes: shapes, distractor bars, noise, argument checks."""

from __future__ import annotations

import colorsys
import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lightning_xai._checks import check_non_negative_int, check_positive_int, expected

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
