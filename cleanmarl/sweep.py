"""A grid of runs (scripts x envs x seeds x flag sets), each the script itself in a subprocess (docs/benchmarks.md).

    python -m cleanmarl.sweep --scripts qmix qmix_lstm --envs Foraging-8x8-2p-2f-coop-v3 simple_spread_v3 \\
        --seeds 1-5 --set "" "--td-lambda 0" --out sweeps/lambda -- --total-timesteps 300000

Each combination runs in DIR/<script>__<env>__<set>__<seed>/ (its runs/ folder, log.txt, command.txt, meta.json with
the flags, git commit, package versions and CPU; `done` once it finished). A failed run is reported with its last
log line and the others go on; the sweep ends with a summary, exit status 1 if any failed. Running the same sweep
again skips the finished runs and continues interrupted ones from their training state (--resume). Backends: local
worker threads (default), Ray (--backend ray, a local instance or --ray-address), or none: --print lists the
commands and --index I runs combination I alone (a slurm array: --index $SLURM_ARRAY_TASK_ID). No training code
lives here.

--stop-at X stops a run (SIGTERM: it saves its state and ends) once the mean score of its last --stop-window
evaluations reaches X (win rate where the env reports battles, else return); it counts as finished. --absolute K
re-evaluates each finished run's best checkpoint (--save-model keeps it) with K times its evaluation episodes: the
absolute metric of Gorsane et al. (2022), which cleanmarl.report puts in its table.
"""

import argparse
import concurrent.futures
import contextlib
import fcntl
import importlib.metadata
import itertools
import json
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cleanmarl.utils.layout import EVAL_FILE, MODELS_FILE, STATE_FILE, evaluation_score

ROOT = Path(__file__).resolve().parent
POLL_SECONDS = 5  # how often a run's evaluations are read (--stop-at, the progress bar)
PACKAGES = ("torch", "numpy", "gymnasium", "pettingzoo", "mpe2", "lbforaging", "smaclite", "tyro")


@dataclass(frozen=True)
class Run:
    script: str
    env: str
    flag_set: str
    seed: int
    extra: tuple

    @property
    def name(self):
        flags = re.sub(r"[^A-Za-z0-9.]+", "_", self.flag_set.strip()).strip("_") or "defaults"
        env = self.env.replace(":", "_").replace("/", "_")
        return f"{Path(self.script).stem}__{env}__{flags}__{self.seed}"

    def command(self, resume=None):
        """The script's command line; resume: a run directory (relative to the run's folder) to continue."""
        script = str(script_file(self.script))
        if resume:  # the saved run's flags, but for its length, which a re-run may extend
            total = [
                a
                for i, a in enumerate(self.extra)
                if self.extra[i - 1 : i] == ("--total-timesteps",)
            ]
            return [
                sys.executable,
                script,
                "--resume",
                resume,
                *(["--total-timesteps", *total] if total else []),
            ]
        flags = [
            "--env-name",
            self.env,
            *shlex.split(self.flag_set),
            "--seed",
            str(self.seed),
            *self.extra,
        ]
        return [sys.executable, script, "--no-progress-bar", *flags]


def parse_seeds(text):
    """'1-5' -> [1..5]; '1,3,7' and '1 3 7' too."""
    seeds = []
    for part in re.split(r"[,\s]+", text.strip()):
        low, _, high = part.partition("-")
        seeds += range(int(low), int(high or low) + 1)
    return seeds


def grid(args):
    seeds = [s for text in args.seeds for s in parse_seeds(text)]
    combos = itertools.product(args.scripts, args.envs, args.set or [""], seeds)
    extra = tuple(args.extra) + (
        ("--save-model",) if args.absolute and "--save-model" not in args.extra else ()
    )
    return [
        Run(script_name(script), env, flag_set, seed, extra)
        for script, env, flag_set, seed in combos
    ]


def script_file(script):
    """The file of a --scripts entry: one of the package's scripts by name (qmix, qmix_lstm.py), or any
    script by path (a copy of qmix.py saved anywhere)."""
    path = Path(script if script.endswith(".py") else f"{script}.py")
    return (
        ROOT / path.name if len(path.parts) == 1 and (ROOT / path.name).exists() else path.resolve()
    )


def script_name(script):
    """How a run names its script: the package's by stem (qmix), a copy by its absolute path."""
    path = script_file(script)
    return path.stem if path.parent == ROOT else str(path)


