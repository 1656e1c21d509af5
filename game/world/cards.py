"""All cards in a constant number of draw calls: hardware instancing over a buffer texture.

One quad, instanced once per card. Per-card data (position, size, class colour, state, atlas
slot) lives in a float buffer texture that numpy writes through a memoryview; the images live in
2-D texture arrays (see ``atlas``). Moving cards rewrites one numpy slice and re-requests the
buffer, so the scene graph is never rebuilt and a 50k-card move costs one upload.

Level of detail (issue 17): images larger than ``thumb_side`` (32 px) are stored for every card
only as thumbnails; a fixed pool of ``pool_slots`` full-resolution tiles holds the selected and
hovered cards and the cards nearest the viewer (``card_lod.NearPool`` picks them, a few thousand
cards per frame, so per-frame work does not grow with N). A card at 32 px or less on screen looks
the same from either; the cards that could look larger are the near ones, which the pool covers.
Texture memory is ``N x 32 px + 512 x 64 px`` instead of ``N x 64 px`` (docs/benchmarks.md).
The embedded scenes (8 px digits, 32 px shapes) fit the thumbnail size: no pool, as before.

Orientation: on the desktop each card faces the view plane; in VR (``set_viewer(head,
face=True)``) each card turns toward the head position with world up kept, the same for both
eyes, so cards neither roll with head tilt nor differ between the eyes of canted displays.

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
from game.world.card_lod import NearPool, PoolChanges
from game.world.geometry import make_quad
from game.world.palette import EDITED, HOVER, PENDING, SELECTED, UNSURE

TEXELS_PER_CARD = 3
RING = 0.14  # marker ring width, fraction of the card side
FRAME = 0.07  # class-colour frame width, fraction of the card side
THUMB_SIDE = 32  # every card's image at most this many texels a side ...
POOL_SLOTS = 512  # ... and this many cards (selected, hovered, nearest) at full resolution
LOADS_PER_FRAME = (
    128  # full-resolution tiles converted per frame at most (each frame with loads uploads the pool)
)


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
        thumb_side: int | None = THUMB_SIDE,
        pool_slots: int = POOL_SLOTS,
    ) -> None:
        self.root = parent.attach_new_node("cards")
        self.card_size = float(card_size)
        self.max_layers = max_layers
        self.tile_cap = tile_cap
        self.layer_side = layer_side
        self.thumb_side = thumb_side
        self.pool_slots = pool_slots
        self.selected = -1
        self.hovered = -1
        self.viewer: NodePath | None = None
        self.hands: list[NodePath] = []
        self.face_viewer = False
        self._chunks: list[NodePath] = []
        self._textures: list[Texture] = []
        self.pool_loads = 0  # full-resolution tiles uploaded so far (tests, benchmarks)
        self.build(images, positions, colours)
        self.set_viewer(None)

    # --- building ---------------------------------------------------------------------------

    def build(self, images: np.ndarray, positions: np.ndarray, colours: np.ndarray) -> None:
        """(Re)build textures and chunk nodes for these cards (start-up and added cards only)."""
        for chunk in self._chunks:
            chunk.remove_node()
        self._chunks.clear()
        self._textures.clear()
        n = len(images)
        self.n = n
        self._images = images  # kept (not copied) for loading full-resolution tiles on demand
        h, w = images.shape[1:3]
        full = atlas.tile_side(h, w, self.tile_cap)
        tile = min(full, self.thumb_side) if self.thumb_side else full
        self.full_tile = full
        self.lod = tile < full and self.pool_slots > 0
        if not self.lod:
            tile = full
        layout = atlas.plan(n, tile, self.layer_side)
        self.layout = layout
        crisp = max(h, w) <= 32 and not self.lod
        tiles = atlas.thumbnails(images, full, tile) if self.lod else atlas.to_rgba_tiles(images, tile)

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
        del tiles
        self._build_pool(n, crisp)
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

    def _build_pool(self, n: int, crisp: bool) -> None:
        """The full-resolution pool (a texture array of ``pool_slots`` tiles) and the per-card slot
        buffer the vertex shader reads (-1: draw the thumbnail)."""
        slots = self.pool_slots if self.lod else 0
        self.pool_layout = atlas.plan(max(1, slots), self.full_tile, self.layer_side)
        self.pool_layout.count = slots
        if self.lod:
            blank = np.zeros(
                (self.pool_layout.layers, self.pool_layout.side, self.pool_layout.side, 4), np.uint8
            )
            self.pool_texture = self._array_texture(blank, self.pool_layout, crisp)
        else:
            # Never sampled (every slot is -1); bound because the shader declares it.
            self.pool_texture = self._textures[0] if self._textures else Texture("card-pool")
        self.near = NearPool(n, slots)
        self._pending: list[tuple[int, int]] = []  # (slot, card) tiles still to load
        self.lod_texture = Texture("card-lod")
        self.lod_texture.setup_buffer_texture(max(1, n), Texture.T_float, Texture.F_r32, GeomEnums.UH_dynamic)
        self._lod_slots()[:] = -1.0
        grid = float(self.pool_layout.grid)
        self.root.set_shader_input("pool", self.pool_texture)
        self.root.set_shader_input("pool_grid", (grid, grid))
        self.root.set_shader_input("card_lod", self.lod_texture)

    def _lod_slots(self) -> np.ndarray:
        """The per-card pool slot buffer as float32 ``(N,)``; requesting it marks it changed."""
        ram = memoryview(self.lod_texture.modify_ram_image())
        return np.frombuffer(ram, dtype=np.float32)[: self.n]

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
        self.near.cards_moved()

    def _positions(self) -> np.ndarray:
        """Drawn positions ``(N, 3)``, read without marking the buffer for upload."""
        ram = memoryview(self.data_texture.get_ram_image())
        return np.frombuffer(ram, dtype=np.float32).reshape(-1, TEXELS_PER_CARD, 4)[: self.n, 0, :3]

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
        if self.lod:
            self._apply_pool(self.near.pin([self.selected, self.hovered]), now=True)

    # --- viewer: orientation and level of detail -----------------------------------------------

    def set_viewer(
        self, viewer: NodePath | None, *, face: bool = False, hands: list[NodePath] | None = None
    ) -> None:
        """Whose position picks the full-resolution cards (the camera; in VR the head and hands);
        ``face``: cards turn toward ``viewer``'s position with world up kept (VR) instead of
        facing the view plane (desktop)."""
        self.viewer = viewer if viewer is not None and not viewer.is_empty() else None
        self.hands = list(hands or [])
        self.face_viewer = bool(face and self.viewer is not None)
        self.root.set_shader_input("viewer", self.viewer if self.viewer is not None else self.root)
        self.root.set_shader_input("face_viewer", int(self.face_viewer))

    def update_lod(self) -> bool:
        """One frame's share of choosing the full-resolution cards; True when tiles were uploaded.

        Bounded work whatever N (see ``card_lod``): a comparison when nothing moved, a slice of a
        scan otherwise, and an upload of the pool only when a scan ends with other cards.
        """
        if not self.lod:
            return False
        if self.viewer is None:
            return self._apply_pool(PoolChanges())
        v = self.viewer
        eye = v.get_pos(self.root)
        fwd = self.root.get_relative_vector(v, (0, 1, 0))
        hands = [h.get_pos(self.root) for h in self.hands if not h.is_empty() and not h.is_hidden()]
        changes = self.near.step(
            self._positions(),
            np.array([eye[0], eye[1], eye[2]], np.float32),
            np.array([fwd[0], fwd[1], fwd[2]], np.float32),
            np.array([[p[0], p[1], p[2]] for p in hands], np.float32).reshape(-1, 3),
        )
        return self._apply_pool(changes)

    def _apply_pool(self, changes: PoolChanges, *, now: bool = False) -> bool:
        """Point cleared cards back at their thumbnails, and load newly pooled cards' tiles: at
        most ``LOADS_PER_FRAME`` a frame (the rest wait, drawn from their thumbnails meanwhile),
        so a scan that changes many cards (a jump, a scene switch) costs no long frame.
        ``now``: load at once (the selected and hovered cards)."""
        if changes.cleared:
            self._lod_slots()[np.asarray(changes.cleared, np.int64)] = -1.0
        if now:
            # Pinned cards a scan chose but whose tiles still wait are loaded now as well.
            pinned = set(self.near.pinned)
            batch = changes.loads + [e for e in self._pending if e[1] in pinned]
            self._pending = [e for e in self._pending if e[1] not in pinned]
        else:
            self._pending.extend(changes.loads)
            batch, self._pending = self._pending[:LOADS_PER_FRAME], self._pending[LOADS_PER_FRAME:]
        if not batch:
            return bool(changes)
        held = self.near.slot_card
        batch = [(s, c) for s, c in batch if held[s] == c]  # a later scan may have moved it on
        if batch:
            slot_ids = np.asarray([s for s, _ in batch], np.int64)
            cards = np.asarray([c for _, c in batch], np.int64)
            lay = self.pool_layout
            t = lay.tile
            ram = np.frombuffer(memoryview(self.pool_texture.modify_ram_image()), dtype=np.uint8)
            ram = ram.reshape(lay.layers, lay.side, lay.side, 4)
            images = self._images
            direct = images.ndim == 4 and images.shape[1:] == (t, t, 3)  # RGB at the tile size
            tiles = None if direct else atlas.to_panda_tiles(atlas.to_rgba_tiles(images[cards], t))
            for i, (slot, card) in enumerate(zip(slot_ids.tolist(), cards.tolist(), strict=True)):
                layer, j = divmod(slot, lay.per_layer)
                ty, tx = divmod(j, lay.grid)
                block = ram[layer, ty * t : (ty + 1) * t, tx * t : (tx + 1) * t]
                if tiles is None:  # one copy: rows bottom-up, RGB -> BGR, opaque
                    block[..., :3] = images[card, ::-1, :, ::-1]
                    block[..., 3] = 255
                else:
                    block[...] = tiles[i]
            self._lod_slots()[cards] = slot_ids.astype(np.float32)
            self.pool_loads += len(cards)
        return True

    @property
    def full_res_cards(self) -> np.ndarray:
        """Cards drawn from a full-resolution tile now (all cards when there is no level of detail)."""
        if not self.lod:
            return np.arange(self.n)
        cards = self.near.full_res_cards
        waiting = [c for _, c in self._pending]
        return cards[~np.isin(cards, waiting)] if waiting else cards

    @property
    def tiles_waiting(self) -> int:
        """Full-resolution tiles chosen but not loaded yet (``LOADS_PER_FRAME`` go each frame)."""
        return len(self._pending)

    def texture_bytes(self) -> dict[str, int]:
        """Texture memory of the card field, by part (what GL allocates, mip levels included)."""
        out = {
            "thumbnails" if self.lod else "images": sum(_texture_bytes(t) for t in self._textures),
            "pool": _texture_bytes(self.pool_texture) if self.lod else 0,
            "card_data": self.data_texture.get_x_size() * 16 + self.lod_texture.get_x_size() * 4,
        }
        out["total"] = sum(out.values())
        return out

    @property
    def draw_calls(self) -> int:
        """Geoms drawn for the cards (one per texture array)."""
        return sum(c.node().get_num_geoms() for c in self._chunks)

    def destroy(self) -> None:
        self.root.remove_node()


def _texture_bytes(tex: Texture) -> int:
    """Bytes of an RGBA8 texture array as allocated by GL: the mip chain adds a third when used."""
    size = tex.get_x_size() * tex.get_y_size() * tex.get_z_size() * 4
    sampler = tex.get_default_sampler()
    return size * 4 // 3 if sampler.uses_mipmaps() else size
