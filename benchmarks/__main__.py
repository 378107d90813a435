"""python -m benchmarks [--quick] [--device cpu|cuda] [--json OUT.json]: speed and memory of DynamiCrafter,
CameraCtrl and CamI2V at 256x256, printed as one JSON object (docs/performance.md explains every field)."""

from __future__ import annotations

import argparse
import json
import sys

import torch

from .models import VARIANTS
from .runner import Settings, run
from cami2v_core.modules.epipolar import KERNELS

# --quick: fits a 60-second budget. A CPU cannot run 16-frame UNet forwards of three models in that time (one takes
# 30-60 s on two cores), so the CPU quick run uses 2 frames; on CUDA it keeps the real 16.
QUICK_CPU = dict(frames=2, steps=1, repeats=1)
QUICK_CUDA = dict(frames=16, steps=2, repeats=2)
FULL_CPU = dict(frames=16, steps=2, repeats=3)
FULL_CUDA = dict(frames=16, steps=25, repeats=5)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a run that fits 60 seconds (fewer frames on CPU)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    p.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default=None,
                   help="weights and activations (default: fp32 on CPU, fp16 on CUDA)")
    p.add_argument("--json", metavar="OUT.json", help="also write the report to this file")
    p.add_argument("--frames", type=int, help="frames per video (16 for the released models)")
    p.add_argument("--steps", type=int, help="DDIM steps of the sampling run")
    p.add_argument("--repeats", type=int, help="UNet forwards per model (the median is reported)")
    p.add_argument("--models", default=",".join(VARIANTS), help=f"comma list out of {', '.join(VARIANTS)}")
    p.add_argument("--kernel", choices=KERNELS, default="auto", help="epipolar attention kernel (auto = gathered "
                   "where it is faster)")
    p.add_argument("--trajectory", default="orbit left", help="a trajectories preset name")
    p.add_argument("--no-batch-branches", action="store_true", help="run the guidance branches one by one")
    p.add_argument("--levels", action=argparse.BooleanOptionalAction, default=None,
                   help="time epipolar attention alone per mask level, dense against gathered (default: on, "
                        "off for --quick on CPU)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--size", choices=("256", "tiny"), default="256",
                   help="256: the released architectures; tiny: the golden fixtures' miniature (a smoke test)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return p.parse_args(argv)


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Defaults by device and --quick, then the explicit options on top."""
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for but torch sees no CUDA device; use --device cpu")
    defaults = {("cpu", True): QUICK_CPU, ("cpu", False): FULL_CPU, ("cuda", True): QUICK_CUDA,
                ("cuda", False): FULL_CUDA}[(device, bool(args.quick))]
    variants = tuple(v.strip() for v in args.models.split(",") if v.strip())
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise SystemExit(f"--models takes a comma list out of {', '.join(VARIANTS)}; got {args.models!r}")
    values = dict(defaults)
    for name in ("frames", "steps", "repeats"):
        value = getattr(args, name)
        if value is not None:
            if value < 1:
                raise SystemExit(f"--{name} must be >= 1; got {value}")
            values[name] = value
    if not 1 <= values["frames"] <= 16:
        raise SystemExit(f"--frames must be 1..16 (the pose encoder's position table has 16 rows); got "
                         f"{values['frames']}")
    notes = []
    if args.size == "tiny":
        values["frames"] = min(values["frames"], 8) if args.frames is None else values["frames"]
        notes.append("tiny models (golden fixture size): a smoke test of the benchmark, not a measurement")
    elif values["frames"] != 16:
        notes.append(f"{values['frames']} frames, not 16: epipolar attention grows with frames squared, the rest "
                     "of the UNet linearly, so the ratios are below those at 16 frames")
    levels = args.levels if args.levels is not None else not (args.quick and device == "cpu")
    return Settings(device=device, dtype=args.dtype or ("fp32" if device == "cpu" else "fp16"), levels=levels,
                    batch_branches=not args.no_batch_branches, trajectory=args.trajectory, variants=variants,
                    kernel=args.kernel, quick=bool(args.quick), notes=notes, size=args.size, **values)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = settings_from_args(args)
    log = (lambda *a: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    report = run(settings, log=log)
    text = json.dumps(report, indent=2, sort_keys=False)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
