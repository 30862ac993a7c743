"""Wall clock of whole training processes: qmix_multienvs.py at each --num-envs against qmix.py,
side by side on one machine, with what each side of qmix_multienvs.py did meanwhile.

    python benchmarks/multienvs_speed.py [--env-name 3m] [--steps 40000] [--rounds 2]
                                         [--num-envs auto 4 "auto --overlap"] [--profile-steps 3000]

Each round runs qmix.py, then qmix_multienvs.py at each --num-envs, in that order and the reverse
in the next round (so a machine that slows over time hits both), all at the defaults with only
--total-timesteps set, each in a fresh process, timed from start to exit (start-up, evaluations
and the workers' start included). It prints a markdown table: each run's wall clock, its CPU
seconds (the process and its workers), the mean wall clock's ratio to qmix.py's, and for
qmix_multienvs.py the means over its logs of charts/envs_busy (the workers' share of the wall
time spent computing) and charts/learner_waiting (the learner's share spent waiting for the envs).

Then the profile of where the time goes per process, from --profile-steps env steps of random
play through the env wrapper: one env in this process (the cost of a step alone), and num_envs
envs in workers (cleanmarl.env.vector.VectorEnv) at each --num-envs: each worker's CPU per step,
the parent's CPU per step (sending actions, receiving and stacking what comes back) and the wall
clock per env step. Record it with benchmarks/record.py (docs/qmix_multienvs.md shows it):

    python benchmarks/record.py multienvs_speed_3m -- python benchmarks/multienvs_speed.py
"""

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from cleanmarl.env import make_env, resolve_env_type  # noqa: E402
from cleanmarl.env.vector import VectorEnv  # noqa: E402

SCRIPTS = ROOT / "cleanmarl"


def timed_run(script, env_name, steps, extra=()):
    """One training process. -> wall seconds, CPU seconds of it and its workers, its log's means of
    charts/envs_busy and charts/learner_waiting (None where it logs none)."""
    with tempfile.TemporaryDirectory() as workdir:
        cmd = [sys.executable, str(SCRIPTS / script), "--env-name", env_name]
        cmd += ["--total-timesteps", str(steps), "--no-progress-bar", *extra]
        before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
        subprocess.run(cmd, cwd=workdir, check=True, capture_output=True)
        wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = sum(getattr(after, k) - getattr(before, k) for k in ("ru_utime", "ru_stime"))
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        (run_dir,) = Path(workdir, "runs").iterdir()
        events = EventAccumulator(str(run_dir))
        events.Reload()
        tags = events.Tags()["scalars"]
        shares = [
            statistics.mean(s.value for s in events.Scalars(tag)) if tag in tags else None
            for tag in ("charts/envs_busy", "charts/learner_waiting")
        ]
    return wall, cpu, *shares


def random_actions(avail_actions, rng):
    return np.where(avail_actions, rng.random(avail_actions.shape), -1.0).argmax(-1)


def worker_cpu(vector):
    """CPU seconds of each worker process so far (Linux's /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    out = []
    for process in vector._workers:
        with open(f"/proc/{process.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        out.append((int(fields[11]) + int(fields[12])) / ticks)  # utime, stime
    return out


def profile(env_name, steps, num_envs):
    """Rows of the profile table: where a step's time goes, in-process and in workers."""
    rng = np.random.default_rng(0)
    env_type = resolve_env_type(env_name)
    env = make_env(env_type, env_name, seed=0)
    obs, state, avail_actions, info = env.reset()
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        *_, avail_actions, _, terminated, truncated, _ = env.step(
            random_actions(avail_actions, rng)
        )
        if terminated or truncated:
            avail_actions = env.reset()[2]
    wall = (time.perf_counter() - start) / steps * 1e3
    rows = [("1, in this process", (time.process_time() - cpu) / steps * 1e3, "-", wall)]
    env.close()
    for n in num_envs:
        vector = VectorEnv(env_type, env_name, n, list(range(n)))
        avail_actions = vector.reset()[2]
        workers, cpu, start = sum(worker_cpu(vector)), time.process_time(), time.perf_counter()
        for _ in range(steps // n):
            _, (_, _, avail_actions) = vector.step(random_actions(avail_actions, rng))
        wall, done = time.perf_counter() - start, (steps // n) * n
        workers = (sum(worker_cpu(vector)) - workers) / done * 1e3
        rows.append(
            (
                f"{n}, in workers",
                workers,
                (time.process_time() - cpu) / done * 1e3,
                wall / done * 1e3,
            )
        )
        vector.close()
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-name", default="3m")
    parser.add_argument("--steps", type=int, default=40_000, help="env steps of each run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--num-envs", nargs="+", default=["auto", "4", "auto --overlap"])
    parser.add_argument("--profile-steps", type=int, default=3_000)
    args = parser.parse_args()
    lines = [("qmix.py", ())] + [  # an entry may carry flags: "auto --overlap"
        (f"qmix_multienvs.py --num-envs {n}", ("--num-envs", *n.split())) for n in args.num_envs
    ]
    results = {label: [] for label, _ in lines}
    for r in range(args.rounds):
        for label, extra in lines if r % 2 == 0 else lines[::-1]:
            script = label.split()[0]
            results[label].append(timed_run(script, args.env_name, args.steps, extra))
            wall, cpu, *_ = results[label][-1]
            print(f"round {r + 1}: {label}: {wall:.1f} s, {cpu:.1f} CPU s", file=sys.stderr)
    reference = statistics.mean(w for w, *_ in results["qmix.py"])
    print(f"`{args.env_name}`, {args.steps:,} env steps a run, {args.rounds} rounds:\n")
    print(
        "| script | wall clock per round (s) | CPU s per round | speed-up (mean wall) "
        "| envs busy | learner waiting |"
    )
    print("|---|---|---|---|---|---|")
    for label, runs in results.items():
        walls = " / ".join(f"{w:.1f}" for w, *_ in runs)
        cpus = " / ".join(f"{c:.1f}" for _, c, *_ in runs)
        ratio = reference / statistics.mean(w for w, *_ in runs)
        busy, waiting = (
            "-" if runs[0][i] is None else f"{statistics.mean(x[i] for x in runs):.0%}"
            for i in (2, 3)
        )
        print(f"| `{label}` | {walls} | {cpus} | {ratio:.2f}x | {busy} | {waiting} |")
    auto = VectorEnv.auto_num_envs()
    numbers = {n.split()[0] for n in args.num_envs}
    numbers = sorted({auto if n == "auto" else int(n) for n in numbers} | {1})
    print(f"\n`--num-envs auto` picks {auto} here ({len(os.sched_getaffinity(0))} cores).\n")
    print(
        f"Where a step's time goes: {args.profile_steps:,} env steps of random play "
        "(CPU milliseconds per env step):\n"
    )
    print("| envs | env step, CPU (ms) | parent: pipes and stacking, CPU (ms) | wall clock (ms) |")
    print("|---|---|---|---|")
    for label, env_cpu, parent, wall in profile(args.env_name, args.profile_steps, numbers):
        parent = parent if parent == "-" else f"{parent:.3f}"
        print(f"| {label} | {env_cpu:.3f} | {parent} | {wall:.3f} |")


if __name__ == "__main__":
    main()
