"""Device and dtype of the device-aware tests (`--device`, `--dtype` in conftest.py) and their tolerances.

A device-aware test computes on `device` in `dtype` and compares with a CPU float32 (or float64) reference. Its
fp32 tolerance is the one it always had; `tolerance` widens it for half precision by the rounding that dtype adds.
"""

from __future__ import annotations

import torch

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

# Relative error a half-precision result may carry against the fp32 reference of the same computation: a few
# roundings of the dtype's unit (fp16 2^-11 = 4.9e-4, bf16 2^-8 = 3.9e-3) over the reductions of an attention or a
# network, with a margin for GPU kernels, which round differently from the CPU's (blocked softmax, fused matmuls).
HALF_RTOL = {torch.float16: 1e-2, torch.bfloat16: 6e-2}


def tolerance(dtype: torch.dtype, atol: float = 1e-5, rtol: float = 1e-5, scale: float = 1.0) -> dict:
    """`torch.testing.assert_close` keywords for a result in `dtype`: {"atol", "rtol"}.

    fp32 (and fp64) keep the test's own atol and rtol; a half dtype gets at least HALF_RTOL of `scale` (the typical
    magnitude of the compared values) as atol and HALF_RTOL as rtol."""
    half = HALF_RTOL.get(dtype)
    if half is None:
        return {"atol": atol, "rtol": rtol}
    return {"atol": max(atol, half * float(scale)), "rtol": max(rtol, half)}


# A whole network (the tiny UNet: ~40 layers) compounds its roundings: its half-precision output is judged by the
# relative L2 error of the whole tensor and a looser bound on single elements, both against the fp32 reference.
# Measured on the CPU for the tiny CamI2V UNet: relative L2 0.006 (fp16) / 0.05 (bf16), worst element 0.7% / 10% of
# the largest |eps|; the bounds leave about 2.5x for GPU kernels.
NETWORK_BOUNDS = {torch.float16: (0.015, 0.02), torch.bfloat16: (0.12, 0.25)}  # (relative L2, worst element / max)


def assert_network_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, atol: float,
                         what: str = "output") -> None:
    """A network's output in `dtype` against its fp32 reference: fp32 element-wise within atol (as the CPU tests
    always were); half precision within NETWORK_BOUNDS."""
    actual, expected = actual.double().cpu(), expected.double().cpu()
    assert actual.shape == expected.shape, f"{what}: shape {list(actual.shape)} != {list(expected.shape)}"
    worst = (actual - expected).abs().max().item()
    if dtype not in NETWORK_BOUNDS:
        assert worst <= atol, f"{what}: max abs error {worst:.3g} > {atol:g}"
        return
    rel_l2 = ((actual - expected).norm() / expected.norm()).item()
    max_rel_l2, max_worst = NETWORK_BOUNDS[dtype]
    peak = expected.abs().max().item()
    assert rel_l2 <= max_rel_l2 and worst <= max_worst * peak, (
        f"{what} in {dtype}: relative L2 error {rel_l2:.3g} (bound {max_rel_l2}), worst element {worst:.3g} "
        f"(bound {max_worst} x max |reference| = {max_worst * peak:.3g})")


def is_default(device: torch.device, dtype: torch.dtype) -> bool:
    """True for the CPU float32 run, whose results are the references the other runs are compared with."""
    return device.type == "cpu" and dtype == torch.float32
