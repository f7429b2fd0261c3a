"""Pure torch core: attribution engines, localisation metrics, hook capture, target resolution.

No Lightning, no matplotlib.
"""

from lightning_xai.functional._guard import explanation_mode, observer_guard

__all__ = ["explanation_mode", "observer_guard"]
