"""Run plumbing shared by the four QMIX scripts (docs/qmix.md, "Runs"), as CleanRL keeps cleanrl_utils beside its
scripts: the run directory, stop signals, progress, the memory probe, model checkpoints (--save-model, --load-model),
the training state that --resume continues from, and W&B. No learning code: everything a researcher changes stays in
the script. A failure a user can fix raises ValueError with a one-line message; the scripts print it and exit."""

import contextlib
import dataclasses
import itertools
import json
import mmap
import os
import random
import shutil
import signal
import sys
import time

import numpy as np
import threadpoolctl
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

STATE_FILE = "training_state.cleanmarl"  # in the run directory, next to the TensorBoard events
EVAL_FILE = "evaluations.jsonl"  # every evaluation's episodes, one JSON line per evaluation (cleanmarl.report reads it)
MODELS_FILE = "models.json"  # --save-model's latest checkpoint (its step) and best one (its step and evaluation score)
# What --resume lets change: how the run is watched and how long it goes on. Every other flag is the saved run's.
RESUME_MAY_CHANGE = {"resume", "total_timesteps", "checkpoint_every", "progress_bar", "device", "torch_threads"}
# When the run's training time began, had it run without a break: StateSaver sets it as the scripts set their start_time
# (a resumed run's saved elapsed time subtracted, once its state is restored), so each evaluation record's "elapsed" is
# the run's wall time summed over its resumes, not the calendar, and agrees with the elapsed time its state saves.
RUN_CLOCK = [time.time()]


def torch_device(name, threads):
    """torch.device for --device (auto: cuda when available), checked by allocating on it; torch's CPU threads and
    numpy's BLAS threads set to threads."""
    torch.set_num_threads(threads)
    # The acting forward is numpy (q_values_numpy). Left alone, numpy's OpenBLAS runs it on a thread per core, and on a
    # machine busy with other runs those threads can wait on each other: 1-18 ms per forward at 27m_vs_30m's sizes
    # beside two runs on 2 cores, against 0.044 ms on one thread (docs/qmix.md, implementation detail 15).
    threadpoolctl.threadpool_limits(threads, user_api="blas")
    name = ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name
    try:
        device = torch.device(name)
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as e:
        raise ValueError(f"--device {name!r} is not usable here: {str(e).splitlines()[0]}") from None
    return device


def seed_everything(seed, n):
    """Seed Python's, numpy's and torch's global generators (network weights, env libraries that use them) -> n numpy
    streams of their own that share no bits with each other or with the envs: np.random.default_rng(seed) is the very
    stream gymnasium seeds an env with, so reusing it for exploration or replay sampling would replay the env's."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return [np.random.default_rng(child) for child in np.random.SeedSequence(seed).spawn(n)]


def lazy_zeros(shape, dtype):
    """Zeros whose memory is committed page by page (4 KB) as they are written. np.zeros is lazy too, but numpy asks
    the kernel for 2 MB huge pages on large arrays, so one step written into a 2 MB region commits all of it."""
    memory = mmap.mmap(-1, max(1, int(np.prod(shape)) * np.dtype(dtype).itemsize))  # anonymous: zero-filled, lazy
    if hasattr(mmap, "MADV_NOHUGEPAGE"):
        memory.madvise(mmap.MADV_NOHUGEPAGE)
    return np.frombuffer(memory, dtype=dtype)[: int(np.prod(shape))].reshape(shape)


def buffer_too_big(buffer_size, slot_bytes, episode_limit):
    """The padded replay buffer can grow to buffer_size slots of slot_bytes: the error line when that exceeds the
    memory available (refused before it runs out hours in), else None."""
    available = available_memory()
    if available is None or buffer_size * slot_bytes <= available:
        return None
    return (f"the replay buffer needs {buffer_size * slot_bytes / 2**30:.1f} GiB (episodes padded to {episode_limit} "
            f"steps), {available / 2**30:.1f} GiB are available: use --buffer-size {available // slot_bytes} or less, "
            "or cleanmarl/qmix_memefficient.py (each real step stored once)")  # fmt: skip


def available_memory():
    """Bytes this process can still take: Linux's MemAvailable, within its cgroup's (container's) limit; else None."""
    try:
        with open("/proc/meminfo") as f:
            available = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return None
    with contextlib.suppress(OSError, ValueError), open("/sys/fs/cgroup/memory.max") as limit:  # "max": no limit
        with open("/sys/fs/cgroup/memory.current") as used:
            available = min(available, int(limit.read()) - int(used.read()))
    return available


def make_run_dir(run_name, root="runs"):
    """Create root/run_name, or root/run_name-2, -3, ... when taken: os.mkdir is atomic, so two runs started in the
    same second never share a directory (TensorBoard would merge their events, one would overwrite the other's model)."""
    os.makedirs(root, exist_ok=True)
    for i in itertools.count(1):
        with contextlib.suppress(FileExistsError):
            os.mkdir(run_dir := os.path.join(root, run_name + (f"-{i}" if i > 1 else "")))
            return run_dir


def catch_stop_signals(defer):
    """SIGINT (Ctrl-C) and SIGTERM end the run without a traceback, exit status 128 + signal number. defer=False (setup,
    evaluation only: nothing to save): at once. defer=True: recorded in the returned list, which the training loop
    checks once per pass (after the episode, its update and an evaluation when one is due), then saves the training
    state and names the command that resumes it; a second signal stops at once (the previous state stays whole)."""
    received = []

    def handler(signum, frame):
        if received or not defer:
            raise SystemExit(128 + signum)
        received.append(signum)
        # os.write, not print: a handler's print can re-enter a stream that tqdm is writing to
        os.write(
            2, f"\n{signal.Signals(signum).name}: stopping after this pass of the loop, saving the state\n".encode()
        )

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, handler)
    return received


