"""Controller models: OpenVR's render model when it loaded, else ``models/vr_controller.egg``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from panda3d.core import (
    Filename,
    Geom,
    GeomNode,
    GeomTriangles,
    GeomVertexData,
    GeomVertexFormat,
    NodePath,
    Texture,
)

from game.vr.backend import RenderModelMesh

FALLBACK = Path(__file__).resolve().parents[2] / "models" / "vr_controller.egg"


def mesh_node(mesh: RenderModelMesh) -> NodePath:
    """A GeomNode from a render model (vertices already in Panda3D axes); one numpy copy, no loops."""
    n = len(mesh.vertices)
    fmt = GeomVertexFormat.get_v3n3t2()
    vdata = GeomVertexData(mesh.name, fmt, Geom.UH_static)
    vdata.unclean_set_num_rows(n)
    packed = np.concatenate([mesh.vertices, mesh.normals, mesh.uvs], axis=1).astype(np.float32)
    memoryview(vdata.modify_array(0)).cast("B").cast("f")[:] = packed.reshape(-1).data
    tris = GeomTriangles(Geom.UH_static)
    tris.set_index_type(Geom.NT_uint32)
    handle = tris.modify_vertices()
    handle.unclean_set_num_rows(mesh.triangles.size)
    memoryview(handle).cast("B").cast("I")[:] = mesh.triangles.astype(np.uint32).reshape(-1).data
    geom = Geom(vdata)
    geom.add_primitive(tris)
    node = GeomNode(mesh.name)
    node.add_geom(geom)
    path = NodePath(node)
    if mesh.texture is not None:
        h, w = mesh.texture.shape[:2]
        tex = Texture(mesh.name)
        tex.setup_2d_texture(w, h, Texture.T_unsigned_byte, Texture.F_rgba8)
        tex.set_ram_image_as(np.ascontiguousarray(mesh.texture).tobytes(), "RGBA")
        path.set_texture(tex)
    return path


def fallback_node(loader: Any) -> NodePath:
    """The shipped fallback asset; a plain box if even that cannot be loaded."""
    try:
        model = loader.load_model(Filename.from_os_specific(str(FALLBACK)), noCache=True)
    except Exception:  # noqa: BLE001 - a missing asset must never stop VR
        model = None
    if model is None or model.is_empty():
        from panda3d.core import CardMaker

        cm = CardMaker("controller-box")
        cm.set_frame(-0.02, 0.02, -0.02, 0.02)
        model = NodePath(cm.generate())
    return model


def attach_controller_model(parent: NodePath, mesh: RenderModelMesh | None, loader: Any) -> NodePath:
    """Put the hand's model under ``parent`` (the tracked hand node)."""
    for child in parent.find_all_matches("controller-model"):
        child.remove_node()
    holder = parent.attach_new_node("controller-model")
    node = mesh_node(mesh) if mesh is not None else fallback_node(loader)
    node.reparent_to(holder)
    holder.set_two_sided(True)
    holder.set_tag("source", "openvr" if mesh is not None else "fallback")
    return holder
