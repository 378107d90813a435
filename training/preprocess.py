"""Turn downloaded RealEstate10K videos and pose files into the training layout (spec §9).

    python -m training.preprocess --poses RealEstate10K/train --videos videos/ --out data/re10k --split train \
        --captions train_captions.json --workers 4

Inputs: the pose archive's text files (`<clip>.txt`: a YouTube URL line, then one line per frame
`timestamp_us fx fy cx cy k1 k2 <3x4 w2c>`, spec §6.4), and the videos downloaded by you (any tool), named by
their YouTube id: `<videos>/<id>.mp4` (or .webm / .mkv / .mov). For every clip the frame nearest each pose
timestamp (t / 10^6 s) is grabbed and written as `video_clips/<split>/<id>/<clip>.mp4` at the source fps, or
`.../<clip>/00000.png ...` with `--format png` (frame k <-> pose line k). Clips with at least `--min-frames` poses
get `valid_metadata/<split>/<clip>.txt` = [URL, "<id>/<clip>", caption, pose lines]; `<split>_valid_list.txt`
and `<split>_video2clip.json` list them. Decoding needs PyAV (`pip install av`).

Resumable and idempotent: each clip's frames go to a temporary name and are renamed when complete, text files
are replaced atomically, the metadata file is written last, and a clip whose metadata and frames exist is
skipped. Clips whose video is missing or unreadable are logged and counted, never fatal.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from cami2v_core.files import atomic_write, write_text_atomic
from training.data import ClipError, parse_pose_lines

log = logging.getLogger("training.preprocess")

VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".mov")
FORMATS = ("mp4", "png")
_YOUTUBE_ID = re.compile(r"(?:v=|youtu\.be/|/embed/|/shorts/)([A-Za-z0-9_-]{6,})")


def youtube_id(url: str) -> str:
    """The video id of a YouTube URL (watch?v=, youtu.be/, embed/)."""
    m = _YOUTUBE_ID.search(url)
    if not m:
        raise ClipError(f"cannot find a YouTube video id in {url!r}; expected https://www.youtube.com/watch?v=ID")
    return m.group(1)


def find_video(videos: Path, vid: str) -> Path | None:
    """The downloaded file of a video id, if any."""
    for suffix in VIDEO_SUFFIXES:
        p = videos / f"{vid}{suffix}"
        if p.is_file():
            return p
    return None


def nearest_frames(frame_times_s: np.ndarray, timestamps_s: np.ndarray) -> np.ndarray:
    """Index of the decoded frame nearest each timestamp (frame_times sorted ascending)."""
    right = np.searchsorted(frame_times_s, timestamps_s).clip(1, len(frame_times_s) - 1)
    left = right - 1
    pick_left = np.abs(timestamps_s - frame_times_s[left]) <= np.abs(frame_times_s[right] - timestamps_s)
    return np.where(pick_left, left, right) if len(frame_times_s) > 1 else np.zeros(len(timestamps_s), int)


def grab_frames(video: Path, timestamps_us: np.ndarray) -> tuple[list[np.ndarray], float]:
    """RGB frames of `video` nearest each timestamp (spec §9 step 4), and the source fps."""
    try:
        import av
    except ImportError as e:
        raise SystemExit("decoding videos needs PyAV: pip install av") from e
    ts = np.asarray(timestamps_us, np.float64) / 1e6
    lo, hi = ts.min(), ts.max()
    times, frames = [], []
    try:
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate) if stream.average_rate else 30.0
            margin = 2.0 / fps
            if lo > 1.0 and stream.time_base:
                # seek to the key frame before the clip instead of decoding the whole video from its start
                container.seek(int((lo - 1.0) / stream.time_base), stream=stream, backward=True)
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                t = float(frame.pts * stream.time_base)
                if t < lo - margin:
                    continue
                times.append(t)
                frames.append(frame.to_ndarray(format="rgb24"))
                if t > hi + margin:
                    break
    except (getattr(av, "FFmpegError", OSError), OSError, ValueError) as e:
        raise ClipError(f"{video}: cannot decode: {e}") from e
    if not frames:
        raise ClipError(f"{video}: no frames between {lo:.2f}s and {hi:.2f}s (is the download complete?)")
    if times[-1] < hi - margin:
        raise ClipError(f"{video}: ends at {times[-1]:.2f}s but the clip needs frames up to {hi:.2f}s")
    picks = nearest_frames(np.asarray(times), ts)
    return [frames[i] for i in picks], fps


def write_mp4(frames: list[np.ndarray], path: Path, fps: float) -> None:
    """H.264 mp4 of RGB frames via PyAV (near-lossless crf 18), written to a temp name then renamed."""
    import av
    from fractions import Fraction

    h, w = frames[0].shape[:2]
    with atomic_write(path) as f, av.open(f, mode="w", format="mp4") as out:
        s = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        s.width, s.height = w - w % 2, h - h % 2  # yuv420p needs even sizes
        s.pix_fmt = "yuv420p"
        s.options = {"crf": "18"}
        for f in frames:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f[:s.height, :s.width]), format="rgb24")
            for packet in s.encode(vf):
                out.mux(packet)
        for packet in s.encode():
            out.mux(packet)


def write_pngs(frames: list[np.ndarray], folder: Path) -> None:
    """A folder of 00000.png ... written under a temp name then renamed."""
    from PIL import Image

    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for k, f in enumerate(frames):
        Image.fromarray(f).save(tmp / f"{k:05d}.png")
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)


def process_clip(pose_file: Path, videos: Path, out: Path, split: str, fmt: str, caption: str,
                 min_frames: int) -> str:
    """Preprocess one clip; returns 'done', 'skipped' (already there), 'short', or 'failed: <why>'."""
    clip = pose_file.stem
    meta_path = out / "valid_metadata" / split / f"{clip}.txt"
    try:
        lines = pose_file.read_text().splitlines()
        if not lines:
            raise ClipError(f"{pose_file}: empty pose file")
        url = lines[0].strip()
        vid = youtube_id(url)
        target = out / "video_clips" / split / vid / (f"{clip}.mp4" if fmt == "mp4" else clip)
        if meta_path.is_file() and target.exists():
            return "skipped"
        ts, _, _ = parse_pose_lines(lines[1:], str(pose_file))
        if len(ts) < min_frames:
            return "short"
        video = find_video(videos, vid)
        if video is None:
            raise ClipError(f"video {vid} of clip {clip} is not in {videos} (expected {vid}.mp4/.webm/.mkv/.mov)")
        frames, fps = grab_frames(video, ts)
        target.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "mp4":
            write_mp4(frames, target, fps)
        else:
            write_pngs(frames, target)
        pose_lines = [ln for ln in lines[1:] if ln.strip()]
        meta_path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(meta_path, "\n".join([url, f"{vid}/{clip}", caption, *pose_lines]) + "\n")
        return "done"
    except ClipError as e:
        return f"failed: {e}"


def write_indices(out: Path, split: str) -> int:
    """Rewrite <split>_valid_list.txt and <split>_video2clip.json from the metadata present (idempotent)."""
    meta_dir = out / "valid_metadata" / split
    clips, video2clip = [], {}
    for p in sorted(meta_dir.glob("*.txt")):
        lines = p.read_text().splitlines()
        if len(lines) < 2:
            continue
        clips.append(p.stem)
        video2clip.setdefault(lines[1].split("/")[0], []).append(p.stem)
    write_text_atomic(out / f"{split}_valid_list.txt", "".join(c + "\n" for c in clips))
    write_text_atomic(out / f"{split}_video2clip.json", json.dumps(video2clip, indent=1, sort_keys=True) + "\n")
    return len(clips)


def load_captions(path: str | None) -> dict[str, str]:
    """CameraCtrl's caption file {"<clip>.mp4" or "<clip>": [caption] or caption} -> {clip: caption}."""
    if not path:
        return {}
    raw = json.loads(Path(path).read_text())
    out = {}
    for k, v in raw.items():
        out[Path(k).stem] = v[0] if isinstance(v, list) and v else str(v)
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line entry."""
    p = argparse.ArgumentParser(prog="python -m training.preprocess", description=__doc__.split("\n")[0])
    p.add_argument("--poses", required=True, help="folder of RealEstate10K pose .txt files of one split")
    p.add_argument("--videos", required=True, help="folder of downloaded videos named <youtube id>.mp4")
    p.add_argument("--out", required=True, help="dataset folder to write (created if missing; completed if present)")
    p.add_argument("--split", default="train", help="split name to write (train or test)")
    p.add_argument("--captions", default=None, help="CameraCtrl's <split>_captions.json (optional)")
    p.add_argument("--format", choices=FORMATS, default="mp4", help="mp4 clips (default) or PNG frame folders")
    p.add_argument("--min-frames", type=int, default=16, help="keep clips with at least this many poses (16)")
    p.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    p.add_argument("--limit", type=int, default=None, help="only the first N pose files (for a quick check)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    poses, videos, out = Path(args.poses), Path(args.videos), Path(args.out)
    if not poses.is_dir():
        print(f"error: --poses {poses} is not a folder of pose .txt files", file=sys.stderr)
        return 2
    if not videos.is_dir():
        print(f"error: --videos {videos} is not a folder", file=sys.stderr)
        return 2
    files = sorted(poses.glob("*.txt"))[: args.limit]
    if not files:
        print(f"error: no .txt pose files in {poses}", file=sys.stderr)
        return 2
    captions = load_captions(args.captions)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(f, videos, out, args.split, args.format, captions.get(f.stem, ""), args.min_frames) for f in files]
    counts: dict[str, int] = {}
    if args.workers > 1:
        with ProcessPoolExecutor(args.workers) as pool:
            results = list(pool.map(process_clip, *zip(*jobs), chunksize=4))
    else:
        results = [process_clip(*j) for j in jobs]
    for f, r in zip(files, results):
        kind = r.split(":")[0]
        counts[kind] = counts.get(kind, 0) + 1
        if kind == "failed":
            log.warning("%s: %s", f.name, r[len("failed: "):])
    n = write_indices(out, args.split)
    log.info("%s: %s; %d clips listed in %s_valid_list.txt", args.split,
             ", ".join(f"{v} {k}" for k, v in sorted(counts.items())), n, args.split)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
