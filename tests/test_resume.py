"""--resume continues a run exactly: a run stopped (SIGTERM) at a random moment, then resumed, logs every loss and
evaluation that the same run logs without the interruption, at the same steps (SIGKILL: test_chaos.py). And
what is wrong with a --resume is said in one line, with nothing in the run directory changed."""

import json
import os
import random
import signal
import subprocess
import sys
import time
import weakref
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from cleanmarl import qmix
from cleanmarl.utils import layout
from cleanmarl.utils.resume import TrainingState
from tests.test_smoke import LBF, ROOT, SCRIPTS, run

STATE = layout.STATE_FILE
FLAGS = [*LBF, "--batch-size", "8", "--eval-steps", "8", "--log-every", "2", "--seed", "3"]
EXTRA = {  # several envs: episodes in flight in each, and a half's step under way, when it stops
    "qmix_multienvs.py": ["--num-envs", "3", "--overlap"]
}
TAGS = ("train/loss", "eval/ep_reward", "rollout/ep_reward", "rollout/epsilon")


def flags(script, total=5000):
    every = ["--checkpoint-every", "0.003"]  # a state every 0.2 s
    return [*FLAGS, "--total-timesteps", str(total), *EXTRA.get(script.name, []), *every]


def logs(run_dir, tags=TAGS):
    """tag -> [(step, value)] as TensorBoard shows them (a resumed run's purge applied), and the
    evaluation records."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir))
    events.Reload()
    logged = {
        tag: [(e.step, e.value) for e in events.Scalars(tag)]
        for tag in tags
        if tag in events.Tags()["scalars"]
    }
    with open(
        run_dir / layout.EVAL_FILE
    ) as f:  # each evaluation's episodes, as recorded for cleanmarl.report
        records = [json.loads(line) for line in f]
    return logged | {"records": [(r["step"], r["returns"], r["lengths"]) for r in records]}


REFERENCE, SECONDS = {}, {}


def reference(script, tmp_path_factory):
    """The uninterrupted run's logs (one per script, shared by the tests)."""
    if script.name not in REFERENCE:
        path = tmp_path_factory.mktemp(script.stem)
        run(path, *flags(script), script=script)
        (run_dir,) = (path / "runs").iterdir()
        REFERENCE[script.name] = logs(run_dir)
        with open(
            run_dir / layout.EVAL_FILE
        ) as f:  # the run's own seconds, measured on this machine
            SECONDS[script.name] = [json.loads(line) for line in f][-1]["elapsed"]
    return REFERENCE[script.name]


