"""Stage 1 of a from-scratch model: train the KL autoencoder (`first_stage_model`) on video frames.

The released models reuse Stable Diffusion's VAE (spec §3.4, §8: frozen). A tiny model trained from nothing has no
such VAE, and the diffusion UNet can only make pictures the decoder can draw, so this trains one first:
L1 + L2 reconstruction plus a small KL term (the LDM recipe without its perceptual/GAN terms, which need extra
networks). The result is a safetensors file with `first_stage_model.*` keys and, in its metadata, the latent
standard deviation that `training.train` uses as the model's `scale_factor` (LDM's scale-by-std).

    python -m training.train_vae --data runs/synth64 --model training/configs/tiny_synthetic.yaml \
        --out runs/vae/vae.safetensors --steps 3000 --threads 2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cami2v_core.checkpoint import check_state_dict, load_state_dict, save_safetensors
from cami2v_core.modules.vae import AutoencoderKL
from cami2v_core.video_io import load_rgb

log = logging.getLogger("training.train_vae")

VAE_STD_METADATA_KEY = "latent_std"  # std of the unscaled posterior means over the training frames


def load_frames(root: Path, split: str, size: int, limit: int | None = None) -> torch.Tensor:
    """Every PNG frame of a RealEstate10K-layout folder as uint8 [N,3,size,size] (resized to cover + centre crop)."""
    from PIL import Image

    files = sorted((root / "video_clips" / split).glob("*/*/*.png"))
    if limit:
        files = files[:limit]
    if not files:
        raise FileNotFoundError(f"no PNG frames under {root / 'video_clips' / split}/<scene>/<clip>/; render some "
                                "with `python -m training.synthetic --out ...` first")
    out = np.empty((len(files), size, size, 3), np.uint8)
    for i, f in enumerate(files):
        im = Image.fromarray(load_rgb(f))
        if im.size != (size, size):
            s = size / min(im.size)
            im = im.resize((max(size, round(im.width * s)), max(size, round(im.height * s))), Image.BILINEAR)
            left, top = (im.width - size) // 2, (im.height - size) // 2
            im = im.crop((left, top, left + size, top + size))
        out[i] = np.asarray(im)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def kl_per_element(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)), averaged over elements."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean()


def _model_config(name: str):
    """ModelConfig of a preset, model file, or training YAML (its `model` section)."""
    from cami2v_core.configs import resolve_config

    if name.endswith((".yaml", ".yml")):
        from omegaconf import OmegaConf

        raw = OmegaConf.to_container(OmegaConf.load(name), resolve=True)
        if isinstance(raw, dict) and "train" in raw:
            from training.train import model_config_from_section
            # the scale factor comes from the VAE this trains: a config may name that file before it exists
            section = {k: v for k, v in raw["model"].items() if k != "scale_factor_from"}
            return model_config_from_section(section)
    return resolve_config(name)


def main(argv: list[str] | None = None) -> int:
    """Command line entry: train, then write the VAE weights and the latent std."""
    p = argparse.ArgumentParser(prog="python -m training.train_vae", description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="dataset folder in the RealEstate10K layout with PNG frames")
    p.add_argument("--model", default="tiny",
                   help="preset name, model YAML/JSON or training YAML whose first_stage architecture to train")
    p.add_argument("--crop", type=int, default=32,
                   help="train on random crops of this size (the VAE is convolutional; 4x cheaper than 64x64)")
    p.add_argument("--out", required=True, help="output .safetensors")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--kl-weight", type=float, default=1e-4)
    p.add_argument("--logvar-init", type=float, default=-8.0,
                   help="initial posterior log-variance (bias of quant_conv's logvar half); a low start lets the "
                        "latent carry the picture from step 1 instead of drowning it in unit noise")
    p.add_argument("--init", default=None, help="start from this VAE file (first_stage_model.* keys)")
    p.add_argument("--decoder-only", action="store_true",
                   help="freeze the encoder (keeps the latent space a diffusion model was trained on) and train "
                        "post_quant_conv + decoder only")
    p.add_argument("--latent-noise", type=float, default=0.0,
                   help="decoder-only: add this much Gaussian noise (in units of the latent std) to the latents, "
                        "so the decoder tolerates a diffusion model's small latent errors")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=50)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)

    cfg = _model_config(args.model)
    size = cfg.first_stage["ddconfig"]["resolution"]
    frames = load_frames(Path(args.data), "train", size)
    log.info("frames %s", tuple(frames.shape))
    vae = AutoencoderKL(**cfg.first_stage)
    if args.init:
        sd, meta = load_state_dict(args.init)
        sd = {k: v for k, v in sd.items() if k.startswith("first_stage_model.")}
        # Checked first so a wrong file is named in one message, not a torch traceback.
        check_state_dict(sd, {f"first_stage_model.{k}": v.shape for k, v in vae.state_dict().items()},
                         "first-stage VAE", source=str(args.init))
        vae.load_state_dict({k.removeprefix("first_stage_model."): v for k, v in sd.items()}, strict=True)
        init_std = float(meta.get(VAE_STD_METADATA_KEY, "1"))
    if not args.init:
        with torch.no_grad():
            # quant_conv outputs (mean, logvar); a low initial logvar lets the latent carry the picture at once
            half = vae.quant_conv.out_channels // 2
            vae.quant_conv.bias[half:] = args.logvar_init
    if args.decoder_only:
        for module in (vae.encoder, vae.quant_conv):
            module.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in vae.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.0)
    warm = 100
    t0 = time.time()
    for step in range(1, args.steps + 1):
        # cosine decay after a short warm-up: a few thousand steps need the high rate early and a low one late
        lr = args.lr * min(1.0, step / warm) * (0.5 * (1 + math.cos(math.pi * step / args.steps)) * 0.9 + 0.1)
        for g in opt.param_groups:
            g["lr"] = lr
        idx = torch.randint(0, frames.shape[0], (args.batch_size,))
        x = frames[idx].float() / 127.5 - 1.0
        if args.crop and args.crop < size:
            top, left = random.randrange(size - args.crop + 1), random.randrange(size - args.crop + 1)
            x = x[:, :, top:top + args.crop, left:left + args.crop]
        flip = torch.rand(args.batch_size) < 0.5
        x[flip] = x[flip].flip(-1)
        with torch.no_grad() if args.decoder_only else contextlib.nullcontext():
            mean, logvar = vae.encode(x)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        if args.decoder_only and args.latent_noise:
            z = z + args.latent_noise * init_std * torch.randn_like(z)
        rec = vae.decode(z)
        l1 = (rec - x).abs().mean()
        l2 = F.mse_loss(rec, x)
        kl = kl_per_element(mean, logvar)
        loss = l1 + l2 + args.kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        if step % args.log_every == 0 or step == 1:
            psnr = 10 * math.log10(4.0 / max(l2.item(), 1e-10))
            log.info("step %d loss %.4f l1 %.4f psnr %.2f dB kl %.3f lr %.2e %.0fs", step, loss.item(), l1.item(),
                     psnr, kl.item(), lr, time.time() - t0)
    vae.eval()
    with torch.no_grad():
        sample = frames[torch.randperm(frames.shape[0])[:512]].float() / 127.5 - 1.0
        means = torch.cat([vae.encode(b)[0] for b in sample.split(64)])
        std = means.std().item()
        rec = torch.cat([vae.decode(m) for m in means.split(64)])
        psnr = 10 * math.log10(4.0 / F.mse_loss(rec, sample).item())
    log.info("latent std %.4f (scale_factor %.5f), eval PSNR (posterior mean) %.2f dB", std, 1 / std, psnr)
    sd = {f"first_stage_model.{k}": v for k, v in vae.state_dict().items()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_safetensors(sd, out, metadata={VAE_STD_METADATA_KEY: f"{std:.6f}", "psnr_db": f"{psnr:.3f}",
                                        "steps": str(args.steps), "args": json.dumps(vars(args))})
    log.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
