"""Features to 3-D positions: PCA, openTSNE, normalisation, centroids, stable updates."""

from game.layout.projector import LayoutState, Projector, neighbour_agreement

__all__ = ["LayoutState", "Projector", "neighbour_agreement"]
