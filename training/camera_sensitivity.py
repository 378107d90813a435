"""Does the model use its camera input? The diffusion loss on held-out clips with the true, swapped and static cameras.

    python -m training.camera_sensitivity --ckpt cami2v_core/weights/cami2v-tiny-synthetic.safetensors \
        --data runs/synth64 --split test

Every clip is scored three times with the same noise, timesteps and conditioning frame (frame 0): with its own
cameras, with another clip's cameras (the batch rolled by one) and with a static camera (every frame's pose set to
frame 0's). A model that follows the camera has the lowest loss with the true cameras; one that ignores the camera
gets the same three numbers (a no-camera DynamiCrafter gets them exactly equal). Cheaper than sampling and free of
reconstruction failures, so it shows whether training has started to use the camera long before the generated
clips move visibly. `--t-bins 4` also scores four timestep bands: the camera decides the motion at high noise, so
that is where a model that uses it gains first. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch


def _losses(model, cases: dict, seeds: int, t_range: tuple[int, int] | None) -> dict:
    from training.train import DiffusionObjective

    objective = DiffusionObjective(model, uncond_prob=0.0, rand_cond_frame=False, t_range=t_range)
    out = {}
    with torch.no_grad():
        for name, b in cases.items():
            losses = [objective(b, torch.Generator().manual_seed(s)).item() for s in range(seeds)]
            out[f"loss_{name}"] = sum(losses) / len(losses)
    out["static_minus_true"] = out["loss_static"] - out["loss_true"]
    out["swapped_minus_true"] = out["loss_swapped"] - out["loss_true"]
    return out


def camera_sensitivity(model, batch: dict, seeds: int = 6, t_bins: int = 1) -> dict:
    """Mean loss over `seeds` noise draws for the true, swapped (rolled by one) and static cameras of a batch.

    With t_bins > 1 it also scores each of that many equal timestep bands (same seeds, timesteps drawn inside the
    band) under "bins": the camera decides a clip's motion at high noise, so that is where a model that uses it
    gains first. `relative_gain` = static_minus_true / loss_static of the band.
    """
    if batch["w2c"].shape[0] < 2:
        raise ValueError("camera_sensitivity needs at least 2 clips (the swapped case uses another clip's cameras)")
    n_t = int(model.num_timesteps)
    if isinstance(t_bins, bool) or int(t_bins) != t_bins or not 1 <= t_bins <= n_t:
        raise ValueError(f"t_bins must be a whole number from 1 to {n_t}; got {t_bins!r}")
    roll = torch.roll(torch.arange(batch["w2c"].shape[0]), 1)
    cases = {
        "true": batch,
        "swapped": {**batch, "w2c": batch["w2c"][roll], "K": batch["K"][roll]},
        "static": {**batch, "w2c": batch["w2c"][:, :1].expand_as(batch["w2c"]).clone()},
    }
    out = _losses(model, cases, seeds, None)
    if t_bins > 1:
        edges = [round(i * n_t / t_bins) for i in range(t_bins + 1)]
        out["bins"] = []
        for lo, hi in zip(edges[:-1], edges[1:]):
            row = {"t_lo": lo, "t_hi": hi, **_losses(model, cases, seeds, (lo, hi))}
            row["relative_gain"] = row["static_minus_true"] / row["loss_static"] if row["loss_static"] else 0.0
            out["bins"].append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line entry."""
    p = argparse.ArgumentParser(prog="python -m training.camera_sensitivity", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="model file or checkpoints/step_X/{model,ema}.safetensors")
    p.add_argument("--data", required=True, help="dataset folder in the RealEstate10K layout (training.synthetic)")
    p.add_argument("--split", default="test", help="split to score (default: test, never seen in training)")
    p.add_argument("--clips", type=int, default=16, help="clips to score (default 16)")
    p.add_argument("--stride", type=int, default=2, help="frame stride of the clips (default 2)")
    p.add_argument("--seeds", type=int, default=6, help="noise draws per case (default 6)")
    p.add_argument("--t-bins", type=int, default=1,
                   help="also score this many equal timestep bands (e.g. 4: where in the noise range the camera "
                        "helps; default 1, the whole range only)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from cami2v_core import load_model
    from cami2v_core.checkpoint import CheckpointError
    from training.data import RealEstate10KDataset

    try:
        model = load_model(args.ckpt).eval()
        cfg = model.config
        ds = RealEstate10KDataset(args.data, args.split, video_length=cfg.temporal_length,
                                  resolution=tuple(cfg.resolution), frame_stride=(args.stride, args.stride))
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n = min(args.clips, len(ds))
    if n < 2:
        print(f"error: {args.data} split {args.split!r} has {len(ds)} usable clips; need at least 2", file=sys.stderr)
        return 2
    batch = torch.utils.data.default_collate([ds[i] for i in range(n)])
    try:
        scores = camera_sensitivity(model, batch, args.seeds, args.t_bins)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result = {"ckpt": args.ckpt, "clips": n, "seeds": args.seeds, **scores}
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
