"""Chaos: a short LBF run killed 10 times with SIGKILL at random moments, some of them while it writes its
training state, and resumed after each kill, ends with exactly the losses and evaluations of the run
never killed, for each script."""

import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.test_resume import SECONDS, STATE, flags, logs, reference
from tests.test_smoke import ROOT, SCRIPTS, run

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
