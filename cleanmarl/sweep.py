"""A grid of runs (scripts x envs x seeds x flag sets), each the script itself in a subprocess.

    python -m cleanmarl.sweep --scripts qmix qmix_lstm --envs Foraging-8x8-2p-2f-coop-v3 \\
        simple_spread_v3 --seeds 1-5 --set "" "--td-lambda 0" --out sweeps/lambda \\
        -- --total-timesteps 300000

Each combination runs in DIR/<script>__<env>__<flag set>__<seed>/ (docs/benchmarks.md): its runs/
folder, log.txt, command.txt, meta.json with the flags, git commit, package versions and CPU, and
`done` once it ended: {"ended": "completed" | "stopped", "step": its last evaluation's, "by": the
--stop-at rule (stopped only), "seconds": this sweep's}; an older sweep's holds the seconds alone.
A run whose last attempt failed has `failed` instead: {"ended": "failed", "exit", "last_line"}.
The flag set's part of the name is its flags made a file name (td_lambda_0; "" is defaults),
followed by -<8 hex of the sha1 of its tokens> where that form could stand for another flag set
("--clip-gradients -1" and "--clip-gradients 1") or is cut at 80 characters. A failed run is
reported with its last log line and the others go on; the sweep ends with a summary, exit status 1
if any failed. Running the same sweep again skips the finished runs and continues interrupted ones
from their training state (--resume). Backends: local worker threads (default), Ray (--backend ray,
a local instance or --ray-address), or none: --print lists the commands and --index I runs
combination I alone (a slurm array: --index $SLURM_ARRAY_TASK_ID). No training code lives here.

SIGINT (Ctrl-C) or SIGTERM stops the sweep: no run starts after it; each run under way gets one
SIGTERM (the runs are in sessions of their own, so a terminal's Ctrl-C reaches the sweep alone),
saves its training state and ends; the sweep waits for them, prints a summary line and exits 130
(SIGINT) or 143 (SIGTERM). The stopped runs are not marked done: the same command continues them.
With Ray, the tasks not started are cancelled and a task under way stops its run the same way.

One process per run folder: the sweep locks it (flock), and the run's process inherits the lock, so
that a second sweep over the folder leaves a run under way alone. On a filesystem without file locks
(flock fails, as on some cluster filesystems) the sweep warns once and runs without them: there, run
one sweep at a time over a directory.

--stop-at X stops a run (SIGTERM: it saves its state and ends) once the mean score of its last
--stop-window evaluations reaches X (win rate where the env reports battles, else return); it counts
as finished. --absolute K re-evaluates each finished run's best checkpoint (--save-model keeps it)
with K times its evaluation episodes: the absolute metric of Gorsane et al. (2022), which
cleanmarl.report puts in its table.
"""

import argparse
import concurrent.futures
import contextlib
import fcntl
import hashlib
import importlib
import importlib.metadata
import itertools
import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cleanmarl.utils.checkpoints import read_models
from cleanmarl.utils.layout import (
    ABSOLUTE_FILE,
    EVAL_FILE,
    MODELS_FILE,
    STATE_FILE,
    evaluation_score,
    read_records,
    reevaluation_file,
    write_json,
)

ROOT = Path(__file__).resolve().parent
POLL_SECONDS = 5  # how often a run's evaluations are read (--stop-at, the progress bar)
WAKE_SECONDS = 0.2  # how often the sweep looks for a stop signal
PACKAGES = ("torch", "numpy", "gymnasium", "pettingzoo", "mpe2", "lbforaging", "smaclite", "tyro")
DONE = "done"  # in a combination's folder once its run ended (read_done)
FAILED = "failed"  # in a combination's folder while its last attempt failed: exit code, last line
NAME_LIMIT = 80  # characters of a folder name's flag set part
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
STOPPED_CODES = (128 + signal.SIGTERM, 128 + signal.SIGINT, -signal.SIGTERM)  # a script stopped
BOX_TOP, BOX_BOTTOM, BOX_SIDE, BOX_RULE = "╭", "╰", "│", "─"  # an error box's (tyro's, by rich)


