"""Epipolar attention alone, level by level at the real size: dense masked SDPA against the gathered kernel.

One `EpipolarAttention` per mask stride of the 256 model (channels of the UNet level that uses it), random
weights, the real masks of a demo trajectory. Besides the two times it reports how far apart the two outputs are,
so every report doubles as a parity check at full size.
"""

from __future__ import annotations

import math

import torch

from cami2v_core import camera as camera_maths
from cami2v_core.configs import PRESETS
from cami2v_core.modules import epipolar as epipolar_module
from cami2v_core.modules.epipolar_sparse import cached_block_mask

from .harness import inference, summary, timed
from .models import random_init_


def level_channels(config) -> dict:
    """{mask stride px: channels of the UNet blocks that use it} for a CamI2V config (spec §4.2, §4.4.7)."""
    mults = config.unet["channel_mult"]
    out = {}
    for r in config.epipolar["attention_resolution"]:
        stride = 8 * int(r)
        feature_h = int(config.epipolar["origin_h"]) // stride
        level = min(int(math.log2(config.image_size[0] // feature_h)), len(mults) - 1)
        out[stride] = config.unet["model_channels"] * mults[level]
    return out


def measure_levels(w2c, K, frames: int, device, dtype, repeats: int = 1, seed: int = 0, log=print) -> dict:
    """{stride: {tokens, channels, density, scored_fraction, layout, modelled_relative_cost, auto_kernel, dense_s,
    gathered_s, speedup, max_abs_diff}} (the layout is the one "auto" builds; auto_kernel what "auto" runs)."""
    config = PRESETS["cami2v-256"]
    height, width = config.resolution
    registers = int(config.epipolar["num_register_tokens"])
    generator = torch.Generator().manual_seed(seed)
    rel = camera_maths.relative_c2w(w2c, torch.tensor([0]))
    strides = sorted(level_channels(config), reverse=True)
    masks, _ = camera_maths.epipolar_structures(rel, K, height, width, strides, generator=generator)
    channels = level_channels(config)
    report = {}
    previous = epipolar_module.get_kernel()
    try:
        for stride in sorted(masks):
            mask = masks[stride].to(device)
            dim = channels[stride]
            module = epipolar_module.EpipolarAttention(dim, dim // 64, num_register_tokens=registers)
            random_init_(module, generator)
            module = module.to(device, dtype).eval()
            cells = (height // stride) * (width // stride)
            x = torch.randn(cells, frames, dim, generator=generator).to(device, dtype)
            blocks = cached_block_mask(mask, frames, registers, device=device)
            epipolar_module.set_kernel("auto")
            auto_kernel = "gathered" if epipolar_module.gathered_form(mask, frames, registers) is not None else "dense"
            entry = {"tokens": frames * cells, "channels": dim, "density": blocks.density,
                     "scored_fraction": blocks.scored_fraction, "layout": blocks.kinds[0],
                     "modelled_relative_cost": blocks.relative_cost, "auto_kernel": auto_kernel,
                     "gathered_form_bytes": blocks.nbytes, "dense_mask_bytes": mask.numel()}
            outputs = {}
            for kernel in ("dense", "gathered"):
                epipolar_module.set_kernel(kernel)
                padded = epipolar_module.pad_register_columns(mask, registers)
                runs = []
                with inference():
                    for _ in range(repeats):
                        outputs[kernel], seconds = timed(lambda: module(x, padded, 1), device)
                        runs.append(seconds)
                entry[f"{kernel}_s"] = summary(runs)
            entry["speedup"] = entry["dense_s"] / entry["gathered_s"]
            entry["max_abs_diff"] = float((outputs["dense"].float() - outputs["gathered"].float()).abs().max())
            log(f"epipolar level stride {stride}: dense {entry['dense_s']:.3f} s, gathered {entry['gathered_s']:.3f} s "
                f"(x{entry['speedup']:.1f}), max |diff| {entry['max_abs_diff']:.1e}")
            report[stride] = entry
    finally:
        epipolar_module.set_kernel(previous)
    return report
