"""Small procedural geometry: the card quad and floor grid lines."""

from __future__ import annotations

import numpy as np
from panda3d.core import (
    Geom,
    GeomNode,
    GeomTriangles,
    GeomVertexData,
    GeomVertexFormat,
    GeomVertexWriter,
    LineSegs,
    NodePath,
)


def make_quad(name: str = "card-quad") -> GeomNode:
    """A unit quad in the XZ plane, corners at +-0.5 (the card shader billboards it)."""
    vdata = GeomVertexData(name, GeomVertexFormat.get_v3(), Geom.UH_static)
    vdata.set_num_rows(4)
    w = GeomVertexWriter(vdata, "vertex")
    for x, z in ((-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5)):
        w.add_data3(x, 0.0, z)
    tris = GeomTriangles(Geom.UH_static)
    tris.add_vertices(0, 1, 2)
    tris.add_vertices(0, 2, 3)
    geom = Geom(vdata)
    geom.add_primitive(tris)
    node = GeomNode(name)
    node.add_geom(geom)
    return node


def make_grid(
    parent: NodePath, half: float = 4.0, step: float = 0.5, colour=(0.35, 0.38, 0.45, 1.0)
) -> NodePath:
    """A floor grid of lines at z = 0 with brighter axes, as one geom."""
    lines = LineSegs("floor-grid")
    lines.set_thickness(1.0)
    ticks = np.arange(-half, half + 1e-6, step)
    for t in ticks:
        strong = abs(t) < 1e-6
        c = (0.55, 0.6, 0.7, 1.0) if strong else colour
        lines.set_color(*c)
        lines.move_to(t, -half, 0)
        lines.draw_to(t, half, 0)
        lines.move_to(-half, t, 0)
        lines.draw_to(half, t, 0)
    node = parent.attach_new_node(lines.create())
    node.set_light_off(1)
    return node