@dataclass(frozen=True)
class Run:
    script: str
    env: str
    flag_set: str
    seed: int
    extra: tuple

    @property
    def name(self):
        env = self.env.replace(":", "_").replace("/", "_")
        return f"{Path(self.script).stem}__{env}__{flag_set_name(self.flag_set)}__{self.seed}"

    def command(self, resume=None):
        """The script's command line; resume: a run directory (relative to the run's folder) to
        continue."""
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


def flag_set_name(flag_set):
    """A flag set's part of its run's folder name: "defaults" for none, else its flags made a file
    name ("--td-lambda 0" -> td_lambda_0), followed by -<8 hex of the sha1 of its tokens> unless
    read_back() gives the same tokens again (so that two flag sets never share a folder:
    "--clip-gradients -1" and "--clip-gradients 1" are both clip_gradients_1) and the name is at
    most NAME_LIMIT characters (else cut). Readable names hold no "-", so they never meet those."""
    tokens = shlex.split(flag_set)
    if not tokens:
        return "defaults"
    readable = re.sub(r"[^A-Za-z0-9.]+", "_", " ".join(tokens)).strip("_")
    if readable and len(readable) <= NAME_LIMIT and read_back(readable) == tokens:
        return readable
    digest = hashlib.sha1("\0".join(tokens).encode()).hexdigest()[:8]
    return f"{readable[: NAME_LIMIT - len(digest) - 1]}-{digest}"


def read_back(readable):
    """The one flag set a readable name stands for: its numbers are values, the words between them
    one flag (td_lambda_0 -> --td-lambda 0; no_last_action -> --no-last-action)."""
    tokens, word = [], False
    for part in readable.split("_"):
        if re.fullmatch(r"[0-9.]+", part):
            tokens.append(part)
        elif word:
            tokens[-1] += f"-{part}"
        else:
            tokens.append(f"--{part}")
        word = not re.fullmatch(r"[0-9.]+", part)
    return tokens


def parse_seeds(text):
    """'1-5' -> [1..5]; '1,3,7' and '1 3 7' too. Anything else, or an empty range such as '3-1':
    ValueError (one line)."""
    seeds = []
    for part in re.split(r"[,\s]+", text.strip()):
        found = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not found:
            raise ValueError(
                f"--seeds {text}: {part!r} is not a seed or a range of seeds (1-5, 1,3,7 or 1 3 7)"
            )
        low, high = int(found[1]), int(found[2] or found[1])
        if high < low:
            raise ValueError(f"--seeds {text}: {part} is an empty range ({low} is above {high})")
        seeds += range(low, high + 1)
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
    """The file of a --scripts entry: one of the package's scripts by name (qmix, qmix_lstm.py), or
    any script by path (a copy of qmix.py saved anywhere)."""
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
    """The CPU the run ran on: a seed reproduces a run on one machine, not across machines
    (docs/qmix.md, detail 14)."""
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
    """The evaluation records of the run in a combination's folder (its evaluations.jsonl), oldest
    first; a partial last line is left out (layout.read_records)."""
    found = sorted(Path(folder).glob(f"runs/*/{EVAL_FILE}"))
    try:
        return read_records(found[-1]) if found else []
    except ValueError as e:  # damaged: the report names it; the sweep goes on without it
        print(f"sweep: warning: {e}", file=sys.stderr)
        return []


def reached(records, stop_at, window):
    """Whether the mean score of the last `window` evaluations reaches stop_at
    (layout.evaluation_score)."""
    if len(records) < window:
        return False
    scores = [evaluation_score(r)[0] for r in records[-window:]]
    return np.mean(scores) >= stop_at - 1e-9  # 45 won of 50 is 0.9


def read_done(folder):
    """How the run in a combination's folder ended (its `done`): {"ended", "step", ["by",]
    "seconds"}; an older sweep's `done`, its seconds alone, as {"seconds": s}; None while it has
    not ended."""
    try:
        text = (Path(folder) / DONE).read_text()
    except FileNotFoundError:
        return None
    with contextlib.suppress(ValueError):
        found = json.loads(text)
        return found if isinstance(found, dict) else {"seconds": float(found)}
    return {}


