"""Where a run is watched: its directory, TensorBoard, Weights & Biases, and the progress bar or
status lines."""

import os
import sys
import threading
import time

import numpy as np
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from cleanmarl.utils.checkpoints import save_model
from cleanmarl.utils.evaluations import episode_results, purge_records, record_evaluation
from cleanmarl.utils.guard import lock_run_dir
from cleanmarl.utils.layout import (
    MODEL_SUFFIX,
    VIDEO_DIR,
    WRITE_ERRORS,
    make_run_dir,
    run_name,
    saved,
    warn,
)
from cleanmarl.utils.logs import mean
from cleanmarl.utils.video import video_due, write_video


class Run:
    """A run's directory (runs/{env_name}__{exp_name}__{seed}__{unix time}, or the resumed run's,
    held by this process: guard.lock_run_dir), its TensorBoard writer, its W&B run when asked and
    its clock. open() starts the logs (TrainingState calls it once a resumed state is back in
    memory, so a damaged state is refused before anything is written). A resumed run writes on in
    its own TensorBoard and W&B runs and records: what was logged after its saved state is purged,
    not doubled. A failed write is one warning line and tried again at the next log or evaluation.
    Raises ValueError (one line)."""

    def __init__(self, args, resume=None):
        if args.use_wnb and not wandb_importable():  # before a run directory is made for nothing
            raise ValueError("--use-wnb needs wandb: pip install wandb")
        if resume:
            self.dir, self.lock = os.path.normpath(args.resume), resume["lock"]
        else:
            self.dir = make_run_dir(run_name(args.env_name, args.exp_name, args.seed))
            self.lock = lock_run_dir(self.dir)
        self.args, self.model_path = args, os.path.join(self.dir, args.exp_name + MODEL_SUFFIX)
        self.writer, self.wandb, self.unwritten, self.writer_failed = None, None, [], False
        self.pending = {}  # tag -> the values add() took since the last log (the training state)
        self.eval_return = float("nan")  # the latest evaluation's, for the progress bar
        self.clock = time.time() - (resume["elapsed"] if resume else 0.0)  # had it no breaks

    def save_model(self, networks, reward_scale, step):
        """--save-model's checkpoint of this run at env step `step` (checkpoints.save_model)."""
        return save_model(self.model_path, networks, self.args, reward_scale, step)

    def open(self, resume=None):
        """Start W&B (a new run's directory is removed where it cannot), TensorBoard, the progress
        bar; a resumed run's records after its state are purged."""
        logdir = os.path.dirname(self.dir)
        print(f"run directory: {self.dir} (tensorboard --logdir {logdir})", flush=True)
        if self.args.use_wnb:
            try:
                self.wandb = start_wandb(
                    self.args, os.path.basename(self.dir), resume and resume["wandb_id"]
                )
            except Exception as e:  # no API key, no network: wandb raises its own kinds
                if not resume:  # empty: nothing is written before W&B starts
                    os.rmdir(self.dir)
                why = (str(e).strip().splitlines() or [type(e).__name__])[0]
                raise ValueError(
                    f"--use-wnb: W&B did not start ({why}); wandb login, or WANDB_MODE=offline"
                ) from None
        if resume:
            purge_records(self.dir, resume["step"])
        threading.excepthook = quiet_write_errors(threading.excepthook)
        self.purge_step = resume and resume["step"] + 1
        table = "".join(f"\n|{k}|{v}|" for k, v in vars(self.args).items())
        if not resume:
            self.tensorboard(
                lambda w: w.add_text("hyperparameters", "|param|value|\n|-|-|" + table)
            )
        start = resume["step"] if resume else 0
        self.progress = Progress(self.args.total_timesteps, self.args.progress_bar, initial=start)

    def tensorboard(self, write):
        """write(writer) to TensorBoard; where the disk refuses it: one warning line (once until
        it works again), and a new writer (event file) at the next call."""
        try:
            if self.writer is None:
                self.writer = SummaryWriter(self.dir, purge_step=self.purge_step)
                self.purge_step = None  # once: a later writer purges nothing
            write(self.writer)
            self.writer_failed = False
        except WRITE_ERRORS as e:
            self.writer = None
            if not self.writer_failed:
                self.writer_failed = True
                warn(f"could not write TensorBoard's logs in {self.dir} ({reason(e)}): goes on")

    def elapsed(self):
        """The run's own seconds so far, summed over its resumes."""
        return time.time() - self.clock

    def add(self, scalars):
        """Keep scalars (tag -> a number or a tensor; None: not logged) for the next log(), which
        logs each tag's mean: an episode's rollout/*, an update's train/* (tensors: read at the log,
        not at each update)."""
        for tag, value in scalars.items():
            if value is not None:
                self.pending.setdefault(tag, []).append(value)

    def log(self, scalars, step):
        """Log the mean of each tag add() took since the last log, scalars (tag -> value) and
        charts/SPS at env step `step` to TensorBoard (and W&B), and show the progress: the bar moves
        to `step`, with rollout/ep_reward, the latest evaluation and the steps/s."""
        scalars = {tag: mean(values) for tag, values in self.pending.items()} | scalars
        self.pending = {}
        sps = int(step / self.elapsed())
        items = (scalars | {"charts/SPS": sps}).items()
        self.tensorboard(lambda w: [w.add_scalar(tag, value, step) for tag, value in items])
        shares = {k[7:]: v for k, v in scalars.items() if k.startswith("charts/")}  # a script's
        self.progress.show(step, scalars["rollout/ep_reward"], self.eval_return, sps, shares)

    def record_evaluation(self, step, episodes, env=None):
        """Record an evaluation's episodes (evaluations.episode_results; record_evaluation, at this
        run's clock), its eval/* scalars and, where env recorded an episode (--capture-video), its
        video."""
        returns, lengths, won = episode_results(episodes)
        self.unwritten = record_evaluation(
            self.dir, step, self.elapsed(), returns, lengths, won, self.unwritten
        )
        self.eval_return = float(np.mean(returns))
        scalars = {"eval/ep_reward": self.eval_return, "eval/std_ep_reward": np.std(returns)}
        scalars |= {"eval/ep_length": np.mean(lengths)}
        if won is not None:
            scalars["eval/battle_won"] = np.mean(won)
        self.tensorboard(lambda w: [w.add_scalar(tag, v, step) for tag, v in scalars.items()])
        if env is not None and (frames := env.take_frames()):
            path = os.path.join(self.dir, VIDEO_DIR, f"eval_step_{int(step)}")
            saved(path, lambda: write_video(frames, path, self.writer, step))

    def video_due(self):
        """Whether this evaluation's first episode is recorded (--capture-video): every
        --video-every-th evaluation, the first included."""
        return video_due(self.args, self.dir)

    def close(self, envs):
        """Close the envs, the progress bar and the logs; name the model saved (--save-model)."""
        for env in envs:
            env.close()
        self.progress.close()
        self.tensorboard(lambda w: w.close())
        if self.wandb:
            self.wandb.finish()
        if self.args.save_model and os.path.exists(self.model_path):
            print(f"model saved to {self.model_path}")