def versions():
    found = {}
    for package in PACKAGES:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def machine():
    """The CPU the run ran on: a seed reproduces a run on one machine, not across machines (docs/qmix.md, detail 14)."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text(errors="replace").splitlines() if cpuinfo.exists() else []
    model = next(
        (line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), ""
    )
    return dict(
        cpu=model or platform.processor() or platform.machine(),
        arch=platform.machine(),
        cores=os.cpu_count(),
    )


def git_commit():
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None


def evaluations(folder):
    """The evaluation records of the run in a combination's folder (its evaluations.jsonl), oldest first."""
    found = sorted(Path(folder).glob(f"runs/*/{EVAL_FILE}"))
    return (
        [json.loads(line) for line in found[-1].read_text().splitlines() if line.strip()]
        if found
        else []
    )


def reached(records, stop_at, window):
    """Whether the mean score of the last `window` evaluations reaches stop_at (layout.evaluation_score)."""
    if len(records) < window:
        return False
    return (
        np.mean([evaluation_score(r)[0] for r in records[-window:]]) >= stop_at - 1e-9
    )  # 45 won of 50 is 0.9


def absolute_command(run, folder, factor):
    """The --eval-only command that re-evaluates the run's best checkpoint with factor x its evaluation episodes, the
    result landing next to it (best/<exp>.eval.json); None when that is done or there is no best checkpoint."""
    found = sorted(Path(folder).glob(f"runs/*/{MODELS_FILE}"))
    best = json.loads(found[-1].read_text()).get("best") if found else None
    if not best or not (records := evaluations(folder)):
        return None
    checkpoint = (found[-1].parent / best["path"]).relative_to(folder)
    if (folder / str(checkpoint).replace(".cleanmarl_model", ".eval.json")).exists():
        return None
    episodes = factor * len(records[-1]["returns"])
    script = str(script_file(run.script))
    return [sys.executable, script, "--no-progress-bar", "--eval-only", "--load-model", str(checkpoint),
            "--num-eval-ep", str(episodes)]  # fmt: skip


def execute(run, out, threads, stop_at=None, window=10, absolute=0):
    """Run one combination in out/<name>/ (skipped when done; continued from its training state when interrupted),
    stopped early once it reaches stop_at, and its best checkpoint re-evaluated when absolute (a factor) is given.
    -> (name, "done" | "stopped at step N" | "skipped" | "failed: <last log line>", seconds)"""
    folder = Path(out) / run.name
    folder.mkdir(parents=True, exist_ok=True)
    # One process per run folder: the lock is held by this sweep and, inherited, by the run's own process, so a second
    # sweep over the same folder (restarted while a stopped run is still saving its state, a repeated slurm task)
    # leaves it alone instead of resuming it from an older state beside the first.
    with open(folder / "lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return run.name, "skipped (under way in another process)", 0.0
        env = {
            **os.environ,
            "OMP_NUM_THREADS": str(threads),
            "PYTHONPATH": os.pathsep.join([str(ROOT.parent), *sys.path]),
        }
        env["CLEANMARL_SWEEP_LOCK_FD"] = str(lock.fileno())
        return locked_execute(run, folder, env, stop_at, window, absolute)


def locked_execute(run, folder, env, stop_at, window, absolute):
    """execute() once the run folder's lock is held (its fd, inherited by the run's processes, in env)."""
    if (folder / "done").exists():
        command = absolute and absolute_command(run, folder, absolute)
        return (
            (run.name, "skipped", 0.0)
            if not command
            else reevaluate(run, folder, command, env, "done", 0.0)
        )
    states = sorted(folder.glob(f"runs/*/{STATE_FILE}"))
    command = run.command(str(states[-1].parent.relative_to(folder)) if states else None)
    meta = dict(
        script=f"{Path(run.script).stem}.py",
        script_file=str(script_file(run.script)),
        env=run.env,
        flag_set=run.flag_set,
        seed=run.seed,
        extra=list(run.extra),
    )
    meta.update(
        command=command,
        git_commit=git_commit(),
        versions=versions(),
        machine=machine(),
        resumed=bool(states),
    )
    (folder / "meta.json").write_text(json.dumps(meta, indent=1))
    (folder / "command.txt").write_text(shlex.join(command) + "\n")
    start, status = time.time(), "done"
    with open(folder / "log.txt", "a") as log:
        proc = subprocess.Popen(
            command,
            cwd=folder,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            pass_fds=lock_fd(env),
        )
        while proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=POLL_SECONDS)
            if (
                proc.returncode is None
                and stop_at is not None
                and reached(records := evaluations(folder), stop_at, window)
            ):
                status = f"stopped at step {records[-1]['step']}"  # the script saves its state on SIGTERM and ends
                log.write(f"sweep: {status}: the last {window} evaluations average >= {stop_at}\n")
                log.flush()
                proc.send_signal(signal.SIGTERM)
                proc.wait()
    seconds = time.time() - start
    if proc.returncode == 0 or status != "done":
        (folder / "done").write_text(f"{seconds:.1f}\n")
        command = absolute and absolute_command(run, folder, absolute)
        return (
            (run.name, status, seconds)
            if not command
            else reevaluate(run, folder, command, env, status, seconds)
        )
    return run.name, f"failed (exit {proc.returncode}): {last_line(folder)}", seconds