def write_done(folder, seconds, stopped_by=None):
    """Mark the run in folder ended: completed, or stopped (`stopped_by`: the --stop-at rule), at
    the step of its last evaluation."""
    records = evaluations(folder)
    ended = dict(ended="stopped" if stopped_by else "completed")
    ended["step"] = records[-1]["step"] if records else None
    if stopped_by:
        ended["by"] = stopped_by
    ended["seconds"] = round(seconds, 1)
    write_json(ended, str(Path(folder) / DONE))


def absolute_command(run, folder, factor):
    """The --eval-only command that re-evaluates the run's best checkpoint with factor x its
    evaluation episodes, the result landing next to it (best/<exp>.eval.json, which reevaluate
    copies to ABSOLUTE_FILE); None when that is done or there is no best checkpoint."""
    found = sorted(Path(folder).glob(f"runs/*/{MODELS_FILE}"))
    try:  # checked: its names stay inside the run directory
        best = read_models(str(found[-1].parent)).get("best") if found else None
    except ValueError as e:
        print(f"sweep: warning: {e}: no absolute metric", file=sys.stderr)
        return None
    if not best or not (records := evaluations(folder)):
        return None
    checkpoint = (found[-1].parent / best["path"]).relative_to(folder)
    if (folder / ABSOLUTE_FILE).exists() or (folder / reevaluation_file(checkpoint)).exists():
        return None  # the second: a sweep that kept no copy
    episodes = factor * len(records[-1]["returns"])
    script = str(script_file(run.script))
    load = ["--load-model", str(checkpoint), "--num-eval-ep", str(episodes)]
    return [sys.executable, script, "--no-progress-bar", "--eval-only", *load]


class Stopper:
    """The runs' processes, shared by the sweep's threads, and its stop (SIGINT, SIGTERM): from
    stop() on, no run starts, and each run under way gets SIGTERM. A run gets one SIGTERM at most,
    from the stop or from --stop-at: a second would end it without saving its training state."""

    def __init__(self):
        self.signal = None  # the stop signal's number, once stopping
        self.lock = threading.Lock()
        self.logs = {}  # each run's process under way -> its log
        self.sent = set()  # the processes sent SIGTERM
        self.warned = False  # about file locks (warn_no_locks)

    def popen(self, command, log, note=None, **options):
        """Start command, its output to log (after the line `note`), in a session of its own: a
        terminal's Ctrl-C reaches the sweep alone, which stops its runs with one SIGTERM each.
        -> the process; None once stopping"""
        with self.lock:
            if self.signal is not None:
                return None
            if note:
                log.write(f"sweep: {note}\n")
                log.flush()
            proc = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **options
            )
            self.logs[proc] = log
            return proc

    def terminate(self, proc, reason):
        """SIGTERM to a process under way, with a line in its log, unless it was sent one before.
        -> whether it was sent now"""
        with self.lock:
            if proc in self.sent or proc not in self.logs:
                return False
            self.sent.add(proc)
            self.logs[proc].write(f"sweep: {reason}\n")
            self.logs[proc].flush()
            proc.send_signal(signal.SIGTERM)
            return True

    def wait(self, proc):
        """proc.wait(), and a KeyboardInterrupt (Ray cancelling the task) taken as a stop."""
        try:
            return proc.wait()
        except KeyboardInterrupt:
            self.stop(signal.SIGINT)
            return proc.wait()

    def ended(self, proc):
        """Forget a process that ended. -> whether it was sent SIGTERM"""
        with self.lock:
            self.logs.pop(proc, None)
            return proc in self.sent

    def warn_no_locks(self, error):
        """One warning line, the first time only: flock failed for want of file locks (error)."""
        with self.lock:
            first, self.warned = not self.warned, True
        if first:
            reason = error.strerror or str(error)
            tqdm.write(
                f"sweep: warning: no file locks on this filesystem ({reason}): the run folders are"
                " not protected against a second sweep; run one sweep at a time over a directory"
                " here",
                file=sys.stderr,
            )

    def stop(self, signum):
        """No run starts from now on; each one under way gets SIGTERM. -> how many were under way"""
        with self.lock:
            self.signal = signum
            procs = list(self.logs)
        name = signal.Signals(signum).name
        reason = f"stopped by {name} (SIGTERM sent: the run saves its training state and ends)"
        for proc in procs:
            self.terminate(proc, reason)
        return len(procs)


