"""Exports people can open elsewhere: corrected labels (CSV), fine-tuned weights (safetensors),
and the layout in the TensorBoard Embedding Projector format. No panda3d here."""

from game.export.bundle import ExportResult, export_workspace
from game.export.projector import write_projector

__all__ = ["ExportResult", "export_workspace", "write_projector"]