def lock_fd(env):
    return (int(env["CLEANMARL_SWEEP_LOCK_FD"]),)


def last_line(folder):
    lines = (folder / "log.txt").read_text().strip().splitlines() or ["(no output)"]
    return lines[-1]


def reevaluate(run, folder, command, env, status, seconds):
    """Run the absolute metric's --eval-only command (absolute_command) after the run's log. -> execute()'s result"""
    with open(folder / "log.txt", "a") as log:
        log.write(f"sweep: the absolute metric: {shlex.join(command)}\n")
        log.flush()
        proc = subprocess.run(
            command,
            cwd=folder,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            pass_fds=lock_fd(env),
        )
    if code := proc.returncode:
        return (
            run.name,
            f"failed (exit {code}, the absolute metric's re-evaluation): {last_line(folder)}",
            seconds,
        )
    return run.name, status, seconds


def total_steps(run):
    flags = list(run.extra) + shlex.split(run.flag_set)
    return (
        int(flags[flags.index("--total-timesteps") + 1])
        if "--total-timesteps" in flags
        else 1_000_000
    )


def steps_done(run, out):
    """The env step of a run's latest evaluation (0 before its first): the progress bar's view of a run under way."""
    found = sorted((Path(out) / run.name).glob(f"runs/*/{EVAL_FILE}"))
    if not found:
        return 0
    with open(found[-1], "rb") as f:  # the last line only: the file grows with every evaluation
        f.seek(max(0, f.seek(0, os.SEEK_END) - 65536))
        lines = f.read().splitlines()
    with contextlib.suppress(ValueError, KeyError, IndexError):
        return int(json.loads(lines[-1])["step"])
    return 0


def run_all(runs, args):
    """Run every combination on the chosen backend, one progress bar over them all (runs done, env steps done, ETA:
    finished runs count their full length, runs under way their latest evaluation's step). -> [(name, status, s)]"""
    results, finished = [], set()
    bar = tqdm(
        total=sum(map(total_steps, runs)), unit="step", desc=f"0/{len(runs)} runs", smoothing=0.1
    )
    options = dict(stop_at=args.stop_at, window=args.stop_window, absolute=args.absolute)

    def show():
        bar.n = sum(total_steps(r) if r in finished else steps_done(r, args.out) for r in runs)
        bar.set_description(f"{len(results)}/{len(runs)} runs")

    if args.backend == "ray":
        try:
            import ray
        except ImportError:
            sys.exit("sweep: error: --backend ray needs ray: pip install -e '.[sweep]'")
        ray.init(address=args.ray_address, ignore_reinit_error=True, log_to_driver=False)
        task = ray.remote(num_cpus=args.threads, num_gpus=args.gpus)(execute)
        pending = {
            task.remote(run, str(Path(args.out).resolve()), args.threads, **options): run
            for run in runs
        }
        while pending:
            ready, _ = ray.wait(list(pending), timeout=POLL_SECONDS)
            for ref in ready:
                results.append(ray.get(ref))
                finished.add(pending.pop(ref))
            show()
    else:
        with concurrent.futures.ThreadPoolExecutor(args.workers) as pool:
            futures = {
                pool.submit(execute, run, args.out, args.threads, **options): run for run in runs
            }
            while len(finished) < len(runs):
                done, _ = concurrent.futures.wait(set(futures) - {f for f in futures if futures[f] in finished},
                                                  timeout=POLL_SECONDS, return_when="FIRST_COMPLETED")  # fmt: skip
                for future in done:
                    results.append(
                        future.result()
                    )  # execute() catches a run's failure: an exception here is a bug
                    finished.add(futures[future])
                show()
    bar.close()
    return results


