"""training/train.py: configs, trainable sets, checkpoints that load_model reads, exact resume, 2-process DDP."""

from __future__ import annotations

import json
import math
import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from training import train as T

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "training" / "configs" / "tiny_synthetic.yaml"


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    """Two tiny synthetic scenes (4 clips of 16 frames, 64x64)."""
    out = tmp_path_factory.mktemp("synth")
    subprocess.run([sys.executable, "-m", "training.synthetic", "--out", str(out), "--scenes", "2", "--seed", "0",
                    "--frames", "16", "--size", "64", "64", "--split", "train", "--supersample", "1", "--quiet"],
                   check=True, cwd=ROOT)
    return out


def overrides(data: Path, out: Path, **extra) -> list[str]:
    """A fast CPU run of the shipped tiny config: random VAE, batch 1, one thread."""
    items = {"model.init_parts": "[]", "model.scale_factor_from": "null", "data.root": str(data),
             "output_dir": str(out), "train.batch_size": 1, "train.threads": 1, "train.progress": "false",
             "train.log_every": 1, "train.warmup_steps": 2, "train.cache_frozen": "false", "train.tensorboard": "false"}
    items.update(extra)
    return [f"{k}={v}" for k, v in items.items()]


# -- configuration ------------------------------------------------------------------------------------------------

def test_load_config_shortcuts_and_dotlist():
    cfg = T.load_config(CONFIG, ["max_steps=7", "output_dir=/x", "resume=none", "train.lr=0.25", "data.root=/d"])
    assert cfg.train.max_steps == 7 and cfg.train.output_dir == "/x" and cfg.train.resume == "none"
    assert cfg.train.lr == 0.25 and cfg.data.root == "/d"
    assert cfg.train.grad_clip == 1.0  # from the YAML, over the paper default 0.5


@pytest.mark.parametrize("item, word", [("train.precision=fp8", "train.precision"),
                                        ("train.distributed=zero", "train.distributed"),
                                        ("train.trainable=camera", "train.trainable"),
                                        ("max_steps", "key=value")])
def test_load_config_rejects_bad_values(item, word):
    with pytest.raises(T.TrainConfigError, match=word):
        T.load_config(CONFIG, [item])


def test_missing_config_file_is_explained(tmp_path):
    with pytest.raises(T.TrainConfigError, match="does not exist"):
        T.load_config(tmp_path / "nope.yaml")


def test_model_config_overrides_merge_into_preset():
    cfg = T.load_config(CONFIG, ["model.scale_factor_from=null"])
    mc = T.model_config_from_section(cfg.model)
    assert mc.unet["dropout"] == 0.0 and mc.unet["model_channels"] == 32  # override merged, rest kept
    assert mc.variant == "cami2v" and mc.temporal_length == 8


@pytest.fixture(scope="module")
def tiny_model():
    from cami2v_core.model import build_model
    return build_model("tiny")


def test_trainable_presets_follow_the_paper(tiny_model):
    names = T.trainable_parameter_names(tiny_model, "cami2v")
    assert names and all(n.startswith("pose_encoder.") or ".pluker_projection." in n or ".epipolar." in n
                         for n in names)
    assert any(n.startswith("pose_encoder.") for n in names)
    assert any(".pluker_projection." in n for n in names) and any(".epipolar." in n for n in names)
    # nothing of the base UNet, VAE, CLIP or resampler (spec §8)
    assert not any(".attn1." in n or n.startswith(("first_stage_model.", "embedder.", "image_proj_model."))
                   for n in names)
    every = T.trainable_parameter_names(tiny_model, "all")
    assert set(names) < set(every)
    assert not any(n.startswith(("first_stage_model.", "cond_stage_model.", "embedder.")) for n in every)


def test_trainable_prefix_list_and_unknown_prefix(tiny_model):
    names = T.trainable_parameter_names(tiny_model, ["pose_encoder.", "image_proj_model."])
    assert names and all(n.startswith(("pose_encoder.", "image_proj_model.")) for n in names)
    with pytest.raises(T.TrainConfigError, match="match no parameter"):
        T.trainable_parameter_names(tiny_model, ["posencoder."])


