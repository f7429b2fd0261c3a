"""Tensors -> pictures. The only place matplotlib lives.

Every renderer takes tensors and returns a :class:`matplotlib.figure.Figure` on an Agg canvas (no pyplot, no
global state); :func:`figure_to_array` and :func:`figure_to_png_bytes` turn it into pixels or PNG bytes for
the sinks; :func:`draw_png` builds and draws a figure under :func:`matplotlib_style` of the process that asked (the
background drawing process of the sinks uses both).
"""

from lightning_xai.render._drawing import draw_png, matplotlib_style
from lightning_xai.render._utils import figure_to_array, figure_to_png_bytes
from lightning_xai.render.attention import attention_heads_grid
from lightning_xai.render.frames import frame_strip
from lightning_xai.render.overlay import denormalize, infer_normalization, overlay_grid
from lightning_xai.render.shap import (
    modality_shares,
    signed_frame_strip,
    signed_heatmap_grid,
    spectrogram_plot,
)
from lightning_xai.render.shap_text import token_grid, token_plot

__all__ = [
    "attention_heads_grid",
    "denormalize",
    "draw_png",
    "figure_to_array",
    "figure_to_png_bytes",
    "frame_strip",
    "infer_normalization",
    "matplotlib_style",
    "modality_shares",
    "overlay_grid",
    "signed_frame_strip",
    "signed_heatmap_grid",
    "spectrogram_plot",
    "token_grid",
    "token_plot",
]
