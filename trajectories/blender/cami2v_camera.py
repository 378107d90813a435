"""CamI2V camera paths <-> an animated Blender camera. Runs in Blender's Python (bpy, numpy); needs nothing else.

Command line:
    blender scene.blend --background --python cami2v_camera.py -- export path.json [--camera NAME] [--start 1 --end 16]
    blender --background --python cami2v_camera.py -- import path.json [--save scene.blend]
Blender's Python console:
    import sys; sys.path.append("/path/to/ComfyUI-CamI2V/trajectories/blender"); import cami2v_camera
    cami2v_camera.export_camera("/tmp/path.json")  # the active (or scene) camera over the scene's frame range
    cami2v_camera.import_camera("/tmp/path.json")  # a new camera with a key on every frame

The file is CamI2V's pose JSON (trajectories/schema/pose.schema.json): world-to-camera matrices in OpenCV camera axes
(x right, y down, z forward) and intrinsics normalised by the image width and height. Blender cameras look down -Z
with +Y up (OpenGL axes) and Blender's world is Z-up; both are converted:
    camera axes   X_cv = CV_FROM_GL X_blender_camera                  (y and z negated)
    world axes    X_blender = BLENDER_FROM_WORLD X_ours                (our y, down, is Blender -Z; our z is +Y)
so an upright Blender camera looking along +Y is the identity pose, the start of CamI2V's presets.
Intrinsics follow Blender's lens, sensor fit, shift and pixel aspect; the importer uses a horizontal sensor fit.
The pure maths functions (no bpy) are tested outside Blender: tests/test_trajectories_interchange.py.
"""

import argparse
import json
import math
import sys

import numpy as np

FORMAT = "cami2v-trajectory"
CV_FROM_GL = np.diag([1.0, -1.0, -1.0, 1.0])
BLENDER_FROM_WORLD = np.array([[1.0, 0.0, 0.0, 0.0],
                               [0.0, 0.0, 1.0, 0.0],
                               [0.0, -1.0, 0.0, 0.0],
                               [0.0, 0.0, 0.0, 1.0]])
SENSOR_WIDTH_MM = 36.0
_CONVERT_HINT = "write it in the plain form first: python -m trajectories convert IN.json OUT.json"


# -- pure maths (no bpy) ---------------------------------------------------------------------------------------

def w2c_from_blender(matrix_world) -> np.ndarray:
    """A Blender camera's matrix_world [4,4] (OpenGL camera axes, Z-up world) -> our OpenCV w2c [4,4]."""
    return CV_FROM_GL @ np.linalg.inv(np.asarray(matrix_world, dtype=np.float64)) @ BLENDER_FROM_WORLD


def blender_from_w2c(w2c) -> np.ndarray:
    """Our OpenCV w2c [4,4] -> the Blender camera's matrix_world [4,4] (inverse of w2c_from_blender)."""
    return BLENDER_FROM_WORLD @ np.linalg.inv(np.asarray(w2c, dtype=np.float64)) @ CV_FROM_GL


def without_scale(matrix_world, tol: float = 1e-6) -> np.ndarray:
    """matrix_world [4,4] with its axis columns made unit length when the object is scaled (scale does not change
    the view); unscaled matrices are returned unchanged so poses round-trip exactly."""
    m = np.array(matrix_world, dtype=np.float64)
    norms = np.linalg.norm(m[:3, :3], axis=0)
    if np.abs(norms - 1.0).max() > tol:
        m[:3, :3] /= norms
    return m


def intrinsics_from_blender(lens_mm, sensor_width_mm, sensor_height_mm, sensor_fit, resolution_x, resolution_y,
                            shift_x=0.0, shift_y=0.0, pixel_aspect_x=1.0, pixel_aspect_y=1.0):
    """Blender camera + render settings -> ((fx, fy, cx, cy) normalised by the image size, aspect = width / height).

    Blender's model: the sensor spans the image width (HORIZONTAL), its height (VERTICAL, with sensor_height) or
    the larger side (AUTO, with sensor_width); shift moves the image window in units of that side.
    """
    pixel_ratio = pixel_aspect_y / pixel_aspect_x
    fit = sensor_fit
    if fit == "AUTO":
        fit = "HORIZONTAL" if pixel_aspect_x * resolution_x >= pixel_aspect_y * resolution_y else "VERTICAL"
    sensor_mm = sensor_height_mm if sensor_fit == "VERTICAL" else sensor_width_mm
    view_px = resolution_x if fit == "HORIZONTAL" else pixel_ratio * resolution_y
    fx_px = lens_mm * view_px / sensor_mm
    fy_px = fx_px / pixel_ratio
    cx_px = resolution_x / 2 - shift_x * view_px
    cy_px = resolution_y / 2 + shift_y * view_px / pixel_ratio  # image y points down, Blender's shift_y up
    intrinsics = (fx_px / resolution_x, fy_px / resolution_y, cx_px / resolution_x, cy_px / resolution_y)
    return intrinsics, resolution_x / resolution_y


