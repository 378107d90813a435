"""Command line: `python -m cami2v_core inspect FILE` and `python -m cami2v_core convert IN OUT.safetensors`.

Each subcommand is one `_add_<name>(subparsers)` function that declares its arguments and sets `func`; errors a user
can fix are printed as one message with exit status 2, never as a traceback (set CAMI2V_DEBUG=1 to see one).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .checkpoint import (CONFIG_METADATA_KEY, CheckpointError, infer_config, load_shapes, parse_dtype,
                         summarize)
from .configs import PRESETS, ConfigError, resolve_config

EXIT_USAGE = 2


def _inspect(args) -> int:
    path = Path(args.file)
    sd, metadata = load_shapes(path)
    stats = summarize(sd)
    config = infer_config(sd, metadata, source=str(path))
    source = "file header" if CONFIG_METADATA_KEY in metadata else "detected from keys"
    preset = _preset_name(config)
    info = {
        "file": str(path),
        "variant": config.variant,
        "resolution": list(config.resolution),
        "prediction": config.parameterization,
        "preset": preset,
        "config_source": source,
        "dtypes": stats["dtypes"],
        "keys": stats["keys"],
        "parameters": stats["parts"],
        "total": stats["numel"],
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"file        {info['file']}")
    print(f"model       {config.variant}  {config.resolution[0]}x{config.resolution[1]}  "
          f"{config.parameterization}-prediction  (preset: {preset or 'custom'}; {source})")
    print("dtype       " + ", ".join(f"{k} ({v:,} elements)" for k, v in stats["dtypes"].items()))
    print(f"keys        {stats['keys']:,}")
    print("parameters")
    for part, n in stats["parts"].items():
        print(f"  {part:<24}{n:>16,}")
    print(f"  {'total':<24}{stats['numel']:>16,}")
    return 0


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
    p.set_defaults(func=_inspect)


def _convert(args) -> int:
    from .checkpoint import convert

    config = resolve_config(args.config) if args.config else None
    config = convert(args.input, args.output, dtype=parse_dtype(args.dtype), config=config)
    print(f"wrote {args.output} ({config.variant} {config.resolution[0]}x{config.resolution[1]}, config in header)")
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
    p.set_defaults(func=_convert)


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of `python -m cami2v_core`."""
    parser = argparse.ArgumentParser(prog="python -m cami2v_core",
                                     description="CamI2V camera-controlled image-to-video: checkpoint tools.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # `generate` (image + prompt + trajectory -> video through cami2v_core.pipeline) belongs here as
    # `_add_generate(sub)`, declared like the two below.
    _add_inspect(sub)
    _add_convert(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CheckpointError, ConfigError, OSError) as e:
        if os.environ.get("CAMI2V_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
