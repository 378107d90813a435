"""The one error and the one warning of the trajectories package."""

from __future__ import annotations

from cami2v_core.errors import CamI2VError


class TrajectoryError(CamI2VError, ValueError):
    """A camera path that cannot be used; the message names the frame and the field when there is one."""

    def __init__(self, message: str, frame: int | None = None, field: str | None = None):
        where = []
        if frame is not None:
            where.append(f"frame {frame}")
        if field is not None:
            where.append(f"'{field}'")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)
        self.frame = frame
        self.field = field


class TrajectoryWarning(UserWarning):
    """A camera path was usable after a documented repair (re-orthonormalised rotation, mirrored world)."""
