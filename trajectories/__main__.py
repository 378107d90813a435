"""Command line for camera paths: list the presets, draw or animate a path, convert between formats.

    python -m trajectories list
    python -m trajectories show "orbit left" --ratio 0.6 --out orbit.png [--image photo.jpg --gif orbit.gif]
    python -m trajectories convert my_path.txt --to json --out my_path.json
A path is a preset name (with --frames/--ratio/--scale as in the demo) or a pose file (JSON, RealEstate10K text, or
a CAMERACTRL_POSES JSON list; --frames resamples it with SLERP).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import combinators, formats, presets, preview
from .errors import TrajectoryError

CONVERSIONS = ("json", "poses", "realestate10k")


def _path(args):
    """The path named on the command line."""
    name = presets.find_preset(args.path)
    if name is not None:
        return presets.preset(name, frames=args.frames or 16, ratio=args.ratio, scale=args.scale)
    path = formats.load(Path(args.path) if Path(args.path).is_file() else args.path)
    if args.frames:
        path = combinators.resample(path, args.frames)
    return path.scaled(args.scale) if args.scale != 1.0 else path


def main(argv=None) -> int:
    """Run the command line; returns the exit status (2 for unusable input)."""
    parser = argparse.ArgumentParser(prog="python -m trajectories", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the demo's named motions")
    for name, help_text in (("show", "draw the path (and animate a picture along it)"),
                            ("convert", "write the path in another format")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("path", help="preset name or pose file")
        p.add_argument("--frames", type=int, default=None, help="poses to make (presets: default 16)")
        p.add_argument("--ratio", type=float, default=presets.DEFAULT_RATIO,
                       help="presets: fraction of the demo path covered (default %(default)s)")
        p.add_argument("--scale", type=float, default=presets.DEFAULT_SCALE, help="multiply translations")
        p.add_argument("--out", help="output file (show: .png; convert: default stdout)")
    show = sub.choices["show"]
    show.add_argument("--image", help="a picture to warp along the path (planar-scene preview)")
    show.add_argument("--gif", help="where to write that animation (.gif)")
    show.add_argument("--depth", type=float, default=2.0, help="distance of the picture plane (default 2)")
    sub.choices["convert"].add_argument("--to", choices=CONVERSIONS, default="json")
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            for p in presets.PRESETS.values():
                print(f"{p.name:24s} {p.poses:4d} poses  {p.description}")
            return 0
        path = _path(args)
        if args.command == "convert":
            text = {"json": lambda: path.to_json(), "poses": lambda: json.dumps(path.to_cameractrl_poses()),
                    "realestate10k": lambda: path.to_realestate10k()}[args.to]()
            if args.out:
                Path(args.out).write_text(text, encoding="utf-8")
            else:
                sys.stdout.write(text)
            return 0
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
    except (TrajectoryError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
