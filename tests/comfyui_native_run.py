"""Run inside a real ComfyUI's Python (tests/test_native.py starts it): native sampling against the reference node.

    python tests/comfyui_native_run.py COMFYUI_DIR [--roundoff=CASE,...] CASE ...  ->  one JSON line on stdout

Each case samples the same picture, camera path and starting noise twice: with the CamI2V Sampler node (eta 0, the
reference) and through ComfyUI (KSampler's `comfy.sample.sample`, or a SamplerCustomAdvanced-style
`guider.sample`), and reports the largest latent difference. The reference node runs untouched, drawing from its
seed; ComfyUI gets the x_T the node drew (replayed here: the conditioning's draws, then x_T) as its noise.
Round-off is measured, not assumed: for the --roundoff cases the reference is re-run from x_T moved by one float32
ulp, and that spread is reported as `roundoff`. `schedules` reports for which step counts ComfyUI's `simple` and
`ddim_uniform` schedulers visit the reference's uniform_trailing and uniform grids.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def setup(comfy_dir: str) -> None:
    # Ours first: ComfyUI's top-level nodes.py would shadow this pack's nodes/ package, and comfy never imports it.
    sys.path[:0] = [str(REPO), comfy_dir, str(REPO / "tests")]
    from comfy.cli_args import args

    args.cpu = True  # before comfy.model_management picks its device


def picture_and_camera(frames: int):
    import torch

    import trajectories as tj
    from synthetic_photo import make_photo  # ComfyUI has a `tests` package of its own, so not tests.synthetic_photo

    image = torch.from_numpy(make_photo(64, 64, seed=3)).float()[None] / 255
    return image, tj.to_cameractrl_poses(tj.orbit("left", 30.0, 3.0, frames))


def handle_for(variant: str):
    """The bundled model, or its weights under a changed schedule (eps / dynamic rescale) to test that maths."""
    from cami2v_core import load_model
    from cami2v_core.bundled import bundled_model_path
    from cami2v_core.model import schedule_buffers
    from cami2v_core.configs import resolve_config
    from nodes.nodes_model import CamI2VModelHandle

    path = bundled_model_path()
    base = load_model(path, dtype="fp32")
    if variant == "bundled":
        net = base
    else:
        changes = {"eps": dict(parameterization="eps", rescale_betas_zero_snr=False),
                   "dynamic_rescale": dict(use_dynamic_rescale=True, base_scale=0.7, turning_step=400)}[variant]
        config = dataclasses.replace(resolve_config(base.config), **changes)
        # Same weights, other schedule buffers (the file's are the zero-SNR ones; scale_arr is new).
        state = {**base.state_dict(), **schedule_buffers(config)}
        net = load_model(state, dtype="fp32", config=config)
        net.register_schedule()
    return CamI2VModelHandle(net, variant, net.dtype, "auto", True)


REFERENCE = dict(prompt="a cosy room", negative_prompt="blurry", seed=12333, steps=10, cfg_text=5.5, cfg_image=5.5,
                 cfg_camera=1.0, camera_schedule="constant", eta=0.0, guidance_rescale=0.7, frame_stride=2,
                 trace_scale=1.0, cond_frame=0)
CASES = {
    # name: (model variant, ComfyUI path, reference settings changed, scheduler); 10 steps unless changed
    "ksampler": ("bundled", "ksampler", {"steps": 25}, "simple"),
    "ksampler_no_rescale": ("bundled", "ksampler", {"guidance_rescale": 0.0}, "simple"),
    "ksampler_cfg1": ("bundled", "ksampler", {"cfg_text": 1.0, "cfg_image": 1.0}, "simple"),
    "ksampler_normal_scheduler": ("bundled", "ksampler", {}, "normal"),
    "ksampler_ddim_uniform_scheduler": ("bundled", "ksampler", {}, "ddim_uniform"),
    "guider_equal_scales": ("bundled", "guider", {}, "simple"),
    "guider_separate_scales": ("bundled", "guider", {"cfg_text": 7.0, "cfg_image": 3.0, "cfg_camera": 1.5,
                                                     "camera_schedule": "cosine"}, "simple"),
    "guider_image_scale_1": ("bundled", "guider", {"cfg_text": 4.0, "cfg_image": 1.0}, "simple"),
    "eps_ksampler": ("eps", "ksampler", {}, "simple"),
    "eps_guider_separate_scales": ("eps", "guider", {"cfg_text": 7.0, "cfg_image": 3.0, "cfg_camera": 1.5}, "simple"),
    "dynamic_rescale_ksampler": ("dynamic_rescale", "ksampler", {}, "simple"),
    "dynamic_rescale_guider": ("dynamic_rescale", "guider", {"cfg_text": 7.0, "cfg_image": 3.0}, "simple"),
    "dynamic_rescale_dpmpp_2m": ("dynamic_rescale", "ksampler", {}, "simple"),
}


def reference_x_T(handle, image, camera, settings):
    """The x_T the CamI2V Sampler node draws for these settings: its conditioning draws replayed, then x_T."""
    from cami2v_core import pipeline
    from cami2v_core.sampling import Guidance, randn
    from nodes.nodes_sample import sampler_inputs

    net = handle.model
    picture, w2c, _, trace_scale, _ = sampler_inputs(net, image, camera, settings["cond_frame"], "crop",
                                                     settings["trace_scale"])
    generator = pipeline.make_generator(settings["seed"])
    guidance = Guidance(settings["cfg_text"], settings["cfg_image"], settings["cfg_camera"])
    cond = pipeline.encode_conditioning(net, picture, w2c, None, settings["prompt"], settings["negative_prompt"],
                                        settings["frame_stride"], settings["cond_frame"], trace_scale,
                                        guidance.branches(camera=True), generator)
    return randn((1, net.config.channels, net.config.temporal_length, *cond.c_concat.shape[-2:]), generator)


def run_reference(handle, image, camera, settings, x_T=None):
    """The CamI2V Sampler node's latent [(T),4,h,w] (scaled); with x_T, that start injected instead of drawn."""
    from unittest import mock

    from cami2v_core import pipeline
    from nodes.nodes_sample import CamI2VSampler

    if x_T is None:
        out = CamI2VSampler().sample(handle, image, camera=camera, **settings)
        return out["result"][0]["samples"]
    real = pipeline.sample_latent
    with mock.patch.object(pipeline, "sample_latent",
                           lambda *a, **k: real(*a, draws=pipeline.Draws(x_T=x_T), **k)):
        out = CamI2VSampler().sample(handle, image, camera=camera, **settings)
    return out["result"][0]["samples"]


