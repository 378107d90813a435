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


# -- python -m benchmarks.gpu_check --cpu-dry-run --------------------------------------------------------------------

def _dry_cases():
    """The (section, case) rows the dry run's plan makes, in order (tiny and tiny-wide sizes, fp32 and bf16)."""
    from cami2v_core.modules.attention import BACKENDS
    from cami2v_core.modules.epipolar import KERNELS

    cases = [("environment", c) for c in ("torch", "device", "optional kernels")]
    cases.append(("numerics", "cpu fp32 reference"))
    for dtype in ("fp32", "bf16"):
        cases += [("numerics", f"cpu {dtype} {c}") for c in ("text+image encoders", "unet eps dense",
                                                             "unet eps gathered", "vae decode", "sampling 2 steps")]
    cases += [("attention", f"backend {b}") for b in BACKENDS] + [("attention", "sdpa kernels")]
    levels = [("64x64x8 tiny", 8), ("64x64x8 tiny", 16), ("64x128x8 tiny", 16), ("64x128x8 tiny", 32)]
    for label, stride in levels:
        cases += [("epipolar", f"{label} stride {stride} kernel {k}") for k in KERNELS[::-1]]
        if (label, stride) == levels[-1]:
            cases += [("epipolar", f"64x128x8 tiny top level unmasked {c}") for c in ("sdpa", "math backend")]
    for label in ("64x64x8 tiny", "64x128x8 tiny"):
        cases += [("speed", f"{label} {c}") for c in ("build", "dynamicrafter 2 steps", "cami2v auto 2 steps",
                                                      "cami2v dense 2 steps", "cami2v auto / dynamicrafter",
                                                      "cami2v dense / dynamicrafter")]
    for label in ("64x64x8 tiny", "64x128x8 tiny"):
        cases.append(("vram", f"{label} whole model build"))
        for mode in ("keep_loaded", "offload"):
            cases += [("vram", f"{label} {mode} {phase}") for phase in ("encode", "sample", "decode", "peak")]
    return cases


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    from benchmarks import gpu_check

    out = tmp_path_factory.mktemp("gpu_check")
    # a generous budget: this checks the table, not the speed of a shared CI machine (55 s is the default)
    assert gpu_check.main(["--cpu-dry-run", "--budget", "400", "--out", str(out)]) == 0
    return json.loads((out / "gpu_check.json").read_text()), (out / "gpu_check.txt").read_text()


def test_dry_run_table_has_every_row_and_column(dry_run):
    from benchmarks.gpu_check import COLUMNS, STATUSES, parse_table

    report, text = dry_run
    columns, rows = parse_table(text)
    assert tuple(columns) == COLUMNS == tuple(report["columns"])
    assert [(r["section"], r["case"]) for r in rows] == _dry_cases()
    assert [(r["section"], r["case"]) for r in report["rows"]] == _dry_cases()
    assert all(r["status"] in STATUSES for r in report["rows"])
    failed = [r for r in report["rows"] if r["status"] in ("error", "oom", "timeout")]
    assert not failed, failed
    skipped = {r["case"] for r in report["rows"] if r["status"] == "skipped"}
    assert skipped <= {"backend xformers", "sdpa kernels", "64x128x8 tiny top level unmasked math backend"}


def test_dry_run_numbers_are_consistent(dry_run):
    report, _ = dry_run
    rows = {(r["section"], r["case"]): r for r in report["rows"]}
    # the CPU fp32 run is the reference itself; bf16 differs, within its bound
    assert rows["numerics", "cpu fp32 unet eps dense"]["diff"] == 0
    assert rows["numerics", "cpu fp32 unet eps gathered"]["diff"] < 1e-5  # the other kernel, same maths
    for case in ("unet eps dense", "unet eps gathered", "vae decode", "text+image encoders"):
        row = rows["numerics", f"cpu bf16 {case}"]
        assert 0 < row["diff"] and row["status"] == "ok", row
    for kernel in ("gathered", "auto"):
        assert rows["epipolar", f"64x64x8 tiny stride 8 kernel {kernel}"]["diff"] < 1e-5
    for label in ("64x64x8 tiny", "64x128x8 tiny"):
        ratio = rows["speed", f"{label} cami2v dense / dynamicrafter"]["value"]
        assert ratio == pytest.approx(rows["speed", f"{label} cami2v dense 2 steps"]["value"] /
                                      rows["speed", f"{label} dynamicrafter 2 steps"]["value"])
        for mode in ("keep_loaded", "offload"):
            phases = [rows["vram", f"{label} {mode} {p}"]["value"] for p in ("encode", "sample", "decode")]
            assert rows["vram", f"{label} {mode} peak"]["value"] == max(phases)
    assert report["settings"]["dry"] and report["settings"]["steps"] == 2
    # the unmasked level's math backend is judged from its size (scores and softmax against free memory), not run
    math_row = rows["epipolar", "64x128x8 tiny top level unmasked math backend"]
    assert math_row["details"]["score_bytes"] == 2 * 2 * 1024 ** 2 * 4  # batch 2, 2 heads, (8 x 8x16 cells)^2, fp32
    assert math_row["note"].startswith("fits the free memory")


def test_flex_rows_report_the_share_of_skipped_tiles(dry_run):
    import re

    report, _ = dry_run
    notes = [r["note"] for r in report["rows"] if r["case"].endswith("kernel flex") and r["status"] == "ok"]
    assert notes
    for note in notes:
        share = int(re.search(r"(-?\d+)% of 128x128 tiles skipped", note).group(1))
        assert 0 <= share < 100, note


def test_skipped_tiles_count_the_partial_last_tiles():
    from torch.nn.attention.flex_attention import create_block_mask

    from benchmarks.gpu_check import flex_skipped_tiles

    # 256 queries x 260 keys in 128-tiles: 2 x 3 tiles (the last column tile holds 4 keys)
    corner = torch.zeros(256, 260, dtype=torch.bool)
    corner[:100, :100] = True  # one tile visited of six
    last_column = torch.zeros(256, 260, dtype=torch.bool)
    last_column[:, 257] = True  # the two partial tiles
    for allowed, batch, visited in ((corner, None, 1), (last_column, 2, 2),
                                    (torch.ones(256, 260, dtype=torch.bool), None, 6)):
        block_mask = create_block_mask(lambda b, h, q, k, allowed=allowed: allowed[q, k], batch, None, 256, 260,
                                       device="cpu", BLOCK_SIZE=128)
        assert flex_skipped_tiles(block_mask) == pytest.approx(1 - visited / 6)


def test_gpu_check_sections_run_in_their_own_processes(tmp_path):
    from benchmarks import gpu_check

    assert gpu_check.main(["--cpu-dry-run", "--isolate", "--sections", "environment", "--budget", "200",
                           "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [r["case"] for r in report["rows"]] == ["torch", "device", "optional kernels"]
    assert not list(tmp_path.glob("rows_*.jsonl"))  # the child's rows were gathered and its file removed


def test_gpu_check_refuses_bad_options():
    from benchmarks import gpu_check

    with pytest.raises(SystemExit, match="vram"):
        gpu_check.main(["--cpu-dry-run", "--sections", "numerics,warp"])
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="--cpu-dry-run"):
            gpu_check.main([])