def start(tmp_path, script, total=5000, flags=flags):
    """Start the run in the background (flags: a function of the script and total, or a list); -> the
    process and its run directory once its first state is saved."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    flags = flags(script, total) if callable(flags) else flags
    command = [sys.executable, str(script), "--no-progress-bar", *flags]
    proc = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 120
    while not list((tmp_path / "runs").glob(f"*/{STATE}")):
        assert proc.poll() is None and time.time() < deadline, (
            proc.stderr.read()[-3000:] if proc.poll() else "slow"
        )
        time.sleep(0.01)
    (run_dir,) = (tmp_path / "runs").iterdir()
    return proc, run_dir


def resume(tmp_path, script, run_dir, total=5000):
    saved_step = torch.load(run_dir / STATE, weights_only=True)["step"]
    assert 0 < saved_step < total  # stopped in the middle of the run
    run(
        tmp_path,
        "--resume",
        str(run_dir.relative_to(tmp_path)),
        "--total-timesteps",
        str(total),
        script=script,
    )
    return saved_step


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_sigterm_at_a_random_moment_then_resume_logs_as_the_uninterrupted_run(
    script, tmp_path, tmp_path_factory
):
    expected = reference(script, tmp_path_factory)
    for bound in (2, 8, 32):  # a share of the reference run's seconds: within the run, unless
        path = tmp_path / str(bound)  # the machine got faster since (load): then a shorter one
        path.mkdir()
        proc, run_dir = start(path, script)
        time.sleep(random.uniform(0, SECONDS[script.name] / bound))
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate()
        if torch.load(run_dir / STATE, weights_only=True)["step"] < 5000:
            break  # the signal came before the last step (after it, Python's exit ends on SIGTERM)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert (
        f"--resume {run_dir.relative_to(path)} continues it" in out
    )  # the exit line names the command
    resume(path, script, run_dir)
    assert logs(run_dir) == expected


@pytest.mark.parametrize("script", SCRIPTS[:1], ids=lambda p: p.name)
def test_a_run_ended_by_a_signal_after_its_last_step_needs_no_resume(script, tmp_path):
    """The state at the end is saved too: --resume of a finished run with a larger --total-timesteps goes on."""
    run(tmp_path, *FLAGS[:-6], "--total-timesteps", "300", script=script)
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert torch.load(run_dir / STATE, weights_only=True)["step"] >= 300
    run(tmp_path, "--resume", str(run_dir), "--total-timesteps", "600", script=script)
    assert torch.load(run_dir / STATE, weights_only=True)["step"] >= 600


def snapshot(path):
    return {p: p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """A short finished qmix.py run with its training state."""
    path = tmp_path_factory.mktemp("saved")
    run(path, *LBF, "--total-timesteps", "200", "--batch-size", "4")
    (run_dir,) = (path / "runs").iterdir()
    return run_dir


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "--resume: no directory"),
        ("empty", f"no {STATE} in it"),
        ("other_script", "is a run of qmix.py: resume it with that script"),
        ("other_flags", "was run with --hidden-dim 64, asked for 32"),
        ("other_bool_flag", "was run with --agent-ids"),
        ("damaged", f"its {STATE} is damaged"),
        ("not_a_state", f"its {STATE} is damaged"),
    ],
)
def test_bad_resume_is_one_line_and_changes_nothing(saved_run, tmp_path, case, message):
    run_dir, script, extra = saved_run, ROOT / "cleanmarl" / "qmix.py", []
    if case == "missing":
        run_dir = tmp_path / "nowhere"
    elif case == "empty":
        run_dir = tmp_path / "empty"
        run_dir.mkdir()
    elif case == "other_script":
        script = ROOT / "cleanmarl" / "qmix_lstm.py"
    elif case in ("other_flags", "other_bool_flag"):
        extra = ["--hidden-dim", "32"] if case == "other_flags" else ["--no-agent-ids"]
    else:
        run_dir = tmp_path / "copy"
        run_dir.mkdir()
        data = (saved_run / STATE).read_bytes()
        (run_dir / STATE).write_bytes(data[: len(data) // 2] if case == "damaged" else b"hello")
    before = snapshot(run_dir) if run_dir.exists() else None
    proc = run(tmp_path, "--resume", str(run_dir), *extra, script=script, check=False)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert (
        len(lines) == 1 and message in lines[0] and lines[0].startswith(f"{script.name}: error: ")
    ), proc.stderr
    assert (snapshot(run_dir) if run_dir.exists() else None) == before
    assert not (tmp_path / "runs").exists()


def test_a_failed_write_keeps_the_previous_state_whole(tmp_path, monkeypatch, capsys):
    """Disk full mid-write: one warning line, the previous file whole, no temporary file left, the caller told."""
    path = str(tmp_path / STATE)
    assert layout.atomic_save({"step": 1}, path)

    def full_disk(obj, f):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    assert not layout.atomic_save({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert os.listdir(tmp_path) == [STATE]
    (line,) = capsys.readouterr().out.strip().splitlines()
    assert (
        "warning: could not write" in line
        and "No space left on device" in line
        and "previous one is kept" in line
    )


def test_a_restored_state_is_not_held_twice(tmp_path):
    """Once --resume has put the saved state back, the loaded copy is let go although the script
    keeps the state it loaded: a buffer's steps (4 GB on SMAClite MMM2) are in memory once."""
    rb = qmix.EpisodeBuffer(
        4, episode_limit=5, n_agents=2, obs_size=3, state_size=2, n_actions=3, seed=0
    )
    rb.add({k: np.ones_like(v[0][:3]) for k, v in rb.fields.items()})
    saved = rb.state_dict()
    loaded = weakref.ref(saved["steps"]["obs"])
    rngs = dict(torch=torch.get_rng_state(), numpy=np.random.get_state(legacy=False))
    rngs["random"] = random.getstate()
    state = dict(
        objects=dict(rb=saved), rngs=rngs, step=3, models=dict(files={}, models={}), logs={}
    )
    del saved
    restored = qmix.EpisodeBuffer(4, 5, 2, 3, 2, 3, seed=1)
    saver = SimpleNamespace(objects=dict(rb=restored), run=SimpleNamespace(dir=str(tmp_path)))
    TrainingState.restore(saver, state)
    assert restored.size == 1 and (restored.fields["obs"][0, :3] == 1).all()
    assert loaded() is None, "the loaded buffer steps are still held after the restore"


