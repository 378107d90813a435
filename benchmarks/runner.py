"""The measurements behind `python -m benchmarks`: camera setup, UNet forward, a sampling run and peak memory per
model, and the CamI2V / DynamiCrafter ratios, all from one run.

UNet forwards are interleaved (DynamiCrafter, CameraCtrl, CamI2V, then again) so that a change in machine load
hits every model alike; each reported time is the median of its runs. The sampling run is the denoising loop of
`pipeline.sample_latent` (`make_denoiser` + `sampling.sample_ddim`, guidance branches batched) on random
conditioning: the encoders and the VAE are the same for all three models and run once per video.
"""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import asdict, dataclass, field

import torch

from cami2v_core.modules import epipolar as epipolar_module
from cami2v_core.pipeline import Conditioning, make_denoiser
from cami2v_core.sampling import Guidance, make_ddim_schedule, sample_ddim

from .harness import PeakMemory, inference, machine_info, summary, tensor_bytes, timed
from .models import VARIANTS, build_family

TEXT_TOKENS = 77
IMAGE_TOKENS_PER_FRAME = 16


@dataclass
class Settings:
    """What one benchmark run measures (see `python -m benchmarks --help`)."""

    device: str = "cpu"
    dtype: str = "fp32"
    frames: int = 16
    steps: int = 2
    repeats: int = 3
    batch_branches: bool = True
    cfg_text: float = 7.5
    trajectory: str = "orbit left"
    variants: tuple = VARIANTS
    kernel: str = "auto"
    quick: bool = False
    seed: int = 0
    levels: bool = True  # also time epipolar attention alone per mask level, dense against gathered
    size: str = "256"  # "tiny" builds the golden fixtures' miniature models (tests of this package)
    notes: list = field(default_factory=list)

    @property
    def torch_dtype(self) -> torch.dtype:
        return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[self.dtype]


def camera_inputs(frames: int, resolution, trajectory: str = "orbit left"):
    """w2c [1,T,4,4] and pixel intrinsics [1,T,3,3] of a demo trajectory (the demo's intrinsics, spec §6.1)."""
    import trajectories as tj

    path = tj.preset(trajectory, frames=frames)
    w2c = torch.tensor(path.w2c, dtype=torch.float32)[None]
    height, width = resolution
    focal = 0.5 * max(height, width)  # the demo's 90-degree field of view over the long side
    K = torch.tensor([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]])
    return w2c, K.expand(1, frames, 3, 3).clone()


def prepare_camera(model, w2c, K, frames: int, device: torch.device, seed: int):
    """The camera condition, masks in gathered form where the kernel gathers them -> (condition, seconds, info)."""
    generator = torch.Generator().manual_seed(seed)
    info = {}

    def build():
        if model.pose_encoder is not None:
            model.pose_encoder.to(device)
        camera = model.prepare_camera(w2c, K, torch.tensor([0]), generator=generator)
        if model.pose_encoder is not None and device.type == "cuda":
            model.pose_encoder.to("cpu")  # runs once per video: off the GPU while the UNet samples
        if camera is not None and camera.epipolar_masks is not None:
            registers = int(model.config.epipolar.get("num_register_tokens", 0))
            info.update(epipolar_module.prepare_masks(camera.epipolar_masks, frames, registers, device))
        return camera

    with inference():
        camera, seconds = timed(build, device)
    return camera, seconds, info


def random_conditioning(model, frames: int, device, dtype, camera, seed: int) -> Conditioning:
    """Conditioning of the right shapes for both guidance branches, with random tensors instead of encoder outputs."""
    g = torch.Generator().manual_seed(seed + 1)
    h, w = model.config.image_size
    context_dim = model.config.unet["context_dim"]
    length = TEXT_TOKENS + IMAGE_TOKENS_PER_FRAME * frames

    def rand(*shape):
        return torch.randn(shape, generator=g).to(device, dtype)

    return Conditioning(context={"cond": rand(1, length, context_dim), "uncond": rand(1, length, context_dim)},
                        c_concat=rand(1, model.config.channels, frames, h, w),
                        fs=torch.tensor([int(model.config.default_fs)], device=device), camera=camera, image=None,
                        K=None)


