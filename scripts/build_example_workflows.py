"""Write example_workflows/*.json (ComfyUI UI format) from the pack's own node definitions.

Widget values are taken from each node's INPUT_TYPES defaults unless a workflow overrides them, so the examples
cannot drift from the nodes; tests/test_workflows.py checks the written files against the same definitions.
Run: python scripts/build_example_workflows.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import trajectories as tj  # noqa: E402
from nodes import NODE_CLASS_MAPPINGS  # noqa: E402

BUILTINS = json.loads((REPO / "tests" / "data" / "comfyui_builtin_nodes.json").read_text())
OUT = REPO / "example_workflows"


def node_spec(node_type: str) -> tuple[dict, list, list]:
    """(inputs {name: (type, opts)} in widget order, output types, output names) of our node or a built-in."""
    if node_type in NODE_CLASS_MAPPINGS:
        cls = NODE_CLASS_MAPPINGS[node_type]
        spec = cls.INPUT_TYPES()
        inputs = {**spec.get("required", {}), **spec.get("optional", {})}
        names = list(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES))
        return {k: (v[0], v[1] if len(v) > 1 else {}) for k, v in inputs.items()}, list(cls.RETURN_TYPES), names
    b = BUILTINS[node_type]
    inputs = {**b["input"].get("required", {}), **b["input"].get("optional", {})}
    out = {}
    for k, v in inputs.items():
        kind, opts = v[0], (v[1] if len(v) > 1 else {})
        if kind == "COMBO":
            kind = opts.get("options", [])
        out[k] = (kind, opts)
    return out, list(b["output"]), list(b.get("output_name", b["output"]))


def is_widget(kind) -> bool:
    return isinstance(kind, list) or kind in ("INT", "FLOAT", "STRING", "BOOLEAN")


def drawn_size(inputs: dict, node: dict) -> list[int]:
    """About the size the frontend draws a node at (it grows a saved size that is too small): a title bar, one row
    per socket row and per widget, more for multiline text and image previews."""
    rows = max(len(node["inputs"]), len(node["outputs"]))
    height = 30 + 20 * rows
    for kind, opts in inputs.values():
        if is_widget(kind):
            height += 64 if opts.get("multiline") else 20
            height += 20 if opts.get("control_after_generate") else 0
            height += 160 if opts.get("image_upload") else 0
    return [320, height]


class Workflow:
    """A tiny builder for UI-format graphs: add nodes, connect outputs to inputs, write JSON."""

    def __init__(self):
        self.nodes, self.links = [], []

    def add(self, node_type: str, pos, title: str | None = None, **values) -> dict:
        inputs, outputs, names = node_spec(node_type)
        node = {"id": len(self.nodes) + 1, "type": node_type, "pos": list(pos), "size": [320, 120], "flags": {},
                "order": len(self.nodes), "mode": 0, "inputs": [], "outputs": [],
                "properties": {"Node name for S&R": node_type}, "widgets_values": []}
        if title:
            node["title"] = title
        for name, (kind, opts) in inputs.items():
            if is_widget(kind):
                if name in values:
                    value = values.pop(name)
                elif "default" in opts:
                    value = opts["default"]
                else:
                    value = kind[0] if isinstance(kind, list) and kind else ""
                node["widgets_values"].append(value)
                if opts.get("control_after_generate"):
                    node["widgets_values"].append("fixed")
                if opts.get("image_upload") or opts.get("video_upload"):
                    node["widgets_values"].append("image")  # the upload button's value, as the frontend saves it
            else:
                node["inputs"].append({"name": name, "type": kind, "link": None})
        if values:
            raise ValueError(f"{node_type} has no widget(s) {sorted(values)}")
        for slot, (kind, name) in enumerate(zip(outputs, names)):
            node["outputs"].append({"name": name, "type": kind, "links": [], "slot_index": slot})
        node["size"] = drawn_size(inputs, node)
        self.nodes.append(node)
        return node

    def connect(self, src: dict, output: str, dst: dict, input_name: str) -> None:
        slot = next(i for i, o in enumerate(src["outputs"]) if o["name"] == output)
        kind = src["outputs"][slot]["type"]
        link_id = len(self.links) + 1
        target = next((i for i, x in enumerate(dst["inputs"]) if x["name"] == input_name), None)
        if target is None:  # a widget fed by a link (e.g. CreateVideo.fps from CamI2V Decode)
            dst["inputs"].append({"name": input_name, "type": kind, "widget": {"name": input_name}, "link": None})
            target = len(dst["inputs"]) - 1
        dst["inputs"][target]["link"] = link_id
        src["outputs"][slot]["links"].append(link_id)
        self.links.append([link_id, src["id"], slot, dst["id"], target, kind])

    def note(self, pos, text: str, size=(420, 200), title: str = "Read me") -> dict:
        """A Note node (frontend-only: ComfyUI never executes it) explaining what to change."""
        node = {"id": len(self.nodes) + 1, "type": "Note", "pos": list(pos), "size": list(size), "flags": {},
                "order": len(self.nodes), "mode": 0, "inputs": [], "outputs": [], "title": title,
                "properties": {}, "widgets_values": [text], "color": "#432", "bgcolor": "#653"}
        self.nodes.append(node)
        return node

    def view(self, screen=(1530, 820), margin: int = 30) -> dict:
        """The saved view (extra.ds): the whole graph in a laptop-sized window (1600x900 less the side and top bars),
        top-left corner in sight."""
        x0 = min(n["pos"][0] for n in self.nodes)
        y0 = min(n["pos"][1] for n in self.nodes)
        x1 = max(n["pos"][0] + n["size"][0] for n in self.nodes)
        y1 = max(n["pos"][1] + n["size"][1] for n in self.nodes)
        scale = round(min(1.0, (screen[0] - 2 * margin) / (x1 - x0), (screen[1] - 2 * margin) / (y1 - y0)), 2)
        return {"scale": scale, "offset": [margin / scale - x0, margin / scale - y0 + 40]}

    def write(self, name: str, description: str, camera=None) -> None:
        """example_workflows/<name>.json (the template browser shows the file name as its title) and its thumbnail."""
        models = [m for n in self.nodes for m in n["properties"].get("models", [])]
        data = {"last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": self.nodes,
                "links": self.links, "groups": [], "config": {},
                "extra": {"ds": self.view(), "cami2v_description": description}, "version": 0.4}
        if models:
            data["models"] = models
        (OUT / f"{name}.json").write_text(json.dumps(data, indent=1) + "\n")
        if camera is not None:  # the template thumbnail: the workflow's camera path, drawn by the preview code
            picture = tj.draw_path(camera, size=(512, 256), title=name.split(",")[0][:60])
            picture.convert("RGB").save(OUT / f"{name}.jpg", quality=88)


def loader(wf: Workflow, pos, ckpt_name: str, title: str | None = None) -> dict:
    """A model loader; a release checkpoint carries its download metadata, so the frontend can offer it."""
    from nodes.nodes_model import release_download

    node = wf.add("CamI2VModelLoader", pos, title=title, ckpt_name=ckpt_name)
    download = release_download(ckpt_name)
    if download is not None:
        node["properties"]["models"] = [download]
    return node


def sampler_chain(wf: Workflow, model, image, camera, y: int, prompt: str, prefix: str, **sampler) -> None:
    """Sampler -> Decode -> CreateVideo -> SaveVideo, at row y."""
    s = wf.add("CamI2VSampler", (760, y), prompt=prompt, **sampler)
    wf.connect(model, "model", s, "model")
    wf.connect(image, "IMAGE", s, "image")
    wf.connect(camera, "poses", s, "camera")
    d = wf.add("CamI2VDecode", (1120, y))
    wf.connect(model, "model", d, "model")
    wf.connect(s, "latent", d, "latent")
    v = wf.add("CreateVideo", (1460, y))
    wf.connect(d, "frames", v, "images")
    wf.connect(d, "fps", v, "fps")
    save = wf.add("SaveVideo", (1780, y), filename_prefix=prefix)
    wf.connect(v, "VIDEO", save, "video")
    report = wf.add("PreviewAny", (1120, y + 180), title="what the sampler adapted")
    wf.connect(s, "report", report, "source")


QUICKSTART = "CamI2V quick start, orbit with the bundled tiny model (CPU)"
CUSTOM_JSON = "CamI2V custom camera path from pose JSON, previewed (256 model)"
VERSUS = "CamI2V vs CameraCtrl, one picture and camera path through both (256 models)"
REALCAM = "RealCam-I2V metric camera with a depth-aware scene preview (512 model)"
FROM_VIDEO = "CamI2V copy the camera move of a video, bundled tiny model (CPU)"

MODEL_NOTE = ("Model: {what}\n\nThe loader lists the authors' release files by name; one that is not in "
              "models/cami2v yet is downloaded only when you switch on download_missing (or when you accept "
              "ComfyUI's missing-model dialog). README > Models has the table.")
PICTURE_NOTE = ("Your picture: load any photo here (any size; the sampler's fit input says how another shape meets "
                "the model's frame). Describe it in the sampler's prompt.")


def main(bundled_frames: int = 8) -> None:
    OUT.mkdir(exist_ok=True)
    for old in OUT.glob("*.json"):  # names are titles: drop files of renamed templates
        old.unlink()
        old.with_suffix(".jpg").unlink(missing_ok=True)
    from nodes.nodes_model import BUNDLED_CHOICE

    # 1. The quick start: bundled tiny model, orbit, runs on a laptop CPU.
    wf = Workflow()
    image = wf.add("LoadImage", (20, 40), image="example.png")
    model = loader(wf, (20, 420), BUNDLED_CHOICE)
    cam = wf.add("CamI2VCameraOrbit", (380, 420), direction="left", degrees=30.0, distance=3.0,
                 frames=bundled_frames)
    sampler_chain(wf, model, image, cam, 40, "a cosy room", "cami2v/orbit", steps=10)
    wf.note((380, 640), "Start here: press Queue. The bundled tiny model (64x64, 8 frames) makes a short video on a "
            "CPU in seconds; it was trained on synthetic rooms, so expect a rough picture that moves along the "
            "camera.\n\nChange the move in the Camera Orbit node (direction, degrees), or swap it for any CamI2V "
            "camera node. For real pictures, pick 256_cami2v.pt in the loader (a GPU helps).", size=(360, 260))
    wf.note((20, 640), PICTURE_NOTE, size=(340, 140), title="Picture")
    wf.write(QUICKSTART, "Orbit left: picture -> CamI2V sampler -> video, with the bundled tiny model.",
             tj.orbit("left", 30.0, 3.0, bundled_frames))

    # 2. A custom pose-JSON trajectory with its preview (real CamI2V 256 checkpoint, 16 frames).
    wf = Workflow()
    image = wf.add("LoadImage", (20, 40), image="example.png")
    model = loader(wf, (20, 420), "256_cami2v.pt")
    cam = wf.add("CamI2VCameraFromText", (380, 420))
    fit = wf.add("CamI2VCameraRetime", (380, 700), frames=16, ease="ease_in_out")
    wf.connect(cam, "poses", fit, "poses")
    prev = wf.add("CamI2VCameraPreview", (760, 600))
    wf.connect(fit, "poses", prev, "poses")
    wf.connect(image, "IMAGE", prev, "image")
    show = wf.add("PreviewImage", (1120, 600), title="camera path")
    wf.connect(prev, "path_picture", show, "images")
    anim = wf.add("SaveAnimatedWEBP", (1460, 600), filename_prefix="cami2v/warp_preview", fps=8.0)
    wf.connect(prev, "warped_frames", anim, "images")
    sampler_chain(wf, model, image, fit, 40, "a living room, sunny afternoon", "cami2v/custom_path", steps=25,
                  cfg_text=7.5, cfg_image=7.5)
    wf.note((20, 640), MODEL_NOTE.format(what="CamI2V 256 (256_cami2v.pt, 16 frames at 256x256)."),
            size=(340, 200), title="Model")
    wf.note((20, 860), "Camera: paste your own path into Camera From Text: pose JSON (README > Camera paths), "
            "RealEstate10K lines, or a CAMERACTRL_POSES list. Retime spreads it over the model's 16 frames; the "
            "Preview draws it and warps your picture along it before you spend a sampling run.",
            size=(340, 200), title="Camera path")
    from nodes.nodes_camera import EXAMPLE_JSON

    wf.write(CUSTOM_JSON, "Custom pose JSON: typed in the node, retimed to 16 frames, previewed, sampled.",
             tj.resample(tj.load(EXAMPLE_JSON), 16))

    # 3. CamI2V vs CameraCtrl on the same picture and path.
    wf = Workflow()
    image = wf.add("LoadImage", (20, 40), image="example.png")
    cam = wf.add("CamI2VCameraPreset", (20, 420), preset="orbit left", frames=16, ratio=0.6, scale=1.0)
    for row, (ckpt, label) in enumerate((("256_cami2v.pt", "cami2v"), ("256_cameractrl.pt", "cameractrl"))):
        model = loader(wf, (380, 40 + 520 * row), ckpt, title=f"{label} model")
        sampler_chain(wf, model, image, cam, 40 + 520 * row, "a garden with a fountain", f"cami2v/vs_{label}",
                      steps=25, seed=12333)
    wf.note((20, 640), "Same picture, same camera, same seed through CamI2V (top) and its CameraCtrl baseline "
            "(bottom): CamI2V's epipolar attention keeps the scene consistent as the camera moves. Change the "
            "preset once and both rows follow.\n\n" + MODEL_NOTE.format(what="256_cami2v.pt and 256_cameractrl.pt."),
            size=(340, 320), title="Read me")
    wf.write(VERSUS, "CamI2V vs CameraCtrl: the same picture and camera through both models.",
             tj.preset("orbit left", 16, 0.6, 1.0))

    # 4. RealCam-I2V: metric translations, a depth-aware preview, the scene fed to the sampler (noise shaping).
    wf = Workflow()
    image = wf.add("LoadImage", (20, 40), image="example.png")
    model = loader(wf, (20, 420), "512_realcam-i2v_50k.safetensors")
    cam = wf.add("CamI2VCameraPreset", (20, 660), preset="pan left", frames=16, ratio=1.0, scale=1.0)
    depth = wf.add("CamI2VDepthLoader", (380, 660), model="small")
    scene_node = wf.add("CamI2VScenePreview", (380, 820))
    wf.connect(model, "model", scene_node, "model")
    wf.connect(image, "IMAGE", scene_node, "image")
    wf.connect(cam, "poses", scene_node, "camera")
    wf.connect(depth, "depth_model", scene_node, "depth_model")
    renders = wf.add("SaveAnimatedWEBP", (760, 900), filename_prefix="cami2v/realcam_scene", fps=8.0)
    wf.connect(scene_node, "renders", renders, "images")
    sampler_chain(wf, model, image, cam, 40, "a living room, sunny afternoon", "cami2v/realcam", steps=25)
    sampler = next(n for n in wf.nodes if n["type"] == "CamI2VSampler")
    wf.connect(scene_node, "scene", sampler, "scene")
    wf.note((20, 980), "RealCam-I2V reads camera translations in metres. A demo preset is scale-free, so it is read "
            "as its demo does: 1 unit = 0.5 m at trace_scale 1 (here: pan left moves 1 m). The Scene Preview shows "
            "the picture's 3-D points from every camera before you sample, and its report says how far the camera "
            "moves and how deep the scene is. Its scene output turns on RealCam-I2V's noise shaping in the sampler "
            "(disconnect it for plain sampling).\n\n" + MODEL_NOTE.format(
                what="512_realcam-i2v_50k.safetensors, loaded over DynamiCrafter_512's model.ckpt (put it in "
                     "models/cami2v/DynamiCrafter_512/ or models/checkpoints/; download_missing fetches both). "
                     "Depth: Depth Anything V2 Metric Indoor small (Apache-2.0); base/large are non-commercial."),
            size=(340, 420), title="Read me")
    wf.write(REALCAM, "RealCam-I2V: metric camera, depth-aware scene preview, scene-constrained noise shaping.",
             tj.preset("pan left", 16, 1.0, 1.0))

    # 5. Video to video: the camera move of a clip, copied onto a picture (bundled tiny model).
    wf = Workflow()
    image = wf.add("LoadImage", (20, 40), image="example.png")
    clip = wf.add("LoadVideo", (20, 420), file="example.mp4")
    parts = wf.add("GetVideoComponents", (20, 700))
    wf.connect(clip, "VIDEO", parts, "video")
    model = loader(wf, (380, 700), BUNDLED_CHOICE)
    cam = wf.add("CamI2VCameraFromVideo", (380, 40), poses_out=bundled_frames)
    wf.connect(parts, "images", cam, "frames")
    sampler_chain(wf, model, image, cam, 40, "a cosy room", "cami2v/from_video", steps=10)
    moved = next(n for n in wf.nodes if n["type"] == "CamI2VSampler")
    moved["pos"] = [760, 40]
    shown = wf.add("PreviewAny", (380, 440), title="what the camera did")
    wf.connect(cam, "report", shown, "source")
    wf.note((380, 960), "Load a clip whose camera moves (a walk through a room, a pan across a street) into Load "
            "Video and your picture into Load Image. Camera From Video recovers the clip's camera by structure "
            "from motion (pycolmap, 32 frames at most) and its report says which frames registered and the field "
            "of view it found; a clip whose camera only slides is read at an assumed 60 degrees, so give fov_deg "
            "when you know it. poses_out must match the model: 8 for the bundled one, 16 for the release files.",
            size=(360, 300), title="Read me")
    wf.write(FROM_VIDEO, "Video to video: a clip's camera move copied onto a picture.", tj.orbit("left", 30.0, 3.0,
                                                                                              bundled_frames))


if __name__ == "__main__":
    main()