class Progress:
    """A tqdm bar when stderr is a terminal; else one status line a minute (a bar's carriage returns would flood a
    redirected log); nothing when not enabled."""

    def __init__(self, total, enabled, initial=0):
        bar = enabled and sys.stderr.isatty()
        self.bar = tqdm(total=total, initial=initial, disable=not bar, unit="step", smoothing=0.05)
        self.lines, self.total, self.time, self.step = enabled and not bar, total, time.time(), initial

    def update(self, steps):
        self.bar.update(steps)
        self.step += steps

    def show(self, step, ep_return, eval_return, sps):
        self.bar.set_postfix(ret=f"{ep_return:.3g}", eval=f"{eval_return:.3g}", sps=sps, refresh=False)
        if self.lines and time.time() - self.time >= 60:
            self.time = time.time()
            print(
                f"step {step}/{self.total}: return {ep_return:.3g}, eval {eval_return:.3g}, {sps} steps/s", flush=True
            )

    def close(self):
        self.bar.close()


def atomic_save(obj, path):
    """torch.save to path.tmp, synced, then renamed over path: a kill or a crash mid-write keeps the previous file
    whole. Where it cannot be written (disk full), a warning line: the previous file is kept. -> whether it was saved."""
    try:
        with open(path + ".tmp", "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(path + ".tmp", path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.remove(path + ".tmp")
        print(f"{os.path.basename(sys.argv[0])}: warning: could not write {path} ({e.strerror or e}): the previous one "
              "is kept; the run goes on", flush=True)  # fmt: skip
        return False
    return True


def save_model(path, networks, args, reward_scale, step=None):
    """--save-model's checkpoint: the networks' state dicts (name -> network), the flags, the reward scale that turns
    the mixer's Q_tot into reward units (Q_tot * reward_scale) and the env step. Atomic (atomic_save). With a step, the
    run directory's models.json names it the latest, and keep_best() may copy it as the best. -> whether it was saved"""
    checkpoint = {name: network.state_dict() for name, network in networks.items()}
    checkpoint["args"], checkpoint["reward_scale"], checkpoint["step"] = vars(args), reward_scale, step
    if not atomic_save(checkpoint, path):
        return False
    if step is not None:
        run_dir, latest = os.path.dirname(path) or ".", dict(path=os.path.basename(path), step=int(step))
        write_json(
            read_json(os.path.join(run_dir, MODELS_FILE)) | {"latest": latest}, os.path.join(run_dir, MODELS_FILE)
        )
        keep_best(run_dir)
    return True


def read_json(path):
    """The JSON object in path; {} when there is none."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return {}


def write_json(obj, path):
    """json.dump to path.tmp, then renamed over path (atomic: a kill mid-write keeps the previous file)."""
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(path + ".tmp", path)


def evaluation_score(record):
    """An evaluation's score for choosing the best model: the win rate where the env reports battles, else the mean
    return. -> (score, metric name)"""
    if "battle_won" in record:
        return float(np.mean(record["battle_won"])), "battle_won"
    return float(np.mean(record["returns"])), "return"


def keep_best(run_dir):
    """Keep best/<exp>.cleanmarl_model: a copy of the latest checkpoint when its evaluation scores at least as high as
    every earlier one's (the later of equals: more training behind it). It is the checkpoint that the protocol's
    absolute metric re-evaluates with 10x the episodes (Gorsane et al., 2022; cleanmarl.sweep --absolute), not a
    running maximum of noisy evaluations. Called after each save and each recorded evaluation, as either may come
    second (qmix_multienvs saves when its evaluation starts and records it when it ends)."""
    models = read_json(os.path.join(run_dir, MODELS_FILE))
    latest, best = models.get("latest"), models.get("best")
    if not latest or (best and best["step"] >= latest["step"]):
        return
    with contextlib.suppress(FileNotFoundError), open(os.path.join(run_dir, EVAL_FILE)) as f:
        record = next((r for r in map(json.loads, f) if r["step"] == latest["step"]), None)
        if record is None or (best and evaluation_score(record)[0] < best["score"]):
            return
        score, metric = evaluation_score(record)
        name = os.path.join("best", latest["path"])  # best/qmix.cleanmarl_model: a folder keeps names and globs apart
        os.makedirs(os.path.join(run_dir, "best"), exist_ok=True)
        shutil.copyfile(os.path.join(run_dir, latest["path"]), os.path.join(run_dir, name + ".tmp"))
        os.replace(os.path.join(run_dir, name + ".tmp"), os.path.join(run_dir, name))
        best = dict(path=name, step=latest["step"], score=score, metric=metric)
        write_json(models | {"best": best}, os.path.join(run_dir, MODELS_FILE))


def load_checkpoint(path, flags, networks):
    """A checkpoint written by --save-model, on the CPU (it may come from a GPU run); checkpoints saved before the
    targets were kept get copies of the networks as targets. Raises ValueError (one line)."""
    if not os.path.isfile(path):
        raise ValueError(f"--load-model: no file {path!r}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # text, empty, truncated, a pickle of something else (torch's own message misleads here)
        raise ValueError(
            f"--load-model {path!r} is not a cleanmarl checkpoint (or is damaged: {type(e).__name__})"
        ) from None
    keys = (*networks[:2], "args")
    if not isinstance(checkpoint, dict) or not all(isinstance(checkpoint.get(k), dict) for k in keys):
        raise ValueError(f"--load-model {path!r} is not a cleanmarl checkpoint (no networks and flags in it)")
    checkpoint["args"].setdefault("last_action", False)  # saved before --last-action: trained without it
    if missing := [k for k in flags if k not in checkpoint["args"]]:
        raise ValueError(f"--load-model {path!r} is not a cleanmarl checkpoint (its flags lack {', '.join(missing)})")
    for target, online in zip(networks[2:], networks[:2], strict=True):
        checkpoint.setdefault(target, checkpoint[online])
    return checkpoint


def flag_mismatch(args, saved, names, source="--load-model was trained with", may_differ=("time_limit",)):
    """One line naming the first of `names` (but those that may differ) given with another value than in the `saved`
    flags, or None."""
    for name in names:
        if name not in may_differ and getattr(args, name) != saved[name]:
            flag = f"--{name.replace('_', '-')}"
            if isinstance(saved[name], bool):  # spelled as the flags are: --agent-ids / --no-agent-ids
                return f"{source} {flag.replace('--', '--no-') * (not saved[name]) or flag}"
            return f"{source} {flag} {saved[name]}, asked for {getattr(args, name)}"
    return None


def shape_mismatch(network, saved):
    """'NAME: [saved shape] in it, [shape] here' for the first weight of `network` whose shape differs from the
    checkpoint's state dict `saved`, or None. With the same env and flags that means other env inputs: a checkpoint
    from a cleanmarl whose env gave other observations or states."""
    for name, param in network.state_dict().items():
        shape = getattr(saved.get(name), "shape", None)
        if shape is not None and tuple(shape) != tuple(param.shape):
            return f"{name}: {list(shape)} in it, {list(param.shape)} here"
    return None


def load_networks(networks, saved, source):
    """network.load_state_dict(saved[name]) for each name -> network; ValueError (one line) naming what disagrees."""
    for name, network in networks.items():
        if mismatch := shape_mismatch(network, saved[name]):
            raise ValueError(f"{source} was saved for other env inputs ({name} {mismatch}): a checkpoint from a "
                             "cleanmarl whose env gave other observations or states; train it again")  # fmt: skip
    try:
        for name, network in networks.items():
            network.load_state_dict(saved[name])
    except (RuntimeError, TypeError, KeyError) as e:  # its flags and weights disagree: damaged or hand-edited
        raise ValueError(f"{source} is damaged: {(str(e).strip().splitlines() or [type(e).__name__])[0]}") from None


def tree_map(leaf, x):
    """x with leaf() applied to everything inside its dicts, lists and tuples."""
    if isinstance(x, dict):
        return {k: tree_map(leaf, v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return type(x)(tree_map(leaf, v) for v in x)
    return leaf(x)


def _portable(x):
    """numpy arrays as tensors, numpy scalars as Python's: what torch.load(weights_only=True) reads back."""
    if isinstance(
        x, np.ndarray
    ):  # shared, not copied (a replay buffer may fill the memory); torch.save writes its bytes
        return torch.from_numpy(x if x.flags.writeable else x.copy())
    return x.item() if isinstance(x, np.generic) else x


def as_numpy(x):
    """Tensors (saved numpy arrays) back to numpy: tree_map(as_numpy, saved) for what a script keeps in numpy."""
    return x.numpy() if isinstance(x, torch.Tensor) else x


class StateSaver:
    """Writes the whole training state atomically to run_dir/STATE_FILE (docs: Resume): each of `objects` (name -> a
    module, optimizer or buffer with state_dict(), a numpy Generator, an env with random_state or a VectorEnv with
    random_states(), else its attributes), the loop's counters and logs, the global RNGs (torch, numpy, random). From
    its creation on, SIGINT and SIGTERM are only recorded (catch_stop_signals): the loop saves, then stops."""

    def __init__(self, run_dir, script, args, objects, writer, wandb_run):
        self.run_dir, self.script, self.args, self.objects = run_dir, script, args, objects
        self.writer, self.wandb_run, self.stop_signals = writer, wandb_run, catch_stop_signals(defer=True)
        self.time, self.state_step, self.stopping = time.time(), None, False
        RUN_CLOCK[0] = time.time()  # a new run's training time starts here (restore() moves it back for a resumed one)

    def due(self, end=False):
        """Whether to save now: at the end, after a stop signal (the signals are read once here, and `stopping` keeps
        what was read, so that none arrives unsaved between this check and the loop's stop), or when --checkpoint-every
        minutes have passed since the last save."""
        self.stopping = bool(self.stop_signals)
        return end or self.stopping or time.time() - self.time >= 60 * self.args.checkpoint_every

    def save(self, loop):
        """Save the state; loop: the training loop's counters and logs, loop[0] its env step."""
        self.writer.flush()  # every log up to this state is on disk: a resumed run purges only the later ones
        states = {}
        for name, obj in self.objects.items():
            if hasattr(obj, "state_dict"):
                states[name] = obj.state_dict()
            elif isinstance(obj, np.random.Generator):
                states[name] = obj.bit_generator.state
            elif hasattr(obj, "random_states"):
                states[name] = obj.random_states()
            else:
                states[name] = obj.random_state if hasattr(obj, "random_state") else dict(vars(obj))
        rngs = dict(torch=torch.get_rng_state(), numpy=np.random.get_state(legacy=False), random=random.getstate())
        wandb_id = self.wandb_run and self.wandb_run.id
        state = dict(script=self.script, args=vars(self.args), objects=states, loop=loop, rngs=rngs, wandb_id=wandb_id)
        if atomic_save(
            tree_map(_portable, state), os.path.join(self.run_dir, STATE_FILE)
        ):  # disk full: warned, goes on
            self.state_step = loop[0]
        self.time = time.time()

    def restore(self, state):
        """Put a saved state back into the objects and the global RNGs. -> the saved loop."""
        for name, obj in self.objects.items():
            saved = state["objects"][name]
            if hasattr(obj, "load_state_dict"):
                obj.load_state_dict(saved)
            elif isinstance(obj, np.random.Generator):
                obj.bit_generator.state = saved
            elif hasattr(obj, "random_states"):
                obj.restore(saved)
            elif hasattr(obj, "random_state"):
                obj.random_state = saved
            else:
                vars(obj).update(saved)
        torch.set_rng_state(state["rngs"]["torch"])
        np.random.set_state(state["rngs"]["numpy"])
        random.setstate(state["rngs"]["random"])
        self.state_step = state["loop"][0]
        RUN_CLOCK[0] = time.time() - state["loop"][-1]  # every script's loop ends with its elapsed seconds
        return state["loop"]


def load_state(run_dir, script):
    """The training state saved in run_dir by `script`, on the CPU. Raises ValueError (one line)."""
    path = os.path.join(run_dir, STATE_FILE)
    if not os.path.isdir(run_dir):
        raise ValueError(f"--resume: no directory {run_dir!r}")
    if not os.path.isfile(path):
        raise ValueError(
            f"--resume {run_dir!r}: no {STATE_FILE} in it (runs write it every --checkpoint-every minutes)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or not {"script", "args", "objects", "loop", "rngs"} <= set(state):
            raise ValueError("its parts are missing")
    except Exception as e:
        raise ValueError(f"--resume {run_dir!r}: its {STATE_FILE} is damaged ({type(e).__name__})") from None
    if state["script"] != script:
        raise ValueError(f"--resume {run_dir!r} is a run of {state['script']}: resume it with that script")
    return state


def checkpoint_args(cli, args_class, checkpoint, flags):
    """--load-model's flags: the checkpoint's env and network flags as defaults (`cli`: tyro.cli with a default); any
    given on the command line must match them, but --time-limit. Raises ValueError (one line) naming the first that
    does not."""
    args = cli(args_class, default=args_class(**{k: checkpoint["args"][k] for k in flags}))
    if error := flag_mismatch(args, checkpoint["args"], flags):
        raise ValueError(error)
    return args


def resume_args(cli, args_class, state, run_dir):
    """The saved run's flags, with those of RESUME_MAY_CHANGE taken from the command line (`cli`: tyro.cli with a
    default). Raises ValueError (one line) naming a flag given with another value than the run's."""
    saved = {k: v for k, v in state["args"].items() if k in {f.name for f in dataclasses.fields(args_class)}}
    args = cli(args_class, default=args_class(**saved))
    fixed = [name for name in saved if name not in RESUME_MAY_CHANGE]
    if error := flag_mismatch(args, saved, fixed, f"--resume {run_dir!r} was run with", may_differ=()):
        raise ValueError(error)
    return args


def record_evaluation(run_dir, step, returns, lengths, won=None, writer=None, env=None):
    """Append an evaluation's per-episode returns, lengths (and battle_won) at env step `step` to run_dir/EVAL_FILE: the
    protocol's statistics need the episodes, not the TensorBoard mean (Gorsane et al., 2022). With a writer, log its
    eval/* scalars there; with an env that recorded an episode (--capture-video), write its video. -> the mean return"""
    record = dict(step=int(step), time=time.time(), elapsed=round(time.time() - RUN_CLOCK[0], 3))
    record.update(returns=[float(r) for r in returns], lengths=[int(n) for n in lengths])
    if won is not None:
        record["battle_won"] = [float(w) for w in won]
    with open(os.path.join(run_dir, EVAL_FILE), "a") as f:
        f.write(json.dumps(record) + "\n")
    keep_best(run_dir)
    if writer is not None:
        writer.add_scalar("eval/ep_reward", np.mean(returns), step)
        writer.add_scalar("eval/std_ep_reward", np.std(returns), step)
        writer.add_scalar("eval/ep_length", np.mean(lengths), step)
        if won is not None:
            writer.add_scalar("eval/battle_won", np.mean(won), step)
    if env is not None and (frames := env.take_frames()):
        write_video(frames, os.path.join(run_dir, "videos", f"eval_step_{int(step)}"), writer, step)
    return float(np.mean(returns))


VIDEO_FPS = 10  # frames (env steps) per second in the videos of --capture-video


def prepare_video(env, capture_video):
    """With --capture-video: fail now, in one line (ValueError), where the env cannot draw or no video writer is
    installed, rather than at the first evaluation; then the env records its next episode (the first evaluation's, or
    --eval-only's). Drawing uses no random state: a run is the same with or without videos."""
    if capture_video:
        try:
            import imageio.v3  # noqa: F401
        except ImportError:
            raise ValueError("--capture-video needs imageio: pip install 'cleanmarl[video]'") from None
        env.render_frame()  # EnvError (a ValueError) where it cannot
        env.recording = True


def video_due(args, run_dir):
    """Whether this evaluation's first episode is recorded: every --video-every-th evaluation, the first included."""
    if not args.capture_video:
        return False
    with contextlib.suppress(FileNotFoundError), open(os.path.join(run_dir, EVAL_FILE)) as f:
        return sum(1 for _ in f) % args.video_every == 0
    return True


def write_video(frames, path, writer=None, step=None):
    """frames [T, H, W, 3] uint8 -> path.mp4 (H.264 through imageio-ffmpeg), or path.gif where ffmpeg is missing; also
    an animated GIF in TensorBoard (an image summary: TensorBoard plays GIFs) and in W&B when a W&B run is on.
    -> the file written"""
    import imageio.v3 as iio

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    frames = np.stack(frames)
    pad = [(0, 0), (0, frames.shape[1] % 2), (0, frames.shape[2] % 2), (0, 0)]  # H.264 wants even sides
    frames = np.pad(frames, pad, mode="edge") if any(p[1] for p in pad) else frames
    try:  # imageio's ffmpeg plugin (imageio-ffmpeg)
        import imageio

        with imageio.get_writer(path + ".mp4", fps=VIDEO_FPS, macro_block_size=2, ffmpeg_log_level="error") as video:
            for frame in frames:
                video.append_data(frame)
        written = path + ".mp4"
    except (ImportError, OSError, RuntimeError):  # no ffmpeg here: a GIF (pillow)
        written = path + ".gif"
        iio.imwrite(written, frames, duration=1000 / VIDEO_FPS, loop=0)
    if writer is not None:
        from tensorboard.compat.proto.summary_pb2 import Summary

        small = frames[:, :: max(1, frames.shape[1] // 256), :: max(1, frames.shape[2] // 256)]  # small event files
        gif = iio.imwrite("<bytes>", small, extension=".gif", duration=1000 / VIDEO_FPS, loop=0)
        image = Summary.Image(height=small.shape[1], width=small.shape[2], colorspace=3, encoded_image_string=gif)
        writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag="eval/video", image=image)]), step)
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.run.log({"eval/video": wandb.Video(written, format=written[-3:])}, commit=False)
    return written


