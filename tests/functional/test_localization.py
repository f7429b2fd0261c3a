"""pointing_game and energy_in_mask: hand-made cases with known answers, a scipy reference, and errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lightning_xai.functional import energy_in_mask as exported_energy
from lightning_xai.functional import pointing_game as exported_pointing
from lightning_xai.functional.localization import energy_in_mask, pointing_game


def _square_mask(batch: int = 1, size: int = 8) -> torch.Tensor:
    """Masks with the 2x2 block at rows/cols 2..3 set."""
    masks = torch.zeros(batch, size, size)
    masks[:, 2:4, 2:4] = 1.0
    return masks


def _peaks(*points: tuple[int, int], size: int = 8) -> torch.Tensor:
    cams = torch.rand(len(points), size, size, generator=torch.Generator().manual_seed(0)) * 0.1
    for i, (y, x) in enumerate(points):
        cams[i, y, x] = 1.0
    return cams


def test_exported_from_functional() -> None:
    assert exported_pointing is pointing_game and exported_energy is energy_in_mask


# ------------------------------------------------------------------------------------------- pointing game


def test_peak_inside_is_a_hit_and_outside_a_miss() -> None:
    cams = _peaks((2, 3), (3, 2), (0, 0), (7, 7))
    hits = pointing_game(cams, _square_mask(4))
    assert hits.dtype == torch.bool and hits.shape == (4,)
    assert hits.tolist() == [True, True, False, False]


@pytest.mark.parametrize(
    ("peak", "tolerance", "hit"),
    [
        ((4, 4), 0, False),
        ((4, 3), 1, True),  # (3, 3) is 1 away
        ((4, 4), 1, False),  # nearest mask pixel (3, 3) is sqrt(2) away: a square kernel would call it a hit
        ((4, 4), 2, True),
        ((5, 5), 2, False),  # nearest mask pixel (3, 3) is sqrt(8) ~ 2.83 away
        ((5, 5), 3, True),
        ((2, 6), 2, False),  # 3 columns right of (2, 3)
        ((2, 6), 3, True),
    ],
)
def test_tolerance_is_a_euclidean_dilation(peak: tuple[int, int], tolerance: int, hit: bool) -> None:
    assert pointing_game(_peaks(peak), _square_mask(), tolerance=tolerance).item() is hit


def test_matches_scipy_binary_dilation_with_a_disc() -> None:
    ndimage = pytest.importorskip("scipy.ndimage")
    gen = torch.Generator().manual_seed(1)
    cams = torch.rand(64, 12, 12, generator=gen)
    masks = torch.rand(64, 12, 12, generator=gen) > 0.9
    for tolerance in (0, 1, 2, 3):
        yy, xx = np.mgrid[-tolerance : tolerance + 1, -tolerance : tolerance + 1]
        disc = yy**2 + xx**2 <= tolerance**2
        expected = []
        for cam, mask in zip(cams.numpy(), masks.numpy()):
            dilated = ndimage.binary_dilation(mask, structure=disc) if tolerance else mask
            expected.append(bool(dilated.flat[cam.argmax()]))
        assert pointing_game(cams, masks, tolerance=tolerance).tolist() == expected


def test_masks_are_resized_with_nearest() -> None:
    cams = _peaks((5, 5), (1, 1), size=8)
    masks = torch.zeros(2, 4, 4)
    masks[:, 2:4, 2:4] = 1.0  # covers rows/cols 4..7 at the maps' size
    assert pointing_game(cams, masks).tolist() == [True, False]


def test_video_uses_the_peak_over_the_whole_clip_and_its_own_frame() -> None:
    cams = torch.zeros(2, 3, 8, 8)
    cams[0, 1, 2, 2] = 1.0  # frame 1, on the object of frame 1
    cams[1, 2, 2, 2] = 1.0  # frame 2, where only frame 0 has the object
    masks = torch.zeros(2, 3, 8, 8)
    masks[0, 1, 2:4, 2:4] = 1.0
    masks[1, 0, 2:4, 2:4] = 1.0
    assert pointing_game(cams, masks).tolist() == [True, False]


def test_constant_and_non_finite_maps_are_misses() -> None:
    masks = torch.ones(3, 4, 4)  # every location would be a hit
    cams = torch.stack([torch.zeros(4, 4), torch.full((4, 4), math.nan), torch.zeros(4, 4)])
    cams[2, 1, 1] = math.nan  # NaN is ignored, the rest is flat
    assert pointing_game(cams, masks).tolist() == [False, False, False]
    with_nan = _peaks((2, 2))
    with_nan[0, 7, 7] = math.nan
    assert pointing_game(with_nan, _square_mask()).item() is True


def test_mask_dtypes() -> None:
    cams = _peaks((2, 2))
    mask = _square_mask()
    assert pointing_game(cams, mask.bool()).item() is True
    assert pointing_game(cams, mask.long()).item() is True
    assert pointing_game(cams, mask * 0.4).item() is False  # soft masks: inside means > 0.5


# ------------------------------------------------------------------------------------------ energy in mask


def test_energy_known_values() -> None:
    mask = _square_mask(4, size=4)[:, :4, :4] * 0  # 4x4 masks, left half inside
    mask[:, :, :2] = 1.0
    cams = torch.zeros(4, 4, 4)
    cams[0, :, :2] = 2.0  # all mass inside -> 1
    cams[1, :, 2:] = 3.0  # all mass outside -> 0
    cams[2] = 1.0  # uniform, half the area inside -> 0.5
    cams[3, 0, 0], cams[3, 0, 3] = 1.0, 3.0  # 1 of 4 inside -> 0.25
    torch.testing.assert_close(energy_in_mask(cams, mask), torch.tensor([1.0, 0.0, 0.5, 0.25]))


def test_energy_zero_and_non_finite_maps_give_zero_not_nan() -> None:
    masks = _square_mask(3)
    cams = torch.stack([torch.zeros(8, 8), torch.full((8, 8), math.nan), -torch.ones(8, 8)])
    energy = energy_in_mask(cams, masks)
    assert torch.isfinite(energy).all() and energy.tolist() == [0.0, 0.0, 0.0]


def test_energy_ignores_negative_and_non_finite_values() -> None:
    cams = torch.zeros(1, 8, 8)
    cams[0, 2, 2] = 1.0  # inside
    cams[0, 6, 6] = -5.0  # negative: no energy
    cams[0, 7, 7] = math.inf  # non-finite: no energy
    cams[0, 0, 0] = math.nan
    assert energy_in_mask(cams, _square_mask()).item() == 1.0


def test_energy_matches_a_reference_and_handles_video_and_resizing() -> None:
    gen = torch.Generator().manual_seed(2)
    cams = torch.rand(3, 2, 8, 8, generator=gen)
    masks = (torch.rand(3, 2, 4, 4, generator=gen) > 0.5).float()
    big = masks.repeat_interleave(2, dim=-1).repeat_interleave(2, dim=-2)
    reference = (cams * big).flatten(1).sum(1) / cams.flatten(1).sum(1)
    torch.testing.assert_close(energy_in_mask(cams, masks), reference)
    assert energy_in_mask(cams.double(), masks).dtype == torch.float64
    assert energy_in_mask((cams * 10).long(), masks).dtype == torch.float32


# --------------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("metric", [pointing_game, energy_in_mask])
@pytest.mark.parametrize(
    ("cams", "masks", "error", "match"),
    [
        (torch.zeros(8, 8), torch.zeros(8, 8), ValueError, "Expected argument `cams` to be a tensor of"),
        (torch.zeros(1, 1, 1, 8, 8), torch.zeros(1, 1, 1, 8, 8), ValueError, "`cams`"),
        (torch.zeros(2, 8, 8), torch.zeros(3, 8, 8), ValueError, "argument `masks`.*but got \\(3, 8, 8\\)"),
        (torch.zeros(2, 8, 8), torch.zeros(2, 1, 8, 8), ValueError, "`masks`"),
        (torch.zeros(2, 3, 8, 8), torch.zeros(2, 2, 8, 8), ValueError, "`masks`"),
        (np.zeros((2, 8, 8)), torch.zeros(2, 8, 8), TypeError, "`cams` to be a torch.Tensor, but got 'nd"),
        (torch.zeros(2, 8, 8), [[0]], TypeError, "`masks` to be a torch.Tensor"),
    ],
)
def test_shape_errors_name_the_argument(metric, cams, masks, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        metric(cams, masks)


@pytest.mark.parametrize("tolerance", [-1, 1.5, True])
def test_invalid_tolerance(tolerance: object) -> None:
    with pytest.raises(ValueError, match="`tolerance`"):
        pointing_game(_peaks((2, 2)), _square_mask(), tolerance=tolerance)  # type: ignore[arg-type]
