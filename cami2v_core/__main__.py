"""Command line: `python -m cami2v_core generate ...`, `inspect FILE` and `convert IN OUT.safetensors`.

Each subcommand is one `_add_<name>(subparsers)` function that declares its arguments and sets `func`; errors a user
can fix are printed as one message with exit status 2, never as a traceback (set CAMI2V_DEBUG=1 to see one).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .checkpoint import (CONFIG_METADATA_KEY, CheckpointError, detect_partial, detect_variant, find_base,
                         infer_config, load_shapes, parse_dtype, summarize)
from .configs import PRESETS, ConfigError, resolve_config
from .errors import CamI2VError
from .settings import DEFAULTS

EXIT_USAGE = 2


def _inspect(args) -> int:
    path = Path(args.file)
    sd, metadata = load_shapes(path)
    stats = summarize(sd)
    partial = detect_partial(sd, metadata, path.name)
    if partial is not None:
        return _inspect_partial(args, path, sd, partial, stats)
    config = infer_config(sd, metadata, source=str(path))
    source = "file header" if CONFIG_METADATA_KEY in metadata else "detected from keys"
    preset = _preset_name(config)
    info = {
        "file": str(path),
        "partial": False,
        "variant": config.variant,
        "resolution": list(config.resolution),
        "prediction": config.parameterization,
        "preset": preset,
        "translation_unit": config.translation_unit,
        "config_source": source,
        **_stats_fields(stats),
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"file        {info['file']}")
    print(f"model       {config.variant}  {config.resolution[0]}x{config.resolution[1]}  "
          f"{config.parameterization}-prediction  (preset: {preset or 'custom'}; {source})")
    _print_stats(stats)
    return 0


def _stats_fields(stats: dict) -> dict:
    """The size fields `inspect` reports for any file (checkpoint.summarize's numbers under their JSON names)."""
    return {"dtypes": stats["dtypes"], "keys": stats["keys"], "parameters": stats["parts"], "total": stats["numel"]}


def _inspect_partial(args, path, sd, partial, stats) -> int:
    """inspect for a partial file: what it is, which base it needs and whether one was found."""
    config = partial.config or (PRESETS[partial.preset] if partial.preset else None)
    try:
        found = str(find_base(partial, sd, path.parent, args.search_dir or (), str(path)))
    except CheckpointError:
        found = None
    bases = [partial.base] if partial.base else None
    info = {
        "file": str(path),
        "partial": True,
        "variant": detect_variant(sd).variant,
        "resolution": list(config.resolution) if config else None,
        "prediction": config.parameterization if config else None,
        "preset": partial.preset,
        "translation_unit": config.translation_unit if config else None,
        "base": {"file": partial.base.label if partial.base else "DynamiCrafter model.ckpt",
                 "url": partial.base.url if partial.base else None, "found": found},
        **_stats_fields(stats),
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"file        {info['file']}")
    size = f"{config.resolution[0]}x{config.resolution[1]}  " if config else ""
    print(f"model       partial: {info['variant']} camera layers only  {size}(preset: {partial.preset or 'unknown'})")
    need = ", ".join(f"{b.label} ({b.url})" for b in bases) if bases else "DynamiCrafter model.ckpt (256 or 512)"
    print(f"base        needs {need}")
    print(f"            {'found: ' + found if found else 'not found: ' + partial.download_hint(path.parent)}")
    _print_stats(stats)
    return 0


def _print_stats(stats) -> None:
    print("dtype       " + ", ".join(f"{k} ({v:,} elements)" for k, v in stats["dtypes"].items()))
    print(f"keys        {stats['keys']:,}")
    print("parameters")
    for part, n in stats["parts"].items():
        print(f"  {part:<24}{n:>16,}")
    print(f"  {'total':<24}{stats['numel']:>16,}")


def _preset_name(config) -> str | None:
    """The preset a config equals, or 'tiny (motionctrl)' when it is a preset turned into another variant."""
    for name, cfg in PRESETS.items():
        if cfg == config:
            return name
    for name, cfg in PRESETS.items():
        try:
            if cfg.with_variant(config.variant, pose_dim=config.pose_dim or 12) == config:
                return f"{name} ({config.variant})"
        except ConfigError:
            continue
    return None


def _add_inspect(sub) -> None:
    p = sub.add_parser("inspect", help="show what a checkpoint holds (variant, resolution, dtype, parameters)",
                       description="Show a checkpoint's variant, resolution, prediction type, dtypes and parameter "
                                   "counts per part, reading only its header where the format allows.")
    p.add_argument("file", help="checkpoint: .safetensors, .pt or .ckpt")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    _add_base_arguments(p, with_base=False)
    p.set_defaults(func=_inspect)


def _add_base_arguments(p, with_base: bool = True) -> None:
    """--base / --search-dir: where a partial file's DynamiCrafter base is (RealCam-I2V releases)."""
    if with_base:
        p.add_argument("--base", default=None,
                       help="DynamiCrafter model.ckpt a partial checkpoint (RealCam-I2V) merges over; default: "
                            "found next to the checkpoint or in a --search-dir")
    p.add_argument("--search-dir", action="append", default=None, metavar="DIR",
                   help="folder to look for a partial checkpoint's base in (DIR/DynamiCrafter_512/model.ckpt, ...); "
                        "repeatable")


def _convert(args) -> int:
    from .checkpoint import convert

    config = resolve_config(args.config) if args.config else None
    merged = detect_partial(*load_shapes(args.input), Path(args.input).name) is not None
    config = convert(args.input, args.output, dtype=parse_dtype(args.dtype), config=config, base=args.base,
                     search_dirs=args.search_dir or ())
    what = ", merged over its DynamiCrafter base" if merged else ""
    print(f"wrote {args.output} ({_preset_name(config) or config.variant} {config.resolution[0]}x"
          f"{config.resolution[1]}{what}, config in header)")
    return 0


def _add_convert(sub) -> None:
    p = sub.add_parser("convert", help="convert a .pt/.ckpt checkpoint to .safetensors",
                       description="Convert a checkpoint to safetensors (written atomically) with its model config "
                                   f"stored in the header under '{CONFIG_METADATA_KEY}'. Never runs code from IN.")
    p.add_argument("input", help="checkpoint to read: .pt, .ckpt or .safetensors")
    p.add_argument("output", help="file to write, ending in .safetensors")
    p.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default=None,
                   help="cast floating tensors (default: keep the stored dtype)")
    p.add_argument("--config", default=None,
                   help="preset name or original YAML to record instead of the detected one (custom models)")
    _add_base_arguments(p)
    p.set_defaults(func=_convert)