def test_motionctrl_trainable_is_temporal_attn2():
    assert T._is_temporal("model.diffusion_model.input_blocks.1.2.transformer_blocks.0.attn2.to_q.weight")
    assert T._is_temporal("model.diffusion_model.middle_block.2.transformer_blocks.0.attn2.to_q.weight")
    assert T._is_temporal("model.diffusion_model.init_attn.0.transformer_blocks.0.attn2.to_q.weight")
    assert not T._is_temporal("model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_q.weight")


def test_lr_schedule():
    cfg = T.load_config(CONFIG, ["max_steps=100", "train.warmup_steps=10", "train.min_lr_ratio=0.1"]).train
    assert T.lr_factor(0, cfg) == pytest.approx(0.1) and T.lr_factor(9, cfg) == pytest.approx(1.0)
    assert T.lr_factor(10, cfg) == pytest.approx(1.0) and T.lr_factor(100, cfg) == pytest.approx(0.1)
    cfg.lr_schedule = "constant"
    assert T.lr_factor(50, cfg) == 1.0


def test_rng_state_round_trip_is_weights_only_loadable(tmp_path):
    import random

    import numpy as np
    state = T.rng_state()
    torch.save(state, tmp_path / "rng.pt")
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    T.set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a


# -- a fresh clone's first command ----------------------------------------------------------------------------------

def _readme_first_command() -> list[str]:
    """The first `python -m training.train` command of training/README.md, as argv after the module name."""
    for line in (ROOT / "training" / "README.md").read_text().splitlines():
        if line.startswith("python -m training.train "):
            return shlex.split(line)[3:]
    raise AssertionError("training/README.md shows no `python -m training.train` command")


def test_readme_first_command_runs_on_a_fresh_clone(tmp_path, monkeypatch, capsys):
    from safetensors import safe_open

    from cami2v_core.bundled import BUNDLED_MODEL
    from cami2v_core.checkpoint import read_safetensors_header
    from cami2v_core.model import load_model
    from training.synthetic import _parser, generate
    # what the first run renders is the bundled model's step 1, so that command later finds it complete
    assert T.synthetic_command(T.SYNTHETIC_ROOT) in (ROOT / "training" / "README.md").read_text()
    argv = _readme_first_command()
    assert argv[:2] == ["--config", "training/configs/tiny_synthetic.yaml"]
    assert any(a.startswith("max_steps=") for a in argv), "the first command must stay short (max_steps=...)"
    # the same command in an empty folder (a fresh clone has no runs/), 2 steps, 2 rendered scenes
    argv = [str(CONFIG) if a == argv[1] else ("max_steps=2" if a.startswith("max_steps=") else a) for a in argv]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(T.SYNTHETIC_SETTINGS, "scenes", 2)
    assert T.main(argv + ["train.progress=false"]) == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert "rendering runs/synth64: 2/2 scenes" in err
    clips = (tmp_path / "runs" / "synth64" / "train_valid_list.txt").read_text().split()
    assert len(clips) == 2 * 2  # 2 scenes x 2 clips
    a = _parser().parse_args(shlex.split(T.synthetic_command(T.SYNTHETIC_ROOT))[3:])
    again = generate(a.out, a.scenes, a.seed, a.frames, *a.size, a.split, supersample=a.supersample, log=None)
    assert again["clips_rendered"] == 0 and again["clips_skipped"] == 4
    # the VAE is the bundled model's, tensor for tensor, and the run's config records the file it used
    vae_file = tmp_path / T.BUNDLED_VAE
    bundled = load_file(str(BUNDLED_MODEL))
    vae = load_file(str(vae_file))
    assert vae and all(torch.equal(v, bundled[key].float()) for key, v in vae.items())
    out = Path(next(a.split("=", 1)[1] for a in argv if a.startswith("output_dir=")))
    assert str(T.BUNDLED_VAE) in (out / "config.yaml").read_text()
    model = load_model(out / "checkpoints" / "step_00000002" / "model.safetensors")
    sd = model.state_dict()
    assert all(torch.equal(sd[key], vae[key]) for key in vae)  # frozen: still the bundled VAE after training
    with safe_open(str(vae_file), framework="pt") as f:
        std = float(f.metadata()["latent_std"])
    bundled_scale = json.loads(read_safetensors_header(BUNDLED_MODEL)[1]["cami2v_config"])["scale_factor"]
    assert model.scale_factor == pytest.approx(1 / std, rel=1e-4) == pytest.approx(bundled_scale, rel=1e-4)
    # running it again renders nothing and continues the run
    assert T.main([a for a in argv if not a.startswith("max_steps=")] + ["max_steps=3", "train.progress=false"]) == 0
    err = capsys.readouterr().err
    assert "rendering" not in err and (out / "checkpoints" / "step_00000003").is_dir()


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err[-2000:]
    return lines[0]