def unet_call(model, cond: Conditioning, x: torch.Tensor, t: torch.Tensor):
    """One conditional UNet call (batch 1), as the sampler makes it."""
    return lambda: model.apply_model(x, t, cond.context["cond"], cond.c_concat, cond.fs, camera=cond.camera)


def run(settings: Settings, log=print) -> dict:
    """Measure every model of `settings.variants` -> the JSON-ready report."""
    device = torch.device(settings.device)
    dtype = settings.torch_dtype
    epipolar_module.set_kernel(settings.kernel)
    torch.manual_seed(settings.seed)
    frames = settings.frames
    report = {"settings": {k: v for k, v in asdict(settings).items() if k != "notes"},
              "machine": machine_info(device), "models": {}, "notes": list(settings.notes)}
    report["settings"]["variants"] = list(settings.variants)

    start = time.perf_counter()
    log(f"building {', '.join(settings.variants)} (random weights, {settings.dtype} on {device})")
    models = build_family(settings.variants, device, dtype, settings.seed, settings.size)
    report["build_s"] = time.perf_counter() - start
    resolution = next(iter(models.values())).config.resolution
    report["settings"]["resolution"] = list(resolution)

    w2c, K = camera_inputs(frames, resolution, settings.trajectory)
    conds, results = {}, {}
    for name, model in models.items():
        camera, seconds, info = prepare_camera(model, w2c, K, frames, device, settings.seed)
        conds[name] = random_conditioning(model, frames, device, dtype, camera, settings.seed)
        unet = model.model.diffusion_model
        results[name] = {"camera_setup_s": seconds, "weights_bytes": tensor_bytes(unet.parameters()),
                         "camera_bytes": _camera_bytes(camera),
                         "parameters": sum(p.numel() for p in unet.parameters())}
        if model.pose_encoder is not None:
            results[name]["pose_encoder_bytes"] = tensor_bytes(model.pose_encoder.parameters())
        if info:
            results[name]["epipolar_levels"] = info
        log(f"{name}: camera setup {seconds:.2f} s")

    # UNet forwards, interleaved across models
    g = torch.Generator().manual_seed(settings.seed + 2)
    config = next(iter(models.values())).config
    x = torch.randn(1, config.channels, frames, *config.image_size, generator=g).to(device, dtype)
    t = torch.tensor([500], device=device)
    runs = {name: [] for name in models}
    cpu_runs = {name: [] for name in models}
    with inference():
        # one untimed call first: the first forward of a process also pays for page faults and kernel setup, which
        # the shared layers then no longer need in any model
        first = next(iter(models))
        _, seconds = timed(unet_call(models[first], conds[first], x, t), device)
        log(f"{first}: warm-up forward {seconds:.2f} s (not counted)")
        for r in range(settings.repeats):
            # the order flips every round (A B, B A, ...), so a drift in machine speed favours no model
            for name in (list(models) if r % 2 == 0 else list(models)[::-1]):
                cpu_start = time.process_time()
                _, seconds = timed(unet_call(models[name], conds[name], x, t), device)
                cpu_runs[name].append(time.process_time() - cpu_start)
                runs[name].append(seconds)
                log(f"{name}: UNet forward {seconds:.2f} s (run {r + 1}/{settings.repeats})")
    for name in models:
        results[name]["unet_forward_s"] = summary(runs[name])
        results[name]["unet_forward_runs_s"] = runs[name]
        results[name]["unet_forward_cpu_s"] = summary(cpu_runs[name])
        results[name]["unet_forward_cpu_runs_s"] = cpu_runs[name]
    if settings.levels and settings.size == "256":
        from .levels import measure_levels

        report["epipolar_levels"] = measure_levels(w2c, K, frames, device, dtype, repeats=1, seed=settings.seed,
                                                   log=log)

    # one sampling run per model, with its peak memory
    for name, model in models.items():
        seconds, transient = sampling_run(model, conds[name], settings, device)
        res = results[name]
        res["sampling_s"] = seconds
        res["sampling_steps"] = settings.steps
        # counted again now: the cell-major layouts the gathered kernel derives at its first call belong to it too
        res["camera_bytes"] = _camera_bytes(conds[name].camera)
        if device.type == "cuda":
            res["peak_memory_bytes"] = transient  # everything on the device during the run
        else:
            res["peak_transient_bytes"] = transient
            res["peak_memory_bytes"] = res["weights_bytes"] + res["camera_bytes"] + transient
        log(f"{name}: sampling {settings.steps} steps {seconds:.2f} s, peak memory {res['peak_memory_bytes'] / 2**30:.2f}"
            " GiB")
        gc.collect()

    report["models"] = results
    report.update(ratios(results))
    report["total_s"] = time.perf_counter() - start
    return report