def print_evaluation(checkpoint, env, returns, lengths, won):
    """--eval-only's summary line of evaluate()'s results; its episodes are also written next to the checkpoint, in
    <checkpoint name>.eval.json (best/qmix.eval.json: the absolute metric of a best checkpoint: keep_best, cleanmarl.report),
    and the video of its first episode where env recorded it (--capture-video), as <checkpoint name>.mp4."""
    summary = f"eval over {len(returns)} episodes: return {np.mean(returns):.3f} +- {np.std(returns):.3f}"
    print(summary + f", length {np.mean(lengths):.1f}" + (f", battle_won {np.mean(won):.2f}" if won else ""))
    record = dict(checkpoint=os.path.basename(checkpoint), returns=[float(r) for r in returns],
                  lengths=[int(n) for n in lengths]) | ({"battle_won": [float(w) for w in won]} if won else {})  # fmt: skip
    try:
        write_json(record, checkpoint.removesuffix(".cleanmarl_model") + ".eval.json")
    except OSError as e:  # a read-only folder: the line above is the result
        print(f"{os.path.basename(sys.argv[0])}: warning: could not write the episodes next to {checkpoint} ({e})")
    if frames := env.take_frames():
        print(f"video: {write_video(frames, checkpoint.removesuffix('.cleanmarl_model'))}")