def blender_from_intrinsics(fx, fy, cx, cy, aspect, sensor_width_mm=SENSOR_WIDTH_MM):
    """Normalised intrinsics + aspect -> Blender camera settings with a horizontal sensor fit (square pixels).

    Returns a dict: lens, sensor_width, sensor_fit, shift_x, shift_y, and fy_mismatch = fy / (fx * aspect) - 1,
    the part of fy Blender's single lens cannot hold (0 for square pixels).
    """
    return {"lens": fx * sensor_width_mm, "sensor_width": sensor_width_mm, "sensor_fit": "HORIZONTAL",
            "shift_x": 0.5 - cx, "shift_y": (cy - 0.5) / aspect, "fy_mismatch": fy / (fx * aspect) - 1.0}


def default_intrinsics(aspect):
    """CamI2V's default: 90 degrees across the long side, square pixels, centred."""
    return (0.5, 0.5 * aspect, 0.5, 0.5) if aspect >= 1.0 else (0.5 / aspect, 0.5, 0.5, 0.5)


def nearest_rotation(m) -> np.ndarray:
    """The proper rotation closest to a [3,3] matrix (polar factor by SVD)."""
    u, _, vt = np.linalg.svd(np.asarray(m, dtype=np.float64))
    if np.linalg.det(u @ vt) < 0:
        u[:, 2] *= -1
    return u @ vt


def quaternion_from_rotation(r) -> np.ndarray:
    """Proper rotation [3,3] -> unit quaternion [4] in Blender's order (w, x, y, z)."""
    r = np.asarray(r, dtype=np.float64)
    trace = r[0, 0] + r[1, 1] + r[2, 2]
    # Take the square root of the largest candidate (Shepperd), so nothing divides by ~0.
    if trace >= max(r[0, 0], r[1, 1], r[2, 2]):
        s = 2.0 * math.sqrt(max(1.0 + trace, 0.0))
        q = (0.25 * s, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s)
    elif r[0, 0] >= r[1, 1] and r[0, 0] >= r[2, 2]:
        s = 2.0 * math.sqrt(max(1.0 + r[0, 0] - r[1, 1] - r[2, 2], 0.0))
        q = ((r[2, 1] - r[1, 2]) / s, 0.25 * s, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s)
    elif r[1, 1] >= r[2, 2]:
        s = 2.0 * math.sqrt(max(1.0 + r[1, 1] - r[0, 0] - r[2, 2], 0.0))
        q = ((r[0, 2] - r[2, 0]) / s, (r[0, 1] + r[1, 0]) / s, 0.25 * s, (r[1, 2] + r[2, 1]) / s)
    else:
        s = 2.0 * math.sqrt(max(1.0 + r[2, 2] - r[0, 0] - r[1, 1], 0.0))
        q = ((r[1, 0] - r[0, 1]) / s, (r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, 0.25 * s)
    q = np.array(q)
    return q / np.linalg.norm(q)


def keyframes(w2c_frames) -> list:
    """Our w2c [T,4,4] -> per frame (location [3], quaternion (w, x, y, z) [4]) of the Blender camera object.

    Rotations are made exactly rigid (the demo's interpolated poses are not quite) and consecutive quaternions
    keep one sign, so Blender's interpolation between keys takes the short way round.
    """
    keys, previous = [], None
    for w2c in w2c_frames:
        c2w = blender_from_w2c(w2c)
        q = quaternion_from_rotation(nearest_rotation(c2w[:3, :3]))
        if previous is not None and np.dot(q, previous) < 0:
            q = -q
        keys.append((c2w[:3, 3].copy(), q))
        previous = q
    return keys


def pose_json(w2c_frames, intrinsics_frames, aspect, name=None, description=None) -> dict:
    """Per-frame w2c [T,4,4] and (fx, fy, cx, cy) [T,4] -> a pose JSON object (CamI2V's schema)."""
    data = {"format": FORMAT, "version": 1}
    if name is not None:
        data["name"] = str(name)
    if description is not None:
        data["description"] = str(description)
    data["aspect"] = float(aspect)
    data["frames"] = [{"w2c": np.asarray(w2c, dtype=np.float64)[:3].tolist(),
                       "intrinsics": dict(zip(("fx", "fy", "cx", "cy"), map(float, intr)))}
                      for w2c, intr in zip(w2c_frames, intrinsics_frames)]
    return data


def dumps(data: dict) -> str:
    """Pose JSON text with one frame per line (floats round-trip exactly)."""
    head = json.dumps({k: v for k, v in data.items() if k != "frames"}, allow_nan=False)[:-1]
    frames = ",\n  ".join(json.dumps(frame, allow_nan=False) for frame in data["frames"])
    return head + ', "frames": [\n  ' + frames + "\n]}\n"


def read_pose_json(data: dict):
    """A pose JSON object in the plain form (frames with 'w2c' or 'c2w'; intrinsics as fx/fy/cx/cy)
    -> (aspect, [(w2c [4,4], (fx, fy, cx, cy)), ...]). Raises ValueError naming the frame otherwise."""
    if not isinstance(data, dict) or not isinstance(data.get("frames"), list) or not data["frames"]:
        raise ValueError("expected a CamI2V pose JSON object with a non-empty 'frames' list")
    if data.get("format", FORMAT) != FORMAT:
        raise ValueError(f"'format' is {str(data['format'])[:40]!r}, not {FORMAT!r}; {_CONVERT_HINT}")
    aspect = float(data.get("aspect", 1.0))
    if not aspect > 0:
        raise ValueError(f"'aspect' must be > 0, found {aspect}")
    shared = _plain_intrinsics(data["intrinsics"], aspect, "top level") if "intrinsics" in data else None
    frames = []
    for f, frame in enumerate(data["frames"]):
        if not isinstance(frame, dict) or ("w2c" in frame) == ("c2w" in frame):
            raise ValueError(f"frame {f}: expected exactly one of 'w2c' or 'c2w'; for 'position' + 'look_at' "
                             f"frames, {_CONVERT_HINT}")
        matrix = _matrix(frame.get("w2c", frame.get("c2w")), f)
        w2c = matrix if "w2c" in frame else np.linalg.inv(matrix)
        if "intrinsics" in frame:
            intr = _plain_intrinsics(frame["intrinsics"], aspect, f"frame {f}")
        else:
            intr = shared if shared is not None else default_intrinsics(aspect)
        frames.append((w2c, intr))
    return aspect, frames


def _matrix(value, f: int) -> np.ndarray:
    try:
        m = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"frame {f}: the pose is not a matrix of numbers") from None
    if m.shape in ((12,), (16,)):
        m = m.reshape(-1, 4)
    if m.shape not in ((3, 4), (4, 4)) or not np.isfinite(m).all():
        raise ValueError(f"frame {f}: expected a 3x4 or 4x4 matrix of finite numbers, found shape {list(m.shape)}")
    return np.vstack([m[:3], [0.0, 0.0, 0.0, 1.0]])