def sampling_run(model, cond: Conditioning, settings: Settings, device) -> tuple:
    """The denoising loop of sample_latent for `settings.steps` steps -> (seconds, peak memory bytes)."""
    g = torch.Generator().manual_seed(settings.seed + 3)
    h, w = cond.c_concat.shape[-2:]
    x_T = torch.randn(1, model.config.channels, settings.frames, h, w, generator=g).to(device)
    schedule = make_ddim_schedule(model.alphas_cumprod.cpu(), settings.steps, eta=1.0)
    guidance = Guidance(cfg_text=settings.cfg_text)
    denoise = make_denoiser(model, cond, settings.batch_branches)
    has_camera = model.config.camera is not None

    def loop():
        return sample_ddim(denoise, x_T, schedule, guidance, prediction=model.parameterization, generator=g,
                           camera=has_camera)

    with inference(), PeakMemory(device) as peak:
        _, seconds = timed(loop, device)
    return seconds, peak.bytes


def ratios(results: dict) -> dict:
    """CamI2V (and CameraCtrl) over DynamiCrafter, for the numbers measured in this run.

    The UNet-forward ratio is the median of the per-round ratios (each model's forward of round r over
    DynamiCrafter's of the same round, run back to back) when the runs are given: on a shared machine whose speed
    drifts by 10% within minutes, pairs measured together scatter much less than separate medians. The same from
    process CPU time (`*_cpu`) is not slowed by time the machine gives to other guests."""
    out = {}
    base = results.get("dynamicrafter")
    if base is None:
        return out
    for name, prefix in (("cami2v", ""), ("cameractrl", "cameractrl_")):
        res = results.get(name)
        if res is None:
            continue
        key = f"{prefix}epipolar_overhead" if not prefix else f"{prefix}overhead"
        out[key] = _paired_ratio(res, base, "unet_forward_s", "unet_forward_runs_s")
        if "unet_forward_cpu_s" in res and "unet_forward_cpu_s" in base:
            out[f"{key}_cpu"] = _paired_ratio(res, base, "unet_forward_cpu_s", "unet_forward_cpu_runs_s")
        out[f"{prefix}memory_overhead"] = res["peak_memory_bytes"] / base["peak_memory_bytes"]
        out[f"{prefix}sampling_overhead"] = res["sampling_s"] / base["sampling_s"]
    return out


def _paired_ratio(res: dict, base: dict, field: str, runs_field: str) -> float:
    """Median of per-round ratios res/base when both have the same number of runs, else the ratio of `field`."""
    a, b = res.get(runs_field), base.get(runs_field)
    if a and b and len(a) == len(b):
        return statistics.median(x / y for x, y in zip(a, b))
    return res[field] / base[field]


def _camera_bytes(camera) -> int:
    """Bytes of the tensors a camera condition holds (pose features, masks, rt)."""
    if camera is None:
        return 0
    tensors = list(getattr(camera, "pose_features", None) or [])
    for mask in (getattr(camera, "epipolar_masks", None) or {}).values():
        # a gathered form's index tensors (those its layouts share counted once)
        tensors.extend([mask] if torch.is_tensor(mask) else mask.tensors())
    if getattr(camera, "rt", None) is not None:
        tensors.append(camera.rt)
    return tensor_bytes(tensors)
