"""Does the camera move? Generate clips for opposite camera paths and measure the image motion they produce.

    python -m training.check_motion --ckpt cami2v_core/weights/cami2v-tiny-synthetic.safetensors \
        --data runs/synth64 --images 4 --out runs/motion

For each test picture and each demo preset (orbit / pan / look, left and right, and stationary; built as the
CLI's `--camera` builds them) it runs
`pipeline.generate` and estimates the global image translation from frame 0 to the last frame twice: by phase
correlation (FFT cross-power peak, sub-pixel parabola fit) and by a global Lucas-Kanade least-squares flow summed
over consecutive frames. A camera-controlled model must give opposite horizontal shifts for left and right paths
and little motion for `stationary`. Prints one JSON object (per family: mean dx, dy in pixels per clip).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

FAMILIES = ("orbit_left", "orbit_right", "pan_left", "pan_right", "look_left", "look_right", "stationary")


def _gray(frame: np.ndarray) -> np.ndarray:
    return frame[..., :3].astype(np.float64).mean(-1)


def phase_correlation(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Translation (dx, dy) in pixels that maps image a [H,W] onto image b (b(x) ~ a(x - d))."""
    h, w = a.shape
    win = np.outer(np.hanning(h), np.hanning(w))
    fa, fb = np.fft.fft2((a - a.mean()) * win), np.fft.fft2((b - b.mean()) * win)
    cross = fb * np.conj(fa)
    r = np.fft.ifft2(cross / (np.abs(cross) + 1e-9)).real
    py, px = np.unravel_index(np.argmax(r), r.shape)

    def refine(c_m, c_0, c_p):  # parabola through the peak and its neighbours
        den = c_m - 2 * c_0 + c_p
        return 0.0 if abs(den) < 1e-12 else 0.5 * (c_m - c_p) / den

    dx = px + refine(r[py, (px - 1) % w], r[py, px], r[py, (px + 1) % w])
    dy = py + refine(r[(py - 1) % h, px], r[py, px], r[(py + 1) % h, px])
    return (dx - w if dx > w / 2 else dx), (dy - h if dy > h / 2 else dy)


def global_flow(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Least-squares single translation (u, v) from brightness constancy over all pixels (global Lucas-Kanade)."""
    iy, ix = np.gradient((a + b) / 2)
    it = b - a
    A = np.array([[np.sum(ix * ix), np.sum(ix * iy)], [np.sum(ix * iy), np.sum(iy * iy)]])
    rhs = -np.array([np.sum(ix * it), np.sum(iy * it)])
    u, v = np.linalg.lstsq(A, rhs, rcond=None)[0]
    return float(u), float(v)


def clip_motion(frames: np.ndarray) -> dict:
    """Image motion of a clip [T,H,W,3]: phase correlation first->last and summed consecutive LK flow."""
    g = [_gray(f) for f in frames]
    pc = phase_correlation(g[0], g[-1])
    lk = np.sum([global_flow(g[k], g[k + 1]) for k in range(len(g) - 1)], axis=0)
    return {"pc_dx": float(pc[0]), "pc_dy": float(pc[1]), "lk_dx": float(lk[0]), "lk_dy": float(lk[1])}


def trajectory(family: str, frames: int, ratio: float | None = None) -> np.ndarray:
    """w2c [T,4,4] of a demo preset exactly as `python -m cami2v_core generate --camera <family>` builds it."""
    import trajectories

    kwargs = {} if ratio is None else {"ratio": ratio}
    return trajectories.preset(trajectories.find_preset(family), frames=frames, **kwargs).w2c


def test_images(data: str | None, n: int, extra: list[str]) -> list[tuple[str, np.ndarray]]:
    """First frames of test-split clips (unseen scenes) plus any given pictures, as uint8 [H,W,3]."""
    from cami2v_core.video_io import load_rgb

    out = []
    if data:
        for folder in sorted((Path(data) / "video_clips" / "test").glob("*/*"))[:n]:
            out.append((folder.name, load_rgb(sorted(folder.glob("*.png"))[0])))
    for p in extra:
        out.append((Path(p).name, load_rgb(p)))
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line entry."""
    p = argparse.ArgumentParser(prog="python -m training.check_motion", description=__doc__.split("\n")[0])
    p.add_argument("--ckpt", default=None, help="model file (default: the bundled tiny model)")
    p.add_argument("--data", default=None, help="dataset folder whose test split gives pictures")
    p.add_argument("--images", type=int, default=4, help="how many test clips to use")
    p.add_argument("--image", action="append", default=[], help="extra picture(s)")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--cfg", type=float, default=3.0, help="text/image guidance scale")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ratio", type=float, default=None, help="preset ratio (default: the CLI's, 0.1)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--families", default=",".join(FAMILIES), help="comma-separated presets to run")
    p.add_argument("--out", default=None, help="folder for the GIFs (optional)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from cami2v_core.bundled import bundled_model_path
    from cami2v_core.model import load_model
    from cami2v_core.pipeline import generate

    ckpt = args.ckpt or bundled_model_path()
    if ckpt is None:
        print("error: no --ckpt and no bundled model", file=sys.stderr)
        return 2
    model = load_model(ckpt, dtype="fp32")
    images = test_images(args.data, args.images, args.image)
    if not images:
        print("error: give --data (a dataset with a test split) or --image", file=sys.stderr)
        return 2
    T = model.config.temporal_length
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    per_family: dict[str, list[dict]] = {f: [] for f in families}
    for name, img in images:
        pic = torch.from_numpy(img.copy()).float()[None] / 255.0
        for fam in families:
            frames = generate(model, pic, trajectory(fam, T, args.ratio), steps=args.steps, cfg_text=args.cfg,
                              seed=args.seed)
            frames = frames.numpy()
            per_family[fam].append(clip_motion((frames * 255).round()))
            if args.out:
                from cami2v_core.video_io import write_video
                Path(args.out).mkdir(parents=True, exist_ok=True)
                write_video(torch.from_numpy(frames), Path(args.out) / f"{name}_{fam}.gif", fps=4)
    summary = {fam: {k: round(float(np.mean([m[k] for m in ms])), 3) for k in ms[0]}
               for fam, ms in per_family.items()}
    print(json.dumps({"ckpt": str(ckpt), "images": [n for n, _ in images], "steps": args.steps, "cfg": args.cfg,
                      "ratio": args.ratio,
                      "mean_shift_px": summary,
                      "per_image": {fam: ms for fam, ms in per_family.items()}}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
