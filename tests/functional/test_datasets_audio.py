"""SyntheticToneSpectrograms: shapes, determinism, the mask marks the deciding burst, argument errors."""

from __future__ import annotations

import pytest
import torch

from lightning_xai.datasets import SyntheticToneSpectrograms


def test_item_shapes_dtypes_and_balanced_labels():
    ds = SyntheticToneSpectrograms(num_samples=6, n_freq=48, n_frames=40, num_classes=3)
    assert len(ds) == 6 and ds.class_names == ["low", "mid", "high"]
    for i in range(6):
        item = ds[i]
        assert set(item) == {"spectrogram", "labels", "mask"}
        assert item["spectrogram"].shape == (1, 48, 40) and item["spectrogram"].dtype == torch.float32
        assert item["mask"].shape == (48, 40) and item["mask"].dtype == torch.float32
        assert item["labels"].dtype == torch.int64 and item["labels"].item() == i % 3
        assert 0.0 <= float(item["spectrogram"].min()) and float(item["spectrogram"].max()) <= 1.0
        assert set(item["mask"].unique().tolist()) == {0.0, 1.0}
    assert ds[-1]["labels"].item() == ds[5]["labels"].item()


def test_deterministic_per_index_and_global_rng_untouched():
    state = torch.random.get_rng_state()
    a, b = SyntheticToneSpectrograms(8, seed=3), SyntheticToneSpectrograms(8, seed=3)
    for i in (5, 0, 5):  # any order, any instance
        assert torch.equal(a[i]["spectrogram"], b[i]["spectrogram"]) and torch.equal(
            a[i]["mask"], b[i]["mask"]
        )
    assert not torch.equal(a[0]["spectrogram"], SyntheticToneSpectrograms(8, seed=4)[0]["spectrogram"])
    assert not torch.equal(a[0]["spectrogram"], a[3]["spectrogram"])  # same class, another sample
    assert torch.equal(torch.random.get_rng_state(), state)


@pytest.mark.parametrize("distractors", [True, False])
def test_mask_marks_the_deciding_burst_in_its_band(distractors):
    ds = SyntheticToneSpectrograms(24, num_classes=4, distractors=distractors, seed=1)
    for i in range(len(ds)):
        item = ds[i]
        spec, mask, label = item["spectrogram"][0], item["mask"].bool(), int(item["labels"])
        rows, frames = mask.any(1), mask.any(0)
        assert rows.sum() == 5 and frames.sum() >= 4
        # the box is a rectangle, its bins inside the band of the class
        assert torch.equal(mask, rows[:, None] & frames[None, :])
        lo, hi = ds.bands[label]
        band = rows.nonzero().flatten()
        assert lo - 2 <= float(band.float().mean()) <= hi + 2
        # at the burst's frames, the box's bins are louder than every other bin on average
        assert float(spec[mask].mean()) > float(spec[~rows][:, frames].mean()) + 0.15
        # and louder than the same bins outside the burst
        assert float(spec[mask].mean()) > float(spec[rows][:, ~frames].mean()) + 0.15


def test_bands_are_ordered_and_below_the_distractor_band():
    ds = SyntheticToneSpectrograms(4, num_classes=4)
    assert ds.class_names == ["low", "low-mid", "high-mid", "high"]
    assert all(a[1] <= b[0] for a, b in zip(ds.bands, ds.bands[1:]))
    assert ds.bands[-1][1] <= ds.distractor_band[0] < ds.distractor_band[1] < ds.n_freq
    assert ds.band_hz[0][0] > 0 and ds.band_hz[-1][1] < ds.sample_rate / 2


@pytest.mark.parametrize(
    ("kwargs", "name", "error"),
    [
        ({"num_samples": 0}, "num_samples", ValueError),
        ({"n_freq": 8}, "n_freq", ValueError),
        ({"n_frames": 4.0}, "n_frames", ValueError),
        ({"num_classes": 5}, "num_classes", ValueError),
        ({"noise": 2.0}, "noise", ValueError),
        ({"distractors": 1}, "distractors", TypeError),
        ({"sample_rate": -1}, "sample_rate", ValueError),
        ({"hop_length": 0}, "hop_length", ValueError),
        ({"seed": -1}, "seed", ValueError),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, name, error):
    with pytest.raises(error, match=f"Expected argument `{name}` to be .*, but got"):
        SyntheticToneSpectrograms(**kwargs)


def test_bad_index():
    ds = SyntheticToneSpectrograms(3)
    with pytest.raises(IndexError, match="Expected argument `index`"):
        ds[3]
    with pytest.raises(TypeError, match="Expected argument `index`"):
        ds["0"]
