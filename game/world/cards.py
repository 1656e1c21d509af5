"""All cards in a constant number of draw calls: hardware instancing over a buffer texture.

One quad, instanced once per card. Per-card data (position, size, class colour, state, atlas
slot) lives in a float buffer texture that numpy writes through a memoryview; the images live in
2-D texture arrays (see ``atlas``). Moving cards rewrites one numpy slice and re-requests the
buffer, so the scene graph is never rebuilt and a 50k-card move costs one upload.

Draw calls: one per texture array, i.e. one until the images need more than 2048 atlas layers.
"""

from __future__ import annotations

import numpy as np
from panda3d.core import (
    GeomEnums,
    NodePath,
    OmniBoundingVolume,
    SamplerState,
    Texture,
    TransparencyAttrib,
)

from game.world import atlas, shaders
from game.world.geometry import make_quad
from game.world.palette import EDITED, HOVER, PENDING, SELECTED, UNSURE

TEXELS_PER_CARD = 3
RING = 0.14  # marker ring width, fraction of the card side
FRAME = 0.07  # class-colour frame width, fraction of the card side


class CardField:
    """The instanced card field under ``parent``.

    ``positions`` (N, 3) float32 are what is drawn; call ``set_positions`` (or write into
    ``positions`` and call ``upload``) when they change.
    """

    def __init__(
        self,
        parent: NodePath,
        images: np.ndarray,
        positions: np.ndarray,
        colours: np.ndarray,
        card_size: float = 0.08,
        *,
        max_layers: int = 2048,
        tile_cap: int = 64,
        layer_side: int = 1024,
    ) -> None:
        self.root = parent.attach_new_node("cards")
        self.card_size = float(card_size)
        self.max_layers = max_layers
        self.tile_cap = tile_cap
        self.layer_side = layer_side
        self.selected = -1
        self.hovered = -1
        self._chunks: list[NodePath] = []
        self._textures: list[Texture] = []
        self.build(images, positions, colours)

    # --- building ---------------------------------------------------------------------------

    def build(self, images: np.ndarray, positions: np.ndarray, colours: np.ndarray) -> None:
        """(Re)build textures and chunk nodes for these cards (start-up and added cards only)."""
        for chunk in self._chunks:
            chunk.remove_node()
        self._chunks.clear()
        self._textures.clear()
        n = len(images)
        self.n = n
        h, w = images.shape[1:3]
        tile = atlas.tile_side(h, w, self.tile_cap)
        layout = atlas.plan(n, tile, self.layer_side)
        self.layout = layout
        crisp = max(h, w) <= 32
        tiles = atlas.to_rgba_tiles(images, tile)

        self.data_texture = Texture("card-data")
        self.data_texture.setup_buffer_texture(
            max(1, n) * TEXELS_PER_CARD, Texture.T_float, Texture.F_rgba32, GeomEnums.UH_dynamic
        )
        data = self._data()
        data[:] = 0.0
        data[:, 0, :3] = positions
        data[:, 0, 3] = 1.0
        data[:, 1, :3] = colours[:, :3]
        data[:, 2, :3] = layout.slots()
        data[:, 2, 3] = 1.0

        per_array = self.max_layers * layout.per_layer
        for first in range(0, max(n, 1), per_array):
            count = min(per_array, n - first)
            sub = atlas.AtlasLayout(layout.tile, layout.grid, -(-count // layout.per_layer), count)
            tex = self._array_texture(atlas.pack_layers(tiles[first : first + count], sub), sub, crisp)
            # Slots restart at layer 0 in each array.
            data[first : first + count, 2, :3] = sub.slots()
            node = self.root.attach_new_node(make_quad())
            node.node().set_bounds(OmniBoundingVolume())
            node.node().set_final(True)
            node.set_instance_count(max(count, 0))
            node.set_shader(shaders.load("cards"))
            node.set_shader_input("card_data", self.data_texture)
            node.set_shader_input("images", tex)
            node.set_shader_input("instance_offset", first)
            node.set_shader_input("atlas_grid", (float(layout.grid), float(layout.grid)))
            self._chunks.append(node)
            self._textures.append(tex)
        self.root.set_shader_input("card_size", self.card_size)
        self.root.set_shader_input("ring", RING)
        self.root.set_shader_input("frame", FRAME)
        self.root.set_shader_input("selected_colour", SELECTED)
        self.root.set_shader_input("hover_colour", HOVER)
        self.root.set_shader_input("pending_colour", PENDING)
        self.root.set_shader_input("unsure_colour", UNSURE)
        self.root.set_shader_input("edited_colour", EDITED)
        self.root.set_transparency(TransparencyAttrib.M_none)
        self.root.set_light_off(1)
        self._apply_highlight()

    def _array_texture(self, layers: np.ndarray, layout: atlas.AtlasLayout, crisp: bool) -> Texture:
        tex = Texture("card-images")
        tex.setup_2d_texture_array(
            layout.side, layout.side, layout.layers, Texture.T_unsigned_byte, Texture.F_rgba8
        )
        tex.set_ram_image(np.ascontiguousarray(layers).data.cast("B"))
        sampler = SamplerState()
        sampler.set_wrap_u(SamplerState.WM_clamp)
        sampler.set_wrap_v(SamplerState.WM_clamp)
        if crisp:
            sampler.set_magfilter(SamplerState.FT_nearest)
            sampler.set_minfilter(SamplerState.FT_nearest)
        else:
            sampler.set_magfilter(SamplerState.FT_linear)
            sampler.set_minfilter(SamplerState.FT_linear_mipmap_linear)
            # Mip levels beyond the tile size would blend neighbouring tiles of the atlas.
            sampler.set_max_lod(float(np.log2(layout.tile)))
        tex.set_default_sampler(sampler)
        return tex

    # --- per-frame updates -----------------------------------------------------------------

    def _data(self) -> np.ndarray:
        """The buffer texture as an ``(N, 3, 4)`` float32 view; requesting it marks it changed."""
        ram = memoryview(self.data_texture.modify_ram_image())
        return np.frombuffer(ram, dtype=np.float32).reshape(-1, TEXELS_PER_CARD, 4)[: self.n]

    def set_positions(self, positions: np.ndarray) -> None:
        self._data()[:, 0, :3] = positions

    def set_colours(self, colours: np.ndarray) -> None:
        self._data()[:, 1, :3] = np.asarray(colours)[:, :3]

    def set_states(self, states: np.ndarray) -> None:
        self._data()[:, 1, 3] = states

    def set_visible(self, visible: np.ndarray) -> None:
        self._data()[:, 2, 3] = visible

    def set_card_size(self, size: float) -> None:
        self.card_size = float(size)
        self.root.set_shader_input("card_size", self.card_size)

    def set_highlight(self, selected: int | None = None, hovered: int | None = None) -> None:
        """Selected and hovered cards are uniforms: changing them uploads nothing per card."""
        if selected is not None:
            self.selected = int(selected)
        if hovered is not None:
            self.hovered = int(hovered)
        self._apply_highlight()

    def _apply_highlight(self) -> None:
        self.root.set_shader_input("selected", self.selected)
        self.root.set_shader_input("hovered", self.hovered)

    @property
    def draw_calls(self) -> int:
        """Geoms drawn for the cards (one per texture array)."""
        return sum(c.node().get_num_geoms() for c in self._chunks)

    def destroy(self) -> None:
        self.root.remove_node()