def test_missing_data_fails_in_one_line_naming_the_command(tmp_path, monkeypatch, capsys):
    from training.synthetic import _parser
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "elsewhere"
    rc = T.main(["--config", str(CONFIG), "model.init_parts=[]", "model.scale_factor_from=null",
                 f"data.root={root}", "max_steps=1"])
    line = _one_error_line(capsys.readouterr().err)
    assert rc == 2 and f"data.root {root} does not exist" in line
    command = line.split("`")[1]
    args = _parser().parse_args(shlex.split(command)[3:])  # the named command is one training.synthetic accepts
    assert args.out == str(root) and tuple(args.size) == (64, 64) and args.frames >= 8 and args.split == "train"
    assert not root.exists() and not (tmp_path / "runs").exists()  # nothing rendered or written


def test_missing_vae_of_another_recipe_fails_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    vae = tmp_path / "my_vae.safetensors"
    rc = T.main(["--config", str(CONFIG), f"model.init_parts=[{vae}]", f"model.scale_factor_from={vae}",
                 "max_steps=1"])
    line = _one_error_line(capsys.readouterr().err)
    assert rc == 2 and f"{vae} (model.init_parts) does not exist" in line
    assert f"python -m training.train_vae --data runs/synth64 --model {CONFIG} --out {vae}" in line
    assert "render the data with `python -m training.synthetic --out runs/synth64" in line  # runs/synth64 absent too
    assert not (tmp_path / "runs").exists()


# -- training runs --------------------------------------------------------------------------------------------------

def test_checkpoint_loads_with_load_model_and_samples(synth, tmp_path):
    from cami2v_core.model import load_model
    from cami2v_core.pipeline import generate

    out = tmp_path / "run"
    result = T.train(T.load_config(CONFIG, overrides(synth, out, max_steps=2, **{"train.save_every": 2})))
    ckpt = out / "checkpoints" / "step_00000002"
    assert (out / "checkpoints" / "latest").read_text().strip() == "step_00000002"
    assert result["step"] == 2 and torch.isfinite(torch.tensor(result["metrics"]["loss"]))
    model = load_model(ckpt / "model.safetensors")  # config from the header, strict keys
    assert model.variant == "cami2v" and model.config.unet["dropout"] == 0.0
    saved = load_file(str(ckpt / "model.safetensors"))
    assert set(saved) == set(model.state_dict())
    ema = load_model(ckpt / "ema.safetensors")
    w2c = torch.eye(4).repeat(8, 1, 1)
    w2c[:, 0, 3] = torch.linspace(0, 0.5, 8)
    image = torch.rand(1, 64, 64, 3)
    frames = generate(ema, image, w2c, steps=2, seed=0)
    assert frames.shape == (8, 64, 64, 3) and torch.isfinite(frames).all()
    assert not any(p.name.startswith(".tmp") for p in (out / "checkpoints").iterdir())


class Killed(Exception):
    """Stands in for a process killed mid-run."""


