"""Chaos: a short LBF run killed 10 times with SIGKILL at random moments, some of them while it writes its
training state, and resumed after each kill, ends with exactly the losses and evaluations of the run
never killed, for each script; a sweep of 4 runs killed 3 times, its runs with it, ends with the
records of a sweep never killed."""

import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cleanmarl import sweep
from tests.test_resume import SECONDS, STATE, flags, logs, reference
from tests.test_smoke import ROOT, SCRIPTS, run
from tests.test_sweep import LBF

KILLS = 10
# The script run with each torch.save 50 ms longer (written, not yet renamed): kills land in writes
SLOW_WRITES = """import runpy, sys, time, torch
save = torch.save
torch.save = lambda *args, **kwargs: (save(*args, **kwargs), time.sleep(0.05))[0]
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")"""


def launch(tmp_path, script, run_dir=None):
    """The run started (run_dir None) or resumed, in the background."""
    if run_dir is None:  # a state every 0.2 s: kills land in writes too
        args = flags(script)
    else:
        args = ["--resume", str(run_dir.relative_to(tmp_path)), "--total-timesteps", "5000"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-c", SLOW_WRITES, str(script), "--no-progress-bar", *args]
    return subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def kill_at_a_random_moment(proc, runs, seconds, in_a_write):
    """SIGKILL the process at a random moment of its training (the clock starts once it has opened its
    TensorBoard run: after the imports), or, when in_a_write, as soon as a state is being written (its
    temporary file exists). -> "write" or "time" (how it was killed), or None (it ended first)"""
    events, deadline = len(list(runs.glob("*/events.out.tfevents.*"))), None
    while proc.poll() is None:
        if deadline is None and len(list(runs.glob("*/events.out.tfevents.*"))) > events:
            deadline = time.time() + random.uniform(0, seconds / 4)
        writing = in_a_write and list(runs.glob(f"*/{STATE}.tmp"))
        if writing or (not in_a_write and deadline is not None and time.time() >= deadline):
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return "write" if writing else "time"
        time.sleep(0.001)
    return None


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_ten_sigkills_then_resumes_log_as_the_run_never_killed(script, tmp_path, tmp_path_factory):
    expected = reference(script, tmp_path_factory)
    assert len(expected["train/loss"]) > 20 and len(expected["eval/ep_reward"]) > 5
    random.seed(script.name)
    runs, run_dir, killed = tmp_path / "runs", None, []
    for kill in range(KILLS):
        proc = launch(tmp_path, script, run_dir)
        killed.append(kill_at_a_random_moment(proc, runs, SECONDS[script.name], kill % 2 == 1))
        if run_dir is None:  # killed before its first state: nothing to resume, start again
            found = list(runs.glob(f"*/{STATE}"))
            run_dir = found[0].parent if found else shutil.rmtree(runs, ignore_errors=True)
    if run_dir is None:
        run(tmp_path, *flags(script), script=script)
        (run_dir,) = runs.iterdir()
    else:
        run(
            tmp_path,
            "--resume",
            str(run_dir.relative_to(tmp_path)),
            "--total-timesteps",
            "5000",
            script=script,
        )
    assert killed.count("time") >= 3 and killed.count("write") >= 3, killed
    assert logs(run_dir) == expected


SWEEP_KILLS = 3


def sweep_argv(out):
    """A sweep of 4 short LBF runs, 2 at a time, each saving its state every 0.3 s."""
    argv = [sys.executable, "-m", "cleanmarl.sweep", "--envs", LBF, "--seeds", "1-4"]
    argv += ["--workers", "2", "--out", str(out), "--", "--total-timesteps", "3000"]
    return argv + ["--checkpoint-every", "0.005", "--eval-steps", "5"]


def process_tree(pid):
    """pid and every process below it (from /proc: the runs are in sessions of their own, so a
    process group would miss them)."""
    found, todo = [], [pid]
    while todo:
        found.append(todo.pop())
        for task in Path(f"/proc/{found[-1]}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                todo += [int(p) for p in task.read_text().split()]
    return found


def sweep_records(out):
    """Per combination: how it ended and its evaluations, the clock's fields left out."""
    clock = ("time", "elapsed")
    return {
        folder.name: (
            {k: v for k, v in sweep.read_done(folder).items() if k != "seconds"},
            [{k: v for k, v in r.items() if k not in clock} for r in sweep.evaluations(folder)],
        )
        for folder in sorted(out.iterdir())
    }


@pytest.mark.skipif(
    not Path("/proc/self/task").exists(), reason="reads the process tree from /proc"
)
def test_a_sweep_killed_three_times_with_its_runs_ends_as_one_never_killed(tmp_path):
    """SIGKILL to the sweep and to every run under way, 3 times at random moments, the same command
    re-run after each: the grid ends with exactly the records of a sweep never killed (every run's
    evaluations, how it ended), whatever moment each kill hit: before a run's first state (it
    begins anew), mid-run (it resumes), after its end but before `done` (it is only marked)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    never = tmp_path / "never"
    subprocess.run(sweep_argv(never), cwd=tmp_path, env=env, capture_output=True, check=True)
    expected = sweep_records(never)
    assert len(expected) == 4 and all(e["ended"] == "completed" for e, _ in expected.values())
    random.seed(0)
    out, kills = tmp_path / "killed", 0
    while kills < SWEEP_KILLS:
        proc = subprocess.Popen(
            sweep_argv(out), cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        time.sleep(random.uniform(3, 12))
        if proc.poll() is not None:  # the grid ended before this kill: nothing left to hit
            break
        for pid in reversed(process_tree(proc.pid)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        kills += 1
        proc.wait()
    assert kills >= 1, "the sweep ended before its first kill"
    finished = subprocess.run(
        sweep_argv(out), cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert finished.returncode == 0, finished.stdout[-2000:] + finished.stderr[-2000:]
    assert sweep_records(out) == expected
