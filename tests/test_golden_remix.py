"""The parity tests discover their cases from the golden folder (design.md §2 "Numerics"): they pass unchanged on a
copy with other case names and sizes, made by tests/tools/remix_golden.py, and their test ids name its cases.

By default the parity run takes the modules whose fixtures the remix renames or resizes whole, and from the slow
UNet/model/pipeline modules the tests whose ids name a remixed case (about half a minute on one core). Set
CAMI2V_REMIX_FULL=1 to run every module that reads golden fixtures (`grep -l golden tests/test_*.py`) whole."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.golden import GOLDEN_DIR, REPO, require
from tests.tools.remix_golden import RemixError, cut_camera_case, remix

PREFIX = "remix_"
WHOLE = ["test_camera.py", "test_camera_encoder.py", "test_clip.py", "test_configs.py", "test_resampler.py",
         "test_sampling.py", "test_trajectories_presets.py", "test_vae.py"]
BY_CASE = ["test_model.py", "test_pipeline.py", "test_unet.py"]


@pytest.fixture(scope="module")
def remixed(tmp_path_factory):
    """(folder, report) of the remix of the golden folder."""
    require(GOLDEN_DIR / "manifest.json")
    dst = tmp_path_factory.mktemp("golden") / "remixed"
    return dst, remix(GOLDEN_DIR, dst, prefix=PREFIX)


def _token(name: str) -> re.Pattern:
    return re.compile(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])")


# -- the remix itself ------------------------------------------------------------------------------------------------

def test_every_case_is_renamed_in_files_and_indices(remixed):
    dst, report = remixed
    names = report["names"]
    assert set(names) == {"camera", "sampling", "unet_forward"} and all(names.values())
    index = json.loads((dst / "camera" / "trajectories.json").read_text())
    runs = json.loads((dst / "sampling" / "sampling_runs.json").read_text())
    assert set(names["camera"].values()) <= set(index)
    assert {k for k in runs if not k.startswith("_")} == set(names["sampling"].values())
    for folder, mapping in names.items():  # each index names exactly the files of its folder
        expected = index if folder == "camera" else mapping.values()
        assert sorted(p.stem for p in (dst / folder).glob("*.safetensors")) == sorted(expected), folder
    # no original case name is left as a whole token in any index (the demo pose-file names in `source` excepted)
    checks = (dst / "checks.json").read_text()
    run_text = (dst / "sampling" / "sampling_runs.json").read_text()
    for old in (n for mapping in names.values() for n in mapping):
        assert not _token(old).search(checks), old
        assert not _token(old).search(run_text), old
        assert old not in index
    assert report["dropped"] and report["resized"]


def test_manifest_describes_every_written_file(remixed):
    dst, _ = remixed
    manifest = json.loads((dst / "manifest.json").read_text())
    files = {p.relative_to(dst).as_posix() for p in dst.rglob("*") if p.is_file()}
    assert set(manifest) == files - {"manifest.json", "README.md", "REMIX.json"}
    for rel, entry in manifest.items():
        data = (dst / rel).read_bytes()
        assert entry["bytes"] == len(data) and entry["sha256"] == hashlib.sha256(data).hexdigest(), rel
        if isinstance(entry.get("tensors"), dict):
            tensors = load_file(str(dst / rel))
            assert {k: [str(v.dtype)[len("torch."):], list(v.shape)] for k, v in tensors.items()} == entry["tensors"]


def test_cut_camera_cases_are_slices_of_the_original(remixed):
    dst, report = remixed
    original = json.loads((GOLDEN_DIR / "camera" / "trajectories.json").read_text())
    index = json.loads((dst / "camera" / "trajectories.json").read_text())
    cut = [n for n, meta in index.items() if meta.get("perturbation_seed", 0) is None]
    assert cut, "the remix cuts no camera case"
    for name in cut:
        meta = index[name]
        source = name[len(PREFIX):].split("_first")[0]
        T, full = meta["T"], load_file(str(GOLDEN_DIR / "camera" / f"{source}.safetensors"))
        got = load_file(str(dst / "camera" / f"{name}.safetensors"))
        assert T < original[source]["T"] and meta["cond_frame_index"] < T
        assert torch.equal(got["w2c"], full["w2c"][:, :T]) and torch.equal(got["plucker"], full["plucker"][:, :, :T])
        assert torch.equal(got["F"], full["F"][:, :T, :T])
        assert torch.equal(got["pair_t_after_perturbation"], full["pair_t_after_perturbation"][:, :T, :T])
        for mask, info in meta["masks"].items():
            cells = info["grid_hw"][0] * info["grid_hw"][1]
            whole = np.unpackbits(full[f"{mask}.packbits"].numpy(), axis=-1, count=original[source]["T"] * cells,
                                  bitorder="big")
            kept = np.unpackbits(got[f"{mask}.packbits"].numpy(), axis=-1, count=T * cells, bitorder="big")
            assert info["shape"] == list(kept.shape) and np.array_equal(kept, whole[:, :T * cells, :T * cells])
            assert info["true_fraction"] == pytest.approx(kept.mean())


def test_remix_refuses_what_it_cannot_do_exactly():
    demo = {"source": "demo/camera_pose_files/orbit left.txt", "T": 8, "cond_frame_index": 0, "H": 8, "W": 8,
            "masks": {}}
    with pytest.raises(RemixError, match="only synthetic"):
        cut_camera_case(demo, {}, 4)
    synthetic = {**demo, "source": "synthetic: formula of i", "cond_frame_index": 5}
    with pytest.raises(RemixError, match="conditioning frame 5"):
        cut_camera_case(synthetic, {}, 4)
    with pytest.raises(RemixError, match="no known frame axis"):
        cut_camera_case({**synthetic, "cond_frame_index": 0}, {"something_new": torch.zeros(1, 8)}, 4)


# -- the parity tests on it ------------------------------------------------------------------------------------------

def _parity_modules() -> list[str]:
    """Every test module that reads golden fixtures (`grep -l golden tests/test_*.py`), this one excepted."""
    here = os.path.basename(__file__)
    return sorted(p.name for p in (REPO / "tests").glob("test_*.py") if p.name != here and "golden" in p.read_text())


def _pytest(args: list[str], dst, junit=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "CAMI2V_GOLDEN_DIR": str(dst), "CAMI2V_REQUIRE_GOLDEN": "1"}
    extra = [f"--junitxml={junit}"] if junit else []
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *extra, *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=3600)


@pytest.mark.slow
def test_parity_modules_pass_on_the_remix_and_name_its_cases(remixed, tmp_path):
    dst, report = remixed
    full = bool(os.environ.get("CAMI2V_REMIX_FULL"))
    modules = _parity_modules() if full else WHOLE + BY_CASE
    assert set(WHOLE + BY_CASE) <= set(_parity_modules())  # the default selection is made of parity modules
    collected = _pytest(["--collect-only", *(f"tests/{m}" for m in modules)], dst)
    assert collected.returncode == 0, collected.stdout[-3000:] + collected.stderr[-3000:]
    ids = [line for line in collected.stdout.splitlines() if "::" in line]
    remixed_names = [n for mapping in report["names"].values() for n in mapping.values()]
    for name in remixed_names:  # the tests found every case of the folder under its new name
        assert any(_token(name).search(i) for i in ids), f"no collected test names {name}"

    whole = modules if full else WHOLE
    selected = [i for i in ids if i.split("::")[0].rsplit("/", 1)[-1] in whole or PREFIX in i]
    args = [f"tests/{m}" for m in whole] + [i for i in selected if i.split("::")[0].rsplit("/", 1)[-1] not in whole]
    junit = tmp_path / "parity.xml"
    run = _pytest(["-x", *args], dst, junit)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    cases = ET.parse(junit).getroot().iter("testcase")
    outcomes = [next((c.tag for c in case if c.tag in ("failure", "error", "skipped")), "passed") for case in cases]
    assert len(outcomes) == len(selected) and set(outcomes) <= {"passed", "skipped"}
    assert outcomes.count("passed") > 0.95 * len(outcomes), "most parity tests must run, not skip"
