"""python -m benchmarks.gpu_check: the GPU path checked in one prepared run, printed as one table (issue 19).

    python -m benchmarks.gpu_check --out gpu_check_out     # on one GPU: under 8 minutes, no network needed
    python -m benchmarks.gpu_check --cpu-dry-run           # the same run shrunk (tiny models, 2 steps) on a CPU
    bash benchmarks/gpu_check.sh                           # what a GPU machine runs: dependencies, this, the tests

Sections, in the order they run (each is a list of table rows):

  environment  torch, CUDA build, the GPU, the optional kernels (xformers, FlexAttention) and bf16 support
  numerics     the bundled tiny model on the device in fp32 / fp16 / bf16 against the CPU fp32 run: encoders,
               epipolar masks built on the device, UNet eps per epipolar kernel, VAE decode, a short sampling run
  attention    every backend of modules/attention.py, and on CUDA every SDPA kernel, against float64 maths; timed
  epipolar     every epipolar kernel (modules/epipolar.py KERNELS) at the largest mask levels of the 256 and 512
               models, timed, against the dense kernel (FlexAttention compiled on CUDA, eager in the CPU dry
               run); the 512 model's unmasked top level
  speed        DDIM steps (25) of DynamiCrafter and CamI2V at 256x256x16 and 320x512x16, random weights
  vram         the whole model (random weights, every encoder and the VAE) through encode / sample / decode,
               keep_loaded against offload: peak memory per phase

Columns: `value` and `unit` are what a row costs (seconds, GiB, a ratio); `diff` is how far its output is from the
reference it is compared with (relative L2 for whole networks, max |difference| for kernels); `goal` is the bound
that `diff` must keep, or the issue's target for `value` (targets are reported, never asserted); `status` is ok,
over (bound or target missed), error, oom, skipped (no time left, or not available here) or timeout.

On CUDA every section runs in its own process under a timeout, so a crash, a hang or an exhausted GPU in one
section leaves the rows of the others; the rows are written as they come (rows.jsonl) and gathered into
gpu_check.json and gpu_check.txt in --out. Random weights everywhere except the numerics section, which uses the
bundled tiny model: speed and memory do not depend on the values, and nothing is downloaded.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import importlib.util
import json
import math
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

COLUMNS = ("section", "case", "status", "value", "unit", "diff", "goal", "note")
SECTIONS = ("environment", "numerics", "attention", "epipolar", "speed", "vram")
# Most seconds each section may take (each also stops at what is left of --budget): on a GPU, and in the dry run.
SECTION_SECONDS = {"environment": 15, "numerics": 70, "attention": 25, "epipolar": 70, "speed": 120, "vram": 80}
ISOLATION_S = 30.0  # what a section's own process may take on top to start (import torch, CUDA context) and end
DRY_SECTION_SECONDS = {"environment": 3, "numerics": 18, "attention": 4, "epipolar": 8, "speed": 12, "vram": 10}
DEFAULT_BUDGET_S = 420.0  # the python part of the 8-minute run; gpu_check.sh keeps the rest for setup and tests
DRY_BUDGET_S = 55.0
DRY_CASE_SCALE = 0.15  # what a case needs in the dry run, as a share of what it needs on the GPU
STATUSES = ("ok", "over", "error", "oom", "skipped", "timeout")

# Relative L2 error a whole network's output may have against the CPU fp32 run (tests/devices.py NETWORK_BOUNDS,
# measured on the tiny UNet). fp32 on CUDA convolves in TF32 by default (torch.backends.cudnn.allow_tf32), ~1e-3.
NETWORK_BOUND = {"fp32": 5e-3, "fp16": 1.5e-2, "bf16": 1.2e-1}
# Max |difference| a single attention call may have against float64 maths (unit-variance inputs, d = 64).
KERNEL_BOUND = {"fp32": 1e-4, "fp16": 1e-2, "bf16": 6e-2}
# The targets (reported, never asserted).
GOAL_RATIO = 1.10                    # CamI2V sampling time over DynamiCrafter's on the same GPU
GOAL_256_SECONDS_H100 = 1.0          # a 25-step 256 video on an H100
GOAL_256_OFFLOAD_GIB = 8.0           # peak memory of a 256 video in fp16 with offload
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
SIZE_LABELS = {"256": "256x256x16", "512": "320x512x16", "tiny": "64x64x8 tiny", "tiny-wide": "64x128x8 tiny"}


@dataclass
class Plan:
    """What one run measures. `plan_for` gives the GPU run and the CPU dry run."""

    device: str = "cuda"
    dtype: str = "fp16"                         # speed, vram, epipolar and attention timings
    dtypes: tuple = ("fp32", "fp16", "bf16")    # numerics
    steps: int = 25                             # speed: DDIM steps per video
    numerics_steps: int = 10                    # numerics: steps of the short sampling run
    pipeline_steps: int = 3                     # vram: steps while measuring (memory does not grow with steps)
    repeats: int = 3                            # timed calls per kernel (median)
    sizes: tuple = ("256", "512")
    dry: bool = False
    budget_s: float = DEFAULT_BUDGET_S
    isolate: bool = True                        # each section in its own process
    sections: tuple = SECTIONS

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def warmup(self) -> int:
        """Untimed calls before a timed one: 1 on a GPU (cuDNN autotuning, lazy kernels), none in the dry run."""
        return 0 if self.dry else 1


def plan_for(args: argparse.Namespace) -> Plan:
    """The GPU plan, or with --cpu-dry-run the same sections shrunk to run on a CPU in under a minute."""
    sections = tuple(s.strip() for s in args.sections.split(",") if s.strip()) if args.sections else SECTIONS
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown or not sections:
        raise SystemExit(f"--sections takes a comma list out of {', '.join(SECTIONS)}; got {args.sections!r}")
    if args.cpu_dry_run:
        plan = Plan(device="cpu", dtype="fp32", dtypes=("fp32", "bf16"), steps=2, numerics_steps=2, pipeline_steps=2,
                    repeats=1, sizes=("tiny", "tiny-wide"), dry=True, budget_s=DRY_BUDGET_S, isolate=False)
    else:
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device: torch sees none (torch %s, CUDA build %s). Run this on a GPU, or "
                             "--cpu-dry-run to check the script on a CPU" % (torch.__version__, torch.version.cuda))
        plan = Plan()
    changes = {"sections": sections}
    if args.budget is not None:
        changes["budget_s"] = float(args.budget)
    if args.steps is not None:
        if args.steps < 1:
            raise SystemExit(f"--steps must be >= 1; got {args.steps}")
        changes["steps"] = args.steps
    if args.isolate is not None:
        changes["isolate"] = args.isolate
    return dataclasses.replace(plan, **changes)


# -- rows ----------------------------------------------------------------------------------------------------------

def _clean(value):
    """JSON-safe: non-finite floats as strings, tuples as lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


