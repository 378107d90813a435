"""Export a training checkpoint as a release file: fp16 safetensors, released key layout, config in the header.

    python -m training.export runs/tiny_synthetic/checkpoints/step_00001500 \
        --out cami2v_core/weights/cami2v-tiny-synthetic.safetensors --ema --max-mb 25

    python -m training.export cami2v_core/weights/cami2v-tiny-synthetic.safetensors --vae-only --dtype fp32 \
        --out runs/vae_bundled/vae.safetensors

The first form's file loads with `cami2v_core.load_model` (no preset needed: the `cami2v_config` header entry says what to
build) and is what `python -m cami2v_core generate` and the ComfyUI loader use by default when it is the bundled
model. The second copies out only the VAE (with its `latent_std`), the `init_parts` / `scale_factor_from` file of
a training config (training/experiments/compare/*.yaml), so new models can be trained on the same latent space.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from cami2v_core.checkpoint import CONFIG_METADATA_KEY, load_state_dict, parse_dtype, save_safetensors
from cami2v_core.model import load_model
from training.train_vae import VAE_STD_METADATA_KEY


def export(checkpoint: Path, out: Path, ema: bool = True, dtype: str = "fp16", max_mb: float | None = None,
           note: dict | None = None, decoder: Path | None = None) -> dict:
    """Write `out` from a checkpoints/step_X folder (or a model file); returns the header metadata written."""
    src = checkpoint
    if checkpoint.is_dir():
        src = checkpoint / ("ema.safetensors" if ema and (checkpoint / "ema.safetensors").is_file()
                            else "model.safetensors")
    sd, meta = load_state_dict(src, dtype=parse_dtype(dtype))
    if CONFIG_METADATA_KEY not in meta:
        raise SystemExit(f"{src} has no {CONFIG_METADATA_KEY!r} header entry; export files written by training.train")
    if decoder is not None:
        # A decoder fine-tuned on the same frozen encoder (training.train_vae --decoder-only) draws the same latent
        # space better; the encoder must be bit-identical or the diffusion model would see other latents.
        vae, _ = load_state_dict(decoder, dtype=parse_dtype(dtype))
        vae = {k: v for k, v in vae.items() if k.startswith("first_stage_model.")}
        same_encoder = all(torch.equal(vae[k], sd[k]) for k in vae if ".encoder." in k or ".quant_conv." in k)
        if set(vae) != {k for k in sd if k.startswith("first_stage_model.")} or not same_encoder:
            raise SystemExit(f"{decoder}: its encoder differs from the checkpoint's; only a decoder trained with "
                             "--decoder-only from the checkpoint's own VAE can be swapped in")
        sd.update(vae)
    source = f"{checkpoint.name}/{src.name}" + (f" + decoder {decoder}" if decoder else "")
    header = {CONFIG_METADATA_KEY: meta[CONFIG_METADATA_KEY], "format": "cami2v-release", "source": source,
              "training_step": meta.get("training_step", "")}
    header.update({k: json.dumps(v) if not isinstance(v, str) else v for k, v in (note or {}).items()})
    out.parent.mkdir(parents=True, exist_ok=True)
    save_safetensors(sd, out, metadata=header)
    size_mb = out.stat().st_size / 2**20
    if max_mb is not None and size_mb > max_mb:
        out.unlink()
        raise SystemExit(f"{out} would be {size_mb:.1f} MiB, over the {max_mb} MiB limit; shrink the model")
    load_model(out)  # proves the file is complete and strict-loadable
    return header


def export_vae(checkpoint: Path, out: Path, dtype: str = "fp32") -> dict:
    """Write the VAE of a model file or checkpoint folder, with `latent_std` = 1 / its scale factor."""
    src = checkpoint / "model.safetensors" if checkpoint.is_dir() else checkpoint
    sd, meta = load_state_dict(src, dtype=parse_dtype(dtype))
    vae = {k: v.contiguous() for k, v in sd.items() if k.startswith("first_stage_model.")}
    if not vae or CONFIG_METADATA_KEY not in meta:
        raise SystemExit(f"{src}: no VAE (first_stage_model.*) or no {CONFIG_METADATA_KEY!r} header entry; give a "
                         "file written by training.train or training.export")
    scale = json.loads(meta[CONFIG_METADATA_KEY])["scale_factor"]
    header = {VAE_STD_METADATA_KEY: repr(1.0 / scale), "source": f"VAE of {src}"}
    out.parent.mkdir(parents=True, exist_ok=True)
    save_safetensors(vae, out, metadata=header)
    return header


def main(argv: list[str] | None = None) -> int:
    """Command line entry."""
    p = argparse.ArgumentParser(prog="python -m training.export", description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", help="checkpoints/step_XXXXXXXX folder (or a model .safetensors)")
    p.add_argument("--out", required=True)
    p.add_argument("--ema", action="store_true", help="export the EMA weights when the checkpoint has them")
    p.add_argument("--dtype", default="fp16", choices=("fp16", "bf16", "fp32"))
    p.add_argument("--max-mb", type=float, default=None, help="refuse a file larger than this (MiB)")
    p.add_argument("--decoder", default=None, help="VAE file whose decoder replaces the checkpoint's (same encoder)")
    p.add_argument("--vae-only", action="store_true",
                   help="write only the VAE and its latent_std (a training config's init_parts / scale_factor_from)")
    p.add_argument("--note", default=None, help="JSON object of extra header entries (e.g. the training command)")
    args = p.parse_args(argv)
    if args.vae_only:
        header = export_vae(Path(args.checkpoint), Path(args.out), args.dtype)
        print(f"wrote {args.out}: the VAE of {args.checkpoint}, latent_std {header[VAE_STD_METADATA_KEY]}",
              file=sys.stderr)
        return 0
    header = export(Path(args.checkpoint), Path(args.out), args.ema, args.dtype, args.max_mb,
                    json.loads(args.note) if args.note else None, Path(args.decoder) if args.decoder else None)
    print(f"wrote {args.out} ({Path(args.out).stat().st_size / 2**20:.2f} MiB) from {header['source']}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