def start_run(args, resume=None):
    """The run directory (runs/{env_name}__{exp_name}__{seed}__{unix time}, or the resumed run's), W&B when asked, and
    the TensorBoard writer. A resumed run writes on in its own TensorBoard and W&B runs: what was logged after its saved
    state is purged, not doubled (SummaryWriter's purge_step). -> run_dir, writer, wandb_run (or None)"""
    if args.use_wnb and not wandb_importable():  # before a run directory is made for nothing
        sys.exit(f"{os.path.basename(sys.argv[0])}: error: --use-wnb needs wandb: pip install wandb")
    run_name = f"{args.env_name.replace(':', '_').replace('/', '_')}__{args.exp_name}__{args.seed}__{int(time.time())}"
    run_dir = os.path.normpath(args.resume) if resume else make_run_dir(run_name)
    print(f"run directory: {run_dir} (tensorboard --logdir {os.path.dirname(run_dir)})", flush=True)
    wandb_run = args.use_wnb and start_wandb(args, os.path.basename(run_dir), resume and resume["wandb_id"]) or None
    writer = SummaryWriter(run_dir, purge_step=resume and resume["loop"][0] + 1)
    if resume and os.path.exists(records := os.path.join(run_dir, EVAL_FILE)):  # the same purge for the records
        with open(records) as f:
            kept = [line for line in f if json.loads(line)["step"] <= resume["loop"][0]]
        with open(records, "w") as f:
            f.writelines(kept)
    if not resume:
        writer.add_text(
            "hyperparameters", "|param|value|\n|-|-|" + "".join(f"\n|{k}|{v}|" for k, v in vars(args).items())
        )
    return run_dir, writer, wandb_run


