"""Options that run the device-aware tests on a GPU and in half precision (kornia's --device / --dtype).

    python -m pytest tests                                                   # CPU, fp32: what CI runs
    python -m pytest --device cuda --dtype fp16 tests/test_attention.py tests/test_epipolar_sparse.py \
        tests/test_unet.py tests/test_vae.py

Tests that take the `device` and `dtype` fixtures run their computation there and compare it with the CPU
reference under `tolerance(dtype, ...)` (tests/devices.py); with the defaults they are exactly the CPU fp32 tests
they were. Every other test ignores the options and runs on the CPU. CAMI2V_TEST_DEVICE / CAMI2V_TEST_DTYPE set
the defaults from the environment.
"""

from __future__ import annotations

import os

import pytest
import torch

from tests import devices


def pytest_addoption(parser):
    group = parser.getgroup("cami2v", "CamI2V device-aware tests")
    group.addoption("--device", default=os.environ.get("CAMI2V_TEST_DEVICE", "cpu"),
                    help="torch device the device-aware tests compute on: cpu (default), cuda, cuda:1, ...")
    group.addoption("--dtype", default=os.environ.get("CAMI2V_TEST_DTYPE", "fp32"),
                    help=f"dtype of those computations: {', '.join(devices.DTYPES)} (default fp32)")


def _device(config) -> torch.device:
    name = config.getoption("--device")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise pytest.UsageError(f"--device {name!r} is not a torch device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError(f"--device {name} was given but torch sees no CUDA device (torch "
                                f"{torch.__version__}, CUDA build {torch.version.cuda}); run with --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise pytest.UsageError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    return device


def _dtype(config) -> torch.dtype:
    name = config.getoption("--dtype")
    if name not in devices.DTYPES:
        raise pytest.UsageError(f"--dtype must be one of {', '.join(devices.DTYPES)}; got {name!r}")
    return devices.DTYPES[name]


def pytest_configure(config):
    _device(config), _dtype(config)  # bad options stop the run before collection, with the reason


def pytest_report_header(config):
    return f"cami2v device-aware tests: --device {_device(config)} --dtype {config.getoption('--dtype')}"


@pytest.fixture(scope="session")
def device(pytestconfig) -> torch.device:
    """The torch device of `--device` (default cpu)."""
    return _device(pytestconfig)


@pytest.fixture(scope="session")
def dtype(pytestconfig) -> torch.dtype:
    """The torch dtype of `--dtype` (default float32)."""
    return _dtype(pytestconfig)


@pytest.fixture(scope="session")
def tolerance():
    """`tolerance(dtype, atol, rtol, scale)` -> assert_close keywords (tests/devices.py)."""
    return devices.tolerance
