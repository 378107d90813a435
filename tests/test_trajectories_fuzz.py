"""Fuzzing every trajectories parser: random bytes, random JSON and mutated valid files give a Trajectory or a
TrajectoryError (a ValueError whose message says what to fix), never any other exception."""

from __future__ import annotations

import json
import warnings

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trajectories as tj
from trajectories import Trajectory, TrajectoryError

FUZZ = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])

PARSERS = {
    "load": tj.load,
    "from_json": tj.from_json,
    "from_realestate10k": tj.from_realestate10k,
    "from_cameractrl_poses": tj.from_cameractrl_poses,
}


def _outcome(parser, value):
    """Run a parser; only a Trajectory or a TrajectoryError with a message is acceptable."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tj.TrajectoryWarning)
        try:
            result = parser(value)
        except TrajectoryError as e:
            assert str(e), "a TrajectoryError must say what is wrong"
            return e
    assert isinstance(result, Trajectory)
    assert np.isfinite(result.w2c).all() and (result.intrinsics[:, :2] > 0).all()
    return result


scalars = st.none() | st.booleans() | st.integers(-10 ** 30, 10 ** 30) | st.floats() | st.text(max_size=8)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=6)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=5), max_leaves=40)
KEYS = ["format", "version", "aspect", "intrinsics", "frames", "w2c", "c2w", "position", "look_at", "up", "fx", "fy",
        "cx", "cy", "fov_x_deg", "fov_y_deg", "focal_mm", "sensor_width_mm", "name"]
keyed_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=20)
                            | st.dictionaries(st.sampled_from(KEYS), inner, max_size=6), max_leaves=60)


@FUZZ
@given(data=st.binary(max_size=3000), parser=st.sampled_from(["load", "from_json", "from_realestate10k"]))
def test_random_bytes(data, parser):
    _outcome(PARSERS[parser], data)


@FUZZ
@given(value=json_values | keyed_values, parser=st.sampled_from(sorted(PARSERS)))
def test_random_json_values_as_objects_and_as_text(value, parser):
    _outcome(PARSERS[parser], value)
    if parser != "from_cameractrl_poses":
        _outcome(PARSERS[parser], json.dumps(value))


def _valid_documents():
    path = tj.concatenate(tj.orbit("left", 30, 2.0, frames=4), tj.focal_zoom(1.5, frames=3))
    return {
        "json": json.loads(tj.to_json(path)),
        "poses": tj.to_cameractrl_poses(path),
        "look_at": {"aspect": 1.5, "intrinsics": {"fov_x_deg": 60},
                    "frames": [{"position": [0, 0, -i], "look_at": [0, 0, 5], "up": [0, -1, 0]} for i in range(3)]},
    }


def _mutate(doc, draw):
    """Replace one randomly chosen leaf or container of a JSON document by a random value."""
    if isinstance(doc, dict) and doc and draw(st.integers(0, 3)):
        key = draw(st.sampled_from(sorted(doc)))
        return {**doc, key: _mutate(doc[key], draw)}
    if isinstance(doc, list) and doc and draw(st.integers(0, 3)):
        i = draw(st.integers(0, len(doc) - 1))
        return doc[:i] + [_mutate(doc[i], draw)] + doc[i + 1:]
    return draw(json_values | st.floats(-1e308, 1e308) | st.just(float("nan")) | st.just(10 ** 400))


@FUZZ
@given(data=st.data(), which=st.sampled_from(["json", "poses", "look_at"]))
def test_mutated_valid_documents(data, which):
    doc = _mutate(_valid_documents()[which], data.draw)
    for parser in ("load", "from_json"):
        _outcome(PARSERS[parser], doc)
        _outcome(PARSERS[parser], json.dumps(doc))


@FUZZ
@given(lines=st.lists(st.lists(st.sampled_from(["0", "1", "-1", "0.5", "1e400", "nan", "x", "1e-300", "", "0.0"]),
                               min_size=15, max_size=21), min_size=0, max_size=6),
       header=st.sampled_from(["https://xxx", "", "# comment", "http://a b c"]))
def test_random_realestate10k_lines(lines, header):
    text = "\n".join([header] + [" ".join(words) for words in lines])
    _outcome(tj.from_realestate10k, text)
    _outcome(tj.load, text.encode())


def test_pathological_inputs():
    for value in ["[" * 100_000, "{" * 100_000, '{"frames": [' + "1" * 5000 + "]}", "\x00\x00", "\ud800",
                  b"\xff\xfe\x00", '{"frames": [{"w2c": [' + ",".join(["1e308"] * 16) + "]}]}",
                  [[float("nan")] * 19], [list(range(19))] * 3, np.zeros((2, 19)), {"frames": [{}]}]:
        for parser in PARSERS.values():
            _outcome(parser, value)
