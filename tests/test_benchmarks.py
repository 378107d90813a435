"""The benchmark package: its report is complete and self-consistent (no timing is asserted: see benchmarks/)."""

from __future__ import annotations

import json
import statistics

import pytest
import torch

from benchmarks import __main__ as cli
from benchmarks.harness import PeakMemory, tensor_bytes
from benchmarks.models import build_family
from benchmarks.runner import ratios


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "report.json"
    assert cli.main(["--size", "tiny", "--device", "cpu", "--steps", "1", "--repeats", "2", "--json", str(out),
                     "--quiet"]) == 0
    return json.loads(out.read_text())


def test_report_has_every_field_per_model(tiny_report):
    assert set(tiny_report["models"]) == {"dynamicrafter", "cameractrl", "cami2v"}
    for name, res in tiny_report["models"].items():
        for field in ("unet_forward_s", "sampling_s", "peak_memory_bytes", "camera_setup_s"):
            assert isinstance(res[field], (int, float)) and res[field] >= 0, (name, field)
        assert len(res["unet_forward_runs_s"]) == 2
        assert res["peak_memory_bytes"] >= res["weights_bytes"] > 0
    assert tiny_report["settings"]["frames"] == 8 and tiny_report["settings"]["resolution"] == [64, 64]


def test_ratios_are_taken_from_the_same_report(tiny_report):
    models = tiny_report["models"]
    dc, cam = models["dynamicrafter"], models["cami2v"]
    def paired(model, field="unet_forward_runs_s"):
        return statistics.median(a / b for a, b in zip(model[field], dc[field]))

    assert tiny_report["epipolar_overhead"] == pytest.approx(paired(cam))
    assert tiny_report["epipolar_overhead_cpu"] == pytest.approx(paired(cam, "unet_forward_cpu_runs_s"))
    assert tiny_report["memory_overhead"] == pytest.approx(cam["peak_memory_bytes"] / dc["peak_memory_bytes"])
    assert tiny_report["cameractrl_overhead"] == pytest.approx(paired(models["cameractrl"]))


def test_camera_structures_are_reported(tiny_report):
    cam = tiny_report["models"]["cami2v"]
    levels = cam["epipolar_levels"]
    assert sorted(levels) == ["16", "32", "8"]  # tiny: strides 8·[4, 2, 1] px (JSON keys are strings)
    for level in levels.values():
        assert 0 < level["density"] <= 1 and level["kernel"] in ("dense", "gathered")
    assert tiny_report["models"]["dynamicrafter"]["camera_bytes"] == 0 and cam["camera_bytes"] > 0


def test_models_share_their_common_weights():
    models = build_family(size="tiny")
    dc = dict(models["dynamicrafter"].model.diffusion_model.named_parameters())
    for name in ("cameractrl", "cami2v"):
        own = dict(models[name].model.diffusion_model.named_parameters())
        shared = [k for k in own if k in dc]
        assert shared and all(own[k] is dc[k] for k in shared)
        assert all(p.device.type == "cpu" for p in own.values())  # nothing left on meta
    assert models["cameractrl"].pose_encoder is models["cami2v"].pose_encoder


def test_ratios_of_given_numbers():
    results = {"dynamicrafter": {"unet_forward_s": 2.0, "peak_memory_bytes": 100, "sampling_s": 4.0},
               "cami2v": {"unet_forward_s": 2.2, "peak_memory_bytes": 104, "sampling_s": 5.0}}
    assert ratios(results) == pytest.approx({"epipolar_overhead": 1.1, "memory_overhead": 1.04,
                                             "sampling_overhead": 1.25})
    assert ratios({"cami2v": results["cami2v"]}) == {}
    # with runs, the median of the per-round ratios: round 2 was slow for both models alike
    results["dynamicrafter"]["unet_forward_runs_s"] = [2.0, 4.0, 2.0]
    results["cami2v"]["unet_forward_runs_s"] = [2.2, 4.6, 2.1]
    assert ratios(results)["epipolar_overhead"] == pytest.approx(1.1)


def test_peak_memory_sees_a_transient_allocation():
    with PeakMemory(torch.device("cpu")) as peak:
        block = torch.ones(64 * 2 ** 20 // 4)  # 64 MiB, touched
        del block
    assert peak.bytes >= 48 * 2 ** 20


def test_shared_storage_is_counted_once():
    t = torch.zeros(1000)
    assert tensor_bytes([t, t[:10], t.view(10, 100)]) == 4000


def test_quick_defaults_and_bad_options():
    quick_cpu = cli.settings_from_args(cli.parse_args(["--quick", "--device", "cpu"]))
    assert (quick_cpu.frames, quick_cpu.steps, quick_cpu.repeats) == (2, 1, 1) and quick_cpu.notes
    full = cli.settings_from_args(cli.parse_args(["--device", "cpu", "--frames", "16"]))
    assert full.frames == 16 and full.dtype == "fp32" and not full.notes
    with pytest.raises(SystemExit, match="dynamicrafter"):
        cli.settings_from_args(cli.parse_args(["--device", "cpu", "--models", "cami2v,sora"]))
    with pytest.raises(SystemExit, match="1..16"):
        cli.settings_from_args(cli.parse_args(["--device", "cpu", "--frames", "17"]))