def run_native(handle, image, camera, settings, path, scheduler, x_T, sampler_name="ddim"):
    """The same through ComfyUI: KSampler (comfy.sample.sample) or guider.sample as SamplerCustomAdvanced does."""
    from nodes.nodes_native import CamI2VImageToVideo, CamI2VToComfyModel, frames_of

    rescale = settings["guidance_rescale"]
    model = CamI2VToComfyModel().convert(handle, rescale if path == "ksampler" else 0.0)[0]
    positive, negative, latent, _ = CamI2VImageToVideo().encode(
        handle, image, settings["prompt"], settings["negative_prompt"], settings["seed"], settings["frame_stride"],
        settings["trace_scale"], settings["cond_frame"], camera=camera)["result"]
    noise = frames_of(x_T)
    # Record how many videos each UNet call carries: the branches sharing the camera should go as one batch.
    net, batches = handle.model, []
    real_apply = net.apply_model
    net.apply_model = lambda x, *a, **k: batches.append(int(x.shape[0])) or real_apply(x, *a, **k)
    try:
        raw = _sample(model, positive, negative, latent, settings, path, scheduler, noise, sampler_name, rescale)
    finally:
        del net.apply_model
    assert latent["cami2v_scaled"] is False
    return raw.float().cpu() * float(handle.model.scale_factor), batches  # ComfyUI's LATENT is in VAE units


