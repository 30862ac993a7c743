"""Training steps/s of cleanmarl/qmix.py against the raw env's random-policy steps/s, side by side.

    python benchmarks/throughput.py [--steps 60000] [--profile] [--peer PATH/TO/qmix.py] [--qmix-args "..."]
        [--record benchmarks/results/throughput/NAME.json]
    python benchmarks/throughput.py --variant qmix_memefficient.py [--rounds 3] [--profile] [--variant-args "..."]
    python benchmarks/throughput.py --variant qmix.py --baseline DIR [--rounds 6] [--env-name 3m]

Raw LBF Foraging-8x8-2p-2f-coop-v3 is measured before and after a qmix.py run (default
hyperparameters, only --total-timesteps set) in the same process tree, so machine noise hits both.
The ratio is qmix.py's charts/SPS (env steps per second of training, evaluation included) over the
mean raw random-policy steps/s. --profile also runs qmix.py under cProfile and splits the time into
env stepping, acting, evaluation and the update.

--variant NAME --baseline DIR times cleanmarl/NAME of another checkout of this repository (a git
worktree at an earlier commit, with its own cleanmarl package) against this checkout's, alternating.

--variant times one of our variant scripts (cleanmarl/NAME) the same way, alternating with qmix.py for --rounds
rounds, and prints each round's steps/s and the variant / qmix.py ratio of the means; --profile then profiles the
variant; --record writes the rounds to the results store.

--peer runs another QMIX script with the same flags (`--env-type lbf --env-name ... --total-timesteps
N`), e.g. a checkout of CleanMARL's cleanmarl/qmix.py (not part of this repository), between the two
raw measurements. Peers need not log SPS, so their steps/s is (N - n) / (wall(N) - wall(n)) over a
long run of N and a short run of n = N / 10 steps, which cancels start-up time.

--record writes what was measured, the command and the machine to a JSON file of the results store,
from which benchmarks/redraw.py draws the docs' throughput table.
"""

import argparse
import cProfile
import json
import os
import pstats
import runpy
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import lbforaging  # noqa: F401  (registers the Foraging ids)

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "cleanmarl" / "qmix.py"
ENV_ID = "Foraging-8x8-2p-2f-coop-v3"
ACTING = ("run_episode", "<lambda>")  # where the scripts call the agent network to act


def raw_steps_per_second(seconds):
    env = gym.make(ENV_ID)
    env.reset(seed=0)
    env.action_space.seed(0)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        n += 1
        if terminated or truncated:
            env.reset()
    return n / (time.perf_counter() - start)


def qmix_steps_per_second(
    steps,
    workdir,
    extra=(),
    script=SCRIPT,
    env_args=("--env-type", "lbf", "--env-name", ENV_ID),
    root=ROOT,
):
    cmd = [sys.executable, str(script), *env_args]
    cmd += ["--total-timesteps", str(steps), "--no-progress-bar", "--log-every", "1", *extra]
    # the script's own checkout first: its cleanmarl package, and the test envs
    # (tests.counter_env:SlowCounter-v0) that import from the root
    env = {**os.environ, "PYTHONPATH": str(root)}
    subprocess.run(cmd, cwd=workdir, check=True, capture_output=True, env=env)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (run_dir,) = Path(workdir, "runs").iterdir()
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return events.Scalars("charts/SPS")[-1].value


def peer_steps_per_second(script, steps, workdir):
    def wall(n):
        cmd = [
            sys.executable,
            str(script),
            "--env-type",
            "lbf",
            "--env-name",
            ENV_ID,
            "--total-timesteps",
            str(n),
        ]
        start = time.perf_counter()
        subprocess.run(cmd, cwd=workdir, check=True, capture_output=True)
        return time.perf_counter() - start

    short = steps // 10
    return (steps - short) / (wall(steps) - wall(short))


def gpu_name(flags):
    """The GPU a run with these flags trained on (None on the CPU), for the record."""
    if "--device" not in flags.split() or "cpu" in flags.split():
        return None
    import torch

    return torch.cuda.get_device_name(0)


