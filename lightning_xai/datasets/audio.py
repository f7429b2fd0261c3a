"""Synthetic audio: log-magnitude spectrograms of a noisy tone burst whose frequency band is the class."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.utils.data import Dataset

from lightning_xai._checks import check_non_negative_int, check_positive_int, expected
from lightning_xai.datasets._draw import _generator
from lightning_xai.datasets.shapes import _check_index

__all__ = ["SyntheticToneSpectrograms"]

_BAND_NAMES = {2: ("low", "high"), 3: ("low", "mid", "high"), 4: ("low", "low-mid", "high-mid", "high")}
# The class bands share the lower 3/4 of the usable bins; the top 1/4 is the distractor tones' band.
_CLASS_SPAN = 0.75
_EDGE_BINS = 3  # bins kept free at DC and at Nyquist
_MARGIN_BINS = 1.5  # how far a tone stays from its band's edges
_MASK_HALF_BINS = 2  # the Hann window's main lobe: the tone's energy lies within +-2 bins
_BURST_FRAMES = (0.15, 0.3)  # burst duration, as a fraction of the clip
_TOP_DB = 80.0


class SyntheticToneSpectrograms(Dataset):
    """Spectrograms of white noise plus one tone burst whose frequency band is the class, with the burst's box.

    Each item is a waveform of ``hop_length * (n_frames - 1)`` samples at ``sample_rate``: white noise, one
    tone burst (random frequency inside the band of its class, random amplitude, start and duration, short
    raised-cosine fades) and, with ``distractors``, one thing that never decides the class: a broadband click
    or a tone in the distractor band above every class band (``distractor_band``), at a random time. It is
    turned into a log-magnitude spectrogram with :func:`torch.stft` (Hann window, ``n_fft = 2 * (n_freq - 1)``):
    decibels relative to a full-scale sine, floored at -80 dB and mapped to [0, 1]. Class ``k``'s tones lie in
    the bins ``bands[k]`` (``band_hz[k]`` in Hz); labels cycle with the index, so every prefix is balanced.
    Everything random is fixed by ``(seed, index)`` through a private generator; the global RNG is untouched.

    Args:
        num_samples: Number of samples.
        n_freq: Frequency bins ``F`` (at least 32).
        n_frames: Time frames ``T`` (at least 16).
        num_classes: Number of classes (frequency bands), 2 to 4.
        noise: Standard deviation of the white noise, relative to a full-scale tone (amplitude 1).
        distractors: Add a broadband click or a distractor-band tone that does not decide the class.
        sample_rate: Sample rate in Hz (sets ``band_hz`` only; the spectrograms do not depend on it).
        hop_length: STFT hop in samples.
        seed: Seed of the samples.

    Returns (per item):
        ``{"spectrogram": (1, F, T) float32 in [0, 1], "labels": int64 scalar, "mask": (F, T) float32}``, the
        mask 1 on the deciding burst's time-frequency box (its bins +-2, its frames).

    Example:
        >>> ds = SyntheticToneSpectrograms(num_samples=3, n_freq=32, n_frames=16)
        >>> item = ds[2]
        >>> item["spectrogram"].shape, item["labels"].item(), ds.class_names[2], item["mask"].shape
        (torch.Size([1, 32, 16]), 2, 'high', torch.Size([32, 16]))
        >>> bool((item["spectrogram"][0] * item["mask"]).sum() > 0), ds.bands[2][0] >= ds.bands[1][1]
        (True, True)
    """

    def __init__(
        self,
        num_samples: int = 1000,
        n_freq: int = 64,
        n_frames: int = 64,
        num_classes: int = 3,
        noise: float = 0.1,
        distractors: bool = True,
        sample_rate: int = 8000,
        hop_length: int = 32,
        seed: int = 0,
    ) -> None:
        check_positive_int("num_samples", num_samples)
        for name, value, least in (("n_freq", n_freq, 32), ("n_frames", n_frames, 16)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(expected(name, f"an integer of at least {least}", value))
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or not 2 <= num_classes <= 4:
            raise ValueError(expected("num_classes", "an integer in [2, 4]", num_classes))
        if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0.0 <= float(noise) <= 1.0:
            raise ValueError(expected("noise", "a number in [0, 1]", noise))
        if not isinstance(distractors, bool):
            raise TypeError(expected("distractors", "a bool", distractors))
        check_positive_int("sample_rate", sample_rate)
        check_positive_int("hop_length", hop_length)
        check_non_negative_int("seed", seed)
        self.num_samples, self.n_freq, self.n_frames = num_samples, n_freq, n_frames
        self.num_classes, self.noise, self.distractors = num_classes, float(noise), distractors
        self.sample_rate, self.hop_length, self.seed = sample_rate, hop_length, seed
        self.n_fft = 2 * (n_freq - 1)
        self.class_names: list[str] = list(_BAND_NAMES[num_classes])
        usable = (_EDGE_BINS, n_freq - 1 - _EDGE_BINS)
        split = usable[0] + _CLASS_SPAN * (usable[1] - usable[0])
        edges = torch.linspace(usable[0], split, num_classes + 1).tolist()
        #: ``(low, high)`` frequency bins of each class's tones.
        self.bands: list[tuple[float, float]] = [(edges[k], edges[k + 1]) for k in range(num_classes)]
        #: ``(low, high)`` bins of the distractor tones (above every class band).
        self.distractor_band: tuple[float, float] = (split, float(usable[1]))
        hz = sample_rate / self.n_fft
        #: ``(low, high)`` of each class band in Hz.
        self.band_hz: list[tuple[float, float]] = [(lo * hz, hi * hz) for lo, hi in self.bands]
        self._window = torch.hann_window(self.n_fft, dtype=torch.float64)

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        index = _check_index(index, self.num_samples)
        label = index % self.num_classes
        g = _generator(self.seed, index)
        u = torch.rand(16, generator=g, dtype=torch.float64).tolist()
        length = self.hop_length * (self.n_frames - 1)
        wave = self.noise * torch.randn(length, generator=g, dtype=torch.float64)
        lo, hi = self.bands[label]
        bin_ = lo + _MARGIN_BINS + u[0] * (hi - lo - 2 * _MARGIN_BINS)
        duration = int(length * (_BURST_FRAMES[0] + u[1] * (_BURST_FRAMES[1] - _BURST_FRAMES[0])))
        start = int(u[2] * (length - duration))
        wave += self._tone(bin_, 0.5 + 0.5 * u[3], start, duration, u[4])
        if self.distractors:
            d_start = int(u[6] * (length - duration))
            if u[5] < 0.5:  # a click: a few samples of a decaying impulse, heard at every frequency
                n = min(8, length - d_start)
                wave[d_start : d_start + n] += (1.5 + u[7]) * torch.tensor(
                    [0.9**i for i in range(n)], dtype=torch.float64
                )
            else:
                d_lo, d_hi = self.distractor_band
                d_bin = d_lo + _MARGIN_BINS + u[8] * (d_hi - d_lo - 2 * _MARGIN_BINS)
                wave += self._tone(d_bin, 0.5 + 0.5 * u[9], d_start, duration, u[10])
        spec = torch.stft(
            wave, self.n_fft, self.hop_length, window=self._window, center=True, return_complex=True
        ).abs()
        full_scale = float(self._window.sum()) / 2.0
        db = 20.0 * torch.log10(spec / full_scale + 1e-12)
        spectrogram = ((db + _TOP_DB) / _TOP_DB).clamp(0.0, 1.0).float()
        mask = torch.zeros(self.n_freq, self.n_frames)
        centre = round(bin_)
        first = math.ceil(start / self.hop_length)
        last = (start + duration - 1) // self.hop_length
        mask[max(centre - _MASK_HALF_BINS, 0) : centre + _MASK_HALF_BINS + 1, first : last + 1] = 1.0
        return {
            "spectrogram": spectrogram.unsqueeze(0),
            "labels": torch.tensor(label, dtype=torch.int64),
            "mask": mask,
        }

    def _tone(self, bin_: float, amplitude: float, start: int, duration: int, phase: float) -> Tensor:
        """A sine at frequency bin ``bin_`` from ``start`` for ``duration`` samples, faded in and out."""
        length = self.hop_length * (self.n_frames - 1)
        t = torch.arange(duration, dtype=torch.float64)
        burst = amplitude * torch.sin(2 * math.pi * (bin_ / self.n_fft * t + phase))
        fade = min(self.n_fft // 4, duration // 2)
        if fade > 0:
            ramp = 0.5 - 0.5 * torch.cos(math.pi * torch.arange(fade, dtype=torch.float64) / fade)
            burst[:fade] *= ramp
            burst[duration - fade :] *= ramp.flip(0)
        out = torch.zeros(length, dtype=torch.float64)
        out[start : start + duration] = burst
        return out
