"""Every example workflow checked against the pack's node definitions (and a recorded list of ComfyUI built-ins)."""

from __future__ import annotations

import json
from pathlib import Path
from unittest import mock

import pytest

from nodes import NODE_CLASS_MAPPINGS
from nodes import comfy_bridge, nodes_model

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((REPO / "example_workflows").glob("*.json"))
# Input/output specs of the ComfyUI built-in nodes the examples use, read from a real ComfyUI's /object_info.
BUILTINS = json.loads((REPO / "tests" / "data" / "comfyui_builtin_nodes.json").read_text())
WIDGET_KINDS = ("INT", "FLOAT", "STRING", "BOOLEAN")
FRONTEND_ONLY = ("Note", "MarkdownNote")  # drawn by the frontend, never sent to the server


def spec_of(node_type):
    """(ordered inputs {name: (kind, opts)}, output types) for our node or a recorded built-in."""
    if node_type in NODE_CLASS_MAPPINGS:
        cls = NODE_CLASS_MAPPINGS[node_type]
        raw = cls.INPUT_TYPES()
        outputs = list(cls.RETURN_TYPES)
    else:
        assert node_type in BUILTINS, f"{node_type} is neither a CamI2V node nor a known ComfyUI built-in"
        raw = BUILTINS[node_type]["input"]
        outputs = list(BUILTINS[node_type]["output"])
    inputs = {}
    for section in ("required", "optional"):
        for name, v in raw.get(section, {}).items():
            kind, opts = v[0], (v[1] if len(v) > 1 else {})
            if kind == "COMBO":
                kind = opts.get("options", [])
            inputs[name] = (kind, opts)
    return inputs, outputs


def fresh_install_checkpoints():
    """The loader's ckpt_name choices with empty model folders (what a new user's ComfyUI validates against)."""
    with mock.patch.object(comfy_bridge, "list_model_files", lambda: []):
        return nodes_model.checkpoint_choices()


def check_widget(node_type, name, kind, opts, value):
    where = f"{node_type}.{name} = {value!r}"
    if isinstance(kind, list):
        if node_type in ("LoadImage", "LoadVideo"):
            assert isinstance(value, str) and value, where  # file lists depend on the user's folders
        elif name == "ckpt_name":  # must pass ComfyUI's list check on a fresh install, before any download
            assert value in fresh_install_checkpoints(), f"{where} is not listed on a fresh install"
        else:
            assert value in kind, f"{where} is not one of {kind}"
    elif kind == "INT":
        assert isinstance(value, int) and not isinstance(value, bool), where
    elif kind == "FLOAT":
        assert isinstance(value, (int, float)) and not isinstance(value, bool), where
    elif kind == "STRING":
        assert isinstance(value, str), where
    elif kind == "BOOLEAN":
        assert isinstance(value, bool), where
    if kind in ("INT", "FLOAT"):
        assert opts.get("min", value) <= value <= opts.get("max", value), f"{where} outside [{opts.get('min')}, " \
                                                                          f"{opts.get('max')}]"