def _plain_intrinsics(obj, aspect, where):
    if not isinstance(obj, dict) or not set(obj) <= {"fx", "fy", "cx", "cy"} or not ({"fx", "fy"} & set(obj)):
        raise ValueError(f"{where}: intrinsics must be given as fx/fy (and cx, cy); for fields of view or focal_mm, "
                         f"{_CONVERT_HINT}")
    fx = float(obj["fx"]) if "fx" in obj else float(obj["fy"]) / aspect
    fy = float(obj["fy"]) if "fy" in obj else fx * aspect  # square pixels
    return fx, fy, float(obj.get("cx", 0.5)), float(obj.get("cy", 0.5))


# -- inside Blender ----------------------------------------------------------------------------------------------

def export_camera(path, camera=None, frame_start=None, frame_end=None) -> str:
    """Write the camera's animation over [frame_start, frame_end] (default: the scene's range) as pose JSON.

    `camera`: an object or its name; default the active object when it is a camera, else the scene camera.
    Returns the path written.
    """
    import bpy

    scene = bpy.context.scene
    if isinstance(camera, str):
        if camera not in bpy.data.objects:
            raise ValueError(f"no object named {camera!r}")
        camera = bpy.data.objects[camera]
    if camera is None:
        active = bpy.context.view_layer.objects.active
        camera = active if active is not None and active.type == "CAMERA" else scene.camera
    if camera is None or camera.type != "CAMERA":
        raise ValueError("no camera to export: select a camera, set the scene camera, or pass camera=NAME")
    if camera.data.type != "PERSP":
        raise ValueError(f"camera {camera.name!r} is {camera.data.type}; CamI2V needs a perspective camera")
    start = scene.frame_start if frame_start is None else int(frame_start)
    end = scene.frame_end if frame_end is None else int(frame_end)
    if end < start:
        raise ValueError(f"the frame range {start}..{end} is empty")
    render, current = scene.render, scene.frame_current
    w2c, intrinsics, aspect = [], [], 1.0
    try:
        for frame in range(start, end + 1):
            scene.frame_set(frame)
            w2c.append(w2c_from_blender(without_scale(np.array(camera.matrix_world))))
            cam = camera.data
            intr, aspect = intrinsics_from_blender(cam.lens, cam.sensor_width, cam.sensor_height, cam.sensor_fit,
                                                   render.resolution_x, render.resolution_y, cam.shift_x,
                                                   cam.shift_y, render.pixel_aspect_x, render.pixel_aspect_y)
            intrinsics.append(intr)
    finally:
        scene.frame_set(current)
    data = pose_json(w2c, intrinsics, aspect, name=camera.name,
                     description=f"exported from Blender {bpy.app.version_string}, frames {start}-{end}")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(dumps(data))
    print(f"cami2v_camera: wrote {len(w2c)} poses of {camera.name!r} to {path}")
    return str(path)


