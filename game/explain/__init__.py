"""Explanations for one card: attribution heat maps (captum), what-if inpainting (OpenCV), class models.

Pure computation on private network copies, no panda3d: everything runs on the worker thread
(see ``service.ExplainService``) and returns numpy images the world shows as textures.
"""

from game.explain.attribution import METHODS, AttributionOptions, Explainer, Explanation, explain
from game.explain.class_model import ClassModel, ClassModelOptions, class_model
from game.explain.render import heat_rgba, overlay, side_by_side, upscale
from game.explain.service import ExplainService, MapResult, PanelResult
from game.explain.whatif import WhatIfEditor, WhatIfResult, inpaint, rect_mask, whatif

__all__ = [
    "METHODS",
    "AttributionOptions",
    "ClassModel",
    "ClassModelOptions",
    "ExplainService",
    "Explainer",
    "Explanation",
    "MapResult",
    "PanelResult",
    "WhatIfEditor",
    "WhatIfResult",
    "class_model",
    "explain",
    "heat_rgba",
    "inpaint",
    "overlay",
    "rect_mask",
    "side_by_side",
    "upscale",
    "whatif",
]