def _rows(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def _tensors(obj, prefix=""):
    """Every tensor of a nested dict / list (an optimizer state), keyed by its path."""
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _tensors(v, f"{prefix}/{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{prefix}/{i}")


def test_resume_after_a_kill_is_bit_identical(synth, tmp_path, monkeypatch):
    # The shipped recipe's options that carry state across steps: the frozen-encoder cache, EMA, cosine LR with
    # warm-up, batches of 2; a checkpoint (step 3) between two logged steps (every 2), a kill after step 4.
    n, k = 6, 3
    extra = {"train.save_every": k, "train.log_every": 2, "train.batch_size": 2, "train.cache_frozen": "true",
             "train.ema_decay": 0.9, "train.uncond_prob": 0.3, "max_steps": n}
    full = tmp_path / "full"
    T.train(T.load_config(CONFIG, overrides(synth, full, **extra)))
    part = tmp_path / "part"
    real_log = T.MetricLogger.log

    def log_then_die(self, step, values):
        real_log(self, step, values)
        if step == k + 1:
            raise Killed

    monkeypatch.setattr(T.MetricLogger, "log", log_then_die)
    with pytest.raises(Killed):
        T.train(T.load_config(CONFIG, overrides(synth, part, **extra)))
    monkeypatch.setattr(T.MetricLogger, "log", real_log)
    assert [r["step"] for r in _rows(part)] == [2, 4]  # step 4 is after the checkpoint: it will be logged again
    assert (part / "checkpoints" / "latest").read_text().strip() == f"step_{k:08d}"
    # a crash during a later save leaves a temp folder behind; resuming must ignore it
    (part / "checkpoints" / f".tmp-step_{k + 2:08d}").mkdir()
    T.train(T.load_config(CONFIG, overrides(synth, part, resume="auto", **extra)))

    straight, resumed = _rows(full), _rows(part)
    assert [r["step"] for r in resumed] == [r["step"] for r in straight] == [2, 4, 6]
    for key in ("loss", "lr", "grad_norm"):
        assert [r[key] for r in resumed] == [r[key] for r in straight], key
    last = f"step_{n:08d}"
    for name in ("model.safetensors", "ema.safetensors"):
        a = load_file(str(full / "checkpoints" / last / name))
        b = load_file(str(part / "checkpoints" / last / name))
        assert set(a) == set(b)
        diff = [key for key in a if not torch.equal(a[key], b[key])]
        assert not diff, f"{name}: {len(diff)} tensors differ after resume, e.g. {diff[:3]}"
    a, b = (dict(_tensors(torch.load(run / "checkpoints" / last / "trainer.pt", weights_only=True)["optimizer"]))
            for run in (full, part))
    assert set(a) == set(b) and a
    assert all(torch.equal(a[key], b[key]) for key in a), "optimizer state differs after resume"


def test_truncate_metrics_keeps_the_checkpointed_rows(tmp_path):
    rows = [{"step": s, "loss": s / 10} for s in (1, 2, 3, 4, 5)] + [{"step": 4, "loss": 0.44}, {"note": "x"}]
    path = tmp_path / "metrics.jsonl"
    text = [json.dumps(r) for r in rows]
    path.write_text("\n".join(text) + '\n{"step": 6, "lo')  # a half-written last row
    assert T.truncate_metrics(path, 4) == 3  # step 5, the half row, and the step-4 row the later one supersedes
    assert path.read_text().splitlines() == [text[0], text[1], text[2], text[5], text[6]]
    before = path.read_text()
    assert T.truncate_metrics(path, 4) == 0 and path.read_text() == before
    assert T.truncate_metrics(tmp_path / "none.jsonl", 4) == 0


def test_resume_from_a_folder_that_is_not_a_checkpoint(synth, tmp_path):
    cfg = T.load_config(CONFIG, overrides(synth, tmp_path / "r", max_steps=1, resume=str(tmp_path)))
    with pytest.raises(T.TrainConfigError, match="not a checkpoint folder"):
        T.train(cfg)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DDP_WORKER = r"""
import sys, torch
from training import train as T
cfg = T.load_config(sys.argv[1], sys.argv[3:])
result = T.train(cfg)
model = result["model"]
torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, f"{sys.argv[2]}/rank{result['rank']}.pt")
"""


def _torchrun(worker_dir: Path, synth: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    """Run the DDP worker script in 2 CPU processes (gloo) for 2 steps."""
    worker = worker_dir / "worker.py"
    worker.write_text(DDP_WORKER)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(worker), str(CONFIG), str(worker_dir),
           *overrides(synth, out, max_steps=2, **{"train.save_every": 2, "train.ema_decay": 0.9}), *extra]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def ddp_run(synth, tmp_path_factory) -> Path:
    """A 2-process DDP run of 2 steps; its folder holds rank0.pt / rank1.pt (final weights) and the run."""
    folder = tmp_path_factory.mktemp("ddp")
    proc = _torchrun(folder, synth, folder / "run")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder


def test_ddp_two_processes_on_cpu(ddp_run):
    out = ddp_run / "run"
    r0 = torch.load(ddp_run / "rank0.pt", weights_only=True)
    r1 = torch.load(ddp_run / "rank1.pt", weights_only=True)
    assert set(r0) == set(r1)
    assert all(torch.equal(r0[k], r1[k]) for k in r0), "parameters differ between the ranks"
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and all(torch.isfinite(torch.tensor(__import__("json").loads(x)["loss"])) for x in lines)
    ckpt = out / "checkpoints" / "step_00000002"
    assert (ckpt / "rng_rank0.pt").is_file() and (ckpt / "rng_rank1.pt").is_file()
    saved = load_file(str(ckpt / "model.safetensors"))
    assert all(torch.equal(saved[k], r0[k]) for k in saved)


def test_fsdp_matches_ddp_and_resumes(synth, ddp_run, tmp_path):
    from cami2v_core.model import load_model
    out = tmp_path / "run"
    proc = _torchrun(tmp_path, synth, out, "train.distributed=fsdp")
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = load_file(str(ddp_run / "run" / "checkpoints" / "step_00000002" / "model.safetensors"))
    b = load_file(str(out / "checkpoints" / "step_00000002" / "model.safetensors"))
    assert set(a) == set(b)
    # same data, same maths; only the order of floating-point reductions differs
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert worst < 1e-4
    load_model(out / "checkpoints" / "step_00000002" / "ema.safetensors")
    proc = _torchrun(tmp_path, synth, out, "train.distributed=fsdp", "max_steps=3")  # resume from step 2
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from" in proc.stderr and (out / "checkpoints" / "step_00000003" / "model.safetensors").is_file()


@pytest.mark.parametrize("name, preset, trainable", [
    ("cami2v_256.yaml", "cami2v", 261_289_280), ("cami2v_512.yaml", "cami2v", None),
    ("cameractrl_256.yaml", "cameractrl", 211_665_280), ("motionctrl_256.yaml", "motionctrl", 63_444_608)])
def test_paper_configs_select_the_papers_trainable_parameters(name, preset, trainable):
    from cami2v_core.model import build_model
    cfg = T.load_config(ROOT / "training" / "configs" / name)
    assert cfg.train.trainable == preset and cfg.train.lr == 1e-4 and cfg.train.grad_clip == 0.5
    assert cfg.train.batch_size * cfg.train.grad_accum * 8 == 64  # effective batch on 8 GPUs (spec §8)
    model = build_model(T.model_config_from_section(cfg.model), device="meta")  # no memory used
    names = set(T.trainable_parameter_names(model, cfg.train.trainable))
    count = sum(p.numel() for n, p in model.named_parameters() if n in names)
    if trainable is not None:
        assert count == trainable  # spec §1.4, measured on the released checkpoints
    assert (cfg.train.rand_cond_frame is True) == (preset == "cami2v")


def test_initialise_zeroes_new_camera_outputs(tmp_path):
    from cami2v_core.checkpoint import save_safetensors
    from cami2v_core.model import build_model
    torch.manual_seed(0)
    base = build_model("tiny")
    base_sd = {k: v for k, v in base.state_dict().items()
               if ".pluker_projection." not in k and ".epipolar." not in k and not k.startswith("pose_encoder.")}
    save_safetensors(base_sd, tmp_path / "base.safetensors")
    torch.manual_seed(1)
    model = build_model("tiny")
    T.initialise(model, str(tmp_path / "base.safetensors"), [])
    sd = model.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in base_sd.items())
    zeroed = [k for k in sd if ".pluker_projection." in k or ".epipolar.epipolar_attn.to_out." in k]
    assert zeroed and all(not sd[k].any() for k in zeroed)