def torch_threads():
    """torch's intra-op threads in a fresh process (a peer that does not set them uses these)."""
    cmd = [sys.executable, "-c", "import torch; print(torch.get_num_threads())"]
    return int(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def profiled_run(steps, script=SCRIPT):
    argv = [str(script), "--env-type", "lbf", "--env-name", ENV_ID, "--total-timesteps", str(steps)]
    with tempfile.TemporaryDirectory() as workdir:
        cwd, sys.argv = os.getcwd(), [*argv, "--no-progress-bar"]
        os.chdir(workdir)
        profiler = cProfile.Profile()
        start = time.perf_counter()
        profiler.runcall(runpy.run_path, str(script), run_name="__main__")
        total = time.perf_counter() - start
        os.chdir(cwd)
    return total, pstats.Stats(profiler).stats


def profile(steps, script=SCRIPT):
    """Where a script's time goes: cumulative seconds of the functions that make up one iteration."""
    profiled_run(1, script)  # warm-up: module imports happen once per process
    setup, _ = profiled_run(1, script)  # env and network construction, one episode, one evaluation
    total, stats = profiled_run(steps, script)
    total -= setup

    def cumulative(name, file_part):
        return sum(v[3] for (f, _, fn), v in stats.items() if fn == name and file_part in f)

    name = script.name
    rollout = cumulative("run_episode", name) - cumulative("evaluate", name)
    env_step = cumulative("step", "cleanmarl/env/base.py") + cumulative(
        "reset", "cleanmarl/env/base.py"
    )
    acting = cumulative("select_actions", name)  # and the agent network's calls from acting:
    for (f, _, fn), v in stats.items():
        if fn == "_wrapped_call_impl" and "torch/nn/modules/module.py" in f:
            callers = v[4].items()
            acting += sum(c[3] for (cf, _, cfn), c in callers if name in cf and cfn in ACTING)
    evaluation = cumulative("evaluate", name)
    buffer = cumulative("add", name) + cumulative("sample", name)
    backward = cumulative("backward", "torch/_tensor.py")
    optimizer = cumulative("step", "torch/optim/adam.py")
    gru = cumulative(
        "forward", "torch/nn/modules/rnn.py"
    )  # GRU unrolls (qmix_lstm.py), online and target
    update = total - rollout - evaluation
    rows = [
        ("training loop (setup excluded)", total),
        ("env step + reset (training episodes and eval)", env_step),
        ("acting: the agent network + epsilon-greedy", acting),
        ("training episodes (env, acting, bookkeeping)", rollout),
        ("evaluation episodes", evaluation),
        ("update and logging (the rest)", update),
        ("  of which buffer add + sample", buffer),
        ("  of which loss.backward()", backward),
        ("  of which optimizer.step()", optimizer),
    ]
    rows += [("  of which GRU forward (online + target unrolls)", gru)] if gru else []
    print(
        f"\nprofile of {name}, {steps} steps on {ENV_ID} (cProfile slows Python code more than torch kernels):"
    )
    for label, seconds in rows:
        print(f"  {label:48s} {seconds:7.2f} s  {100 * seconds / total:5.1f}%")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60_000, help="env steps of the qmix.py run")
    parser.add_argument(
        "--raw-seconds", type=float, default=10.0, help="seconds per raw-env measurement"
    )
    parser.add_argument("--profile", action="store_true", help="also profile a qmix.py run")
    parser.add_argument(
        "--peer", type=Path, help="another QMIX script to time with the same env flags"
    )
    parser.add_argument(
        "--peer-steps", type=int, default=20_000, help="env steps of the peer's long run"
    )
    parser.add_argument(
        "--qmix-args",
        default="",
        help="extra qmix.py flags, e.g. '--batch-size 10' (a peer's value)",
    )
    parser.add_argument(
        "--variant", help="a variant script in cleanmarl/ to time against qmix.py, same flags"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating qmix.py / variant runs (with --variant)"
    )
    parser.add_argument(
        "--variant-args", default="", help="flags for the variant only, e.g. '--td-lambda 0.6'"
    )
    parser.add_argument(
        "--env-name", default=ENV_ID, help="the env of the --variant runs (any --env-name)"
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="with --variant: another checkout of this repository (git worktree add DIR COMMIT),"
        " whose cleanmarl/VARIANT is timed against this checkout's, alternating",
    )
    parser.add_argument(
        "--baseline-name", help="what the --baseline checkout's script is, for the record"
    )
    parser.add_argument("--record", type=Path, help="write the measurement to this JSON file")
    parser.add_argument("--peer-repo", help="the peer's repository, for the record (a URL)")
    parser.add_argument("--peer-name", default="peer", help="the peer's name, for the record")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))  # --record reads the machine and versions as the sweep does
    if args.variant:
        # name -> (checkout, script); with --baseline the same script in both checkouts
        timed = {"qmix.py": (ROOT, "qmix.py"), args.variant: (ROOT, args.variant)}
        baseline = None
        if args.baseline:
            git = ["git", "-C", str(args.baseline), "log", "-1", "--format=%H %cs"]
            commit = subprocess.run(git, capture_output=True, text=True).stdout.split()
            baseline = dict(commit=commit[0], date=commit[1])
            base = args.baseline_name or f"{args.variant} at {commit[0][:7]}"
            baseline["name"] = base
            timed = {
                base: (args.baseline.resolve(), args.variant),
                args.variant: timed[args.variant],
            }
        speeds = {name: [] for name in timed}
        for _ in range(args.rounds):
            for name, (root, script_name) in timed.items():
                with tempfile.TemporaryDirectory() as workdir:
                    script, extra = root / "cleanmarl" / script_name, args.qmix_args.split()
                    extra += args.variant_args.split() if name == args.variant else []
                    env_args = ("--env-name", args.env_name)
                    speeds[name].append(
                        qmix_steps_per_second(args.steps, workdir, extra, script, env_args, root)
                    )
        for name, values in speeds.items():
            print(
                f"{name} training on {args.env_name} ({args.steps} steps): {' / '.join(f'{v:.0f}' for v in values)} steps/s"
            )
        other = next(name for name in speeds if name != args.variant)
        ratio = sum(speeds[args.variant]) / sum(speeds[other])
        print(
            f"ratio {args.variant} / {other} (means over {args.rounds} alternating rounds): {ratio:.3f}"
        )
        if args.record:
            from cleanmarl.sweep import machine, versions

            command = shlex.join(["python", "benchmarks/throughput.py", *sys.argv[1:]])
            if args.baseline:  # a checkout is named by its commit, not its path here
                where = f"<checkout: {baseline['name']}>"  # its commit: the record's baseline
                command = command.replace(shlex.quote(str(args.baseline)), where)
            record = dict(
                command=command,
                env=args.env_name,
                steps=args.steps,
                variant=args.variant,
                variant_args=args.variant_args,
                baseline=baseline,
                qmix_args=args.qmix_args,
                speeds=speeds,
                machine=machine(),
                versions=versions(),
                gpu=gpu_name(args.qmix_args + " " + args.variant_args),
            )
            args.record.parent.mkdir(parents=True, exist_ok=True)
            args.record.write_text(json.dumps(record, indent=1) + "\n")
        if args.profile:
            profile(args.steps // 3, ROOT / "cleanmarl" / args.variant)
        sys.exit(0)
    raw_before = raw_steps_per_second(args.raw_seconds)
    with tempfile.TemporaryDirectory() as workdir:
        qmix_sps = qmix_steps_per_second(args.steps, workdir, args.qmix_args.split())
    if args.peer:
        with tempfile.TemporaryDirectory() as workdir:
            peer_sps = peer_steps_per_second(args.peer.resolve(), args.peer_steps, workdir)
    raw_after = raw_steps_per_second(args.raw_seconds)
    raw = (raw_before + raw_after) / 2
    print(
        f"raw {ENV_ID} random policy: {raw:.0f} steps/s (before {raw_before:.0f}, after {raw_after:.0f})"
    )
    flags = args.qmix_args or "default hyperparameters"
    print(f"qmix.py training ({args.steps} steps, {flags}): {qmix_sps:.0f} steps/s")
    print(f"ratio qmix.py / raw env: {qmix_sps / raw:.2f}")
    if args.peer:
        print(f"peer {args.peer} ({args.peer_steps} steps, its defaults): {peer_sps:.0f} steps/s")
        print(
            f"ratio peer / raw env: {peer_sps / raw:.3f}; qmix.py / peer: {qmix_sps / peer_sps:.1f}x"
        )
    if args.record:
        from cleanmarl.sweep import machine, versions

        peer, command = None, shlex.join(["python", "benchmarks/throughput.py", *sys.argv[1:]])
        if args.peer:  # the peer's checkout is named by its repository and commit, not its path
            script = f"{args.peer.parent.name}/{args.peer.name}"
            git = ["git", "-C", str(args.peer.parent), "log", "-1", "--format=%H %cs"]
            commit = (
                subprocess.run(git, capture_output=True, text=True).stdout.split() or [None] * 2
            )
            peer = dict(name=args.peer_name, script=script, repo=args.peer_repo)
            peer.update(commit=commit[0], date=commit[1])
            peer["steps"] = args.peer_steps
            peer["sps"] = peer_sps
            command = command.replace(
                shlex.quote(str(args.peer)), f"<{args.peer_name} checkout>/{script}"
            )
        record = dict(
            command=command,
            env=ENV_ID,
            raw_before=raw_before,
            raw_after=raw_after,
            qmix=dict(steps=args.steps, args=args.qmix_args, sps=qmix_sps),
            peer=peer,
            machine=machine(),
            versions=versions(),
            torch_threads=torch_threads(),
        )
        args.record.parent.mkdir(parents=True, exist_ok=True)
        args.record.write_text(json.dumps(record, indent=1) + "\n")
    if args.profile:
        profile(args.steps // 3)
