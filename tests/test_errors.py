"""Every error the project raises for a user derives from one base, so a front end catches one type."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

from cami2v_core.errors import CamI2VError

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("cami2v_core", "trajectories", "training")


def _project_modules():
    for package in PACKAGES:
        for info in pkgutil.walk_packages([str(REPO / package)], prefix=f"{package}."):
            if info.name.endswith("__main__"):
                continue
            try:
                yield importlib.import_module(info.name)
            except ImportError as e:  # an optional dependency (pycolmap, av) absent here: say which, don't hide it
                pytest.fail(f"{info.name} does not import: {e}")


def _own_exception_classes():
    found = []
    for module in _project_modules():
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if obj.__module__ == module.__name__ and issubclass(obj, Exception) and not issubclass(obj, Warning):
                found.append(obj)
    return found


def test_every_project_error_derives_from_the_base():
    classes = _own_exception_classes()
    assert len(classes) >= 10, f"expected the project's error classes, found {classes}"
    strays = [f"{c.__module__}.{c.__qualname__}" for c in classes if not issubclass(c, CamI2VError)]
    assert not strays, f"errors without the CamI2VError base: {strays}"


def test_the_base_is_caught_for_a_trajectory_error():
    from trajectories import TrajectoryError

    with pytest.raises(CamI2VError, match="frame 3"):
        raise TrajectoryError("bad pose", frame=3)
