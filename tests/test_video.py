"""--capture-video in every script (videos of greedy evaluation episodes: files, TensorBoard, the run unchanged),
--eval-only's video of a checkpoint, the one-line errors, and --use-wnb in W&B's offline mode (no account, no
network): the config, the TensorBoard scalars and the videos in the offline run, and a resumed run continuing it."""

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.test_smoke import ROOT, SCRIPTS, run

pytest.importorskip("imageio", reason="--capture-video needs imageio: pip install -e '.[video]'")
MPE = [
    "--env-type",
    "pz",
    "--env-name",
    "simple_spread_v3",
]  # 25-step episodes: 10 of them between evaluations
TINY = [
    *MPE,
    "--total-timesteps",
    "1000",
    "--eval-steps",
    "10",
    "--batch-size",
    "4",
    "--num-eval-ep",
    "2",
]
EXTRA = {"qmix_multienvs.py": ["--num-envs", "2"]}
IDS = [s.name for s in SCRIPTS]


def frames(path):
    import imageio.v3 as iio

    return np.stack(list(iio.imiter(path)))


def records(tmp_path):
    (path,) = (tmp_path / "runs").glob("*/evaluations.jsonl")
    return [(r["step"], r["returns"]) for r in map(json.loads, path.read_text().splitlines())]


@pytest.mark.parametrize("script", SCRIPTS, ids=IDS)
def test_capture_video_records_every_nth_evaluation_and_changes_nothing_else(tmp_path, script):
    """Evaluations at 250, 500, 750, 1000 env steps; --video-every 2 draws the first greedy episode of the 1st and 3rd:
    26 frames each (the reset and 25 steps), as MP4 files and TensorBoard GIFs. The evaluations are those of the same
    run without videos: drawing draws no random numbers."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    flags = [*TINY, *EXTRA.get(script.name, [])]
    (tmp_path / "video").mkdir()
    (tmp_path / "plain").mkdir()
    run(tmp_path / "video", *flags, "--capture-video", "--video-every", "2", script=script)
    run(tmp_path / "plain", *flags, script=script)
    (run_dir,) = (tmp_path / "video" / "runs").iterdir()
    videos = sorted((run_dir / "videos").iterdir())
    assert [v.name for v in videos] == ["eval_step_250.mp4", "eval_step_750.mp4"]
    for video in videos:
        clip = frames(video)
        assert (
            clip.shape[0] == 26 and clip.shape[-1] == 3 and clip.std() > 0
        )  # the env drawn, not a blank
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    events.Reload()
    gifs = events.Images("eval/video")
    assert [g.step for g in gifs] == [250, 750] and all(
        g.encoded_image_string[:6] == b"GIF89a" for g in gifs
    )
    assert records(tmp_path / "video") == records(tmp_path / "plain")
    assert not (tmp_path / "plain" / "runs" / run_dir.name / "videos").exists()


def test_eval_only_draws_a_checkpoint_next_to_it(tmp_path):
    """--eval-only --load-model PATH --capture-video: the trained policy's first episode, PATH's name .mp4."""
    run(tmp_path, *TINY, "--save-model")
    (model,) = (tmp_path / "runs").glob("*/qmix.cleanmarl_model")
    proc = run(
        tmp_path, "--eval-only", "--load-model", str(model), "--capture-video", "--num-eval-ep", "2"
    )
    video = model.with_suffix(".mp4")
    assert (
        f"video: {video.relative_to(tmp_path)}" in proc.stdout or f"video: {video}" in proc.stdout
    )
    assert frames(video).shape[0] == 26


@pytest.mark.skipif(
    bool(os.environ.get("DISPLAY")), reason="checks the error where no display is open"
)
def test_a_family_that_cannot_draw_here_says_so_in_one_line(tmp_path):
    """LBF draws with pyglet, which needs a display: one line saying so (and how), before the run starts."""
    proc = run(tmp_path, "--env-name", "Foraging-8x8-2p-2f-coop-v3", "--capture-video", check=False)
    lines = proc.stderr.strip().splitlines()
    assert (
        proc.returncode != 0
        and len(lines) == 1
        and "cannot render" in lines[0]
        and "xvfb-run" in lines[0]
    )
    assert not (tmp_path / "runs").exists()


WITHOUT_IMAGEIO = (
    "import runpy, sys; sys.modules['imageio'] = sys.modules['imageio.v3'] = None; sys.argv = sys.argv[1:]; "
    "runpy.run_path(sys.argv[0], run_name='__main__')"
)


@pytest.mark.parametrize("script", SCRIPTS, ids=IDS)
def test_capture_video_without_imageio_gives_one_error_line(tmp_path, script):
    proc = run(tmp_path, *MPE, "--capture-video", check=False, script=script, code=WITHOUT_IMAGEIO)
    lines = proc.stderr.strip().splitlines()
    assert (
        proc.returncode != 0 and len(lines) == 1 and "pip install 'cleanmarl[video]'" in lines[0]
    ), proc.stderr


# ---------------------------------------------------------------- W&B, offline: no account, no network


def wandb_env(tmp_path):
    pytest.importorskip("wandb", reason="--use-wnb needs wandb: pip install -e '.[wandb]'")
    return {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline", "WANDB_SILENT": "true",
            "WANDB_DIR": str(tmp_path), "WANDB_CACHE_DIR": str(tmp_path / "cache"),
            "WANDB_CONFIG_DIR": str(tmp_path / "config")}  # fmt: skip


def wandb_run(tmp_path, *args, script, env):
    command = [sys.executable, str(script), "--no-progress-bar", *args]
    proc = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.parametrize("script", SCRIPTS, ids=IDS)
def test_wandb_offline_run_holds_the_config_the_scalars_and_the_videos(tmp_path, script):
    """The offline run's record file (protobuf records) names the flags and the synced TensorBoard scalars; its media
    hold the MP4s of --capture-video."""
    env = wandb_env(tmp_path)
    flags = [
        *TINY,
        *EXTRA.get(script.name, []),
        "--use-wnb",
        "--capture-video",
        "--video-every",
        "2",
        "--seed",
        "7",
    ]
    wandb_run(tmp_path, *flags, script=script, env=env)
    (offline,) = (tmp_path / "wandb").glob("offline-run-*")
    (record_file,) = offline.glob("run-*.wandb")
    data = record_file.read_bytes()
    for key in (b"td_lambda", b"capture_video", b"num_eval_ep"):  # the config
        assert key in data, key
    for tag in (
        b"eval/ep_reward",
        b"rollout/ep_reward",
        b"train/loss",
        b"charts/SPS",
    ):  # the TensorBoard scalars
        assert tag in data, tag
    assert len(list(offline.glob("files/media/videos/**/*.mp4"))) == 2


def test_a_resumed_run_continues_its_wandb_run(tmp_path):
    """Stopped by SIGTERM and resumed, the run writes into the same W&B run (its id kept in the training state)."""
    env = wandb_env(tmp_path)
    command = [
        sys.executable,
        str(ROOT / "cleanmarl" / "qmix.py"),
        "--no-progress-bar",
        *TINY,
        "--use-wnb",
    ]
    command[command.index("1000")] = "100000"
    proc = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 120
    while not list((tmp_path / "runs").glob("*/evaluations.jsonl")) and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    wandb_run(tmp_path, "--resume", str(run_dir.relative_to(tmp_path)), "--total-timesteps", "1500", script=ROOT / "cleanmarl" / "qmix.py", env=env)  # fmt: skip
    ids = {path.name.rsplit("-", 1)[1] for path in (tmp_path / "wandb").glob("offline-run-*")}
    assert len(list((tmp_path / "wandb").glob("offline-run-*"))) == 2 and len(ids) == 1


def test_an_env_records_one_episode_per_request():
    """recording draws the next episode, from its reset to its last step, then stops; take_frames() hands the frames
    over once. A frame's sides are capped at 512 pixels by striding (SMAClite draws 1024 and more)."""
    from cleanmarl.env import make_env
    from cleanmarl.env.base import video_frame

    env = make_env("pz", "simple_spread_v3", seed=0)
    for recording in (True, False):
        env.recording = recording
        env.reset()
        done = False
        while not done:
            *_, terminated, truncated, _ = env.step(env.sample_actions())
            done = terminated or truncated
        assert not env.recording and len(env.take_frames()) == (26 if recording else 0)
    assert env.take_frames() == []
    assert video_frame(np.zeros((1024, 700, 3), np.uint8)).shape == (512, 350, 3)
    assert video_frame(np.zeros((700, 500, 3), np.uint8)).shape == (350, 250, 3)


