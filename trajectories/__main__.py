"""Command line for camera paths: list the presets, draw or animate a path, convert between formats.

    python -m trajectories list
    python -m trajectories show "orbit left" --ratio 0.6 --out orbit.png [--image photo.jpg --gif orbit.gif]
    python -m trajectories convert my_path.txt --to json --out my_path.json
    python -m trajectories convert colmap/sparse/0 transforms.json        # formats from the names
    python -m trajectories from-video clip.mp4 --out path.json [--frames 16] [--fov 60] [--smooth 1]
A path is a preset name (with --frames/--ratio/--scale as in the demo) or a pose file (pose JSON, RealEstate10K text,
a CAMERACTRL_POSES JSON list, a nerfstudio / instant-ngp transforms.json, or a COLMAP text model folder); --frames
resamples it with SLERP. convert's output format comes from --to, else from the output name: transforms*.json ->
transforms, other .json -> pose JSON, .txt -> RealEstate10K, a folder (existing, ending in '/', or without a suffix)
or cameras.txt / images.txt -> COLMAP text model.
from-video copies the camera move of a video file or a folder of frames (structure from motion: needs pycolmap,
see trajectories/from_video.py); --out names the format as for convert; progress and a report go to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace

from . import colmap, combinators, formats, nerfstudio, presets, preview, reading
from .errors import TrajectoryError
from cami2v_core.errors import CamI2VError

CONVERSIONS = ("json", "poses", "realestate10k", "transforms", "colmap")
SIZED = ("transforms", "colmap")  # formats that store pixel intrinsics, so --size applies


def _path(args):
    """The path named on the command line."""
    name = presets.find_preset(args.path)
    if name is not None:
        return presets.preset(name, frames=args.frames or 16, ratio=args.ratio, scale=args.scale)
    path = reading.load(Path(args.path) if Path(args.path).exists() else args.path)
    if args.frames:
        path = combinators.resample(path, args.frames)
    return path.scaled(args.scale) if args.scale != 1.0 else path


def output_format(out: str | None) -> str:
    """The format a convert output name asks for (module docstring); pose JSON for stdout."""
    if out is None:
        return "json"
    path = Path(out)
    name = path.name.lower()
    if out.endswith(("/", "\\")) or path.is_dir() or name in colmap.FILES or not path.suffix:
        return "colmap"
    if path.suffix.lower() == ".json":
        return "transforms" if name.startswith("transforms") else "json"
    if path.suffix.lower() == ".txt":
        return "realestate10k"
    raise TrajectoryError(f"cannot tell the output format from {path.name!r}; name it .json, .txt or a folder, or "
                          f"give --to ({', '.join(CONVERSIONS)})")


def _size(text: str | None) -> tuple[int | None, int | None]:
    if text is None:
        return None, None
    parts = text.lower().split("x")
    try:
        width, height = (int(p) if p else None for p in parts)
    except ValueError:
        raise TrajectoryError(f"--size must be WIDTHxHEIGHT in pixels (1920x1080; 1920x or x1080 for one side), "
                              f"found {text!r}") from None
    return width, height


def _convert(path, args) -> int:
    if args.output and args.out:
        raise TrajectoryError("give the output once: as the second argument or as --out")
    out = args.output or args.out
    kind = args.to or output_format(out)
    width, height = _size(args.size)
    if args.size and kind not in SIZED:
        raise TrajectoryError(f"--size applies to {' and '.join(SIZED)} output (pixel intrinsics); {kind} stores "
                              f"normalised intrinsics")
    if kind == "colmap":
        if not out:
            raise TrajectoryError("a COLMAP model is a folder of files; give the folder to write")
        folder = Path(out).parent if Path(out).name.lower() in colmap.FILES else Path(out)
        colmap.write_colmap(path, folder, width, height)
        return 0
    text = {"json": lambda: formats.to_json(path), "poses": lambda: json.dumps(formats.to_cameractrl_poses(path)),
            "realestate10k": lambda: formats.to_realestate10k(path),
            "transforms": lambda: nerfstudio.to_transforms_json(path, width, height)}[kind]()
    if out:
        Path(out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def _intrinsics(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 4:
        raise TrajectoryError(f"--intrinsics must be fx,fy,cx,cy normalised by the width / height (0.6,0.8,0.5,0.5), "
                              f"found {text!r}")
    return values


def _from_video(args) -> int:
    from . import from_video

    def say(message):
        if not args.quiet:
            print(message, file=sys.stderr, flush=True)

    result = from_video.path_from_video(
        args.source, frames_out=args.frames or 16, sfm_frames=args.sfm_frames, size=args.sfm_size, progress=say,
        intrinsics=_intrinsics(args.intrinsics) if args.intrinsics else None, fov_deg=args.fov,
        smooth_frames=args.smooth, normalize=args.normalize, seed=args.seed, threads=args.threads,
        robust_features=args.robust_features)
    for line in result.report():
        print(line, file=sys.stderr)
    return _convert(result.path, SimpleNamespace(output=None, out=args.out, to=None, size=None))


def _from_video_parser(sub):
    from .from_video import DEFAULT_SFM_FRAMES, DEFAULT_SIZE, NORMALIZATIONS

    p = sub.add_parser("from-video", help="copy the camera move of a video (structure from motion; needs pycolmap)")
    p.add_argument("source", help="video file (needs PyAV) or folder of frames (name order)")
    p.add_argument("--out", help="output file or COLMAP folder, format from the name as for convert (default: pose "
                                 "JSON on stdout)")
    p.add_argument("--frames", type=int, default=None, help="poses of the output path (default 16, the model's)")
    camera = p.add_mutually_exclusive_group()
    camera.add_argument("--fov", type=float, default=None, help="horizontal field of view in degrees (default: "
                                                                "estimated)")
    camera.add_argument("--intrinsics", default=None, help="fx,fy,cx,cy normalised by the width / height (default: "
                                                           "estimated)")
    p.add_argument("--smooth", type=float, default=0.0, help="Gaussian smoothing over time, sigma in output frames "
                                                             "(default 0: none)")
    p.add_argument("--normalize", choices=NORMALIZATIONS, default="depth",
                   help="scale: 'depth' puts the first frame's near scene at distance 1 (RealEstate10K-like, "
                        "default); 'length' makes the largest distance from the first camera 1")
    p.add_argument("--sfm-frames", type=int, default=DEFAULT_SFM_FRAMES,
                   help="frames of the clip, evenly spaced, given to structure from motion (default %(default)s)")
    p.add_argument("--sfm-size", type=int, default=DEFAULT_SIZE,
                   help="long side in pixels of the frames structure from motion sees (default %(default)s)")
    p.add_argument("--robust-features", action="store_true",
                   help="SIFT with affine shapes and domain-size pooling: several times slower, finds more on small "
                        "or soft frames")
    p.add_argument("--threads", type=int, default=-1, help="CPU threads (default -1: all)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the reconstruction (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def main(argv=None) -> int:
    """Run the command line; returns the exit status (2 for unusable input)."""
    parser = argparse.ArgumentParser(prog="python -m trajectories", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the demo's named motions")
    for name, help_text in (("show", "draw the path (and animate a picture along it)"),
                            ("convert", "write the path in another format")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("path", help="preset name, pose file or COLMAP model folder")
        p.add_argument("--frames", type=int, default=None, help="poses to make (presets: default 16)")
        p.add_argument("--ratio", type=float, default=presets.DEFAULT_RATIO,
                       help="presets: fraction of the demo path covered (default %(default)s)")
        p.add_argument("--scale", type=float, default=presets.DEFAULT_SCALE, help="multiply translations")
        p.add_argument("--out", help="output file (show: .png; convert: default stdout)")
    _from_video_parser(sub)
    show = sub.choices["show"]
    show.add_argument("--image", help="a picture to warp along the path (planar-scene preview)")
    show.add_argument("--gif", help="where to write that animation (.gif)")
    show.add_argument("--depth", type=float, default=2.0, help="distance of the picture plane (default 2)")
    convert = sub.choices["convert"]
    convert.add_argument("output", nargs="?", help="output file or COLMAP folder (same as --out)")
    convert.add_argument("--to", choices=CONVERSIONS, default=None,
                         help="output format (default: from the output name; pose JSON on stdout)")
    convert.add_argument("--size", help="transforms / colmap: image size WIDTHxHEIGHT in pixels (default: from "
                                        "the path's aspect, at least 512 high)")
    # argparse gives an optional second positional nothing once an option follows the first ("convert PATH --frames
    # 8 OUT"), so a leftover word is taken as convert's output.
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "convert" and args.output is None and len(extra) == 1 and extra[0][:1] != "-":
        args.output, extra = extra[0], []
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command == "list":
            for p in presets.PRESETS.values():
                print(f"{p.name:24s} {p.poses:4d} poses  {p.description}")
            return 0
        if args.command == "from-video":
            return _from_video(args)
        path = _path(args)
        if args.command == "convert":
            return _convert(path, args)
        if not args.out and not args.gif:
            raise TrajectoryError("give --out picture.png and/or --image photo.jpg --gif preview.gif")
        if args.out:
            preview.draw_path(path, title=args.path).save(args.out)
        if args.gif:
            if not args.image:
                raise TrajectoryError("--gif needs --image, the picture to animate")
            from PIL import Image
            with Image.open(args.image) as img:
                frames = preview.warp_preview(img, path, plane_depth=args.depth)
            preview.save_animation(frames, args.gif)
        return 0
    except (CamI2VError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