def test_motion_estimators_recover_a_known_shift():
    import numpy as np

    from training.check_motion import clip_motion, global_flow, phase_correlation
    rng = np.random.default_rng(0)
    big = rng.random((96, 96))
    big = (big + np.roll(big, 1, 0) + np.roll(big, 1, 1) + np.roll(big, (1, 1), (0, 1))) / 4  # smoother texture
    a = big[16:80, 16:80]
    b = big[16 - 1:80 - 1, 16 - 3:80 - 3]  # content moved 3 px right and 1 px down
    dx, dy = phase_correlation(a, b)
    assert dx == pytest.approx(3, abs=0.3) and dy == pytest.approx(1, abs=0.3)
    small = big[16:80, 16 - 1:80 - 1]  # 1 px right: within the linear range of the gradient method
    u, v = global_flow(a, small)
    assert u > 0.5 and abs(v) < 0.3
    frames = np.stack([big[16:80, 16 - k:80 - k] for k in range(4)])[..., None].repeat(3, -1) * 255
    m = clip_motion(frames)
    assert m["pc_dx"] == pytest.approx(3, abs=0.3) and m["lk_dx"] > 1.5


def test_bundled_model_is_small_fp16_and_self_describing():
    from cami2v_core.bundled import BUNDLED_MODEL, bundled_model_path
    from cami2v_core.checkpoint import CONFIG_METADATA_KEY, read_safetensors_header
    from cami2v_core.model import load_model
    from cami2v_core.pipeline import generate

    assert bundled_model_path() == BUNDLED_MODEL, "the bundled model is missing: train and export it (README)"
    assert BUNDLED_MODEL.stat().st_size <= 25 * 2**20
    header, meta = read_safetensors_header(BUNDLED_MODEL)
    assert CONFIG_METADATA_KEY in meta and meta["format"] == "cami2v-release"
    assert {v["dtype"] for v in header.values()} == {"F16"}
    model = load_model(BUNDLED_MODEL)  # no preset: the header says what to build
    assert model.variant == "cami2v" and model.config.resolution == (64, 64) and model.parameterization == "v"
    w2c = torch.eye(4).repeat(8, 1, 1)
    frames = generate(model, torch.rand(1, 48, 80, 3), w2c, steps=2, seed=0)
    assert frames.shape == (8, 64, 64, 3) and torch.isfinite(frames).all()