@pytest.mark.skipif(
    not shutil.which("xvfb-run"),
    reason="needs xvfb-run (apt-get install xvfb): LBF draws with pyglet",
)
def test_lbf_and_rware_draw_under_a_virtual_display(tmp_path):
    """The families that draw with pyglet (LBF, rware) record their videos under xvfb-run, as the docs say."""
    lbf = [
        "--env-name",
        "Foraging-8x8-2p-2f-coop-v3",
        "--total-timesteps",
        "100",
        "--eval-steps",
        "2",
    ]
    rware = ["--env-name", "rware:rware-tiny-2ag-v2", "--time-limit", "20", "--total-timesteps", "40", "--eval-steps", "2"]  # fmt: skip
    for name, flags in (("lbf", lbf), ("rware", rware)):
        if name == "rware" and importlib.util.find_spec("rware") is None:
            continue
        (tmp_path / name).mkdir()
        command = [
            "xvfb-run",
            "-a",
            sys.executable,
            str(ROOT / "cleanmarl" / "qmix.py"),
            "--no-progress-bar",
            *flags,
        ]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.run([*command, "--capture-video", "--num-eval-ep", "1"], cwd=tmp_path / name, env=env,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        (video,) = (tmp_path / name / "runs").glob("*/videos/eval_step_*.mp4")
        assert frames(video).shape[0] > 1
