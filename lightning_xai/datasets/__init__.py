"""Small synthetic datasets with known ground truth, to sanity-check explainers.

Every sample holds one *decisive* object whose shape is the class (square, circle, triangle, cross),
drawn at a random size, position and colour on a noisy background, and, by default, one *distractor*: a
thin bar at a random angle, of the same colour distribution, that never decides the class. A model that
classifies well has to look at the decisive object, and the returned mask says where that object is, so
localisation metrics (:func:`~lightning_xai.functional.pointing_game`,
:func:`~lightning_xai.functional.energy_in_mask`) have an answer to compare against.

:class:`PatchKeywordPairs` pairs a patch image with a keyword sentence (the class needs both), and
:class:`SentimentSentences` does the same for text: templated sentences whose label is decided by one sentiment
word, with that word's token mask. :class:`SyntheticToneSpectrograms` is the audio case: spectrograms of a noisy
tone burst whose frequency band is the class, with the burst's time-frequency box.

Samples are generated lazily and deterministically from ``(seed, index)`` with a private
:class:`torch.Generator`; the global random state is never read or written.
"""

from lightning_xai.datasets.audio import SyntheticToneSpectrograms
from lightning_xai.datasets.datamodule import SyntheticShapesDataModule
from lightning_xai.datasets.multimodal import PatchKeywordPairs
from lightning_xai.datasets.sentiment import SentimentSentences
from lightning_xai.datasets.shapes import SyntheticShapes, SyntheticShapesVideo

__all__ = [
    "PatchKeywordPairs",
    "SentimentSentences",
    "SyntheticShapes",
    "SyntheticShapesVideo",
    "SyntheticShapesDataModule",
    "SyntheticToneSpectrograms",
]