def check_locks(out, stopper):
    """Warn now where out's filesystem has no file locks (a Ray task's warning is not seen)."""
    Path(out).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=out) as probe:
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass
        except OSError as e:
            stopper.warn_no_locks(e)


def execute(run, out, threads, stop_at=None, window=10, absolute=0, stopper=None):
    """Run one combination in out/<name>/ (skipped when done; continued from its training state when
    interrupted), stopped early once it reaches stop_at, and its best checkpoint re-evaluated when
    absolute (a factor) is given; nothing started once the stopper is stopping. -> (name, "done" |
    "stopped at step N" | "skipped" | "not started" | "interrupted ..." | "failed ...", seconds)"""
    stopper = stopper or Stopper()
    if stopper.signal is not None:
        return run.name, "not started", 0.0
    folder = Path(out) / run.name
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = open(folder / "lock", "w")
    except OSError as e:  # a file in the way, a read-only folder
        return run.name, f"failed (cannot write {folder}: {e.strerror or e})", 0.0
    # One process per run folder: the lock is held by this sweep and, inherited, by the run's own
    # process, so a second sweep over the same folder (restarted while a stopped run is still saving
    # its state, a repeated slurm task) leaves it alone instead of resuming it from an older state
    # beside the first. Where the filesystem has no file locks, the run goes without (warned).
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return run.name, "skipped (under way in another process)", 0.0
        except OSError as e:  # ENOLCK, EOPNOTSUPP, EINVAL, ENOSYS: no file locks here
            stopper.warn_no_locks(e)
        env = {
            **os.environ,
            "OMP_NUM_THREADS": str(threads),
            "PYTHONPATH": os.pathsep.join([str(ROOT.parent), *sys.path]),
        }
        env["CLEANMARL_SWEEP_LOCK_FD"] = str(lock.fileno())
        return locked_execute(run, folder, env, stop_at, window, absolute, stopper)