def end_run(envs, progress, saver, model_path):
    """Close the envs and the logs. Stopped by a signal before the end: name the saved state and the command that
    resumes it, and exit with 128 + the signal's number; else name the saved model (model_path, when saved)."""
    for env in envs:
        env.close()
    progress.close()
    saver.writer.close()
    if saver.wandb_run:
        saver.wandb_run.finish()
    if saver.stop_signals and progress.step < progress.total:  # a signal after the last step changes nothing
        run_dir, signum = saver.run_dir, saver.stop_signals[0]
        print(f"stopped by {signal.Signals(signum).name} at step {progress.step}; the training state of step {saver.state_step} is in {run_dir}: "
              f"python {sys.argv[0]} --resume {run_dir} continues it", flush=True)  # fmt: skip
        sys.exit(128 + signum)
    if model_path:
        print(f"model saved to {model_path}")


def wandb_importable():
    """Whether `import wandb` works (an import, not find_spec: a broken install counts as missing)."""
    try:
        import wandb  # noqa: F401
    except ImportError:
        return False
    return True


def start_wandb(args, run_name, run_id=None):
    """wandb.init syncing the TensorBoard logs; run_id (a resumed run's) continues that W&B run. -> the W&B run."""
    import wandb

    return wandb.init(project=args.wnb_project or None, entity=args.wnb_entity or None, sync_tensorboard=True,
                      config=vars(args), name=run_name, save_code=True, id=run_id, resume=run_id and "allow")  # fmt: skip