# -- generate ------------------------------------------------------------------------------------------------------

def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (argparse turns the ValueError into a usage message)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


def _load_camera(spec: str, frames: int, ratio: float | None):
    """A trajectory with exactly `frames` poses from a preset name, a pose JSON or a RealEstate10K text file."""
    import trajectories

    name = trajectories.find_preset(spec)
    if name is not None:
        # Presets are built for the model's frame count directly, with the demo's ratio slider (spec §6.5).
        kwargs = {} if ratio is None else {"ratio": ratio}
        return trajectories.preset(name, frames=frames, **kwargs)
    trajectory, note = trajectories.fit_frames(trajectories.load(spec), frames)
    if note:
        print(f"note: {note}", file=sys.stderr)
    return trajectory


def _generate(args) -> int:
    import torch

    from . import pipeline
    from .bundled import bundled_model_path
    from .model import load_model
    from .video_io import VIDEO_SUFFIXES, MediaError, read_image, write_video

    user_errors = CamI2VError  # every error a user can act on, from the core and from trajectories/
    try:
        # Cheap checks first, so a typo never waits for a model to load.
        out = Path(args.out)
        if out.suffix.lower() not in VIDEO_SUFFIXES:
            raise MediaError(f"--out must end in {', '.join(VIDEO_SUFFIXES)}; got {str(out)!r}")
        if out.suffix.lower() == ".mp4":
            try:
                import av  # noqa: F401
            except ImportError:
                raise MediaError("writing .mp4 needs PyAV, which is not installed: `pip install av`, or use "
                                 "--out with .gif or .webp") from None
        if not out.parent.exists():
            raise MediaError(f"the output folder {str(out.parent)!r} does not exist; create it first")
        image = read_image(args.image)
        ckpt = args.ckpt or bundled_model_path()
        if ckpt is None:
            raise MediaError("no --ckpt given and this install has no bundled tiny model; pass --ckpt with a "
                             "CamI2V / CameraCtrl / MotionCtrl / DynamiCrafter checkpoint")
        device = args.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = args.dtype or ("fp16" if torch.device(device).type == "cuda" else "fp32")
        model = load_model(ckpt, device=device, dtype=dtype, config=args.config, base=args.base,
                           search_dirs=args.search_dir or (), vae_dtype=args.vae_dtype)
        trajectory = _load_camera(args.camera, model.config.temporal_length, args.ratio)
        _, unit_note = pipeline.camera_scale(trajectory, model.config.translation_unit, args.trace_scale)
        fit_note = pipeline.describe_fit(tuple(image.shape[:2]), model.config.resolution, args.fit)
        for note in (unit_note, fit_note):
            if note:
                print(f"note: {note}", file=sys.stderr)

        bar = None
        if not args.quiet:
            from tqdm import tqdm

            bar = tqdm(total=args.steps, desc="sampling", unit="step", file=sys.stderr)

        def progress(info):
            if bar is not None:
                bar.update(1)

        try:
            frames = pipeline.generate(
                model, image, trajectory, args.prompt, args.negative_prompt,
                use_trajectory_intrinsics=args.pose_intrinsics, decode_chunk=args.decode_chunk, offload=args.offload,
                sampler=args.sampler, steps=args.steps, cfg_text=args.cfg_text, cfg_image=args.cfg_image,
                cfg_camera=args.cfg_camera, camera_schedule=args.camera_schedule, guidance_rescale=args.rescale,
                eta=args.eta, seed=args.seed,
                frame_stride=args.frame_stride, cond_frame_index=args.cond_frame, trace_scale=args.trace_scale,
                callback=progress, fit=args.fit)
        finally:
            if bar is not None:
                bar.close()
        fps = args.fps if args.fps is not None else DEFAULTS.playback_fps(args.frame_stride)
        write_video(frames, out, fps=fps)
    except user_errors as e:
        if os.environ.get("CAMI2V_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except torch.OutOfMemoryError:
        if os.environ.get("CAMI2V_DEBUG"):
            raise
        print("error: out of GPU memory; try --offload, --dtype fp16 or --device cpu", file=sys.stderr)
        return EXIT_USAGE
    h, w = frames.shape[1:3]
    print(f"wrote {out} ({frames.shape[0]} frames, {w}x{h}, seed {args.seed})")
    return 0


def _add_generate(sub) -> None:
    from .sampling import CAMERA_SCHEDULES, SAMPLERS

    p = sub.add_parser("generate", help="image + camera path + prompt -> video (.gif / .webp / .mp4)",
                       description="Generate a camera-controlled video from one picture. Without --ckpt the bundled "
                                   "tiny model is used. Defaults follow the CamI2V demo (spec §7.6).")
    p.add_argument("--image", required=True, help="input picture (PNG, JPEG, WebP, ...), any size and aspect ratio")
    p.add_argument("--camera", required=True,
                   help="camera path: a preset name, a pose .json or a RealEstate10K .txt; resampled to the "
                        "model's frame count when it has a different number of poses")
    p.add_argument("--ratio", type=float, default=DEFAULTS.ratio,
                   help=f"for a preset: fraction of the demo's path the video covers (default {DEFAULTS.ratio}, as "
                        f"the nodes and the README gallery; the demo's slider starts at 0.1)")
    p.add_argument("--fit", choices=("crop", "pad", "stretch"), default="crop",
                   help="how a picture of another shape meets the model's frame: crop (cover + centre-crop, the "
                        "original's; default), pad (keep it whole, fill the borders with its edge pixels), stretch")
    p.add_argument("--prompt", default="", help="what the video shows")
    p.add_argument("--negative-prompt", default=DEFAULTS.negative_prompt,
                   help="unconditional text for guidance (default: the demos' negative prompt, "
                        f"{DEFAULTS.negative_prompt[:24]!r}...; '' = the trainer's)")
    p.add_argument("--out", required=True, help="output video: .gif or .webp (Pillow), .mp4 (needs PyAV)")
    p.add_argument("--ckpt", default=None, help="checkpoint (.safetensors, .pt, .ckpt); default: bundled tiny model")
    _add_base_arguments(p)
    p.add_argument("--config", default=None,
                   help="preset name or original YAML, for checkpoints whose model cannot be detected")
    p.add_argument("--sampler", choices=SAMPLERS, default="ddim",
                   help="ddim: the original's sampler (default); dpmpp_2m, unipc: deterministic ODE solvers for "
                        "fewer steps (8-16), which ignore --eta")
    p.add_argument("--steps", type=_positive_int, default=DEFAULTS.steps,
                   help=f"sampling steps = guided model calls (default {DEFAULTS.steps}, the released DDIM setting)")
    p.add_argument("--cfg-text", type=float, default=DEFAULTS.cfg_text,
                   help=f"text guidance scale (default {DEFAULTS.cfg_text}, the demo's; the paper's tables use 7.5)")
    p.add_argument("--cfg-image", type=float, default=None,
                   help="image guidance scale (default: same as --cfg-text, the original's joint scale)")
    p.add_argument("--cfg-camera", type=float, default=DEFAULTS.cfg_camera,
                   help="camera guidance scale; 1 = off (the released setting), > 1 adds a no-camera pass")
    p.add_argument("--camera-schedule", choices=CAMERA_SCHEDULES, default=DEFAULTS.camera_schedule,
                   help="camera guidance weight over time (default constant)")
    p.add_argument("--rescale", type=float, default=DEFAULTS.guidance_rescale,
                   help=f"guidance rescale phi in [0, 1] (default {DEFAULTS.guidance_rescale})")
    p.add_argument("--eta", type=float, default=DEFAULTS.eta,
                   help="DDIM eta: 1 = stochastic (released), 0 = deterministic; unused by the other samplers")
    p.add_argument("--seed", type=int, default=DEFAULTS.seed,
                   help=f"random seed (default {DEFAULTS.seed}, the demo's)")
    p.add_argument("--frame-stride", type=_positive_int, default=DEFAULTS.frame_stride,
                   help=f"frame stride conditioning: larger = more motion (default {DEFAULTS.frame_stride}, the "
                        f"demo's; the paper's evaluation uses 8)")
    p.add_argument("--trace-scale", type=float, default=DEFAULTS.trace_scale,
                   help="multiply the camera path's translations (RealCam-I2V: see README, how far does 1.0 move)")
    p.add_argument("--cond-frame", type=int, default=DEFAULTS.cond_frame,
                   help="index of the frame the picture becomes (default 0)")
    p.add_argument("--pose-intrinsics", action="store_true",
                   help="use the camera file's intrinsics instead of the demo's 90-degree default")
    p.add_argument("--fps", type=float, default=None,
                   help=f"frame rate of the written video (default: {DEFAULTS.source_fps} / frame stride, the source "
                        f"clips' speed, as the nodes)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    p.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default=None,
                   help="weights dtype (default: fp16 on CUDA, fp32 on CPU)")
    p.add_argument("--vae-dtype", choices=("fp32", "fp16", "bf16"), default=None,
                   help="the VAE's own dtype (default: the same as --dtype); bf16 if an fp16 decode overflows")
    p.add_argument("--offload", action="store_true",
                   help="keep encoders and VAE on the CPU while the UNet samples (less GPU memory)")
    p.add_argument("--decode-chunk", type=_positive_int, default=4, help="frames per VAE decode call (default 4)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_generate)


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of `python -m cami2v_core`."""
    parser = argparse.ArgumentParser(prog="python -m cami2v_core",
                                     description="CamI2V camera-controlled image-to-video: checkpoint tools.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_generate(sub)
    _add_inspect(sub)
    _add_convert(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CamI2VError, OSError) as e:
        if os.environ.get("CAMI2V_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