def ray_execute(*args, **options):
    """execute() as a Ray task. ray.cancel() stops a task under way with a KeyboardInterrupt, which
    locked_execute takes as the sweep's stop: SIGINT's handler is put back for it first, as the
    workers inherit an ignored SIGINT from a sweep started in the background (`&`, nohup)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
    return execute(*args, **options)


def locked_execute(run, folder, env, stop_at, window, absolute, stopper):
    """execute() once the run folder's lock is held (its fd, inherited by the run's processes, in
    env)."""
    if read_done(folder) is not None:
        command = absolute and absolute_command(run, folder, absolute)
        if not command:
            return run.name, "skipped", 0.0
        return reevaluate(run, folder, command, env, "done", 0.0, stopper)
    if stopper.signal is not None:
        return run.name, "not started", 0.0
    (folder / ABSOLUTE_FILE).unlink(missing_ok=True)  # a run that trains on: its best may change
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
        command=run.command(),  # the run's own; a resume's is resume_command
        git_commit=git_commit(),
        versions=versions(),
        machine=machine(),
        resumed=bool(states),
    )
    if states:
        meta["resume_command"] = command
    (folder / "meta.json").write_text(json.dumps(meta, indent=1))
    (folder / "command.txt").write_text(shlex.join(command) + "\n")
    start, stopped_at = time.time(), None  # stopped_at: the step at which --stop-at stopped it
    with open(folder / "log.txt", "a") as log:
        proc = stopper.popen(command, log, cwd=folder, env=env, pass_fds=lock_fd(env))
        if proc is None:
            return run.name, "not started", 0.0
        try:
            while proc.poll() is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=POLL_SECONDS)
                if proc.returncode is not None or stop_at is None:
                    continue
                if reached(records := evaluations(folder), stop_at, window):
                    step = records[-1]["step"]
                    rule = f"the last {window} evaluations average >= {stop_at}"
                    # the script saves its state on SIGTERM and ends
                    if stopper.terminate(proc, f"stopped at step {step}: {rule}"):
                        stopped_at = step
                    proc.wait()
        except KeyboardInterrupt:  # Ray cancelling the task: its run stops as on the sweep's signal
            stopper.stop(signal.SIGINT)
            proc.wait()
        signalled = stopper.ended(proc)
    seconds, code = time.time() - start, proc.returncode
    if signalled and stopped_at is None and code in STOPPED_CODES:
        if any(folder.glob(f"runs/*/{STATE_FILE}")):  # the sweep's stop: no `done`
            return run.name, "interrupted (resumable)", seconds
        return run.name, "interrupted before its first training state (begins anew)", seconds
    if code == 0 or stopped_at is not None:
        (folder / FAILED).unlink(missing_ok=True)
        if stopped_at is None:
            status, by = "done", None
        else:
            status = f"stopped at step {stopped_at}"
            by = f"--stop-at {stop_at} over the last {window} evaluations"
        write_done(folder, seconds, by)
        command = absolute and absolute_command(run, folder, absolute)
        if not command:
            return run.name, status, seconds
        return reevaluate(run, folder, command, env, status, seconds, stopper)
    write_json(dict(ended="failed", exit=code, last_line=last_line(folder)), str(folder / FAILED))
    return run.name, f"failed (exit {code}): {last_line(folder)}", seconds


def lock_fd(env):
    return (int(env["CLEANMARL_SWEEP_LOCK_FD"]),)


def last_line(folder):
    """A failed run's message: its log's last line, or, where the log ends in an error box
    (tyro's: a misspelled flag), the box's first section, its border stripped."""
    try:
        lines = (folder / "log.txt").read_text(errors="replace").strip().splitlines()
    except OSError as e:
        return f"(no log: {e.strerror or e})"
    if not lines:
        return "(no output)"
    tops = [i for i, line in enumerate(lines) if line.lstrip().startswith(BOX_TOP)]
    if lines[-1].lstrip().startswith(BOX_BOTTOM) and tops:
        section = []
        for line in lines[tops[-1] + 1 : -1]:
            text = line.strip().strip(BOX_SIDE).strip()
            if not text.strip(BOX_RULE):  # a rule ends the message
                break
            section.append(text)
        if section:
            return " ".join(section)
    return lines[-1]


def reevaluate(run, folder, command, env, status, seconds, stopper):
    """Run the absolute metric's --eval-only command (absolute_command) after the run's log, and
    keep a copy of its episodes in the folder (ABSOLUTE_FILE). -> execute()'s result"""
    with open(folder / "log.txt", "a") as log:
        note = f"the absolute metric: {shlex.join(command)}"
        proc = stopper.popen(command, log, note, cwd=folder, env=env, pass_fds=lock_fd(env))
        if proc is None:
            return run.name, "interrupted before the absolute metric's re-evaluation", seconds
        stopper.wait(proc)
        signalled = stopper.ended(proc)
    if code := proc.returncode:
        what = f"the absolute metric's re-evaluation): {last_line(folder)}"
        if signalled:
            return run.name, f"interrupted (exit {code}, {what}", seconds
        return run.name, f"failed (exit {code}, {what}", seconds
    checkpoint = command[command.index("--load-model") + 1]
    shutil.copyfile(folder / reevaluation_file(checkpoint), folder / (ABSOLUTE_FILE + ".tmp"))
    os.replace(folder / (ABSOLUTE_FILE + ".tmp"), folder / ABSOLUTE_FILE)
    return run.name, status, seconds


def total_steps(run):
    flags = list(run.extra) + shlex.split(run.flag_set)
    return (
        int(flags[flags.index("--total-timesteps") + 1])
        if "--total-timesteps" in flags
        else 1_000_000
    )


def steps_done(run, out):
    """The env step of a run's latest evaluation (0 before its first): the progress bar's view of a
    run under way."""
    with contextlib.suppress(ValueError, KeyError, TypeError):
        records = evaluations(Path(out) / run.name)
        return int(records[-1]["step"]) if records else 0
    return 0


@contextlib.contextmanager
def stop_signals():
    """SIGINT and SIGTERM, while in the block, only appended to the list it yields (the previous
    handlers are put back after it). Outside the main thread, where handlers cannot be set: none."""
    received = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    for signum in STOP_SIGNALS:
        signal.signal(signum, lambda signum, frame: received.append(signum))
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


def start_ray(address, dashboard=False):
    """import ray and ray.init: the cluster at address, else a local instance whose ports listen on
    loopback only (127.0.0.1), with its dashboard only where asked. -> the ray module"""
    local = {}
    if not address and not os.environ.get("RAY_ADDRESS"):  # RAY_ADDRESS: ray.init connects there
        # Ray on Linux turns 127.0.0.1 into the host's address, and so binds its ports on every
        # interface, unless multi-node clusters are off (read when ray is imported)
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        local = dict(_node_ip_address="127.0.0.1", include_dashboard=dashboard)
    try:
        import ray
    except ImportError:
        sys.exit("sweep: error: --backend ray needs ray: pip install -e '.[sweep]'")
    try:
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False, **local)
    except (OSError, RuntimeError, ValueError, ray.exceptions.RayError) as e:  # ConnectionError
        where = f"--ray-address {address}" if address else "a local Ray instance"
        sys.exit(f"sweep: error: {where}: {(str(e).strip() or type(e).__name__).splitlines()[0]}")
    except KeyboardInterrupt:  # Ctrl-C while Ray starts: nothing started yet
        print("sweep: stopped by SIGINT while Ray started: no run started", file=sys.stderr)
        raise SystemExit(128 + signal.SIGINT) from None
    if local and (ip := ray.util.get_node_ip_address()) not in ("127.0.0.1", "::1"):
        print(
            f"sweep: warning: the local Ray instance listens on {ip}, not on loopback only (ray"
            " was imported before the sweep, or RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER is set)",
            file=sys.stderr,
        )
    return ray


