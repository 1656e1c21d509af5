"""OpenVR -> Panda3D conversions against hand-computed values (pure numpy, no engine)."""

from __future__ import annotations

import numpy as np
import openvr
import pytest

from game.vr import coords


def _m34(rows):
    m = openvr.HmdMatrix34_t()
    for r in range(3):
        for c in range(4):
            m.m[r][c] = rows[r][c]
    return m


def test_point_swaps_axes_as_in_the_issue():
    assert np.allclose(coords.point_to_panda((0.0, 1.7, -0.5)), (0.0, 0.5, 1.7))
    assert np.allclose(coords.point_to_panda((1.0, 2.0, 3.0)), (1.0, -3.0, 2.0))
    batch = coords.point_to_panda(np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0]]))
    assert np.allclose(batch, [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # forward -> +Y, up -> +Z


def test_pose_from_real_struct_translation_and_rotation():
    # Standing at (0, 1.7, -0.5) in OpenVR, turned 90 degrees left (about +Y): looks down -X.
    pose = _m34([[0, 0, 1, 0.0], [0, 1, 0, 1.7], [-1, 0, 0, -0.5]])
    m = coords.pose_to_panda(pose)
    assert np.allclose(m[:3, 3], (0.0, 0.5, 1.7))
    # Same turn in Panda3D: heading +90 about +Z.
    assert np.allclose(m[:3, :3], [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-6)
    assert np.allclose(m[:3, 1], (-1.0, 0.0, 0.0), atol=1e-6)  # forward (+Y local) is -X
    assert np.allclose(m[3], (0, 0, 0, 1))
    # Round trip back to OpenVR rows.
    assert np.allclose(coords.panda_to_openvr_pose(m), coords.matrix34_to_numpy(pose)[:3], atol=1e-6)


def test_eye_to_head_offset_stays_on_x():
    m = coords.eye_to_head_panda(_m34([[1, 0, 0, -0.032], [0, 1, 0, 0], [0, 0, 1, 0.015]]))
    assert np.allclose(m[:3, 3], (-0.032, -0.015, 0.0))  # OpenVR +Z (backwards) is Panda -Y


def test_projection_depth_converted_not_halved():
    near, far = 0.1, 100.0
    p_vr = coords.projection_from_raw(-1.0, 1.0, -1.0, 1.0, near, far)
    # What OpenVR returns: D3D-style depth row.
    assert np.allclose(p_vr[2], (0, 0, far / (near - far), far * near / (near - far)))
    gl = coords.projection_to_gl(p_vr)
    assert np.allclose(gl[2], (0, 0, (far + near) / (near - far), 2 * far * near / (near - far)))
    assert np.allclose(gl[3], (0, 0, -1, 0))
    # The near plane lands on NDC -1, the far plane on +1 (OpenVR eye space looks down -Z).
    for depth, ndc in ((near, -1.0), (far, 1.0)):
        clip = gl @ np.array([0.0, 0.0, -depth, 1.0])
        assert clip[2] / clip[3] == pytest.approx(ndc)


def test_projection_in_panda_camera_space():
    near, far = 1.0, 100.0
    p = coords.projection_to_panda(coords.projection_from_raw(-1.0, 0.5, -1.0, 1.0, near, far))
    # Panda camera space: +Y forward, +Z up. A point straight ahead at the near plane -> NDC z=-1.
    clip = p @ np.array([0.0, near, 0.0, 1.0])
    assert clip[2] / clip[3] == pytest.approx(-1.0)
    # Asymmetric frustum (tangents -1 .. 0.5): scale 2 / 1.5; straight ahead (tangent 0) lies
    # (0 - (-0.25)) / 0.75 = 1/3 right of the centre.
    assert p[0, 0] == pytest.approx(2 / 1.5)
    clip = p @ np.array([0.0, 2.0, 0.0, 1.0])
    assert clip[0] / clip[3] == pytest.approx(1 / 3)
    # The left edge of the frustum (tan = -1 at depth 2 -> x = -2) maps to NDC x = -1.
    clip = p @ np.array([-2.0, 2.0, 0.0, 1.0])
    assert clip[0] / clip[3] == pytest.approx(-1.0)
    # Up (+Z in Panda) is up on screen (+Y NDC): top tangent 1 at depth 2 -> z = 2 -> NDC y = +1.
    clip = p @ np.array([0.0, 2.0, 2.0, 1.0])
    assert clip[1] / clip[3] == pytest.approx(1.0)


def test_quaternions_agree_with_matrices():
    r_vr = np.array([[0, 0, 1], [0, 1, 0], [-1, 0, 0]], dtype=float)  # 90 deg about OpenVR +Y
    q_vr = coords.rotation_to_quat(r_vr)
    assert np.allclose(q_vr, (np.sqrt(0.5), 0, np.sqrt(0.5), 0))
    q_panda = coords.quat_to_panda(q_vr)
    assert np.allclose(q_panda, (np.sqrt(0.5), 0, 0, np.sqrt(0.5)))  # 90 deg about Panda +Z
    assert np.allclose(coords.quat_to_rotation(q_panda), coords.C3 @ r_vr @ coords.C3.T)


def test_panda_values_is_a_transpose():
    m = coords.compose((1.0, 2.0, 3.0))
    values = coords.panda_values(m)
    assert values[12:15] == (1.0, 2.0, 3.0)  # row-vector matrices keep the translation in row 3
    assert np.allclose(coords.from_panda_values(values), m)


def test_hpr_matches_panda3d():
    from panda3d.core import LMatrix4f, TransformState

    for hpr in ((30.0, 0.0, 0.0), (0.0, 20.0, 0.0), (0.0, 0.0, 15.0), (40.0, -25.0, 10.0)):
        ts = TransformState.make_hpr(hpr)
        mat: LMatrix4f = ts.get_mat()
        expected = coords.from_panda_values([mat.get_cell(r, c) for r in range(4) for c in range(4)])
        assert np.allclose(coords.compose((0, 0, 0), coords.hpr_to_rotation(*hpr)), expected, atol=1e-6)