class Recorder:
    """Collects one section's rows, appending each to `path` (JSON lines) as it comes, and keeps its deadline."""

    def __init__(self, section: str, deadline: float, path: Path | None = None, log=None, scale: float = 1.0):
        self.section = section
        self.deadline = deadline
        self.scale = scale  # the dry run's share of the GPU run's time: what a case needs shrinks with it
        self.path = path
        self.rows: list[dict] = []
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))

    def left(self) -> float:
        """Seconds before this section's deadline."""
        return self.deadline - time.time()

    def add(self, case: str, status: str = "ok", value=None, unit: str = "", diff=None, goal: str = "",
            note: str = "", **details) -> dict:
        """One row; `details` go to the JSON only."""
        if status not in STATUSES:
            raise ValueError(f"row status must be one of {', '.join(STATUSES)}, got {status!r}")
        row = {"section": self.section, "case": case, "status": status, "value": value, "unit": unit, "diff": diff,
               "goal": goal, "note": note}
        if details:
            row["details"] = details
        row = _clean(row)
        self.rows.append(row)
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(json.dumps(row) + "\n")
        self.log(f"[{self.section}] {format_row(row)}")
        return row

    @contextlib.contextmanager
    def case(self, name: str, needs_s: float = 0.0):
        """Guard one case: past the deadline (less than `needs_s` left) it is a skipped row; an exception or an
        exhausted GPU becomes an error / oom row and the section goes on. Yields True when the case should run."""
        needs_s *= self.scale
        if self.left() < needs_s:
            self.add(name, "skipped", note=f"{max(self.left(), 0):.0f} s left of this section, needs ~{needs_s:.0f}")
            yield False
            return
        try:
            yield True
        except torch.OutOfMemoryError as e:
            self.add(name, "oom", note=str(e).splitlines()[0][:160])
        except Exception as e:  # every failure is a result here: the run must go on to the next case
            where = next((f"{Path(f.filename).name}:{f.lineno}" for f in reversed(traceback.extract_tb(e.__traceback__))
                          if "cami2v" in f.filename or "benchmarks" in f.filename or "trajectories" in f.filename), "")
            message = str(e).splitlines()[0][:160] if str(e) else ""
            self.add(name, "error", note=f"{type(e).__name__}: {message} ({where})")
        finally:
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def format_row(row: dict) -> str:
    """One row as a line of text (the log)."""
    return "  ".join(f"{k}={_cell(row.get(k))}" for k in COLUMNS[1:] if row.get(k) not in (None, ""))


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def render_table(rows: list[dict]) -> str:
    """The rows as one fixed-width text table with the COLUMNS header."""
    cells = [list(COLUMNS)] + [[_cell(r.get(c)) for c in COLUMNS] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    widths[-1] = min(widths[-1], 90)
    lines = []
    for n, line in enumerate(cells):
        lines.append("  ".join(v[:w].ljust(w) for v, w in zip(line, widths)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def parse_table(text: str) -> tuple[list[str], list[dict]]:
    """The header and rows of `render_table` text (for tests and for reading a saved gpu_check.txt)."""
    lines = [line for line in text.splitlines() if line.strip()]
    header_at = next(i for i, line in enumerate(lines) if line.split()[:3] == list(COLUMNS[:3]))
    header, rule = lines[header_at], lines[header_at + 1]
    starts = [i for i, ch in enumerate(rule) if ch == "-" and (i == 0 or rule[i - 1] == " ")]
    names = [header[s:e].strip() for s, e in zip(starts, starts[1:] + [None])]
    rows = []
    for line in lines[header_at + 2:]:
        if line.startswith("="):
            break
        rows.append({n: line[s:e].strip() for n, s, e in zip(names, starts, starts[1:] + [None])})
    return names, rows


# -- measuring -------------------------------------------------------------------------------------------------------

def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed_median(fn, device, repeats: int, warmup: int = 1):
    """(last result, median seconds) of `repeats` synchronised calls after `warmup` untimed ones."""
    result = None
    for _ in range(warmup):
        result = fn()
    runs = []
    for _ in range(max(1, repeats)):
        _sync(device)
        start = time.perf_counter()
        result = fn()
        _sync(device)
        runs.append(time.perf_counter() - start)
    return result, statistics.median(runs)


def rel_l2(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """|actual - expected| / |expected| in float64 on the CPU."""
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    if not torch.isfinite(a).all():
        return math.inf
    return float((a - e).norm() / e.norm().clamp_min(1e-30))


def max_abs(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| in float64 on the CPU (inf for a non-finite output)."""
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    if not torch.isfinite(a).all():
        return math.inf
    return float((a - e).abs().max())


def within(diff: float, bound: float) -> str:
    return "ok" if diff <= bound else "over"


@contextlib.contextmanager
def project_kernels(backend: str | None = None, kernel: str | None = None):
    """The attention backend and epipolar kernel for the block, restored after."""
    from cami2v_core.modules import attention
    from cami2v_core.modules import epipolar

    previous = attention.get_backend(), epipolar.get_kernel()
    if backend is not None:
        attention.set_backend(backend)
    if kernel is not None:
        epipolar.set_kernel(kernel)
    try:
        yield
    finally:
        attention.set_backend(previous[0])
        epipolar.set_kernel(previous[1])


def gib(n_bytes: float) -> float:
    return n_bytes / 2 ** 30


def human_bytes(n_bytes: float) -> str:
    return f"{gib(n_bytes):.1f} GiB" if n_bytes >= 2 ** 29 else f"{n_bytes / 2 ** 20:.1f} MiB"


def goal_status(plan: Plan, met: bool) -> str:
    """ok / over for one of the issue's targets; the dry run's tiny models have none (always ok)."""
    return "ok" if met or plan.dry else "over"


# -- sections --------------------------------------------------------------------------------------------------------

def section_environment(plan: Plan, rec: Recorder) -> None:
    """torch and the device; which optional kernels work here."""
    from cami2v_core.modules import attention

    from .harness import machine_info

    device = torch.device(plan.device)
    info = machine_info(device)
    rec.add("torch", value=torch.__version__, note=f"CUDA build {torch.version.cuda}, python {info['python']}")
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        rec.add("device", value=p.name, note=f"compute {p.major}.{p.minor}, {gib(p.total_memory):.1f} GiB, "
                f"{p.multi_processor_count} SMs, cuDNN {torch.backends.cudnn.version()}, TF32 convs "
                f"{torch.backends.cudnn.allow_tf32}", memory_bytes=int(p.total_memory))
    else:
        rec.add("device", value="cpu", note=f"{info['cpu']}, {info['cpu_count']} cores, {info['torch_threads']} "
                f"torch threads")
    flex = "yes" if importlib.util.find_spec("torch.nn.attention.flex_attention") else "no"
    bf16 = torch.cuda.is_bf16_supported() if device.type == "cuda" else True
    xformers = attention.xformers_available()
    rec.add("optional kernels", value="", note=f"xformers {'yes' if xformers else 'no'}; flex_attention {flex}; "
            f"bf16 {'yes' if bf16 else 'no'}", xformers=xformers, flex_attention=flex == "yes", bf16=bf16)


def _tiny_inputs(model):
    """A smooth test picture at twice the model's size and the 'orbit left' path of its frame count."""
    import numpy as np

    import trajectories as tj

    height, width = model.config.resolution
    yy, xx = np.mgrid[0:height * 2, 0:width * 2]
    image = np.stack([xx * 255 // (width * 2), yy * 255 // (height * 2), (xx + yy) * 127 // (height + width)],
                     -1).astype(np.uint8)
    return image, tj.preset("orbit left", frames=model.config.temporal_length).w2c


def _load_tiny(device, dtype: str):
    """The bundled tiny CamI2V on `device` in `dtype` (random weights of the tiny preset when not bundled)."""
    from cami2v_core.bundled import bundled_model_path
    from cami2v_core.model import build_model, load_model

    from .models import random_init_

    path = bundled_model_path()
    if path is not None:
        return load_model(path, device=device, dtype=dtype), "bundled tiny model"
    model = build_model("tiny", dtype=dtype)
    random_init_(model, torch.Generator().manual_seed(0))
    return model.to(device), "tiny preset, random weights (no bundled model here)"


def section_numerics(plan: Plan, rec: Recorder) -> None:
    """The device in each dtype against the CPU fp32 run of the same tiny model and inputs."""
    from cami2v_core import pipeline

    device = torch.device(plan.device)
    branches = ("cond", "uncond")
    reference, source = _load_tiny("cpu", "fp32")
    image, w2c = _tiny_inputs(reference)
    frames = reference.config.temporal_length

    def conditioning(model):
        return pipeline.encode_conditioning(model, image, w2c, prompt="a room", branches=branches,
                                            generator=pipeline.make_generator(0))

    def eps_of(model, cond, kernel):
        """One UNet call on fixed inputs; the camera built on the model's device, the rest from `cond`."""
        g = torch.Generator().manual_seed(1)
        h, w = cond.c_concat.shape[-2:]
        x = torch.randn(1, reference.config.channels, frames, h, w, generator=g).to(model.device, model.dtype)
        t = torch.tensor([500], device=model.device)
        with project_kernels(kernel=kernel):
            camera = model.prepare_camera(w2c_tensor.to(model.device), cond.K.to(model.device), torch.tensor([0]),
                                          generator=torch.Generator().manual_seed(2))
            return model.apply_model(x, t, cond.context["cond"].to(model.device, model.dtype),
                                     cond.c_concat.to(model.device, model.dtype), cond.fs.to(model.device), camera)

    def sample(model, kernel="auto"):
        with project_kernels(kernel=kernel):
            return pipeline.sample_latent(model, image, w2c, prompt="a room", steps=plan.numerics_steps, seed=0,
                                          cfg_text=7.5)

    w2c_tensor = torch.tensor(w2c, dtype=torch.float32)[None]
    with torch.inference_mode():
        start = time.perf_counter()
        ref_cond = conditioning(reference)
        ref_eps = eps_of(reference, ref_cond, "dense").float()
        latent_in = torch.randn(frames, reference.config.channels, *ref_cond.c_concat.shape[-2:],
                                generator=torch.Generator().manual_seed(3))
        ref_frames = reference.decode_first_stage(latent_in).float()
        ref_latent = sample(reference, "dense")
        with project_kernels(kernel="dense"):  # the masks themselves, not their gathered forms
            ref_masks = reference.prepare_camera(w2c_tensor, ref_cond.K, torch.tensor([0]),
                                                 generator=torch.Generator().manual_seed(2)).epipolar_masks
        rec.add("cpu fp32 reference", value=time.perf_counter() - start, unit="s", note=f"{source}, "
                f"{plan.numerics_steps}-step sampling")
    for dtype in plan.dtypes:
        bound = NETWORK_BOUND[dtype]
        goal = f"rel L2 <= {bound:g}"
        label = f"{device.type} {dtype}"
        model = None
        with rec.case(f"{label} load", needs_s=5) as run:
            if run:
                if device.type == "cpu" and dtype == "fp32":
                    model = reference
                else:
                    model, _ = _load_tiny(device, dtype)
        if model is None:
            continue
        with torch.inference_mode():
            with rec.case(f"{label} text+image encoders", needs_s=3) as run:
                if run:
                    (cond, seconds) = timed_median(lambda: conditioning(model), device, 1, warmup=0)
                    diff = max(rel_l2(cond.context[b], ref_cond.context[b]) for b in branches)
                    diff = max(diff, rel_l2(cond.c_concat, ref_cond.c_concat))
                    rec.add(f"{label} text+image encoders", within(diff, bound), seconds, "s", diff, goal,
                            "context and image latent, worst of both branches")
            if device.type != "cpu":
                with rec.case(f"{label} epipolar masks built on the device", needs_s=3) as run:
                    if run:
                        with project_kernels(kernel="dense"):
                            masks = model.prepare_camera(w2c_tensor.to(device), ref_cond.K.to(device),
                                                         torch.tensor([0]),
                                                         generator=torch.Generator().manual_seed(2)).epipolar_masks
                        flipped = sum(int((masks[s].cpu() != m).sum()) for s, m in ref_masks.items())
                        total = sum(m.numel() for m in ref_masks.values())
                        rec.add(f"{label} epipolar masks built on the device", "ok", None, "", flipped / total,
                                "", f"share of mask entries that differ from the CPU's ({flipped} of {total})")
            for kernel in ("dense", "gathered"):
                with rec.case(f"{label} unet eps {kernel}", needs_s=3) as run:
                    if run:
                        eps, seconds = timed_median(lambda: eps_of(model, ref_cond, kernel), device, 1, plan.warmup)
                        diff = rel_l2(eps, ref_eps)
                        rec.add(f"{label} unet eps {kernel}", within(diff, bound), seconds, "s", diff, goal,
                                "against the CPU fp32 dense kernel; same conditioning")
            with rec.case(f"{label} vae decode", needs_s=3) as run:
                if run:
                    decoded, seconds = timed_median(lambda: model.decode_first_stage(latent_in), device, 1, plan.warmup)
                    diff = rel_l2(decoded, ref_frames)
                    rec.add(f"{label} vae decode", within(diff, bound), seconds, "s", diff, goal)
            with rec.case(f"{label} sampling {plan.numerics_steps} steps", needs_s=5) as run:
                if run:
                    latent, seconds = timed_median(lambda: sample(model), device, 1, warmup=0)
                    diff = rel_l2(latent, ref_latent)
                    rec.add(f"{label} sampling {plan.numerics_steps} steps", "ok", seconds, "s", diff, "",
                            "kernel auto against CPU fp32 dense; the same draws (differences grow with steps)")
        if model is not reference:
            del model


def _backend_available(name: str) -> str | None:
    """Why an attention backend cannot run here, or None."""
    from cami2v_core.modules import attention

    if name == "xformers" and not attention.xformers_available():
        return "xformers is not importable or has no working CUDA kernel here"
    return None


def section_attention(plan: Plan, rec: Recorder) -> None:
    """Every project backend (and every SDPA kernel on CUDA) against float64 maths, then timed at a real shape."""
    from cami2v_core.modules import attention

    device = torch.device(plan.device)
    dtype = plan.torch_dtype
    g = torch.Generator().manual_seed(0)
    small = [torch.randn(2, 3, 77, 64, generator=g) for _ in range(3)]
    mask = torch.rand(2, 1, 77, 77, generator=g) > 0.5
    mask[..., 0] = True
    refs = [attention.attention_math(*(t.double() for t in small), m) for m in (None, mask)]
    # the 256 model's top-level spatial attention of a guided video: (2 branches x 16 frames), 5 heads, 32x32 tokens
    shape = (4, 2, 256, 32) if plan.dry else (32, 5, 1024, 64)
    big = [torch.randn(*shape, generator=g).to(device, dtype) for _ in range(3)]
    bound = KERNEL_BOUND[plan.dtype]

    def check(name, call, masked=True):
        cases = (None, mask) if masked else (None,)
        outs = [call(*(t.to(device, dtype) for t in small), None if m is None else m.to(device)) for m in cases]
        diff = max(max_abs(o, r) for o, r in zip(outs, refs))
        _, seconds = timed_median(lambda: call(*big, None), device, plan.repeats, plan.warmup)
        what = "masked and unmasked" if masked else "unmasked (it takes no mask)"
        rec.add(name, within(diff, bound), seconds * 1e3, "ms", diff, f"max|diff| <= {bound:g}",
                f"{plan.dtype} {list(shape)}; diff: {what} [2, 3, 77, 64] against float64 maths")

    for name in attention.BACKENDS:
        case = f"backend {name}"
        reason = _backend_available(name)
        if reason:
            rec.add(case, "skipped", note=reason)
            continue
        with rec.case(case, needs_s=2) as run:
            if run:
                with project_kernels(backend=name):
                    check(case, lambda q, k, v, m: attention.attention(q, k, v, m))
    if device.type != "cuda":
        rec.add("sdpa kernels", "skipped", note="flash / efficient / cudnn kernels are CUDA only")
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    for kernel in ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH"):
        case = f"sdpa {kernel.lower()}"
        if not hasattr(SDPBackend, kernel):
            rec.add(case, "skipped", note="not in this torch")
            continue
        with rec.case(case, needs_s=2) as run:
            if run:
                try:
                    with sdpa_kernel([getattr(SDPBackend, kernel)]):
                        check(case, lambda q, k, v, m: attention.attention_sdpa(q, k, v, m),
                              masked=kernel != "FLASH_ATTENTION")
                except RuntimeError as e:  # this kernel does not take these inputs (dtype, head size, mask)
                    if "No available kernel" not in str(e):
                        raise
                    rec.add(case, "skipped", note=f"not available for {plan.dtype} [2, 3, 77, 64] / {list(shape)} "
                            "here (torch: no available kernel)")
    # the VAE's mid-block attention: one head of 512 channels, wider than the fused kernels' limit
    with rec.case("sdpa one head of 512 (VAE mid block)", needs_s=2) as run:
        if run:
            q = torch.randn(4, 1, 1024, 512, generator=g).to(device, dtype)
            ref = attention.attention_math(q[:1].double(), q[:1].double(), q[:1].double())
            out, seconds = timed_median(lambda: attention.attention(q, q, q), device, plan.repeats, plan.warmup)
            diff = max_abs(out[:1], ref)
            rec.add("sdpa one head of 512 (VAE mid block)", within(diff, bound), seconds * 1e3, "ms", diff,
                    f"max|diff| <= {bound:g}", f"{plan.dtype} [4, 1, 1024, 512]")


def _levels(plan: Plan):
    """(label, config, stride or None = unmasked, channels, heads) of the largest epipolar levels per size."""
    from .levels import level_channels
    from .models import family_configs

    out = []
    for size in plan.sizes:
        config = family_configs(size, ("cami2v",))["cami2v"]
        channels = level_channels(config)
        head = config.unet["num_head_channels"]
        strides = sorted(channels)[:2]  # the two finest masked levels carry nearly all the epipolar work
        for stride in strides:
            out.append((f"{SIZE_LABELS[size]} stride {stride}", config, stride, channels[stride],
                        channels[stride] // head))
        finest = 8 * min(int(r) for r in config.epipolar["attention_resolution"])
        if finest > 8:  # the top level (stride 8 px) has no mask: the released 512 model (spec §4.4.7)
            ch = config.unet["model_channels"]
            out.append((f"{SIZE_LABELS[size]} top level unmasked", config, None, ch, ch // head))
    return out


def _level_mask(config, stride: int):
    """The demo path's dense epipolar mask [1, L, L] at `stride` px (CPU) and its frames / cells."""
    from cami2v_core import camera as camera_maths

    from .runner import camera_inputs

    frames = config.temporal_length
    height, width = config.resolution
    w2c, K = camera_inputs(frames, (height, width))
    rel = camera_maths.relative_c2w(w2c, torch.tensor([0]))
    masks, _ = camera_maths.epipolar_structures(rel, K, height, width, [stride],
                                                generator=torch.Generator().manual_seed(0))
    return masks[stride], frames, (height // stride) * (width // stride)


def section_epipolar(plan: Plan, rec: Recorder) -> None:
    """Each epipolar kernel on one block of the largest levels (batch 2: the guidance branches), against dense."""
    from cami2v_core.modules import epipolar as epi

    from .models import random_init_

    device = torch.device(plan.device)
    dtype = plan.torch_dtype
    batch, registers = 2, 4
    for label, config, stride, dim, heads in _levels(plan):
        g = torch.Generator().manual_seed(0)
        module = epi.EpipolarAttention(dim, heads, num_register_tokens=registers)
        random_init_(module, g)
        module = module.to(device, dtype).eval()
        frames = config.temporal_length
        if stride is None:
            cells = config.image_size[0] * config.image_size[1]
            x = torch.randn(batch * cells, frames, dim, generator=g).to(device, dtype)
            tokens = frames * cells
            with rec.case(f"{label} sdpa", needs_s=5) as run:
                if run:
                    with torch.inference_mode():
                        _, seconds = timed_median(lambda: module(x, None, batch), device, plan.repeats, plan.warmup)
                    rec.add(f"{label} sdpa", "ok", seconds * 1e3, "ms", None, "", f"{tokens} tokens, {plan.dtype}, "
                            f"batch {batch}")
            with rec.case(f"{label} math backend", needs_s=1) as run:
                if run:
                    _math_refusal_case(rec, label, batch, heads, tokens, dim // heads, device, dtype)
            continue
        mask, frames, cells = _level_mask(config, stride)
        mask = mask.to(device)
        tokens = frames * cells
        x = torch.randn(batch * cells, frames, dim, generator=g).to(device, dtype)
        density = float(mask.float().mean())
        outputs = {}
        for kernel in epi.KERNELS[::-1]:  # dense first: the reference of the others
            case = f"{label} kernel {kernel}"
            with rec.case(case, needs_s=5) as run:
                if not run:
                    continue
                note = f"{tokens} tokens, mask density {density:.1%}, {plan.dtype}, batch {batch}"
                with project_kernels(kernel=kernel), torch.inference_mode():
                    build = 0.0
                    if kernel == "flex":
                        start = time.perf_counter()
                        block_mask = epi.flex_block_mask(mask.expand(batch, -1, -1), registers, device)
                        _sync(device)
                        build = time.perf_counter() - start
                        note += (f"; BlockMask built in {build:.2f} s, {flex_skipped_tiles(block_mask):.0%} of "
                                 f"{epi.FLEX_BLOCK}x{epi.FLEX_BLOCK} tiles skipped"
                                 + ("" if device.type == "cuda" else "; eager (not compiled) off CUDA"))
                    elif kernel != "dense":
                        start = time.perf_counter()
                        blocks = epi.gathered_form(mask, frames, registers, device)
                        _sync(device)
                        build = time.perf_counter() - start
                        runs = epi.prepare_masks({stride: mask}, frames, registers, device)[stride]["kernel"]
                        note += f"; layout built in {build:.2f} s" if blocks is not None else f"; auto runs {runs}"
                    flex_form = epi.takes_flex(mask, registers, device)  # under the kernel in force
                    given = (mask.expand(batch, -1, -1) if flex_form  # the view its BlockMask was cached for
                             else epi.pad_register_columns(mask.expand(batch, -1, -1), registers, device))
                    start = time.perf_counter()
                    first_out = module(x, given, batch)  # compiles flex on CUDA
                    _sync(device)
                    first = time.perf_counter() - start
                    del first_out
                    if flex_form:
                        note += f"; first call {first:.1f} s"
                    out, seconds = timed_median(lambda: module(x, given, batch), device, plan.repeats, plan.warmup)
                outputs[kernel] = out
                if "dense" in outputs and kernel != "dense":
                    diff = max_abs(out, outputs["dense"])
                    bound = KERNEL_BOUND[plan.dtype] * max(1.0, float(outputs["dense"].abs().max()))
                    rec.add(case, within(diff, bound), seconds * 1e3, "ms", diff, f"max|diff| <= {bound:.2g}",
                            note, layout_build_s=build)
                else:
                    rec.add(case, "ok", seconds * 1e3, "ms", None, "", note)


def flex_skipped_tiles(block_mask) -> float:
    """The share of a BlockMask's query x key tiles FlexAttention skips, counting the partial last tiles
    (BlockMask.sparsity() divides by the area in whole tiles, and goes negative when a length is not a multiple)."""
    import math

    rows, cols = (math.ceil(n / b) for n, b in zip(block_mask.seq_lengths, block_mask.BLOCK_SIZE))
    visited = block_mask.kv_num_blocks.sum()
    if block_mask.full_kv_num_blocks is not None:
        visited = visited + block_mask.full_kv_num_blocks.sum()
    return 1.0 - float(visited) / (block_mask.kv_num_blocks.numel() // rows * rows * cols)


def _math_refusal_case(rec, label, batch, heads, tokens, head_dim, device, dtype) -> None:
    """Whether the math backend refuses the unmasked level (its score matrix against free memory); never run."""
    from cami2v_core.modules import attention

    q = torch.empty(batch, heads, tokens, head_dim, device=device, dtype=dtype)
    need = attention.math_bytes(q, q)
    try:
        attention.check_math_fits(q, q)
        verdict = f"fits the free memory: would run (not run here, {human_bytes(need)})"
    except attention.AttentionMemoryError as e:
        verdict = f"refused: {str(e).split(': use')[0]}"
    rec.add(f"{label} math backend", "skipped", None, "", None, "", verdict, score_bytes=need // 2,
            math_bytes=need)


def section_speed(plan: Plan, rec: Recorder) -> None:
    """DDIM steps of DynamiCrafter and CamI2V per size, random weights, guidance branches batched."""
    from cami2v_core.modules import epipolar as epi

    from .models import build_family
    from .runner import Settings, camera_inputs, prepare_camera, random_conditioning, sampling_run

    device = torch.device(plan.device)
    dtype = plan.torch_dtype
    on_h100 = device.type == "cuda" and "H100" in torch.cuda.get_device_name(device)
    for size in plan.sizes:
        label = SIZE_LABELS[size]
        models = None
        with rec.case(f"{label} build", needs_s=20) as run:
            if run:
                start = time.perf_counter()
                models = build_family(("dynamicrafter", "cami2v"), device, dtype, size=size)
                rec.add(f"{label} build", "ok", time.perf_counter() - start, "s", note="random weights, shared UNet")
        if models is None:
            continue
        config = models["cami2v"].config
        frames = config.temporal_length
        w2c, K = camera_inputs(frames, config.resolution)
        settings = Settings(device=plan.device, dtype=plan.dtype, frames=frames, steps=plan.steps)
        warmup = dataclasses.replace(settings, steps=1)
        seconds = {}
        runs = [("dynamicrafter", "dynamicrafter", "dense")] + [("cami2v", f"cami2v {k}", k) for k in ("auto", "dense")]
        for variant, name, kernel in runs:
            case = f"{label} {name} {plan.steps} steps"
            with rec.case(case, needs_s=10) as run:
                if not run:
                    continue
                model = models[variant]
                with project_kernels(kernel=kernel):
                    camera, setup_s, info = prepare_camera(model, w2c, K, frames, device, 0)
                    cond = random_conditioning(model, frames, device, dtype, camera, 0)
                    if plan.warmup:  # first calls: cuDNN autotuning, lazily derived layouts
                        sampling_run(model, cond, warmup, device)
                    seconds[name], peak = sampling_run(model, cond, settings, device)
                kernels = ", ".join(f"{s} px {v['kernel']}" for s, v in sorted(info.items())) if info else ""
                goal, status = "", "ok"
                if size == "256" and variant == "cami2v":
                    goal = f"< {GOAL_256_SECONDS_H100:g} s on an H100"
                    if on_h100 and seconds[name] >= GOAL_256_SECONDS_H100:
                        status = "over"
                peak_note = f"peak {gib(peak):.2f} GiB" if device.type == "cuda" else "CPU"
                if epi.flex_failure():  # "auto" fell back to dense after a failed compile: say so, and why
                    kernels += f" (flex failed, ran dense: {epi.flex_failure()})"
                rec.add(case, status, seconds[name], "s", None, goal,
                        f"{peak_note}; camera setup {setup_s:.2f} s" + (f"; {kernels}" if kernels else ""),
                        peak_bytes=peak, camera_setup_s=setup_s, epipolar_levels=info)
                del camera, cond
        base = seconds.get("dynamicrafter")
        for kernel in ("auto", "dense"):
            name = f"cami2v {kernel}"
            if base and name in seconds:
                ratio = seconds[name] / base
                rec.add(f"{label} {name} / dynamicrafter", goal_status(plan, ratio <= GOAL_RATIO), ratio, "x", None,
                        f"<= {GOAL_RATIO:.2f}", f"sampling time, same run ({plan.steps} steps)")
        models = None  # freed before the next size is built


def section_vram(plan: Plan, rec: Recorder) -> None:
    """Peak memory per phase of one video (encode, sample, decode), all weights on the device against offload."""
    import numpy as np

    import trajectories as tj
    from cami2v_core import pipeline
    from cami2v_core.model import build_model

    from .harness import PeakMemory
    from .models import family_configs, random_init_
    from .runner import Settings, sampling_run

    device = torch.device(plan.device)
    cuda = device.type == "cuda"
    for size in plan.sizes:
        label = SIZE_LABELS[size]
        model = None
        with rec.case(f"{label} whole model build", needs_s=20) as run:
            if run:
                start = time.perf_counter()
                model = build_model(family_configs(size, ("cami2v",))["cami2v"], device=device, dtype=plan.dtype)
                random_init_(model, torch.Generator().manual_seed(0))  # some CLIP tensors start uninitialised
                weights = sum(p.numel() * p.element_size() for p in model.parameters())
                rec.add(f"{label} whole model build", "ok", time.perf_counter() - start, "s", None, "",
                        f"{gib(weights):.2f} GiB of weights in {plan.dtype}")
        if model is None:
            continue
        height, width = model.config.resolution
        frames = model.config.temporal_length
        image = (np.random.default_rng(0).random((height, width, 3)) * 255).astype(np.uint8)
        w2c = tj.preset("orbit left", frames=frames).w2c
        for offload in (False, True):
            mode = "offload" if offload else "keep_loaded"
            with rec.case(f"{label} {mode}", needs_s=15) as run:
                if not run:
                    continue
                model.to(device)
                if offload:  # as a loader that offloads: only the UNet stays on the GPU between videos
                    for name in pipeline.ENCODER_MODULES:
                        if getattr(model, name, None) is not None:
                            getattr(model, name).to("cpu")
                    if cuda:
                        torch.cuda.empty_cache()
                peaks = {}
                with torch.inference_mode():
                    with PeakMemory(device) as peak:
                        cond = pipeline.encode_conditioning(model, image, w2c, prompt="a room",
                                                            branches=("cond", "uncond"),
                                                            generator=pipeline.make_generator(0), offload=offload)
                    peaks["encode"] = peak.bytes
                    resident = torch.cuda.memory_allocated(device) if cuda else 0
                    settings = Settings(device=plan.device, dtype=plan.dtype, frames=frames, steps=plan.pipeline_steps)
                    _, peaks["sample"] = sampling_run(model, cond, settings, device)
                    latent = torch.randn(1, model.config.channels, frames, *cond.c_concat.shape[-2:],
                                         generator=torch.Generator().manual_seed(1))
                    with PeakMemory(device) as peak:
                        pipeline.decode_latent(model, latent, chunk_size=4, offload=offload)
                    peaks["decode"] = peak.bytes
                    del cond
                unit = "GiB" if cuda else "GiB RSS"
                what = "max_memory_allocated" if cuda else "growth of the resident set (weights not counted)"
                for phase in ("encode", "sample", "decode"):
                    rec.add(f"{label} {mode} {phase}", "ok", gib(peaks[phase]), unit, None, "",
                            f"{what}; {plan.dtype}" + (f"; {gib(resident):.2f} GiB resident while sampling"
                                                       if phase == "sample" and cuda else ""))
                top = max(peaks.values())
                goal, status = "", "ok"
                if size == "256" and offload and plan.dtype == "fp16":
                    goal = f"< {GOAL_256_OFFLOAD_GIB:g} GiB"
                    status = within(gib(top), GOAL_256_OFFLOAD_GIB) if cuda else "ok"
                rec.add(f"{label} {mode} peak", status, gib(top), unit, None, goal, "the largest of the phases",
                        **{f"{k}_bytes": v for k, v in peaks.items()})
        model = None  # freed before the next size is built


SECTION_FUNCTIONS = {"environment": section_environment, "numerics": section_numerics,
                     "attention": section_attention, "epipolar": section_epipolar, "speed": section_speed,
                     "vram": section_vram}


# -- running ---------------------------------------------------------------------------------------------------------

def time_scale(plan: Plan) -> float:
    """The time a case needs, as a share of what it needs on the GPU (Recorder.case)."""
    return DRY_CASE_SCALE if plan.dry else 1.0


def run_section(plan: Plan, section: str, deadline: float, rows_path: Path | None = None, log=None) -> list[dict]:
    """One section in this process -> its rows (an exception that escapes a case becomes an error row)."""
    rec = Recorder(section, deadline, rows_path, log, scale=time_scale(plan))
    torch.manual_seed(0)
    try:
        SECTION_FUNCTIONS[section](plan, rec)
    except Exception as e:  # a section that fails outside a guarded case still leaves a row saying so
        rec.add("section", "error", note=f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}")
    return rec.rows


def run_isolated(plan: Plan, section: str, seconds: float, out: Path, log) -> list[dict]:
    """One section in a child process under a timeout; its rows are read back even when it dies."""
    rows_path = out / f"rows_{section}.jsonl"
    rows_path.unlink(missing_ok=True)
    # the child's `seconds` start once it has imported torch; it is killed ISOLATION_S after them
    command = [sys.executable, "-m", "benchmarks.gpu_check", "--section", section, "--plan-json",
               json.dumps(dataclasses.asdict(plan)), "--section-seconds", str(seconds), "--rows-out", str(rows_path)]
    status, note = None, ""
    try:
        done = subprocess.run(command, timeout=seconds + ISOLATION_S, cwd=Path(__file__).resolve().parents[1])
        if done.returncode != 0:
            status, note = "error", f"section process exited with {done.returncode}"
    except subprocess.TimeoutExpired:
        status, note = "timeout", f"section process stopped after {seconds + ISOLATION_S:.0f} s"
    rows = []
    if rows_path.exists():
        rows = [json.loads(line) for line in rows_path.read_text().splitlines() if line.strip()]
        rows_path.unlink()
    if status is not None:
        rows.append(Recorder(section, 0, log=log).add("section", status, note=note))
    return rows


def run(plan: Plan, out: Path, log=None) -> dict:
    """Every section of the plan within its budget -> the report (also written to out/gpu_check.json, .txt)."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    out.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    if plan.dry:  # tiny ops: one thread is several times faster than threads waiting on a busy CPU
        torch.set_num_threads(1)
    try:
        return _run(plan, out, log)
    finally:
        torch.set_num_threads(threads)


def _run(plan: Plan, out: Path, log) -> dict:
    from .harness import machine_info

    start = time.time()
    end = start + plan.budget_s
    # sections keep their shares of the budget: a longer --budget gives each more time
    shares, full = (DRY_SECTION_SECONDS, DRY_BUDGET_S) if plan.dry else (SECTION_SECONDS, DEFAULT_BUDGET_S)
    rows, sections = [], {}
    for section in plan.sections:
        left = end - time.time()
        seconds = min(shares[section] * plan.budget_s / full, left)
        section_start = time.time()
        if seconds < 3:
            got = [Recorder(section, 0, log=log).add("section", "skipped", note="no time left of --budget")]
        elif plan.isolate:
            got = run_isolated(plan, section, seconds, out, log)
        else:
            got = run_section(plan, section, time.time() + seconds, log=log)
        rows.extend(got)
        sections[section] = {"seconds": time.time() - section_start, "allowed_s": seconds, "rows": len(got)}
    report = {"settings": dataclasses.asdict(plan), "machine": machine_info(torch.device(plan.device)),
              "columns": list(COLUMNS), "rows": rows, "sections": sections, "total_s": time.time() - start}
    table = render_table(rows)
    title = (f"CamI2V GPU check ({'CPU dry run' if plan.dry else plan.device}, {plan.dtype}, {plan.steps} steps, "
             f"{time.time() - start:.0f} s of {plan.budget_s:.0f} s)")
    report["table"] = table
    (out / "gpu_check.json").write_text(json.dumps(_clean(report), indent=1) + "\n")
    (out / "gpu_check.txt").write_text(f"{title}\n{table}\n")
    print(title)
    print(table)
    return report


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu-dry-run", action="store_true",
                   help="shrink everything (tiny models, 2 steps, fp32 + bf16) and run on the CPU in under a minute")
    p.add_argument("--out", default="gpu_check_out", help="folder for gpu_check.json and gpu_check.txt")
    p.add_argument("--budget", type=float, default=None,
                   help=f"seconds for all sections (default {DEFAULT_BUDGET_S:g} on a GPU, {DRY_BUDGET_S:g} dry)")
    p.add_argument("--sections", default=None, help=f"comma list out of {', '.join(SECTIONS)} (default: all)")
    p.add_argument("--steps", type=int, default=None, help="DDIM steps of the speed section (default 25; dry 2)")
    p.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=None,
                   help="each section in its own process (default: on a GPU, not in the dry run)")
    # the child side of --isolate
    p.add_argument("--section", choices=SECTIONS, help=argparse.SUPPRESS)
    p.add_argument("--plan-json", help=argparse.SUPPRESS)
    p.add_argument("--section-seconds", type=float, help=argparse.SUPPRESS)
    p.add_argument("--rows-out", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.section:  # a child process: one section, rows to --rows-out
        fields = json.loads(args.plan_json)
        plan = Plan(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
        if plan.dry:
            torch.set_num_threads(1)  # as `run` does in-process
        run_section(plan, args.section, time.time() + args.section_seconds, Path(args.rows_out))
        return 0
    plan = plan_for(args)
    run(plan, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