def _sample(model, positive, negative, latent, settings, path, scheduler, noise, sampler_name, rescale):
    import comfy.sample
    import comfy.samplers

    from nodes.nodes_native import CamI2VGuider

    if path == "ksampler":
        assert settings["cfg_text"] == settings["cfg_image"] and settings["cfg_camera"] == 1
        raw = comfy.sample.sample(model, noise, settings["steps"], settings["cfg_text"], sampler_name, scheduler,
                                  positive, negative, latent["samples"], seed=settings["seed"], disable_pbar=True)
    else:
        guider = CamI2VGuider().get_guider(model, positive, negative, settings["cfg_text"], settings["cfg_image"],
                                           settings["cfg_camera"], settings["camera_schedule"], rescale)[0]
        sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), scheduler,
                                                 settings["steps"])
        raw = guider.sample(noise, latent["samples"], comfy.samplers.sampler_object(sampler_name), sigmas,
                            seed=settings["seed"], disable_pbar=True)
    return raw


def schedule_report() -> dict:
    """Which step counts the `simple` scheduler visits the reference's uniform_trailing grid for (and ddim_uniform
    the 'uniform' grid), read from ComfyUI's own scheduler functions on a CamI2V MODEL's sigma table."""
    import torch

    import comfy.samplers

    from cami2v_core.sampling import SamplingError, ddim_timesteps, schedule_alphas_cumprod
    from nodes.nodes_native import SamplingCoordinates, comfy_classes

    ms = comfy_classes().ModelSampling(SamplingCoordinates(schedule_alphas_cumprod(zero_terminal_snr=True), "v"))
    out = {}
    for scheduler, spacing in (("simple", "uniform_trailing"), ("ddim_uniform", "uniform")):
        same, differ = [], []
        for steps in range(1, 101):
            sigmas = comfy.samplers.calculate_sigmas(ms, scheduler, steps)
            visited = ms.timestep(sigmas[:-1]).long().flip(0)
            try:
                grid = ddim_timesteps(spacing, steps)
            except SamplingError:  # a grid the reference itself refuses
                differ.append(steps)
                continue
            ok = sigmas[-1] == 0 and torch.equal(visited, grid)
            (same if ok else differ).append(steps)
        out[scheduler] = {"spacing": spacing, "same_steps": same, "different_steps": differ}
    return out


def main(argv) -> None:
    comfy_dir, names = argv[1], [a for a in argv[2:] if not a.startswith("--")]
    roundoff_cases = {c for a in argv[2:] if a.startswith("--roundoff=") for c in a.split("=", 1)[1].split(",")}
    setup(comfy_dir)
    import torch

    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    results = {}
    handles = {}
    for name in names:
        if name == "schedules":
            results[name] = schedule_report()
            continue
        variant, path, changes, scheduler = CASES[name]
        settings = {**REFERENCE, **changes}
        handle = handles.get(variant) or handles.setdefault(variant, handle_for(variant))
        image, camera = picture_and_camera(handle.model.config.temporal_length)
        start = time.perf_counter()
        reference = run_reference(handle, image, camera, settings)  # the node as it is, drawing from its seed
        x_T = reference_x_T(handle, image, camera, settings)
        sampler_name = "dpmpp_2m" if name.endswith("dpmpp_2m") else "ddim"
        native, batches = run_native(handle, image, camera, settings, path, scheduler, x_T, sampler_name)
        diff = (native - reference).abs()
        results[name] = {"max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
                         "max_abs_reference": float(reference.abs().max()), "settings": changes,
                         "variant": variant, "path": path, "scheduler": scheduler, "sampler": sampler_name,
                         "unet_calls": len(batches), "videos_per_call": sorted(set(batches))}
        if name in roundoff_cases:
            # The reference's own sensitivity to round-off: x_T moved by one float32 ulp (random sign per entry).
            sign = torch.randn(x_T.shape, generator=torch.Generator().manual_seed(1)).sign()
            moved = run_reference(handle, image, camera, settings, x_T * (1 + sign * 2.0 ** -23))
            results[name]["roundoff"] = float((moved - reference).abs().max())
        results[name]["seconds"] = round(time.perf_counter() - start, 1)
        print(name, json.dumps(results[name]), file=sys.stderr, flush=True)  # progress, kept if a later case fails
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv)
