"""Rotation helpers in float64 numpy: axis rotations, quaternions, SLERP, look-at, nearest rotation, rigid inverse.

Axes are OpenCV's (x right, y down, z forward). Seen through the camera, a positive angle about +y turns the view
to the right, about +x turns it up, about +z turns the picture anti-clockwise on screen.
"""

from __future__ import annotations

import numpy as np

# Camera coordinates OpenCV (x right, y down, z forward) <-> OpenGL / Blender / nerfstudio (x right, y up, z back):
# X_cv = CV_FROM_GL @ X_gl, so c2w_cv = c2w_gl @ CV_FROM_GL. The matrix is its own inverse.
CV_FROM_GL = np.diag([1.0, -1.0, -1.0, 1.0])


def rot_x(deg) -> np.ndarray:
    """Rotation about +x by `deg` degrees (scalar or [N]) -> [3,3] or [N,3,3]."""
    a = np.radians(np.asarray(deg, dtype=np.float64))
    c, s, o, z = np.cos(a), np.sin(a), np.ones_like(a), np.zeros_like(a)
    return _stack3(o, z, z, z, c, -s, z, s, c)


def rot_y(deg) -> np.ndarray:
    """Rotation about +y by `deg` degrees (scalar or [N]) -> [3,3] or [N,3,3]."""
    a = np.radians(np.asarray(deg, dtype=np.float64))
    c, s, o, z = np.cos(a), np.sin(a), np.ones_like(a), np.zeros_like(a)
    return _stack3(c, z, s, z, o, z, -s, z, c)


def rot_z(deg) -> np.ndarray:
    """Rotation about +z by `deg` degrees (scalar or [N]) -> [3,3] or [N,3,3]."""
    a = np.radians(np.asarray(deg, dtype=np.float64))
    c, s, o, z = np.cos(a), np.sin(a), np.ones_like(a), np.zeros_like(a)
    return _stack3(c, -s, z, s, c, z, z, z, o)


def _stack3(*entries) -> np.ndarray:
    """Nine same-shaped arrays (row-major) -> [...,3,3]."""
    return np.stack(entries, axis=-1).reshape(np.shape(entries[0]) + (3, 3))


