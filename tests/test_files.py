"""Atomic writes: permissions follow the umask, a failed write keeps the old file and leaves no temporary behind."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import torch

from cami2v_core.files import atomic_write, write_text_atomic

posix_only = pytest.mark.skipif(os.name != "posix", reason="permission bits are POSIX")


@pytest.fixture
def umask():
    """Set the process umask for one test, restoring the old one afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda value: os.umask(value)
    os.umask(old)


def mode_of(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def plain_open_mode(folder) -> int:
    """The mode a plain open(..., "w") gives under this umask: what every atomic write must match."""
    probe = folder / "probe"
    probe.write_text("x")
    out = mode_of(probe)
    probe.unlink()
    return out


@posix_only
@pytest.mark.parametrize("value", [0o022, 0o002, 0o077])
def test_written_file_has_the_mode_a_plain_open_gives(tmp_path, umask, value):
    umask(value)
    path = tmp_path / "out.bin"
    with atomic_write(path) as f:
        f.write(b"abc")
    assert path.read_bytes() == b"abc"
    assert mode_of(path) == plain_open_mode(tmp_path) == 0o666 & ~value


@posix_only
def test_umask_022_gives_0644_for_text_and_videos(tmp_path, umask):
    from cami2v_core.video_io import write_video

    umask(0o022)
    write_text_atomic(tmp_path / "a.json", "{}\n")
    write_video(torch.rand(2, 8, 8, 3), tmp_path / "v.gif")
    assert mode_of(tmp_path / "a.json") == 0o644
    assert mode_of(tmp_path / "v.gif") == 0o644


@posix_only
def test_checkpoint_and_training_writers_follow_the_umask(tmp_path, umask):
    from cami2v_core.checkpoint import save_safetensors
    from training.render import Scene, save_scene

    umask(0o022)
    save_safetensors({"w": torch.zeros(2)}, tmp_path / "m.safetensors")
    save_scene(Scene(room_size=[4.0, 3.0, 5.0], room_materials={}), tmp_path / "s.json")
    assert mode_of(tmp_path / "m.safetensors") == 0o644
    assert mode_of(tmp_path / "s.json") == 0o644


def test_an_error_mid_write_keeps_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write(path, "w") as f:
            f.write("half of the new")
            raise RuntimeError("boom")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_an_error_mid_write_leaves_nothing_when_there_was_no_file(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(tmp_path / "new.bin") as f:
            f.write(b"x")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_a_failed_video_write_keeps_the_old_video(tmp_path, monkeypatch):
    from cami2v_core import video_io

    path = tmp_path / "v.gif"
    video_io.write_video(np.zeros((2, 8, 8, 3), np.uint8), path)
    before = path.read_bytes()

    def fails_halfway(frames, f, **_):
        f.write(b"GIF89a half a video")
        raise OSError("disk full")

    monkeypatch.setattr(video_io, "_write_gif", fails_halfway)
    with pytest.raises(OSError, match="disk full"):
        video_io.write_video(np.full((2, 8, 8, 3), 255, np.uint8), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["v.gif"]


def test_text_is_utf8_and_mode_is_checked(tmp_path):
    write_text_atomic(tmp_path / "t.txt", "Plücker ✓\n")
    assert (tmp_path / "t.txt").read_bytes() == "Plücker ✓\n".encode()
    with pytest.raises(ValueError, match="'wb' or 'w'"):
        with atomic_write(tmp_path / "x", "a"):
            pass
