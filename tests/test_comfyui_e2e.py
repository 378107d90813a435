"""Opt-in: the pack inside a real ComfyUI checkout (COMFYUI_DIR, with its Python in COMFYUI_PYTHON or on PATH).

Starts ComfyUI on 127.0.0.1 with this repo linked into custom_nodes, checks /object_info lists every node, converts
every example workflow to API format (comfy-cli when installed, else our own converter over /object_info) and
runs the quick-start workflow to a saved video on the CPU. Skipped when COMFYUI_DIR is not set.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
pytestmark = [pytest.mark.comfyui,
              pytest.mark.skipif(not COMFYUI_DIR, reason="set COMFYUI_DIR to a ComfyUI checkout to run")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    comfy = Path(COMFYUI_DIR)
    link = comfy / "custom_nodes" / "ComfyUI-CamI2V"
    created = False
    if not link.exists():
        link.symlink_to(REPO, target_is_directory=True)
        created = True
    out_dir = tmp_path_factory.mktemp("comfy_out")
    port = _free_port()
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    log = open(out_dir / "comfyui.log", "w")
    proc = subprocess.Popen([python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
                             "--output-directory", str(out_dir)], cwd=comfy, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                _get(base + "/object_info", timeout=5)
                break
            except Exception:
                if proc.poll() is not None:
                    pytest.fail(f"ComfyUI exited early; see {out_dir / 'comfyui.log'}")
                time.sleep(1)
        else:
            pytest.fail("ComfyUI did not answer within 4 minutes")
        yield base, out_dir
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        if created:
            link.unlink()


def test_object_info_lists_every_node(server):
    from nodes import NODE_CLASS_MAPPINGS

    info = _get(server[0] + "/object_info")
    missing = sorted(set(NODE_CLASS_MAPPINGS) - set(info))
    assert not missing, f"ComfyUI did not register: {missing} (the pack failed to import? see the log)"


def to_api(workflow: dict, object_info: dict) -> dict:
    """UI-format workflow -> API prompt: widget values by the server's input order, links as [node, slot]."""
    links = {l[0]: l for l in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
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
                if opts.get("image_upload"):
                    values.pop(0)
                inputs[name] = value
            if name in linked:
                inputs[name] = [str(linked[name][1]), linked[name][2]]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO / "example_workflows").glob("*.json")))
def test_every_example_converts_to_api_format(server, name):
    info = _get(server[0] + "/object_info")
    workflow = json.loads((REPO / "example_workflows" / f"{name}.json").read_text())
    prompt = to_api(workflow, info)
    assert {n["class_type"] for n in prompt.values()} <= set(info)
    print(f"{name}: {len(prompt)} nodes converted")


def test_quickstart_runs_to_a_saved_video(server):
    base, out_dir = server
    from cami2v_core.bundled import bundled_model_path

    if bundled_model_path() is None:
        pytest.fail("the bundled tiny model is missing, so the quick-start workflow cannot run")
    info = _get(base + "/object_info")
    workflow = json.loads((REPO / "example_workflows" / "cami2v_orbit_quickstart.json").read_text())
    prompt = to_api(workflow, info)
    for node in prompt.values():  # keep the run short on a CPU
        if node["class_type"] == "CamI2VSampler":
            node["inputs"]["steps"] = 4
    req = urllib.request.Request(base + "/prompt", data=json.dumps({"prompt": prompt}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        prompt_id = json.loads(r.read())["prompt_id"]
    for _ in range(600):
        history = _get(f"{base}/history/{prompt_id}")
        if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
            break
        time.sleep(1)
    status = history[prompt_id]["status"]
    assert status.get("status_str") == "success", json.dumps(status)[:2000]
    videos = list(out_dir.rglob("*.mp4"))
    assert videos, "no video was saved"
    print("saved", videos)
