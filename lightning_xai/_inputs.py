"""The one answer, for every explainer, emitter and callback, to: what kind of input is this, how is a clip laid out,
which input holds the token ids, what is each input called, how do I put inputs on the model, and how do I score them.

No Lightning, no matplotlib: explainers (Lightning-free) and callbacks both import it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lightning_xai._checks import expected
from lightning_xai.adapters import ModelInputs, default_forward_fn, frame_logits_error, logits_from_output

__all__ = [
    "Scorer",
    "ambiguous_video",
    "clip_layout",
    "first_sample",
    "image_key",
    "input_kind",
    "input_names",
    "on_model",
    "spectrogram_time_first",
    "token_key",
    "video_layout",
]

InputKind = Literal["image", "video", "spectrogram", "tokens", "tabular"]
_AUDIO_HINTS = ("spectro", "audio", "mel", "fbank", "input_features", "input_values")


def input_kind(name: str, x: Tensor) -> InputKind:
    """How an explained input is shown: ``tokens``, ``video``, ``spectrogram``, ``image`` or ``tabular``.

    Integer inputs are token ids; 5-D floats clips; 3-D floats (and 4-D one-channel floats whose name says audio)
    spectrograms; 4-D floats images; the rest tabular rows.

    Example:
        >>> input_kind("pixel_values", torch.zeros(2, 3, 8, 8)), input_kind("input_ids", torch.zeros(2, 5).long())
        ('image', 'tokens')
    """
    if not x.is_floating_point():
        return "tokens"
    if x.dim() == 5:
        return "video"
    if x.dim() == 3 or (x.dim() == 4 and x.shape[1] == 1 and any(h in name.lower() for h in _AUDIO_HINTS)):
        return "spectrogram"
    return "image" if x.dim() == 4 else "tabular"


def video_layout(x: Tensor, layout: Literal["auto", "BTCHW", "BCTHW"] = "auto") -> Literal["BTCHW", "BCTHW"] | None:
    """The layout of a 5-D clip: ``"BCTHW"`` when dim 1 has 1 or 3 channels and dim 2 does not, else ``"BTCHW"``
    (``None`` for other inputs). A ``layout`` other than ``"auto"`` is taken as given. Grad-CAM, SHAP's figures and
    drift all read clips through this rule; :func:`ambiguous_video` says when it had to guess.

    Example:
        >>> video_layout(torch.zeros(2, 3, 8, 16, 16)), video_layout(torch.zeros(2, 8, 3, 16, 16))
        ('BCTHW', 'BTCHW')
    """
    if x.dim() != 5:
        return None
    if layout != "auto":
        return layout
    return "BCTHW" if x.shape[1] in (1, 3) and x.shape[2] not in (1, 3) else "BTCHW"


def ambiguous_video(x: Tensor) -> bool:
    """Is a 5-D clip's layout a guess: neither dim 1 nor dim 2 looks like 1 or 3 channels (or both do)?

    Example:
        >>> ambiguous_video(torch.zeros(1, 8, 16, 4, 4)), ambiguous_video(torch.zeros(1, 8, 3, 4, 4))
        (True, False)
    """
    return x.dim() == 5 and (x.shape[1] in (1, 3)) == (x.shape[2] in (1, 3))


def clip_layout(x: Tensor, layout: Literal["auto", "BTCHW", "BCTHW"] = "auto",
                who: str = "lightning_xai") -> Literal["BTCHW", "BCTHW"] | None:
    """:func:`video_layout`, with a loud warning when ``"auto"`` had to guess (:func:`ambiguous_video`), naming
    ``video_layout=``: frames and channels read the wrong way round would draw (and sum) the wrong axis.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as w:
        ...     warnings.simplefilter("always")
        ...     clip_layout(torch.zeros(1, 8, 16, 4, 4)), "video_layout=" in str(w[0].message)
        ('BTCHW', True)
    """
    found = video_layout(x, layout)
    if layout == "auto" and ambiguous_video(x):
        warnings.warn(
            f"lightning_xai: {who} cannot tell frames from channels in a clip of shape {tuple(x.shape)} (dims 1 "
            f"and 2 both, or neither, hold 1 or 3 values); it reads it as {found} (frames first). Set "
            "`video_layout='BTCHW'` or `video_layout='BCTHW'` to say which.", RuntimeWarning, stacklevel=3)
    return found


def spectrogram_time_first(model: Any, x: Tensor) -> bool:
    """Is a 3-D spectrogram ``(B, frames, mel)`` (AST) rather than ``(B, mel, frames)`` (Whisper, the figures' own
    layout)? Read off the model's ``config.num_mel_bins`` (Hugging Face audio models) when it says so.

    Example:
        >>> from types import SimpleNamespace
        >>> m = torch.nn.Linear(2, 2); m.config = SimpleNamespace(num_mel_bins=36)
        >>> spectrogram_time_first(m, torch.zeros(1, 56, 36)), spectrogram_time_first(m, torch.zeros(1, 36, 56))
        (True, False)
    """
    if x.dim() != 3:
        return False
    mels = {getattr(getattr(m, "config", None), "num_mel_bins", None) for m in model.modules()}
    return x.shape[2] in mels and x.shape[1] not in mels


def token_key(inputs: ModelInputs) -> int | str | None:
    """Position or key of the token ids: ``input_ids``, else the first 2-D integer input that is no mask.

    Example:
        >>> token_key(ModelInputs(kwargs={"attention_mask": torch.ones(2, 4).long(), "ids": torch.ones(2, 4).long()}))
        'ids'
    """
    ints = {k: v for k, v in (*enumerate(inputs.args), *inputs.kwargs.items())
            if isinstance(v, Tensor) and v.dim() == 2 and not v.is_floating_point() and v.dtype != torch.bool}
    if "input_ids" in ints:
        return "input_ids"
    return next((k for k in ints if not (isinstance(k, str) and ("mask" in k or "type" in k))), None)


def image_key(inputs: ModelInputs, input_key: int | str | None = None, who: str = "GradCAMCallback") -> int | str:
    """The input a spatial explainer (Grad-CAM) explains: ``input_key`` if given, else the first floating 4-D/5-D
    input (an image or clip), else the first floating 3-D one (a spectrogram); a clear error otherwise.

    Example:
        >>> image_key(ModelInputs((torch.zeros(2, 5).long(), torch.zeros(2, 3, 8, 8))))
        1
    """
    found = {**dict(enumerate(inputs.args)), **inputs.kwargs}
    spectrogram = next((k for k, v in found.items() if v.is_floating_point() and v.dim() == 3), None)
    key = input_key if input_key is not None else (inputs.image_key if inputs.image_key is not None else spectrogram)
    x = found.get(key) if key is not None and not isinstance(key, bool) else None
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() not in (3, 4, 5):
        desc = ", ".join(f"{k}: {tuple(v.shape)} {v.dtype}" for k, v in found.items())
        raise ValueError(
            f"{who} explains images, video clips or spectrograms (a floating tensor of 3, 4 or 5 dims), "
            f"but {'input ' + repr(key) + ' is not one: ' if input_key is not None else ''}the model inputs "
            f"are [{desc}]. Set `input_key=` to that input, or use an attribution callback made for this kind of "
            "input (SHAP for tokens and tabular data)."
        )
    return key  # type: ignore[return-value]


def input_names(inputs: ModelInputs) -> list[str]:
    """Display names of the inputs, in order: ``input`` for a single positional input, ``input_<i>`` for several,
    keyword inputs by their key.

    Example:
        >>> input_names(ModelInputs((torch.zeros(1, 2),))), input_names(ModelInputs((torch.zeros(1), torch.ones(1))))
        (['input'], ['input_0', 'input_1'])
    """
    n_args = len(inputs.args)
    return [("input" if n_args == 1 else f"input_{i}") for i in range(n_args)] + list(inputs.kwargs)


def first_sample(inputs: ModelInputs) -> ModelInputs:
    """Every input of the batch cut to its first sample (an image and its text alike), e.g. for a layer search.

    Example:
        >>> one = first_sample(ModelInputs((torch.zeros(4, 3, 8, 8),), {"input_ids": torch.zeros(4, 5)}))
        >>> one.args[0].shape[0], one.kwargs["input_ids"].shape[0]
        (1, 1)
    """
    size = inputs.batch_size

    def cut(t: Any) -> Any:
        return t[:1] if isinstance(t, Tensor) and t.dim() > 0 and t.shape[0] == size else t

    return ModelInputs(tuple(cut(a) for a in inputs.args), {k: cut(v) for k, v in inputs.kwargs.items()},
                       cut(inputs.labels), cut(inputs.mask))


def on_model(inputs: ModelInputs, model: nn.Module) -> ModelInputs:
    """Fresh copies of ``inputs`` on the model's device, floats in its dtype (out of inference mode when called in
    ``explanation_mode``); labels and masks come along.

    Example:
        >>> on_model(ModelInputs((torch.zeros(1, 2, dtype=torch.float64),)), nn.Linear(2, 2)).args[0].dtype
        torch.float32
    """
    param = next((p for p in model.parameters() if p.is_floating_point()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32

    def fresh(t: Any) -> Any:
        if not isinstance(t, Tensor):
            return t
        t = t.detach().to(device).clone()
        return t.to(dtype) if t.is_floating_point() else t

    return ModelInputs(tuple(fresh(a) for a in inputs.args), {k: fresh(v) for k, v in inputs.kwargs.items()},
                       fresh(inputs.labels), fresh(inputs.mask))


@dataclass(frozen=True)
class Scorer:
    """How to run a model on :class:`~lightning_xai.adapters.ModelInputs` and read its ``(batch, classes)`` scores.

    Args:
        forward_fn: ``forward_fn(model, inputs)`` returning the raw model output.
        output: which head: a key, a tuple index, or a callable mapping the raw output to ``(batch, classes)``;
            ``None``: the ``logits`` entry, else the first tensor.
        owner: who needs the scores (named in errors).
        attribution: the owner explains a ``target``, so a callable ``target=`` is a way out of a frame-wise head.

    Example:
        >>> s = Scorer()
        >>> s.logits(s(nn.Linear(3, 2), ModelInputs((torch.zeros(4, 3),)))).shape
        torch.Size([4, 2])
    """

    forward_fn: Callable[[nn.Module, ModelInputs], Any] = default_forward_fn
    output: str | int | Callable[[Any], Tensor] | None = None
    owner: str = "the explainer"
    attribution: bool = True

    def __call__(self, model: nn.Module, inputs: ModelInputs) -> Any:
        """The raw model output on ``inputs``."""
        return self.forward_fn(model, inputs)

    def logits(self, output: Any, scoring: bool = False) -> Tensor:
        """The ``(batch, classes)`` scores of a raw ``output``; ``scoring=True`` (a callable target reads the raw
        output) allows other shapes."""
        if callable(self.output):
            logits = self.output(output)
            if not isinstance(logits, Tensor):
                raise ValueError(expected("output", "a callable returning a (batch, classes) tensor",
                                          type(logits).__name__))
        else:
            logits = logits_from_output(output, self.output)
        if logits.dim() > 2 and not scoring:
            raise frame_logits_error(logits.shape, self.owner, attribution=self.attribution)
        return logits