class Progress:
    """One progress bar over the whole grid (runs done, env steps done, ETA: finished runs count
    their full length, runs under way their latest evaluation's step), and the runs' results."""

    def __init__(self, runs, out):
        self.runs, self.out, self.results, self.finished = runs, out, [], set()
        total = sum(map(total_steps, runs))
        self.bar = tqdm(total=total, unit="step", desc=f"0/{len(runs)} runs", smoothing=0.1)
        self.shown, self.told = time.time(), 0

    def add(self, run, result):
        """A run's result: its full length counts once it ended (not stopped, not unstarted)."""
        self.results.append(result)
        if not result[1].startswith(("interrupted", "not started")):
            self.finished.add(run)

    def show(self, now=False):
        """Update the bar: now, else once every POLL_SECONDS (it reads every run's records)."""
        if now or time.time() - self.shown >= POLL_SECONDS:
            runs, finished = self.runs, self.finished
            self.bar.n = sum(
                total_steps(r) if r in finished else steps_done(r, self.out) for r in runs
            )
            self.bar.set_description(f"{len(self.finished)}/{len(self.runs)} runs")
            self.shown = time.time()

    def heed(self, received, stop):
        """Stop at the first signal received (stop(signum) -> what it did), and say so; say that a
        later one changes nothing."""
        for signum in received[self.told :]:
            name = signal.Signals(signum).name
            said = "still stopping: no run gets a second SIGTERM" if self.told else stop(signum)
            self.bar.write(f"sweep: {name}: {said}", file=sys.stderr)
            self.told += 1


