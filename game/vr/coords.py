"""The one place where OpenVR's coordinates become Panda3D's.

OpenVR: right-handed, +Y up, -Z forward, metres; matrices are row-major for column vectors
(``HmdMatrix34_t.m[row][col]``). Panda3D (and our world, events and layout): right-handed, +Z up,
+Y forward, metres; ``LMatrix4`` is for row vectors (``point * M``).

Every conversion is a change of basis with ``C`` (OpenVR -> Panda3D): ``(x, y, z) -> (x, -z, y)``.
A pose ``M`` (device -> tracking space) becomes ``C M C^-1``, so the device's own axes are renamed
the same way: OpenVR's local forward -Z becomes Panda3D's local forward +Y.

Pure numpy on purpose: tests compare hand-computed values without an engine, and nothing here
knows where the numbers came from (a headset, the simulator or a test double). Functions that
return matrices return 4x4 numpy arrays in the column-vector convention (``M @ p``);
``panda_values`` turns one into the 16 numbers ``LMatrix4f(*values)`` expects.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

# OpenVR -> Panda3D basis change (column vectors): p_panda = C @ p_openvr.
C3 = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
C4 = np.eye(4)
C4[:3, :3] = C3
C4_INV = C4.T.copy()  # a rotation: inverse == transpose

# OpenVR's projection writes depth in [0, 1] (Direct3D style); OpenGL wants [-1, 1]:
# z_gl = 2 * z_d3d - w, i.e. this matrix applied on the left of the clip-space transform.
DEPTH_01_TO_GL = np.array(
    [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 2.0, -1.0], [0.0, 0.0, 0.0, 1.0]]
)


def _rows(matrix: Any, n_rows: int) -> np.ndarray:
    """An openvr matrix struct (``.m``), a nested sequence or an array as float64 rows."""
    m = getattr(matrix, "m", matrix)
    out = np.array([[float(v) for v in m[r]] for r in range(n_rows)], dtype=np.float64)
    return out


def matrix34_to_numpy(matrix: Any) -> np.ndarray:
    """``HmdMatrix34_t`` (3 rows x 4) -> homogeneous 4x4, still in OpenVR's axes."""
    out = np.eye(4)
    out[:3, :] = _rows(matrix, 3)
    return out


def matrix44_to_numpy(matrix: Any) -> np.ndarray:
    """``HmdMatrix44_t`` -> 4x4 numpy, unchanged."""
    return _rows(matrix, 4)


def point_to_panda(p: Sequence[float] | np.ndarray) -> np.ndarray:
    """OpenVR point or direction ``(x, y, z)`` -> Panda3D ``(x, -z, y)``; works on (..., 3) arrays."""
    a = np.asarray(p, dtype=np.float64)
    return np.stack([a[..., 0], -a[..., 2], a[..., 1]], axis=-1)


def pose_to_panda(matrix: Any) -> np.ndarray:
    """A device pose (``HmdMatrix34_t`` or 3x4/4x4 values) -> Panda3D 4x4 (column vectors)."""
    m = np.asarray(matrix, dtype=np.float64) if isinstance(matrix, np.ndarray) else None
    if m is None or m.shape == (3, 4):
        m = matrix34_to_numpy(matrix if m is None else m)
    return C4 @ m @ C4_INV


def eye_to_head_panda(matrix: Any) -> np.ndarray:
    """``getEyeToHeadTransform`` -> the eye camera's transform relative to the head, Panda3D axes."""
    return pose_to_panda(matrix)


def projection_to_gl(matrix: Any) -> np.ndarray:
    """``getProjectionMatrix(eye, near, far)`` ([0, 1] depth) -> OpenGL clip matrix ([-1, 1] depth).

    Both act on OpenVR eye space (looking down -Z); column vectors.
    """
    return DEPTH_01_TO_GL @ matrix44_to_numpy(matrix)


def projection_to_panda(matrix: Any) -> np.ndarray:
    """OpenVR projection -> a clip matrix acting on Panda3D camera space (+Y forward, +Z up).

    This is what a ``MatrixLens`` user matrix must hold (as row-vector values, see
    ``panda_values``); Panda3D's film matrix is the identity for a film size of 2.
    """
    return projection_to_gl(matrix) @ C4_INV


def projection_from_raw(
    left: float, right: float, top: float, bottom: float, near: float, far: float
) -> np.ndarray:
    """The matrix OpenVR's ``getProjectionMatrix`` returns for ``getProjectionRaw`` tangents.

    Used by the simulated backend so that it feeds the same conversion as a headset. ``top`` is
    the tangent towards -Y of the image (OpenVR's convention: ``top < bottom`` is usual).
    """
    idx = 1.0 / (right - left)
    idy = 1.0 / (bottom - top)
    q = far / (near - far)
    return np.array(
        [
            [2.0 * idx, 0.0, (right + left) * idx, 0.0],
            [0.0, 2.0 * idy, (top + bottom) * idy, 0.0],
            [0.0, 0.0, q, q * near],
            [0.0, 0.0, -1.0, 0.0],
        ]
    )


