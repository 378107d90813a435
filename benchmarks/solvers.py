"""python -m benchmarks.solvers [--paths N] [--steps 8,12,16] [--json OUT.json] [--table]: DDIM at 25 steps
against DPM-Solver++(2M) and UniPC at fewer steps, on the bundled tiny model and the held-out synthetic benchmark.

For every benchmark path (`training.evaluate.benchmark_clips`: held-out rooms, ground-truth frames rendered from
the requested cameras) each configuration samples one clip from the same seed, so every sampler starts from the
same x_T. Per configuration the report gives:

    seconds            median over paths of `pipeline.sample_latent` (conditioning + denoising loop; no decode)
    cpu_seconds        the same in process CPU time (all threads), which other guests of a shared machine inflate
                       less; speedup_vs_ddim and cpu_speedup_vs_ddim divide the first row's by each row's
    psnr               PSNR of frames 1..T-1 against the ground truth (`training.metrics.psnr`), mean over paths
    psnr_vs_ode        PSNR against the converged ODE sample (--ref-sampler at --ref-steps, decoded): how far a
                       configuration is from what infinitely many deterministic steps give; DDIM eta 1 is
                       stochastic and does not aim at it
    rot_err, trans_err, cam_mc, failures
                       camera errors of the cameras pycolmap recovers from the frames, as `training.evaluate`
                       computes them (spec §10; one reconstruction trial per clip), failures = clips not reconstructed

    sampler_overhead_ms_per_step
                       each sampler's own arithmetic per step (guidance, conversion, update) with a denoiser that
                       costs nothing: what a step costs beyond its model calls, which are the same for every sampler

Configurations are interleaved per path, so a change in machine load hits all of them alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np
import torch

from .harness import inference, machine_info, timed

DDIM_STEPS = 25


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.solvers", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", default=None, help="model file (default: the bundled tiny model)")
    p.add_argument("--paths", type=int, default=4, help="benchmark paths, one clip each (default 4)")
    p.add_argument("--steps", default="8,12,16", help="step counts of the fewer-step rows (default 8,12,16)")
    p.add_argument("--ddim-steps", type=int, default=DDIM_STEPS, help="steps of the DDIM baseline (default 25)")
    p.add_argument("--no-ddim-eta0", action="store_true",
                   help="skip the deterministic DDIM rows (eta 0) at the fewer-step counts")
    p.add_argument("--ref-sampler", choices=("dpmpp_2m", "unipc", "ddim"), default="dpmpp_2m",
                   help="sampler of the converged ODE reference (ddim runs with eta 0)")
    p.add_argument("--ref-steps", type=int, default=64, help="steps of the ODE reference (default 64; 0 = none)")
    p.add_argument("--cfg-text", type=float, default=7.5, help="guidance scale (default 7.5, spec §7.6)")
    p.add_argument("--no-camera", action="store_true", help="PSNR only: no reconstruction, no pycolmap needed")
    p.add_argument("--bench-seed", type=int, default=0, help="which held-out rooms and paths")
    p.add_argument("--gen-seed", type=int, default=0, help="path i samples with seed gen_seed + 1000 i")
    p.add_argument("--stride", type=int, default=2, help="frame stride of the benchmark clips (default 2)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", metavar="OUT.json", help="also write the report to this file")
    p.add_argument("--table", action="store_true", help="print the Markdown table instead of the JSON")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = p.parse_args(argv)
    try:
        args.step_list = sorted({int(s) for s in args.steps.split(",") if s.strip()})
    except ValueError:
        p.error(f"--steps takes a comma list of integers; got {args.steps!r}")
    if not args.step_list or min(args.step_list) < 1 or args.paths < 1 or args.ddim_steps < 1 or args.ref_steps < 0:
        p.error("--steps, --paths and --ddim-steps must be >= 1 (--ref-steps >= 0)")
    return args


def configurations(args) -> list[dict]:
    """The rows: the released DDIM (eta 1) and its deterministic twin, then each sampler at each fewer-step count."""
    rows = [{"sampler": "ddim", "steps": args.ddim_steps, "eta": 1.0},
            {"sampler": "ddim", "steps": args.ddim_steps, "eta": 0.0}]
    for n in args.step_list:
        if not args.no_ddim_eta0:
            rows.append({"sampler": "ddim", "steps": n, "eta": 0.0})
        rows += [{"sampler": "dpmpp_2m", "steps": n, "eta": 0.0}, {"sampler": "unipc", "steps": n, "eta": 0.0}]
    return rows


def _label(cfg: dict) -> str:
    eta = f" eta {cfg['eta']:g}" if cfg["sampler"] == "ddim" else ""
    return f"{cfg['sampler']} {cfg['steps']}{eta}"


def _sample(model, clip, cfg: dict, args, seed: int, device):
    """One clip with one configuration -> (uint8 frames [T,H,W,3], latent, (wall, CPU) seconds of sample_latent)."""
    from cami2v_core.pipeline import decode_latent, sample_latent

    image = torch.from_numpy(clip.frames[0].astype(np.float32) / 255.0)[None]
    with inference():
        cpu_start = time.process_time()
        latent, seconds = timed(lambda: sample_latent(
            model, image, clip.w2c, clip.intrinsics, clip.caption, "", steps=cfg["steps"], cfg_text=args.cfg_text,
            eta=cfg["eta"], seed=seed, frame_stride=args.stride, sampler=cfg["sampler"]), device)
        cpu_seconds = time.process_time() - cpu_start
        frames = decode_latent(model, latent)
    return np.clip(np.round(frames.numpy() * 255.0), 0, 255).astype(np.uint8), latent, (seconds, cpu_seconds)


def sampler_overhead(model, steps: int = 16, repeats: int = 5) -> dict:
    """Milliseconds per step of each sampler with a free denoiser (fixed random branch outputs), median of runs."""
    from cami2v_core import sampling

    config = model.config
    h, w = (n // config.vae_downsample for n in config.resolution)
    g = torch.Generator().manual_seed(0)
    shape = (1, config.channels, config.temporal_length, h, w)
    x_T = torch.randn(shape, generator=g)
    outputs = {b: torch.randn(shape, generator=g) for b in ("cond", "uncond")}
    guidance = sampling.Guidance(cfg_text=7.5)
    schedule = sampling.make_ddim_schedule(model.alphas_cumprod.cpu(), steps, eta=1.0)
    fns = {"ddim": lambda: sampling.sample_ddim(lambda x, t, b: outputs, x_T, schedule, guidance,
                                                model.parameterization, generator=torch.Generator().manual_seed(0)),
           "dpmpp_2m": lambda: sampling.sample_dpmpp_2m(lambda x, t, b: outputs, x_T, schedule, guidance,
                                                        model.parameterization),
           "unipc": lambda: sampling.sample_unipc(lambda x, t, b: outputs, x_T, schedule, guidance,
                                                  model.parameterization)}
    out = {}
    with inference():
        for name, fn in fns.items():
            runs = [timed(fn, torch.device("cpu"))[1] for _ in range(repeats)]
            out[name] = 1000 * statistics.median(runs) / steps
    return out


def run(args, log=print) -> dict:
    """Sample every configuration on every path -> the JSON-ready report."""
    from cami2v_core.bundled import bundled_model_path
    from cami2v_core.model import load_model
    from training.evaluate import TRANSLATING_FAMILIES, _json_safe, benchmark_clips, evaluate_frames, summarize
    from training.metrics import psnr

    ckpt = args.ckpt or bundled_model_path()
    if ckpt is None:
        raise SystemExit("no --ckpt given and this install has no bundled tiny model")
    if not args.no_camera:
        from training.sfm import SfMError, require_pycolmap

        try:
            require_pycolmap()
        except SfMError as e:
            raise SystemExit(f"{e} (or pass --no-camera for PSNR only)")
    start = time.perf_counter()
    model = load_model(ckpt, dtype="fp32")
    device = model.device
    frames, (height, width) = model.config.temporal_length, model.config.resolution
    clips = benchmark_clips(args.bench_seed, args.paths, TRANSLATING_FAMILIES, frames, height, width, args.stride)
    configs = configurations(args)
    reference = None
    if args.ref_steps:
        reference = {"sampler": args.ref_sampler, "steps": args.ref_steps, "eta": 0.0}
    report = {
        "settings": {"model": str(ckpt), "variant": model.config.variant, "prediction": model.config.parameterization,
                     "zero_terminal_snr": bool(model.config.rescale_betas_zero_snr), "frames": frames,
                     "resolution": [height, width], "paths": len(clips), "families": sorted({c.family for c in clips}),
                     "bench_seed": args.bench_seed, "gen_seed": args.gen_seed, "stride": args.stride,
                     "cfg_text": args.cfg_text, "spacing": "uniform_trailing", "camera_metrics": not args.no_camera,
                     "reference": reference and _label(reference)},
        "machine": machine_info(device),
        "rows": [],
    }
    log(f"{len(clips)} paths, {frames} frames of {height}x{width}; {len(configs)} configurations"
        + (f" + reference {_label(reference)}" if reference else ""))
    records = {i: [] for i in range(len(configs))}
    seconds = {i: [] for i in range(len(configs))}
    cpu_seconds = {i: [] for i in range(len(configs))}
    ode_psnr = {i: [] for i in range(len(configs))}
    ode_rms = {i: [] for i in range(len(configs))}
    gt_records = []
    for clip in clips:
        seed = args.gen_seed + 1000 * clip.index
        ref_frames = ref_latent = None
        if reference:
            ref_frames, ref_latent, (s, _) = _sample(model, clip, reference, args, seed, device)
            log(f"path {clip.index} ({clip.family}): reference {_label(reference)} {s:.1f} s")
        if not args.no_camera:
            gt_records.append(evaluate_frames(clip.frames, clip, 1, seed, 256, True, quality=False))
        # interleaved, the order flipping every path, so load drift favours no configuration
        order = list(range(len(configs)))
        for i in (order if clip.index % 2 == 0 else order[::-1]):
            video, latent, (s, cpu_s) = _sample(model, clip, configs[i], args, seed, device)
            seconds[i].append(s)
            cpu_seconds[i].append(cpu_s)
            records[i].append(evaluate_frames(video, clip, 1, seed, 256, not args.no_camera))
            if ref_frames is not None:
                ode_psnr[i].append(float(np.mean(psnr(video[1:], ref_frames[1:]))))
                ode_rms[i].append(float((latent - ref_latent).pow(2).mean().sqrt()))
            log(f"path {clip.index}: {_label(configs[i])} {s:.1f} s, PSNR {records[i][-1]['psnr']:.2f}")
    for i, cfg in enumerate(configs):
        summary = summarize(records[i])
        row = {"label": _label(cfg), **cfg, "seconds": statistics.median(seconds[i]), "seconds_runs": seconds[i],
               "cpu_seconds": statistics.median(cpu_seconds[i]), "cpu_seconds_runs": cpu_seconds[i],
               "psnr": summary["psnr"], "ssim": summary["ssim"]}
        if ode_psnr[i]:
            row["psnr_vs_ode"] = float(np.mean(ode_psnr[i]))
            row["latent_rms_vs_ode"] = float(np.mean(ode_rms[i]))
        if not args.no_camera:
            row.update({k: summary.get(k) for k in ("rot_err", "trans_err", "cam_mc")})
            row["failures"] = f"{summary['reconstruction_failures']}/{summary['videos']}"
        report["rows"].append(row)
    base, cpu_base = report["rows"][0]["seconds"], report["rows"][0]["cpu_seconds"]
    for row in report["rows"]:
        row["speedup_vs_ddim"] = base / row["seconds"]
        row["cpu_speedup_vs_ddim"] = cpu_base / row["cpu_seconds"]
    if gt_records:
        gt = summarize(gt_records)
        report["ground_truth_reconstruction"] = {
            **{k: gt.get(k) for k in ("rot_err", "trans_err", "cam_mc")},
            "failures": f"{gt['reconstruction_failures']}/{gt['videos']}",
            "note": "the same reconstruction on the ground-truth frames: the floor of the camera errors"}
    report["sampler_overhead_ms_per_step"] = sampler_overhead(model)
    report["total_s"] = time.perf_counter() - start
    return _json_safe(report)  # a clip identical to the reference has PSNR inf: null in the JSON


def markdown_table(report: dict) -> str:
    """The report's rows as a Markdown table."""
    def f(v, fmt):
        return "-" if v is None else format(v, fmt)

    camera = report["settings"]["camera_metrics"]
    head = "| sampler | steps | seconds | CPU seconds | speed-up (CPU time) | PSNR (GT) | PSNR vs ODE |"
    rule = "|---|---|---|---|---|---|---|"
    if camera:
        head += " RotErr | TransErr | CamMC | failures |"
        rule += "---|---|---|---|"
    rows = [head, rule]
    for r in report["rows"]:
        name = r["sampler"] + (f" (eta {r['eta']:g})" if r["sampler"] == "ddim" else "")
        line = (f"| {name} | {r['steps']} | {r['seconds']:.1f} | {r['cpu_seconds']:.1f} | "
                f"×{r['cpu_speedup_vs_ddim']:.2f} | {f(r['psnr'], '.2f')} | {f(r.get('psnr_vs_ode'), '.2f')} |")
        if camera:
            line += (f" {f(r['rot_err'], '.3f')} | {f(r['trans_err'], '.3f')} | {f(r['cam_mc'], '.3f')} | "
                     f"{r['failures']} |")
        rows.append(line)
    gt = report.get("ground_truth_reconstruction")
    if gt:
        rows.append(f"| ground-truth frames | - | - | - | - | - | - | {f(gt['rot_err'], '.3f')} | "
                    f"{f(gt['trans_err'], '.3f')} | {f(gt['cam_mc'], '.3f')} | {gt['failures']} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    log = (lambda *a: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    report = run(args, log=log)
    text = json.dumps(report, indent=2)
    print(markdown_table(report) if args.table else text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