CAMERA_KEYS = {"variant", "pose_encoder", "epipolar", "pose_dim", "rand_cond_frame"}
EXPERIMENTS = ROOT / "training" / "experiments"


def _flat_keys(d: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in d.items():
        if isinstance(v, dict) and v and not (prefix == "model.overrides." and k in CAMERA_KEYS):
            out |= _flat_keys(v, f"{prefix}{k}.")
        else:
            out.add(prefix + k)
    return out


@pytest.mark.parametrize("overlay", sorted(p for p in EXPERIMENTS.glob("*/*.yaml") if p.name not in
                                           ("base.yaml", "pretrain.yaml")), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_experiment_variants_differ_from_their_base_only_in_the_camera(overlay):
    """The comparison tables are fair only if every row had the same data, budget, optimiser and VAE: each variant
    is an overlay of its experiment's base that may set only camera conditioning, its output folder and (for a
    stage that continues an earlier one) the run it starts from."""
    import yaml

    raw = yaml.safe_load(overlay.read_text())
    assert raw.pop("extends") == "base.yaml"
    allowed = {f"model.overrides.{k}" for k in CAMERA_KEYS} | {"train.output_dir", "model.init"}
    assert _flat_keys(raw) <= allowed, _flat_keys(raw) - allowed
    stage, variant = overlay.parent.name, overlay.stem
    cfg = T.load_config(overlay)
    assert cfg.train.output_dir == f"runs/{stage}_{variant}"
    ablations = {"cond_frame": "only_on_cond_frame", "full_attn": "is_3d_full_attn"}  # CamI2V with one switch
    assert cfg.model.overrides.get("variant", "cami2v") == ("cami2v" if variant in ablations else variant)
    if variant in ablations:
        assert cfg.model.overrides.epipolar[ablations[variant]] is True
    if "model" in raw and "init" in raw["model"]:
        assert f"_{variant}/" in raw["model"]["init"]  # continues this variant's own earlier run


def test_the_small_ablation_has_the_papers_six_rows_on_the_small_preset():
    """Issue 23: the six-row table on a GPU-sized model: 16x16 latents with 16 channels, 16 frames."""
    import numpy as np

    import trajectories as tj
    from cami2v_core import pipeline
    from cami2v_core.configs import epipolar_attention_kind
    from cami2v_core.model import build_model

    rows = {p.stem for p in (EXPERIMENTS / "small").glob("*.yaml")} - {"base"}
    assert rows == {"dynamicrafter", "motionctrl", "cameractrl", "cond_frame", "cami2v", "full_attn"}
    kinds = {}
    for row in sorted(rows):
        section = dict(T.load_config(EXPERIMENTS / "small" / f"{row}.yaml").model, scale_factor_from=None)
        config = T.model_config_from_section(section)
        assert config.image_size == (16, 16) and config.channels == 16 and config.temporal_length == 16
        kinds[row] = (config.variant, epipolar_attention_kind(config.epipolar))
    assert kinds == {"dynamicrafter": ("dynamicrafter", None), "motionctrl": ("motionctrl", None),
                     "cameractrl": ("cameractrl", None), "cond_frame": ("cami2v", "cond_frame"),
                     "cami2v": ("cami2v", "epipolar"), "full_attn": ("cami2v", "full")}
    torch.manual_seed(0)
    model = build_model("small").eval()  # random weights: one real step at the preset's size runs on a CPU
    latent = pipeline.sample_latent(model, np.zeros((128, 128, 3), np.uint8), tj.orbit("left", 30, 3, 16).w2c,
                                    steps=1, seed=0)
    assert latent.shape == (1, 16, 16, 16, 16) and torch.isfinite(latent).all()


def test_no_experiment_config_sits_among_the_product_recipes():
    assert not list((ROOT / "training" / "configs").glob("compare*.yaml"))
    for path in (ROOT / "training" / "configs").glob("*.yaml"):
        T.load_config(path)  # every product recipe passes the schema


def test_config_schema_rejects_unknown_keys_with_the_closest_known_one(tmp_path):
    with pytest.raises(T.TrainConfigError, match="'train.max_step'.*did you mean 'train.max_steps'"):
        T.load_config(ROOT / "training" / "configs" / "tiny_synthetic.yaml", ["train.max_step=3"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("extends: " + str(ROOT / "training" / "configs" / "tiny_synthetic.yaml") + "\n"
                   "data:\n  roots: runs/x\n")
    with pytest.raises(T.TrainConfigError, match=r"sets 'data.roots'.*did you mean 'data.root'"):
        T.load_config(bad)
    loop = tmp_path / "loop.yaml"
    loop.write_text("extends: loop.yaml\n")
    with pytest.raises(T.TrainConfigError, match="extends itself"):
        T.load_config(loop)
    cfg = T.load_config(ROOT / "training" / "configs" / "tiny_synthetic.yaml", ["model.overrides.unet.dropout=0.1"])
    assert cfg.model.overrides.unet.dropout == 0.1  # model.overrides stays free-form (ModelConfig checks it)


# -- the paper's ablation table (Table 3): six variants ------------------------------------------------------------

ABLATION_VARIANTS = {  # model.overrides on the tiny CamI2V config, as dot-list items
    "dynamicrafter": {"variant": "dynamicrafter", "pose_encoder": "null", "epipolar": "null",
                      "rand_cond_frame": "false"},
    "motionctrl": {"variant": "motionctrl", "pose_encoder": "null", "epipolar": "null", "pose_dim": 12,
                   "rand_cond_frame": "false"},
    "cameractrl": {"variant": "cameractrl", "epipolar": "null", "rand_cond_frame": "false"},
    "cond_frame": {"epipolar.only_on_cond_frame": "true"},
    "cami2v": {},
    "full_attn": {"epipolar.is_3d_full_attn": "true"},
}
CAMERA_MARKERS = (".cc_projection.", ".pluker_projection.", ".epipolar.")


@pytest.mark.parametrize("variant", list(ABLATION_VARIANTS))
def test_each_ablation_variant_trains_a_few_steps(variant, synth, tmp_path):
    from cami2v_core.configs import epipolar_attention_kind
    from cami2v_core.model import build_model, load_model

    extra = {f"model.overrides.{k}": v for k, v in ABLATION_VARIANTS[variant].items()}
    cfg = T.load_config(CONFIG, overrides(synth, tmp_path / "run", max_steps=3, **extra))
    expected = T.model_config_from_section(cfg.model)
    kind = {"cond_frame": "cond_frame", "cami2v": "epipolar", "full_attn": "full"}.get(variant)
    assert epipolar_attention_kind(expected.epipolar) == kind
    result = T.train(cfg)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert result["step"] == 3 and len(lines) == 3
    assert all(math.isfinite(json.loads(x)["loss"]) for x in lines)
    trained = load_model(tmp_path / "run" / "checkpoints" / "step_00000003" / "model.safetensors")
    assert trained.config == expected  # the switch is in the checkpoint's header
    torch.manual_seed(int(cfg.train.seed))
    start = build_model(expected).state_dict()  # the run's initial weights (same seed, same config)
    end = trained.state_dict()
    assert set(start) == set(end)
    moved = [k for k in start if any(m in k for m in CAMERA_MARKERS) and not torch.equal(start[k], end[k])]
    if variant == "dynamicrafter":
        assert not any(any(m in k for m in CAMERA_MARKERS) for k in start)
    else:
        assert moved, "the camera layers did not train"
    # Three steps, not two: a gradient reaches the epipolar branch only once the zero-initialised layers behind it
    # (the UNet's last convolution, then the temporal blocks' proj_out) have moved.
    if kind is not None:  # the epipolar branch is in the graph: its zero-initialised output layer has moved
        assert any(".epipolar.epipolar_attn.to_out." in k for k in moved)


@pytest.mark.parametrize("name, switch", [("cami2v_256_cond_frame.yaml", "only_on_cond_frame"),
                                          ("cami2v_256_full_attn.yaml", "is_3d_full_attn")])
def test_ablation_variant_configs_differ_from_cami2v_only_in_the_switch(name, switch):
    from omegaconf import OmegaConf

    from cami2v_core.model import build_model
    base = OmegaConf.to_container(T.load_config(ROOT / "training" / "configs" / "cami2v_256.yaml"))
    cfg = T.load_config(ROOT / "training" / "configs" / name)
    ablation = OmegaConf.to_container(cfg)
    assert ablation["model"]["overrides"] == {"epipolar": {switch: True}}
    assert ablation["train"]["output_dir"] == f"runs/{name.removesuffix('.yaml')}"
    ablation["model"]["overrides"] = base["model"]["overrides"]
    ablation["train"]["output_dir"] = base["train"]["output_dir"]
    assert ablation == base
    mc = T.model_config_from_section(cfg.model)
    assert mc.epipolar == {**T.model_config_from_section(base["model"]).epipolar, switch: True}
    model = build_model(mc, device="meta")
    count = sum(p.numel() for n, p in model.named_parameters()
                if n in set(T.trainable_parameter_names(model, cfg.train.trainable)))
    assert count == 261_289_280  # CamI2V 256's trainable parameters (spec §1.4): the ablation adds none