def test_a_resumed_run_continues_its_wandb_run(tmp_path, monkeypatch):
    """--use-wnb: the resumed run logs into the W&B run it started (same id; offline here)."""
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run(tmp_path, *LBF, "--total-timesteps", "200", "--use-wnb")
    (run_dir,) = (tmp_path / "runs").iterdir()
    run(tmp_path, "--resume", str(run_dir), "--total-timesteps", "400")
    runs = sorted(p.name for p in (tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and runs[0].split("-")[-1] == runs[1].split("-")[-1], runs


def test_the_records_elapsed_time_is_the_runs_own_clock_over_a_resume(tmp_path):
    """Each evaluation record's `elapsed` counts the run's own seconds, summed over its resumes: it goes on from the
    saved state's and leaves out the break (here 3 s) and the resumed process's start, so that the report's wall time
    of a resumed run is its training time, not the calendar."""
    script = SCRIPTS[0]
    proc, run_dir = start(
        tmp_path, script, total=10**7
    )  # never ends on its own, however fast the machine
    deadline = time.time() + 120
    while True:  # killed once a saved state holds an evaluation and 2 s, so that records of both processes stay
        lines = (
            (run_dir / layout.EVAL_FILE).read_text().splitlines()
            if (run_dir / layout.EVAL_FILE).exists()
            else []
        )
        first = [
            json.loads(line) for line in lines[:1] if line.endswith("}")
        ]  # a line being written is left
        state = torch.load(
            run_dir / STATE, weights_only=True
        )  # written atomically: never half a file
        if (
            first and state["step"] >= first[0]["step"] and state["elapsed"] >= 2
        ):  # 2 s: more than a resumed
            break  # process's clock could show at its first evaluation had restore() not moved it on
        assert proc.poll() is None and time.time() < deadline, (
            "the run ended before a state after its first evaluation"
        )
        time.sleep(0.01)
    proc.kill()
    proc.communicate()
    state = torch.load(run_dir / STATE, weights_only=True)
    time.sleep(3)
    total = state["step"] + 3000  # the resumed process ends 3000 steps on (a few evaluations)
    resume(tmp_path, script, run_dir, total)
    records = [json.loads(line) for line in open(run_dir / layout.EVAL_FILE)]
    elapsed = [r["elapsed"] for r in records]
    assert len(records) > 5 and elapsed == sorted(elapsed) and elapsed[0] > 0
    assert (
        records[0]["step"] <= state["step"] < records[-1]["step"]
    )  # the first process's and the resumed one's
    assert (
        min(r["elapsed"] for r in records if r["step"] > state["step"]) >= state["elapsed"]
    )  # goes on
    assert (
        elapsed[-1] <= records[-1]["time"] - records[0]["time"] + elapsed[0] - 3
    )  # the 3 s break left out


def test_a_resume_brings_models_json_and_the_best_checkpoint_back_to_the_saved_state(tmp_path):
    """Killed after an evaluation that made a newer best checkpoint than the saved state: the resume
    puts models.json, the latest and the best checkpoint back as they were at the saved step, so the
    best is always a checkpoint whose evaluation is in the records (the later ones were purged)."""
    script = ROOT / "cleanmarl" / "qmix.py"
    flags = [*FLAGS[:-6], "--batch-size", "8", "--eval-steps", "2", "--seed", "3", "--save-model"]
    flags += ["--total-timesteps", "20000", "--checkpoint-every", "0.05"]  # a state every 3 s
    proc, run_dir = start(tmp_path, script, flags=flags)
    deadline = time.time() + 120
    while True:  # an evaluation after the state made a new best (ties go to the later)
        saved = torch.load(run_dir / STATE, weights_only=True)["step"]
        models = json.loads((run_dir / "models.json").read_text() or "{}")
        if models.get("best", {}).get("step", 0) > saved:
            break
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    proc.kill()
    proc.communicate()
    saved = torch.load(run_dir / STATE, weights_only=True)["step"]
    # resumed to its own step: nothing more runs; what it restored stays
    run(
        tmp_path,
        "--resume",
        str(run_dir.relative_to(tmp_path)),
        "--total-timesteps",
        str(saved),
        script=script,
    )
    models = json.loads((run_dir / "models.json").read_text())
    records = {
        r["step"]: r for r in map(json.loads, (run_dir / layout.EVAL_FILE).read_text().splitlines())
    }
    assert models["best"]["step"] <= saved and models["latest"]["step"] <= saved
    assert (
        models["best"]["step"] in records
        and models["best"]["score"] == layout.evaluation_score(records[models["best"]["step"]])[0]
    )
    for entry in models.values():
        assert torch.load(run_dir / entry["path"], weights_only=True)["step"] == entry["step"]
