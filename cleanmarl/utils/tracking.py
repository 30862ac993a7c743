"""Where a run is watched: its directory, TensorBoard, Weights & Biases, and the progress bar or
status lines."""

import os
import sys
import time

from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from cleanmarl.utils.evaluations import purge_records, record_evaluation
from cleanmarl.utils.layout import MODEL_SUFFIX, make_run_dir, run_name
from cleanmarl.utils.video import video_due


class Run:
    """A run's directory (runs/{env_name}__{exp_name}__{seed}__{unix time}, or the resumed run's),
    its TensorBoard writer, its W&B run when asked and its clock. A resumed run writes on in its own
    TensorBoard and W&B runs and records: what was logged after its saved state is purged, not
    doubled. Raises ValueError (one line)."""

    def __init__(self, args, resume=None):
        if args.use_wnb and not wandb_importable():  # before a run directory is made for nothing
            raise ValueError("--use-wnb needs wandb: pip install wandb")
        name = run_name(args.env_name, args.exp_name, args.seed)
        self.dir = os.path.normpath(args.resume) if resume else make_run_dir(name)
        print(
            f"run directory: {self.dir} (tensorboard --logdir {os.path.dirname(self.dir)})",
            flush=True,
        )
        wandb_id = resume and resume["wandb_id"]
        self.wandb = (
            start_wandb(args, os.path.basename(self.dir), wandb_id) if args.use_wnb else None
        )
        self.writer = SummaryWriter(self.dir, purge_step=resume and resume["step"] + 1)
        self.clock = time.time() - (
            resume["elapsed"] if resume else 0.0
        )  # when it began, had it no breaks
        start = resume["step"] if resume else 0
        self.progress = Progress(args.total_timesteps, args.progress_bar, initial=start)
        self.eval_return = float("nan")  # the latest evaluation's, for the progress bar
        self.args, self.model_path = args, os.path.join(self.dir, args.exp_name + MODEL_SUFFIX)
        if resume:
            purge_records(self.dir, resume["step"])
        else:
            table = "".join(f"\n|{k}|{v}|" for k, v in vars(args).items())
            self.writer.add_text("hyperparameters", "|param|value|\n|-|-|" + table)

    def elapsed(self):
        """The run's own seconds so far, summed over its resumes."""
        return time.time() - self.clock

    def log(self, scalars, step):
        """Log scalars (tag -> value) and charts/SPS at env step `step` to TensorBoard (and W&B),
        and show the progress: the bar moves to `step`, with rollout/ep_reward, the latest
        evaluation and the steps/s."""
        sps = int(step / self.elapsed())
        for tag, value in (scalars | {"charts/SPS": sps}).items():
            self.writer.add_scalar(tag, value, step)
        self.progress.show(step, scalars["rollout/ep_reward"], self.eval_return, sps)

    def record_evaluation(self, step, returns, lengths, won=None, env=None):
        """evaluations.record_evaluation in this run, at its clock's time. -> the mean return"""
        elapsed = self.elapsed()
        self.eval_return = record_evaluation(
            self.dir, step, elapsed, returns, lengths, won, self.writer, env
        )
        return self.eval_return

    def video_due(self):
        """Whether this evaluation's first episode is recorded (--capture-video): every
        --video-every-th evaluation, the first included."""
        return video_due(self.args, self.dir)

    def close(self, envs):
        """Close the envs, the progress bar and the logs; name the model saved (--save-model)."""
        for env in envs:
            env.close()
        self.progress.close()
        self.writer.close()
        if self.wandb:
            self.wandb.finish()
        if self.args.save_model and os.path.exists(self.model_path):
            print(f"model saved to {self.model_path}")


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

    def show(self, step, ep_return, eval_return, sps):
        """Move to env step `step`, showing the training return, the latest evaluation's and the
        steps/s."""
        self.bar.update(step - self.step)
        self.step = step
        self.bar.set_postfix(
            ret=f"{ep_return:.3g}", eval=f"{eval_return:.3g}", sps=sps, refresh=False
        )
        if self.lines and time.time() - self.time >= 60:
            self.time = time.time()
            returns = f"return {ep_return:.3g}, eval {eval_return:.3g}"
            print(f"step {step}/{self.total}: {returns}, {sps} steps/s", flush=True)

    def close(self):
        self.bar.close()