def run_all(runs, args):
    """Run every combination on the chosen backend (Progress); a stop signal stops the sweep
    (Stopper). -> ([(name, status, seconds)], the stop signal's number or None)"""
    ray = start_ray(args.ray_address, args.ray_dashboard) if args.backend == "ray" else None
    progress, stopper = Progress(runs, args.out), Stopper()
    check_locks(args.out, stopper)
    options = dict(stop_at=args.stop_at, window=args.stop_window, absolute=args.absolute)
    with stop_signals() as received:
        if ray is not None:
            # by name: the function of `python -m cleanmarl.sweep` (__main__) is pickled by value
            work = importlib.import_module("cleanmarl.sweep").ray_execute
            task = ray.remote(num_cpus=args.threads, num_gpus=args.gpus)(work)
            out = str(Path(args.out).resolve())
            pending = {task.remote(run, out, args.threads, **options): run for run in runs}

            def cancel(signum):  # a task cancelled under way stops its run (locked_execute)
                stopper.signal = signum
                for ref in pending:
                    ray.cancel(ref)
                return "the tasks not started are cancelled, those under way stop their runs"

            while pending:
                ready, _ = ray.wait(list(pending), timeout=WAKE_SECONDS)
                for ref in ready:
                    run = pending.pop(ref)
                    try:
                        progress.add(run, ray.get(ref))
                    except ray.exceptions.TaskCancelledError:
                        progress.add(run, (run.name, "not started", 0.0))
                progress.heed(received, cancel)
                progress.show(now=bool(ready))
        else:

            def stop(signum):
                under_way = stopper.stop(signum)
                said = f"no run starts now; SIGTERM sent to the runs under way ({under_way})"
                return f"{said}: each saves its training state and ends"

            with concurrent.futures.ThreadPoolExecutor(args.workers) as pool:
                futures = {
                    pool.submit(
                        execute, run, args.out, args.threads, stopper=stopper, **options
                    ): run
                    for run in runs
                }
                pending = set(futures)
                while pending:
                    done, pending = concurrent.futures.wait(
                        pending, timeout=WAKE_SECONDS, return_when="FIRST_COMPLETED"
                    )
                    for future in done:  # execute() catches a run's failure: this raises on a bug
                        progress.add(futures[future], future.result())
                    progress.heed(received, stop)
                    progress.show(now=bool(done))
        stopper.signal = stopper.signal or (received[0] if received else None)
    progress.bar.close()
    return progress.results, stopper.signal


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
    "--ray-dashboard",
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
    """--set's values are flags themselves ("--no-last-action"), which argparse would read as
    options: take them out here, up to the next option of the sweep's own. -> argv without them,
    the flag sets (None: no --set)"""
    if "--set" not in argv[: argv.index("--") if "--" in argv else len(argv)]:
        return argv, None
    start = argv.index("--set")
    end = next(
        (i for i in range(start + 1, len(argv)) if argv[i].split("=")[0] in OPTIONS), len(argv)
    )
    return argv[:start] + argv[end:], argv[start + 1 : end]


