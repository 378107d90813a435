"""Opt-in: the pack inside a real ComfyUI checkout (COMFYUI_DIR, with its Python in COMFYUI_PYTHON or on PATH).

Starts ComfyUI on 127.0.0.1 with this repo linked into custom_nodes and checks that the pack imports without errors,
that /object_info lists every node with the inputs and outputs the classes declare, that the example workflows are
served as templates, that every example converts to API format and passes ComfyUI's own prompt validation, and
runs the quick-start workflow on the CPU to a saved .mp4 whose frames are counted and decoded. Skipped when
COMFYUI_DIR is not set.

UI -> API conversion uses comfy-cli's converter (a port of the frontend's graphToPrompt) when `comfy_cli` imports
(`pip install comfy-cli`), cross-checked against the small converter here; without it, the small converter alone.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from urllib.parse import quote
from pathlib import Path

import pytest

from cami2v_core.settings import DEFAULTS

REPO = Path(__file__).resolve().parents[1]
PACK = "ComfyUI-CamI2V"
COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
EXAMPLES = sorted(p.stem for p in (REPO / "example_workflows").glob("*.json"))
QUICKSTART = "CamI2V quick start, orbit with the bundled tiny model (CPU)"
FRONTEND_ONLY = ("Note", "MarkdownNote")  # never sent to the server
pytestmark = [pytest.mark.comfyui,
              pytest.mark.skipif(not COMFYUI_DIR, reason="set COMFYUI_DIR to a ComfyUI checkout to run")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def _post(url, body, timeout=30):
    """POST JSON; returns (HTTP status, decoded JSON body) for 4xx answers too."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def _input_picture(folder: Path) -> None:
    """The picture the examples load (example.png), so the run does not depend on the checkout's input folder."""
    from PIL import Image

    from tests.synthetic_photo import make_photo

    Image.fromarray(make_photo(256, 256, seed=3)).save(folder / "example.png")
    import av

    from tests.test_from_video import known_clip

    video = known_clip("orbit_left")[0]  # a synthetic room filmed by a known orbit: the video-to-video example's clip
    with av.open(str(folder / "example.mp4"), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.height, stream.width = video.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for frame in video:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    comfy = Path(COMFYUI_DIR)
    link = comfy / "custom_nodes" / PACK
    created = False
    if link.is_symlink() or link.exists():
        if link.resolve() != REPO:
            pytest.fail(f"{link} is another copy of the pack ({link.resolve()}); remove it so this checkout is tested")
    else:
        link.symlink_to(REPO, target_is_directory=True)
        created = True
    out_dir = tmp_path_factory.mktemp("comfy_out")
    in_dir = tmp_path_factory.mktemp("comfy_in")
    _input_picture(in_dir)
    port = _free_port()
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    log_path = out_dir / "comfyui.log"
    log = open(log_path, "w")
    proc = subprocess.Popen([python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
                             "--output-directory", str(out_dir), "--input-directory", str(in_dir)],
                            cwd=comfy, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                _get(base + "/object_info", timeout=5)
                break
            except Exception:
                if proc.poll() is not None:
                    pytest.fail(f"ComfyUI exited early; see {log_path}:\n{log_path.read_text()[-3000:]}")
                time.sleep(1)
        else:
            pytest.fail(f"ComfyUI did not answer within 4 minutes; see {log_path}")
        yield base, out_dir, log_path
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        if created:
            link.unlink()


@pytest.fixture(scope="module")
def object_info(server):
    return _get(server[0] + "/object_info", timeout=60)


def test_pack_imports_without_errors(server):
    startup = server[2].read_text().split("Starting server")[0]
    timing = [line for line in startup.splitlines() if line.rstrip().endswith(f"custom_nodes/{PACK}")]
    assert timing, f"ComfyUI did not try to load the pack; start-up log:\n{startup[-3000:]}"
    assert "IMPORT FAILED" not in timing[0], f"the pack failed to import:\n{startup[-3000:]}"
    complaints = [line for line in startup.splitlines()
                  if PACK in line and any(w in line for w in ("Cannot import", "Traceback", "Error", "WARNING"))]
    assert not complaints, "ComfyUI complained about the pack at start-up:\n" + "\n".join(complaints)
    print("imported:", timing[0].strip())


def test_object_info_lists_every_node_with_its_inputs(object_info):
    from nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

    missing = sorted(set(NODE_CLASS_MAPPINGS) - set(object_info))
    assert not missing, f"ComfyUI did not register: {missing} (the pack failed to import? see the log)"
    for name, cls in NODE_CLASS_MAPPINGS.items():
        served, declared = object_info[name], cls.INPUT_TYPES()
        for section in ("required", "optional"):
            assert list(served["input"].get(section, {})) == list(declared.get(section, {})), (name, section)
            assert served["input_order"].get(section, []) == list(declared.get(section, {})), (name, section)
        assert served["output"] == list(cls.RETURN_TYPES), name
        assert served["category"].startswith("CamI2V"), (name, served["category"])
        assert served["display_name"] == NODE_DISPLAY_NAME_MAPPINGS[name]
        assert served["python_module"] == f"custom_nodes.{PACK}", (name, served["python_module"])
    print(f"found {len(NODE_CLASS_MAPPINGS)} nodes:", " ".join(NODE_CLASS_MAPPINGS))


def test_example_workflows_are_served_as_templates(server):
    base = server[0]
    templates = _get(base + "/workflow_templates")
    assert sorted(templates.get(PACK, [])) == EXAMPLES, templates
    for name in EXAMPLES:
        with urllib.request.urlopen(f"{base}/api/workflow_templates/{PACK}/{quote(name)}.json", timeout=10) as r:
            assert json.loads(r.read()) == json.loads((REPO / "example_workflows" / f"{name}.json").read_text())
        with urllib.request.urlopen(f"{base}/api/workflow_templates/{PACK}/{quote(name)}.jpg", timeout=10) as r:
            assert r.headers.get_content_type() == "image/jpeg" and r.read(3) == b"\xff\xd8\xff", name
    print("templates:", ", ".join(templates[PACK]))


def to_api(workflow: dict, object_info: dict) -> dict:
    """UI-format workflow -> API prompt: widget values by the server's input order, links as [node, slot]."""
    links = {l[0]: l for l in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] in FRONTEND_ONLY:
            continue
        spec = object_info[node["type"]]
        order = spec.get("input_order", {})
        names = order.get("required", []) + order.get("optional", [])
        all_inputs = {**spec["input"].get("required", {}), **spec["input"].get("optional", {})}
        values = list(node.get("widgets_values", []))
        linked = {i["name"]: links[i["link"]] for i in node.get("inputs", []) if i.get("link") is not None}
        inputs = {}
        for name in names:
            kind, opts = all_inputs[name][0], (all_inputs[name][1] if len(all_inputs[name]) > 1 else {})
            is_widget = isinstance(kind, list) or kind in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
            if is_widget and values:
                value = values.pop(0)
                if opts.get("control_after_generate"):
                    values.pop(0)
                if opts.get("image_upload") or opts.get("video_upload"):
                    values.pop(0)
                inputs[name] = value
            if name in linked:
                inputs[name] = [str(linked[name][1]), linked[name][2]]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


def convert(workflow: dict, object_info: dict) -> tuple[dict, str]:
    """(API prompt, which converter): comfy-cli's when installed (checked against ours), else ours."""
    ours = to_api(workflow, object_info)
    try:
        from comfy_cli.workflow_to_api import convert_ui_to_api
    except ImportError:
        return ours, "built-in converter; pip install comfy-cli to cross-check it"
    theirs = convert_ui_to_api(workflow, object_info)
    strip = {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in theirs.items()}
    assert strip == ours, "comfy-cli and the built-in converter disagree"
    return theirs, "comfy-cli converter, same as the built-in one"


def load_example(name: str) -> dict:
    return json.loads((REPO / "example_workflows" / f"{name}.json").read_text())


@pytest.mark.parametrize("name", EXAMPLES)
def test_every_example_converts_to_api_format(object_info, name):
    workflow = load_example(name)
    prompt, how = convert(workflow, object_info)
    assert set(prompt) == {str(n["id"]) for n in workflow["nodes"] if n["type"] not in FRONTEND_ONLY}, "nodes dropped"
    assert {n["class_type"] for n in prompt.values()} <= set(object_info)
    print(f"{name}: {len(prompt)} nodes converted ({how})")


def test_quickstart_runs_to_a_saved_video_and_every_example_validates(server, object_info):
    import av
    import numpy as np

    base, out_dir, _ = server
    from cami2v_core.bundled import bundled_model_path

    if bundled_model_path() is None:
        pytest.fail("the bundled tiny model is missing, so the quick-start workflow cannot run")
    prompt, _ = convert(load_example(QUICKSTART), object_info)
    sampler = next(n["inputs"] for n in prompt.values() if n["class_type"] == "CamI2VSampler")
    orbit = next(n["inputs"] for n in prompt.values() if n["class_type"] == "CamI2VCameraOrbit")
    sampler["steps"] = 4  # keep the run short on a CPU
    status, answer = _post(base + "/prompt", {"prompt": prompt})
    assert status == 200 and not answer.get("node_errors"), json.dumps(answer)[:3000]
    prompt_id = answer["prompt_id"]

    # The other examples need release checkpoints, so they are only validated: queued behind the running
    # quick-start (ComfyUI validates on submission), then taken off the queue before they can start.
    for name in EXAMPLES:
        if name == QUICKSTART:
            continue
        other, _ = convert(load_example(name), object_info)
        status, answer = _post(base + "/prompt", {"prompt": other})
        if answer.get("prompt_id"):  # queued, possibly with only some outputs valid: never let it run
            _post(base + "/queue", {"delete": [answer["prompt_id"]]})
        assert status == 200 and not answer.get("node_errors"), f"{name}: {json.dumps(answer)[:3000]}"
        print(f"{name}: accepted by ComfyUI's prompt validation")

    for _ in range(900):
        history = _get(f"{base}/history/{prompt_id}")
        if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
            break
        time.sleep(1)
    else:
        pytest.fail(f"the quick-start workflow did not finish within 15 minutes; see {server[2]}")
    entry = history[prompt_id]
    assert entry["status"].get("status_str") == "success", json.dumps(entry["status"])[:3000]
    saved = [item for out in entry["outputs"].values() for item in out.get("images", []) + out.get("videos", [])]
    videos = [out_dir / s["subfolder"] / s["filename"] for s in saved if s["filename"].endswith(".mp4")]
    assert len(videos) == 1 and videos[0].is_file(), f"expected one saved .mp4, history lists {saved}"

    with av.open(str(videos[0])) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        rate, codec = stream.average_rate, stream.codec_context.name
    assert len(frames) == orbit["frames"], f"{len(frames)} frames decoded, the camera path has {orbit['frames']}"
    expected = DEFAULTS.playback_fps(sampler["frame_stride"])
    assert abs(float(rate) - expected) < 0.01, f"fps {rate}, expected {expected} (29.97 / frame_stride)"
    assert frames[0].shape[0] > 0 and float(np.std(frames[0])) > 1.0, "the first frame is blank"
    print(f"saved {videos[0]}: {len(frames)} frames {frames[0].shape[1]}x{frames[0].shape[0]} at {rate} fps "
          f"({codec})")


def _run(base: str, prompt: dict, what: str, minutes: int = 15) -> dict:
    """Queue an API prompt and wait for it; its history entry (fails with ComfyUI's status when it did not run)."""
    status, answer = _post(base + "/prompt", {"prompt": prompt})
    assert status == 200 and not answer.get("node_errors"), json.dumps(answer)[:3000]
    prompt_id = answer["prompt_id"]
    for _ in range(60 * minutes):
        history = _get(f"{base}/history/{prompt_id}")
        if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
            entry = history[prompt_id]
            assert entry["status"].get("status_str") == "success", json.dumps(entry["status"])[:3000]
            return entry
        time.sleep(1)
    pytest.fail(f"{what} did not finish within {minutes} minutes")


def test_a_camera_path_of_another_length_is_resampled_and_reported(server, object_info):
    """The first thing most users hit: a 16-frame camera node before the 8-frame bundled model."""
    base = server[0]
    prompt, _ = convert(load_example(QUICKSTART), object_info)
    sampler_id = next(k for k, n in prompt.items() if n["class_type"] == "CamI2VSampler")
    orbit = next(n["inputs"] for n in prompt.values() if n["class_type"] == "CamI2VCameraOrbit")
    orbit["frames"] = 16
    prompt[sampler_id]["inputs"]["steps"] = 2
    entry = _run(base, prompt, "the 16-frame camera workflow")
    report = "\n".join(entry["outputs"][sampler_id]["text"])
    assert "16" in report and "8" in report and "resampled" in report, report
    assert "CamI2V Camera Resample / Retime" in report  # the node it names exists under that name
    print("sampler report:", report)


def test_the_video_to_video_example_copies_the_clips_camera(server, object_info):
    from scripts.build_example_workflows import FROM_VIDEO

    base = server[0]
    prompt, _ = convert(load_example(FROM_VIDEO), object_info)
    sampler = next(n["inputs"] for n in prompt.values() if n["class_type"] == "CamI2VSampler")
    sampler["steps"] = 2
    camera_id = next(k for k, n in prompt.items() if n["class_type"] == "CamI2VCameraFromVideo")
    entry = _run(base, prompt, "the video-to-video example")
    report = "\n".join(entry["outputs"][camera_id]["text"])
    assert "sampled frames registered" in report, report
    print("camera from video:", report.splitlines()[0])