def test_there_are_example_workflows():
    from scripts.build_example_workflows import CUSTOM_JSON, QUICKSTART, VERSUS

    names = {p.stem for p in WORKFLOWS}
    assert {QUICKSTART, CUSTOM_JSON, VERSUS} <= names


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_template_reads_like_comfyuis_own(path):
    """The browser shows the file name as title and description: a sentence, not an identifier; notes in the
    graph say what to change; a saved view opens it readable; release checkpoints carry download metadata."""
    wf = json.loads(path.read_text())
    assert path.stem[0].isupper() and path.stem.count(" ") >= 4 and "_" not in path.stem, path.stem
    notes = [n for n in wf["nodes"] if n["type"] in FRONTEND_ONLY]
    assert notes and all(len(n["widgets_values"][0]) > 80 for n in notes)
    ds = wf["extra"]["ds"]
    assert 0.5 <= ds["scale"] <= 1.0 and len(ds["offset"]) == 2
    for node in wf["nodes"]:  # every node's top-left corner is on a 1600x900 screen at the saved view
        x = (node["pos"][0] + ds["offset"][0]) * ds["scale"]
        y = (node["pos"][1] + ds["offset"][1]) * ds["scale"]
        assert 0 <= x <= 1600 and 0 <= y <= 900, (node["type"], x, y)
    embedded = []
    for node in wf["nodes"]:
        if node["type"] == "CamI2VModelLoader":
            name = node["widgets_values"][0]
            expected = [nodes_model.release_download(name)] if name in nodes_model.RELEASE_FILES else []
            assert node["properties"].get("models", []) == expected, name
            embedded += expected
    assert wf.get("models", []) == embedded


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_matches_node_definitions(path):
    wf = json.loads(path.read_text())
    nodes = {n["id"]: n for n in wf["nodes"]}
    for node in wf["nodes"]:
        if node["type"] in FRONTEND_ONLY:
            assert node["inputs"] == node["outputs"] == [] and isinstance(node["widgets_values"][0], str)
            continue
        inputs, outputs = spec_of(node["type"])
        values = list(node.get("widgets_values", []))
        for name, (kind, opts) in inputs.items():
            if not (isinstance(kind, list) or kind in WIDGET_KINDS):
                continue
            assert values, f"{path.name}: {node['type']} is missing a value for widget {name}"
            check_widget(node["type"], name, kind, opts, values.pop(0))
            if opts.get("control_after_generate"):
                assert values.pop(0) in ("fixed", "increment", "decrement", "randomize")
            if opts.get("image_upload") or opts.get("video_upload"):
                values.pop(0)
        assert not values, f"{path.name}: {node['type']} has extra widget values {values}"
        for inp in node.get("inputs", []):
            assert inp["name"] in inputs, f"{node['type']} has no input {inp['name']}"
        for slot, out in enumerate(node.get("outputs", [])):
            assert out["type"] == outputs[slot], f"{node['type']} output {slot} is {outputs[slot]}, not {out['type']}"
        required = spec_of(node["type"])[0]
        raw = (NODE_CLASS_MAPPINGS[node["type"]].INPUT_TYPES() if node["type"] in NODE_CLASS_MAPPINGS
               else BUILTINS[node["type"]]["input"])
        linked = {i["name"] for i in node.get("inputs", []) if i.get("link") is not None}
        for name, v in raw.get("required", {}).items():
            if not (isinstance(required[name][0], list) or required[name][0] in WIDGET_KINDS):
                assert name in linked, f"{path.name}: required input {node['type']}.{name} is not connected"
    for link_id, src, src_slot, dst, dst_slot, kind in wf["links"]:
        src_type = spec_of(nodes[src]["type"])[1][src_slot]
        dst_input = nodes[dst]["inputs"][dst_slot]
        dst_kind = spec_of(nodes[dst]["type"])[0][dst_input["name"]][0]
        assert src_type == kind and dst_kind in (kind, "*"), f"{path.name}: link {link_id} joins {src_type} to {dst_kind}"
        assert dst_input["link"] == link_id


def test_checker_catches_a_bad_widget_value(tmp_path):
    wf = json.loads(WORKFLOWS[0].read_text())
    sampler = next(n for n in wf["nodes"] if n["type"] == "CamI2VSampler")
    sampler["widgets_values"][4] = 0  # steps below its minimum
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(wf))
    with pytest.raises(AssertionError, match="steps"):
        test_workflow_matches_node_definitions(bad)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_has_a_thumbnail(path):
    from PIL import Image

    thumb = path.with_suffix(".jpg")
    assert thumb.is_file(), f"{thumb.name} is missing (run scripts/build_example_workflows.py)"
    with Image.open(thumb) as img:
        assert img.format == "JPEG" and img.width >= 256