def reason(e):
    """An error's reason, one line."""
    return getattr(e, "strerror", None) or (str(e).strip().splitlines() or [type(e).__name__])[-1]


def quiet_write_errors(hook):
    """threading.excepthook that leaves out TensorBoard's writer thread failing to write (the run
    warns in one line at its next log: Run.tensorboard) and passes everything else to `hook`."""
    if getattr(hook, "quiet_write_errors", False):
        return hook

    def quiet(args):
        if (
            not isinstance(args.exc_value, WRITE_ERRORS)
            or "AsyncWriter" not in type(args.thread).__name__
        ):
            hook(args)

    quiet.quiet_write_errors = True
    return quiet


def wandb_importable():
    """Whether `import wandb` works (an import: a broken install counts as missing)."""
    try:
        import wandb  # noqa: F401
    except ImportError:
        return False
    return True


def start_wandb(args, name, run_id=None):
    """wandb.init syncing the TensorBoard logs; run_id (a resumed run's) continues that W&B run. ->
    the W&B run"""
    import wandb

    return wandb.init(
        project=args.wnb_project or None,
        entity=args.wnb_entity or None,
        sync_tensorboard=True,
        config=vars(args),
        name=name,
        save_code=True,
        id=run_id,
        resume=run_id and "allow",
    )


class Progress:
    """A tqdm bar when stderr is a terminal; else one status line a minute (a bar's carriage returns
    would flood a redirected log); nothing when not enabled."""

    def __init__(self, total, enabled, initial=0):
        bar = enabled and sys.stderr.isatty()
        self.bar = tqdm(total=total, initial=initial, disable=not bar, unit="step", smoothing=0.05)
        self.lines, self.total, self.time, self.step = (
            enabled and not bar,
            total,
            time.time(),
            initial,
        )

    def show(self, step, ep_return, eval_return, sps, shares=None):
        """Move to env step `step`, showing the training return, the latest evaluation's, the
        steps/s and shares (name -> a fraction, as a percentage: qmix_multienvs.py's envs_busy)."""
        self.bar.update(step - self.step)
        self.step = step
        shown = {k: f"{v:.0%}" for k, v in (shares or {}).items()}
        self.bar.set_postfix(
            ret=f"{ep_return:.3g}", eval=f"{eval_return:.3g}", sps=sps, **shown, refresh=False
        )
        if self.lines and time.time() - self.time >= 60:
            self.time = time.time()
            returns = f"return {ep_return:.3g}, eval {eval_return:.3g}"
            extra = "".join(f", {k.replace('_', ' ')} {v}" for k, v in shown.items())
            print(f"step {step}/{self.total}: {returns}, {sps} steps/s{extra}", flush=True)

    def close(self):
        self.bar.close()