def panda_values(matrix: np.ndarray) -> tuple[float, ...]:
    """A 4x4 column-vector matrix as the 16 row-major values of Panda3D's row-vector ``LMatrix4``."""
    return tuple(np.asarray(matrix, dtype=np.float64).T.ravel().tolist())  # three per VR frame: no loop


def from_panda_values(values: Sequence[float]) -> np.ndarray:
    """Inverse of ``panda_values`` (an ``LMatrix4``'s 16 values -> column-vector 4x4)."""
    return np.asarray(values, dtype=np.float64).reshape(4, 4).T.copy()


def rotation_to_quat(rotation: np.ndarray) -> np.ndarray:
    """3x3 rotation -> unit quaternion ``(w, x, y, z)`` (Panda3D's ``LQuaternion(r, i, j, k)``)."""
    r = np.asarray(rotation, dtype=np.float64)[:3, :3]
    trace = r[0, 0] + r[1, 1] + r[2, 2]
    if trace > 0.0:
        s = 2.0 * np.sqrt(trace + 1.0)
        q = [0.25 * s, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s]
    elif r[0, 0] > r[1, 1] and r[0, 0] > r[2, 2]:
        s = 2.0 * np.sqrt(1.0 + r[0, 0] - r[1, 1] - r[2, 2])
        q = [(r[2, 1] - r[1, 2]) / s, 0.25 * s, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s]
    elif r[1, 1] > r[2, 2]:
        s = 2.0 * np.sqrt(1.0 + r[1, 1] - r[0, 0] - r[2, 2])
        q = [(r[0, 2] - r[2, 0]) / s, (r[0, 1] + r[1, 0]) / s, 0.25 * s, (r[1, 2] + r[2, 1]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + r[2, 2] - r[0, 0] - r[1, 1])
        q = [(r[1, 0] - r[0, 1]) / s, (r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, 0.25 * s]
    out = np.asarray(q)
    out /= np.linalg.norm(out)
    return out if out[0] >= 0 else -out


def quat_to_rotation(q: Sequence[float]) -> np.ndarray:
    """Unit quaternion ``(w, x, y, z)`` -> 3x3 rotation (column vectors)."""
    w, x, y, z = (float(v) for v in q)
    n = np.sqrt(w * w + x * x + y * y + z * z)
    w, x, y, z = w / n, x / n, y / n, z / n
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def quat_to_panda(q_openvr: Sequence[float]) -> np.ndarray:
    """An OpenVR orientation quaternion ``(w, x, y, z)`` -> the same orientation in Panda3D axes.

    The rotation axis is a direction and is renamed like a point; the angle is unchanged.
    """
    w, x, y, z = (float(v) for v in q_openvr)
    return np.array([w, x, -z, y])


def hpr_to_rotation(h: float, p: float, r: float) -> np.ndarray:
    """Panda3D heading/pitch/roll in degrees -> 3x3 rotation (column vectors), without panda3d.

    Heading turns about +Z, pitch about +X, roll about +Y, applied roll first, then pitch, then
    heading (Panda3D's order). Lets scripted poses be written the way Panda3D users think.
    """
    hr, pr, rr = np.radians([h, p, r])
    ch, sh, cp, sp, cr, sr = np.cos(hr), np.sin(hr), np.cos(pr), np.sin(pr), np.cos(rr), np.sin(rr)
    rz = np.array([[ch, -sh, 0.0], [sh, ch, 0.0], [0.0, 0.0, 1.0]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cp, -sp], [0.0, sp, cp]])
    ry = np.array([[cr, 0.0, sr], [0.0, 1.0, 0.0], [-sr, 0.0, cr]])
    return rz @ rx @ ry


def compose(position: Sequence[float], rotation: np.ndarray | None = None) -> np.ndarray:
    """A 4x4 transform from a position and a 3x3 rotation (identity when omitted)."""
    m = np.eye(4)
    if rotation is not None:
        m[:3, :3] = rotation
    m[:3, 3] = np.asarray(position, dtype=np.float64)
    return m


def panda_to_openvr_pose(matrix: np.ndarray) -> np.ndarray:
    """Inverse of ``pose_to_panda`` (3x4 rows in OpenVR axes); for the simulator and test doubles."""
    return (C4_INV @ np.asarray(matrix, dtype=np.float64) @ C4)[:3, :]