def import_camera(path, name="CamI2V camera", sensor_width_mm=SENSOR_WIDTH_MM):
    """Build a camera keyed on every frame from a pose JSON file, starting at the scene's first frame.

    Sets the scene's frame range, its camera, and its resolution height to the path's aspect (width kept).
    Returns the new camera object.
    """
    import bpy

    with open(path, encoding="utf-8") as fh:
        aspect, frames = read_pose_json(json.load(fh))
    scene = bpy.context.scene
    render = scene.render
    if (render.pixel_aspect_x, render.pixel_aspect_y) != (1.0, 1.0):
        print("cami2v_camera: pixel aspect set to 1:1 (CamI2V paths have square pixels)")
        render.pixel_aspect_x = render.pixel_aspect_y = 1.0
    render.resolution_y = max(1, round(render.resolution_x / aspect))
    cam_data = bpy.data.cameras.new(name)
    cam_data.sensor_fit = "HORIZONTAL"
    cam_data.sensor_width = sensor_width_mm
    obj = bpy.data.objects.new(name, cam_data)
    scene.collection.objects.link(obj)
    obj.rotation_mode = "QUATERNION"
    edit = bpy.context.preferences.edit
    interpolation = edit.keyframe_new_interpolation_type
    edit.keyframe_new_interpolation_type = "LINEAR"  # keys on every frame: no overshoot between them
    worst = 0.0
    try:
        for i, ((location, quaternion), (_, intr)) in enumerate(zip(keyframes([w for w, _ in frames]), frames)):
            frame = scene.frame_start + i
            obj.location = tuple(map(float, location))
            obj.rotation_quaternion = tuple(map(float, quaternion))
            obj.keyframe_insert("location", frame=frame)
            obj.keyframe_insert("rotation_quaternion", frame=frame)
            settings = blender_from_intrinsics(*intr, aspect, sensor_width_mm)
            for prop in ("lens", "shift_x", "shift_y"):
                setattr(cam_data, prop, settings[prop])
                cam_data.keyframe_insert(prop, frame=frame)
            worst = max(worst, abs(settings["fy_mismatch"]))
    finally:
        edit.keyframe_new_interpolation_type = interpolation
    if worst > 1e-6:
        print(f"cami2v_camera: fy differs from square pixels by up to {worst:.3g}; Blender keeps one focal length "
              f"(from fx)")
    scene.frame_end = scene.frame_start + len(frames) - 1
    scene.camera = obj
    print(f"cami2v_camera: built {name!r} with {len(frames)} keys, frames {scene.frame_start}-{scene.frame_end}")
    return obj


def main(argv) -> int:
    """`blender ... --python cami2v_camera.py -- export|import ...` (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="cami2v_camera.py", description="CamI2V pose JSON <-> Blender camera")
    sub = parser.add_subparsers(dest="command", required=True)
    export = sub.add_parser("export", help="write the camera's animation as pose JSON")
    export.add_argument("path")
    export.add_argument("--camera", help="camera object name (default: active or scene camera)")
    export.add_argument("--start", type=int, help="first frame (default: the scene's)")
    export.add_argument("--end", type=int, help="last frame (default: the scene's)")
    build = sub.add_parser("import", help="build an animated camera from pose JSON")
    build.add_argument("path")
    build.add_argument("--name", default="CamI2V camera")
    build.add_argument("--save", help="save the .blend file here afterwards")
    args = parser.parse_args(argv)
    try:
        if args.command == "export":
            export_camera(args.path, args.camera, args.start, args.end)
        else:
            import_camera(args.path, args.name)
            if args.save:
                import bpy
                bpy.ops.wm.save_as_mainfile(filepath=args.save)
    except (ValueError, OSError) as e:
        print(f"cami2v_camera: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__" and "--" in sys.argv:
    sys.exit(main(sys.argv[sys.argv.index("--") + 1:]))
