"""SMAClite's speed paths side by side: raw env steps/s per map, and training steps/s of qmix.py and qmix_multienvs.py.

    python benchmarks/smaclite_speed.py [--maps 3m 2s3z MMM corridor] [--seconds 10] [--rounds 3] [--train-steps 10000]

Paths (docs/env.md, "SMAClite speed"): SMAClite's two RVO2 ports (numpy; C++ when the rvo2 module is importable),
each with scikit-learn's KDTree for the neighbour search (SMAClite's own, `fast_neighbours=False`) or with
cleanmarl's scipy search (the default). "original" is numpy RVO2 + scikit-learn, what a plain install ran before.

Raw: a random policy over the available actions through make_env, one env per path, the paths alternating for
--rounds rounds of --seconds each, so that machine noise hits all alike; mean steps/s and the ratio to "original".
Training (--train-steps > 0): qmix.py on 3m and qmix_multienvs.py --num-envs 2 on 2s3z at their defaults, one
run per path in turn (the env variables CLEANMARL_SMACLITE_CPP_RVO2 and CLEANMARL_SMACLITE_FAST_PATH pick
it), --rounds rounds; charts/SPS at the end of each run.
"""

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from cleanmarl.env import make_env

ROOT = Path(__file__).resolve().parents[1]
CPP = importlib.util.find_spec("rvo2") is not None
# name -> (use_cpp_rvo2, fast_neighbours)
PATHS = {"original": (False, False), "fast": (False, True)}
PATHS.update({"C++": (True, False), "fast + C++": (True, True)} if CPP else {})


def raw_steps_per_second(env, seconds):
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        *_, terminated, truncated, _ = env.step(env.sample_actions())
        n += 1
        if terminated or truncated:
            env.reset()
    return n / (time.perf_counter() - start)


def training_steps_per_second(script, env_name, steps, path, extra=()):
    use_cpp, fast = PATHS[path]
    env = {**os.environ, "CLEANMARL_SMACLITE_CPP_RVO2": str(int(use_cpp))}
    env["CLEANMARL_SMACLITE_FAST_PATH"] = str(int(fast))
    cmd = [
        sys.executable,
        str(ROOT / "cleanmarl" / script),
        "--env-name",
        env_name,
        "--total-timesteps",
        str(steps),
    ]
    with tempfile.TemporaryDirectory() as workdir:
        subprocess.run(
            [*cmd, "--no-progress-bar", *extra],
            cwd=workdir,
            check=True,
            capture_output=True,
            env=env,
        )
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        (run_dir,) = Path(workdir, "runs").iterdir()
        events = EventAccumulator(str(run_dir))
        events.Reload()
        return events.Scalars("charts/SPS")[-1].value


def markdown(rows):
    """The docs' table: a row per measurement, a column per path, each mean steps/s with its ratio
    to "original"; the last path, the default, in bold."""
    last = list(PATHS)[-1]
    lines = [
        "| steps/s (x original) | " + " | ".join(PATHS) + " |",
        "|---" * (len(PATHS) + 1) + "|",
    ]
    for label, speeds in rows:
        base, cells = np.mean(speeds["original"]), []
        for path, values in speeds.items():
            cell = f"{np.mean(values):.0f}" + (
                "" if path == "original" else f" ({np.mean(values) / base:.2f}x)"
            )
            cells.append(f"**{cell}**" if path == last else cell)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table(title, speeds):
    base = np.mean(speeds["original"])
    print(f"\n{title}")
    print(f"  {'path':12s} {'steps/s':>9s} {'x original':>11s}   rounds")
    for path, values in speeds.items():
        rounds = " / ".join(f"{v:.0f}" for v in values)
        print(f"  {path:12s} {np.mean(values):9.0f} {np.mean(values) / base:10.2f}x   {rounds}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--maps", nargs="+", default=["3m", "2s3z", "MMM"], help="SMAClite maps for the raw rates"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per raw measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds over the paths")
    parser.add_argument(
        "--train-steps", type=int, default=0, help="env steps of each training run (0: none)"
    )
    args = parser.parse_args()
    print(f"C++ RVO2 (rvo2 module): {'importable' if CPP else 'not importable: numpy paths only'}")
    rows = []
    for name in args.maps:
        envs = {}
        for path, (use_cpp, fast) in PATHS.items():
            envs[path] = make_env("smaclite", name, seed=0, use_cpp_rvo2=use_cpp, fast_path=fast)
            envs[path].reset()
        speeds = {path: [] for path in PATHS}
        for _ in range(args.rounds):
            for path, env in envs.items():
                speeds[path].append(raw_steps_per_second(env, args.seconds))
        table(
            f"raw {name}, random available actions ({args.rounds} x {args.seconds:g} s per path)",
            speeds,
        )
        rows.append((f"raw `{name}`", speeds))
    if args.train_steps > 0:
        runs = [("qmix.py", "3m", ()), ("qmix_multienvs.py", "2s3z", ("--num-envs", "2"))]
        for script, env_name, extra in runs:
            speeds = {path: [] for path in PATHS}
            for _ in range(args.rounds):
                for path in PATHS:
                    speeds[path].append(
                        training_steps_per_second(script, env_name, args.train_steps, path, extra)
                    )
            flags = " ".join(extra) or "defaults"
            table(
                f"training: {script} --env-name {env_name} ({flags}), {args.train_steps} steps",
                speeds,
            )
            rows.append(
                (f"`{' '.join([script, '--env-name', env_name, *extra])}`, training", speeds)
            )
    print("\n" + markdown(rows))
