"""Eye buffers are multisampled and what is submitted is the resolved picture of this frame.

Both backends (the OpenVR test double and the simulated one) read the eye texture back through
OpenGL at the moment ``submit`` is called, from the submitted id: each frame clears the eye
buffers to a new colour, so a texture handed over before Panda3D's resolve would still show the
previous frame's colour (or nothing). Also: cards face the head in VR and the desktop gets its
camera back when VR stops.
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
import vr_fake_openvr as fake
from vr_helpers import close_app, make_app, synthetic_loaded

from game.controls.vr_controls import Rig
from game.vr.launch import attach, open_backend

GL_TEXTURE_2D = 0x0DE1
GL_TEXTURE_BINDING_2D = 0x8069
GL_RGBA = 0x1908
GL_UNSIGNED_BYTE = 0x1401
COLOURS = [(1.0, 0.0, 0.0, 1.0), (0.0, 1.0, 0.0, 1.0), (0.0, 0.0, 1.0, 1.0), (1.0, 1.0, 0.0, 1.0)]


def read_gl_texture(texture_id: int, w: int, h: int) -> np.ndarray:
    """The texture's level 0 as (H, W, 4), read on the drawing thread (inside the draw callback)."""
    gl = ctypes.CDLL("libGL.so.1")
    previous = ctypes.c_int()
    gl.glGetIntegerv(GL_TEXTURE_BINDING_2D, ctypes.byref(previous))
    gl.glBindTexture(GL_TEXTURE_2D, texture_id)
    out = (ctypes.c_ubyte * (w * h * 4))()
    gl.glGetTexImage(GL_TEXTURE_2D, 0, GL_RGBA, GL_UNSIGNED_BYTE, out)
    gl.glBindTexture(GL_TEXTURE_2D, previous.value)  # Panda3D's idea of the binding stays right
    return np.frombuffer(out, np.uint8).reshape(h, w, 4)


@pytest.fixture(params=["openvr", "simulate"])
def session(request, monkeypatch):
    if request.param == "openvr":
        fake.install(monkeypatch)
        backend = open_backend("on")
    else:
        backend = open_backend("simulate")
    assert backend is not None
    app = make_app(synthetic_loaded())
    s = attach(app, backend)
    s.controls.rig = Rig(np.array([0.0, -3.0, 0.0]))
    s.stereo.set_rig(s.controls.rig.matrix())
    yield app, s
    s.stop()
    close_app(app)


def test_submitted_texture_is_this_frames_resolved_picture(session):
    app, s = session
    stereo = s.stereo
    assert stereo.eye_multisamples > 1  # the eye buffers are anti-aliased
    w, h = s.backend.recommended_size()
    seen: list[tuple[str, int, tuple[int, ...]]] = []
    submit = s.backend.submit

    def checking_submit(eye, texture_id):
        img = read_gl_texture(texture_id, w, h).reshape(-1, 4)
        colours, counts = np.unique(img[:, :3], axis=0, return_counts=True)
        seen.append((eye, texture_id, tuple(int(v) for v in colours[np.argmax(counts)])))
        return submit(eye, texture_id)

    s.backend.submit = checking_submit
    for frame, colour in enumerate(COLOURS):
        for buf in stereo.buffers.values():
            buf.set_clear_color(colour)
        app.step()
        want = tuple(round(c * 255) for c in colour[:3])
        assert [e for e, _, _ in seen[-2:]] == ["left", "right"], frame
        for eye, texture_id, most in seen[-2:]:
            assert texture_id == stereo.texture_id(eye)
            assert most == want, (frame, eye, most, want)


def test_cards_face_the_head_in_vr_and_the_camera_after(session):
    app, s = session
    app.step()
    cards = app.world.cards
    assert cards.face_viewer and cards.viewer == s.stereo.head
    assert set(cards.hands) == set(s.stereo.hands.values())
    s.stop()
    assert not cards.face_viewer and cards.viewer == app.camera