def parse_args(argv):
    argv, flag_sets = take_flag_sets(argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    parser = argparse.ArgumentParser(
        prog="python -m cleanmarl.sweep", description=__doc__.splitlines()[0]
    )
    add = parser.add_argument
    add("--scripts", nargs="+", default=["qmix"], help="qmix, qmix_lstm, qmix_memefficient, ...")
    add("--envs", nargs="+", required=True, help="--env-name of each env")
    add("--seeds", nargs="+", default=["1"], help="1-5, or 1 2 3")
    add(
        "--set",
        nargs="+",
        help='flag sets, each one quoted string ("" is the defaults), e.g. --set "" '
        '"--td-lambda 0" --no-last-action',
    )
    add("--out", required=True, help="sweep directory")
    add("--backend", choices=["local", "ray"], default="local")
    add("--threads", type=int, default=1, help="CPU threads (and Ray CPUs) per run")
    add("--workers", type=int, help="runs at once, local backend (default: cores / --threads)")
    add(
        "--ray-address",
        help="a running Ray cluster (default: start a local instance, on 127.0.0.1 only)",
    )
    add("--ray-dashboard", action="store_true", help="start the local Ray instance's dashboard")
    add("--gpus", type=float, default=0, help="GPUs per run, Ray backend")
    add("--print", action="store_true", help="print the commands, one per line, and exit")
    add("--index", type=int, help="run combination INDEX only (0-based; a slurm array task)")
    add(
        "--stop-at",
        type=float,
        help="stop a run once its last --stop-window evaluations average this score (win rate"
        " where the env reports battles, else return), e.g. 0.9",
    )
    add("--stop-window", type=int, default=10, help="evaluations averaged by --stop-at")
    add(
        "--absolute",
        type=int,
        default=0,
        metavar="K",
        help="re-evaluate each finished run's best checkpoint with K x its evaluation episodes"
        " (adds --save-model), e.g. 10",
    )
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    args.extra, args.set = extra, flag_sets
    return args


def out_of_range(args):
    """An error line for each numeric flag out of its range."""
    errors = []
    for flag, value in (("--threads", args.threads), ("--workers", args.workers)):
        if value is not None and value < 1:
            errors.append(f"{flag} {value}: must be 1 or more")
    if args.stop_window < 1:
        errors.append(f"--stop-window {args.stop_window}: must be 1 or more")
    for flag, value in (("--gpus", args.gpus), ("--absolute", args.absolute)):
        if not math.isfinite(value) or value < 0:
            errors.append(f"{flag} {value}: must be 0 (none) or more")
    if args.stop_at is not None and not math.isfinite(args.stop_at):
        errors.append(f"--stop-at {args.stop_at}: must be a finite score")
    return errors


def writable(out):
    """None where the sweep can write in out (made if need be), else why not (one line)."""
    try:
        Path(out).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        where = f" ({e.filename})" if e.filename and str(e.filename) != str(out) else ""
        return f"--out {out}: cannot write there: {e.strerror or e}{where}"
    return None


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else list(argv))
    if errors := out_of_range(args):
        sys.exit("\n".join(f"sweep: error: {e}" for e in errors))
    args.workers = args.workers or max(1, (os.cpu_count() or 1) // args.threads)
    unknown = [s for s in args.scripts if not script_file(s).is_file()]
    if unknown:
        sys.exit(
            f"sweep: error: no script {unknown[0]!r}: one of {ROOT} (qmix, qmix_lstm,"
            " qmix_memefficient, qmix_multienvs) or the path of a copy"
        )
    try:
        runs = grid(args)
    except ValueError as e:  # --seeds
        sys.exit(f"sweep: error: {e}")
    if args.print:
        commands = [
            f"cd {Path(args.out) / run.name} && {shlex.join(run.command())}" for run in runs
        ]
        print("\n".join(commands))
        return 0
    if args.index is not None:
        if not 0 <= args.index < len(runs):
            sys.exit(f"sweep: error: --index {args.index} not in [0, {len(runs)})")
        runs = [runs[args.index]]
    if problem := writable(args.out):
        sys.exit(f"sweep: error: {problem}")
    results, signum = run_all(runs, args)
    return summary(results, len(runs), args.stop_at, signum)


def summary(results, total, stop_at, signum):
    """Print the sweep's summary line and its failures. -> the exit status: 128 + the stop signal's
    number when stopped by one, else 1 if a run failed, else 0"""
    failed = [(name, status) for name, status, _ in results if status.startswith("failed")]
    stopped = sum(status.startswith("stopped") for _, status, _ in results)
    done = sum(status == "done" for _, status, _ in results) + stopped
    skipped = sum(status == "skipped" for _, status, _ in results)
    busy = [name for name, status, _ in results if status.startswith("skipped (under way")]
    elsewhere = f", {len(busy)} under way in another process (left alone)" if busy else ""
    if signum:
        interrupted = [status for _, status, _ in results if status.startswith("interrupted")]
        anew = sum(status.endswith("(begins anew)") for status in interrupted)
        resumable = len(interrupted) - anew
        waiting = sum(status == "not started" for _, status, _ in results)
        stopped = f"{resumable} {'run' if resumable == 1 else 'runs'} stopped (resumable)"
        if anew:
            stopped += f", {anew} stopped before their first training state (begin anew)"
        print(
            f"sweep: stopped by {signal.Signals(signum).name}: {stopped}, {waiting} not started,"
            f" {done + skipped} done{elsewhere}"
            + (f", {len(failed)} failed" if failed else "")
            + f", of {total} runs; the same command continues"
        )
    else:
        early = f" ({stopped} stopped early: --stop-at {stop_at})" if stopped else ""
        print(
            f"sweep: {done} done{early}, {skipped} skipped (finished before){elsewhere},"
            f" {len(failed)} failed, of {total} runs"
        )
    for name, status in sorted(failed):
        print(f"  {name}: {status}")
    return 128 + signum if signum else 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