OPTIONS = {
    "--scripts",
    "--envs",
    "--seeds",
    "--set",
    "--out",
    "--backend",
    "--threads",
    "--workers",
}
OPTIONS |= {
    "--ray-address",
    "--gpus",
    "--print",
    "--index",
    "--stop-at",
    "--stop-window",
    "--absolute",
    "--",
    "-h",
    "--help",
}


def take_flag_sets(argv):
    """--set's values are flags themselves ("--no-last-action"), which argparse would read as options: take them out
    here, up to the next option of the sweep's own. -> argv without them, the flag sets (None: no --set)"""
    if "--set" not in argv[: argv.index("--") if "--" in argv else len(argv)]:
        return argv, None
    start = argv.index("--set")
    end = next(
        (i for i in range(start + 1, len(argv)) if argv[i].split("=")[0] in OPTIONS), len(argv)
    )
    return argv[:start] + argv[end:], argv[start + 1 : end]


def main(argv=None):
    argv, flag_sets = take_flag_sets(sys.argv[1:] if argv is None else list(argv))
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    parser = argparse.ArgumentParser(
        prog="python -m cleanmarl.sweep", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--scripts", nargs="+", default=["qmix"], help="qmix, qmix_lstm, qmix_memefficient, ..."
    )
    parser.add_argument("--envs", nargs="+", required=True, help="--env-name of each env")
    parser.add_argument("--seeds", nargs="+", default=["1"], help="1-5, or 1 2 3")
    parser.add_argument("--set", nargs="+", help='flag sets, each one quoted string ("" is the defaults), e.g. --set "" '
                        '"--td-lambda 0" --no-last-action')  # fmt: skip
    parser.add_argument("--out", required=True, help="sweep directory")
    parser.add_argument("--backend", choices=["local", "ray"], default="local")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (and Ray CPUs) per run")
    parser.add_argument(
        "--workers", type=int, help="runs at once, local backend (default: cores / --threads)"
    )
    parser.add_argument(
        "--ray-address", help="a running Ray cluster (default: start a local instance)"
    )
    parser.add_argument("--gpus", type=float, default=0, help="GPUs per run, Ray backend")
    parser.add_argument(
        "--print", action="store_true", help="print the commands, one per line, and exit"
    )
    parser.add_argument(
        "--index", type=int, help="run combination INDEX only (0-based; a slurm array task)"
    )
    parser.add_argument("--stop-at", type=float, help="stop a run once its last --stop-window evaluations average "
                        "this score (win rate where the env reports battles, else return), e.g. 0.9")  # fmt: skip
    parser.add_argument(
        "--stop-window", type=int, default=10, help="evaluations averaged by --stop-at"
    )
    parser.add_argument("--absolute", type=int, default=0, metavar="K", help="re-evaluate each finished run's best "
                        "checkpoint with K x its evaluation episodes (adds --save-model), e.g. 10")  # fmt: skip
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    args.extra, args.set = extra, flag_sets
    args.workers = args.workers or max(1, (os.cpu_count() or 1) // args.threads)
    unknown = [s for s in args.scripts if not script_file(s).is_file()]
    if unknown:
        sys.exit(
            f"sweep: error: no script {unknown[0]!r}: one of {ROOT} (qmix, qmix_lstm, qmix_memefficient,"
            " qmix_multienvs) or the path of a copy"
        )
    runs = grid(args)
    if args.print:
        print(
            "\n".join(
                f"cd {Path(args.out) / run.name} && {shlex.join(run.command())}" for run in runs
            )
        )
        return 0
    if args.index is not None:
        if not 0 <= args.index < len(runs):
            sys.exit(f"sweep: error: --index {args.index} not in [0, {len(runs)})")
        runs = [runs[args.index]]
    results = run_all(runs, args)
    failed = [(name, status) for name, status, _ in results if status.startswith("failed")]
    stopped = sum(status.startswith("stopped") for _, status, _ in results)
    done = sum(status == "done" for _, status, _ in results) + stopped
    skipped = sum(status == "skipped" for _, status, _ in results)
    busy = [name for name, status, _ in results if status.startswith("skipped (under way")]
    early = f" ({stopped} stopped early: --stop-at {args.stop_at})" if stopped else ""
    elsewhere = f", {len(busy)} under way in another process (left alone)" if busy else ""
    print(f"sweep: {done} done{early}, {skipped} skipped (finished before){elsewhere}, {len(failed)} failed, of {len(runs)} runs")  # fmt: skip
    for name, status in sorted(failed):
        print(f"  {name}: {status}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