def rigid(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """[...,3,3] rotation and [...,3] translation -> [...,4,4] homogeneous matrix."""
    rotation, translation = np.asarray(rotation, np.float64), np.asarray(translation, np.float64)
    batch = np.broadcast_shapes(rotation.shape[:-2], translation.shape[:-1])
    m = np.zeros(batch + (4, 4))
    m[..., :3, :3] = rotation
    m[..., :3, 3] = translation
    m[..., 3, 3] = 1.0
    return m


def invert_rigid(m: np.ndarray) -> np.ndarray:
    """Inverse of rigid [...,4,4] matrices as [R^T, -R^T t] (exact for rotations, cheaper than a general inverse)."""
    rot_t = np.swapaxes(m[..., :3, :3], -1, -2)
    return rigid(rot_t, -np.einsum("...ij,...j->...i", rot_t, m[..., :3, 3]))


def rigidity_error(rotation: np.ndarray) -> np.ndarray:
    """max |R R^T - I| per matrix: [...,3,3] -> [...] (0 for an exact rotation or reflection)."""
    with np.errstate(over="ignore", invalid="ignore"):
        gram = rotation @ np.swapaxes(rotation, -1, -2)
        return np.abs(gram - np.eye(3)).max(axis=(-1, -2))


def nearest_rotation(m: np.ndarray) -> np.ndarray:
    """The proper rotation closest to each [...,3,3] matrix in Frobenius norm (polar factor via SVD)."""
    u, _, vt = np.linalg.svd(m)
    d = np.sign(np.linalg.det(u @ vt))
    u = u.copy()
    u[..., :, 2] *= d[..., None]
    return u @ vt


def matrix_to_quaternion(rotation: np.ndarray) -> np.ndarray:
    """Proper rotations [...,3,3] -> unit quaternions [...,4] as (w, x, y, z) with w >= 0."""
    r = np.asarray(rotation, dtype=np.float64)
    batch = r.shape[:-2]
    r = r.reshape(-1, 3, 3)
    # Shepperd's method: take the square root of the largest of 4 candidates, so nothing divides by ~0.
    trace = r[..., 0, 0] + r[..., 1, 1] + r[..., 2, 2]
    candidates = np.stack([trace, r[..., 0, 0], r[..., 1, 1], r[..., 2, 2]], axis=-1)
    pick = candidates.argmax(axis=-1)
    q = np.empty((r.shape[0], 4))
    for k in range(4):
        sel = pick == k
        if not np.any(sel):
            continue
        m = r[sel]
        if k == 0:
            s = 2.0 * np.sqrt(_nonneg(1.0 + m[:, 0, 0] + m[:, 1, 1] + m[:, 2, 2]))
            qk = [0.25 * s, (m[:, 2, 1] - m[:, 1, 2]) / s, (m[:, 0, 2] - m[:, 2, 0]) / s, (m[:, 1, 0] - m[:, 0, 1]) / s]
        elif k == 1:
            s = 2.0 * np.sqrt(_nonneg(1.0 + m[:, 0, 0] - m[:, 1, 1] - m[:, 2, 2]))
            qk = [(m[:, 2, 1] - m[:, 1, 2]) / s, 0.25 * s, (m[:, 0, 1] + m[:, 1, 0]) / s, (m[:, 0, 2] + m[:, 2, 0]) / s]
        elif k == 2:
            s = 2.0 * np.sqrt(_nonneg(1.0 - m[:, 0, 0] + m[:, 1, 1] - m[:, 2, 2]))
            qk = [(m[:, 0, 2] - m[:, 2, 0]) / s, (m[:, 0, 1] + m[:, 1, 0]) / s, 0.25 * s, (m[:, 1, 2] + m[:, 2, 1]) / s]
        else:
            s = 2.0 * np.sqrt(_nonneg(1.0 - m[:, 0, 0] - m[:, 1, 1] + m[:, 2, 2]))
            qk = [(m[:, 1, 0] - m[:, 0, 1]) / s, (m[:, 0, 2] + m[:, 2, 0]) / s, (m[:, 1, 2] + m[:, 2, 1]) / s, 0.25 * s]
        q[sel] = np.stack(qk, axis=-1)
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    return np.where(q[..., :1] < 0, -q, q).reshape(batch + (4,))


def _nonneg(x: np.ndarray) -> np.ndarray:
    """Clamp round-off negatives under a square root to 0."""
    return np.maximum(x, 0.0)


def quaternion_to_matrix(q: np.ndarray) -> np.ndarray:
    """Unit quaternions [...,4] (w, x, y, z) -> rotations [...,3,3]."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    return _stack3(1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
                   2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
                   2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y))


def slerp(r0: np.ndarray, r1: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Spherical interpolation along the shorter arc: rotations [N,3,3], [N,3,3], fractions [N] -> [N,3,3]."""
    q0, q1 = matrix_to_quaternion(r0), matrix_to_quaternion(r1)
    dot = np.sum(q0 * q1, axis=-1)
    q1 = np.where(dot[..., None] < 0, -q1, q1)  # q and -q are the same rotation: take the short way round
    dot = np.abs(dot)
    s = np.asarray(s, dtype=np.float64)
    theta = np.arccos(np.clip(dot, -1.0, 1.0))
    sin_theta = np.sin(theta)
    close = sin_theta < 1e-9  # (nearly) the same rotation: linear blend is exact to round-off
    safe = np.where(close, 1.0, sin_theta)
    w0 = np.where(close, 1.0 - s, np.sin((1.0 - s) * theta) / safe)
    w1 = np.where(close, s, np.sin(s * theta) / safe)
    return quaternion_to_matrix(w0[..., None] * q0 + w1[..., None] * q1)


def look_at_rotation(position: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    """Camera-to-world rotation [3,3] (columns x right, y down, z forward) of a camera at `position` facing `target`.

    `up` is the world direction that should appear upwards on screen, so the camera's y (down) axis is as close to
    -up as the view direction allows. Returns None when position == target or up is parallel to the view.
    """
    forward = np.asarray(target, np.float64) - np.asarray(position, np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        norm = np.linalg.norm(forward)
        if not np.isfinite(norm) or norm == 0.0:
            return None
        z = forward / norm
        x = np.cross(z, np.asarray(up, np.float64))  # right = forward x up (OpenCV: y points down)
        nx = np.linalg.norm(x)
        if not np.isfinite(nx) or nx < 1e-9 * max(1.0, np.linalg.norm(up)):
            return None
        x = x / nx
        y = np.cross(z, x)
    return np.stack([x, y, z], axis=-1)
