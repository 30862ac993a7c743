"""--resume: the whole training state, saved atomically in the run directory and put back exactly,
and the stop signals (Ctrl-C, SIGTERM) that save it before the run ends (docs/qmix.md, "Resume")."""

import dataclasses
import os
import random
import signal
import sys
import time
import types

import numpy as np
import torch

from cleanmarl.utils.checkpoints import check_snapshot, models_snapshot, restore_models
from cleanmarl.utils.guard import lock_run_dir
from cleanmarl.utils.layout import STATE_FILE, WRITE_ERRORS, atomic_save, of_type
from cleanmarl.utils.logs import logged_values

PARTS = {"script", "args", "step", "elapsed", "objects", "rngs", "models", "logs"}  # of a state


def catch_stop_signals(defer):
    """SIGINT and SIGTERM end the run without a traceback, exit status 128 + signal number.
    defer=False (nothing to save yet): at once. defer=True: appended to the returned list, which the
    loop reads once a pass (TrainingState.due) to save and stop; a second signal stops at once (the
    previous state stays whole)."""
    received = []

    def handler(signum, frame):
        if not defer:  # os.write: a print could re-enter a stream being written
            name = signal.Signals(signum).name
            os.write(2, f"\n{name}: stopped before training began; nothing was saved\n".encode())
        if received or not defer:
            raise SystemExit(128 + signum)
        received.append(signum)
        name = signal.Signals(signum).name  # os.write: a print could re-enter tqdm's stream
        os.write(2, f"\n{name}: stopping after this pass of the loop, saving the state\n".encode())

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, handler)
    return received


def stateful(x):
    """Whether x holds state a resumed run needs: a module, optimizer, buffer, env or Generator."""
    keys = ("state_dict", "random_state", "random_states")
    return isinstance(x, np.random.Generator) or any(hasattr(x, k) for k in keys)


def unsaved(objects, namespace):
    """The names in `namespace` (a script's globals()) bound to a stateful object that is neither
    one of `objects` nor an attribute of one (a buffer's RNG): what --resume would silently lose."""
    saved = {id(o) for o in objects.values()}
    saved |= {id(v) for o in objects.values() for v in getattr(o, "__dict__", {}).values()}
    skip = (type, types.ModuleType, types.FunctionType)
    return [
        name
        for name, value in namespace.items()
        if not isinstance(value, skip) and stateful(value) and id(value) not in saved
    ]


class TrainingState:
    """The training state (docs: Resume) of a `run` (tracking.Run): each of `objects` (name -> a
    module, optimizer or buffer with state_dict(), a numpy Generator, an env with random_state or a
    VectorEnv with random_states(), else its attributes: the loop's dataclass), the global RNGs, and
    the run's latest and best checkpoints as at the saved step. With `namespace`, a stateful object
    left out of `objects` is refused (ValueError, one line); with `resume` (load_state), restored.
    From its creation on, SIGINT and SIGTERM are only recorded: the loop saves, then stops."""

    def __init__(self, run, args, objects, resume=None, namespace=None):
        if names := unsaved(objects, namespace or {}):
            raise ValueError(
                f"{names[0]} is not in the training state: add it to what --resume saves"
            )
        self.run, self.script, self.args = run, os.path.basename(sys.argv[0]), args
        self.objects, self.signals = objects, catch_stop_signals(defer=True)
        self.time, self.state_step, self.stopping = time.time(), None, False
        if resume:
            self.restore(resume)  # in memory: a state that does not fit is refused here
        run.open(resume)
        if resume:
            try:
                restore_models(run.dir, resume["models"])
            except WRITE_ERRORS as e:
                raise ValueError(f"cannot write {run.dir} ({e.strerror or e})") from None

    def due(self, end=False):
        """Whether to save now: at the end, after a stop signal (read once here: `stopping` keeps
        what was read), or --checkpoint-every minutes after the last save."""
        self.stopping = bool(self.signals)
        return end or self.stopping or time.time() - self.time >= 60 * self.args.checkpoint_every

    def save(self, step):
        """Save the state of env step `step`, atomically (a kill mid-write keeps the last one)."""
        # every log up to this state is on disk: a resume purges later ones
        self.run.tensorboard(lambda w: w.flush())
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
        rngs = dict(torch=torch.get_rng_state(), numpy=np.random.get_state(legacy=False))
        rngs["random"] = random.getstate()
        state = dict(
            script=self.script, args=vars(self.args), step=step, elapsed=self.run.elapsed()
        )
        state.update(objects=states, rngs=rngs, models=models_snapshot(self.run.dir))
        state["logs"] = self.run.pending  # what the next log averages
        state["wandb_id"] = self.run.wandb and self.run.wandb.id
        if atomic_save(tree_map(portable, state), os.path.join(self.run.dir, STATE_FILE)):
            self.state_step = step  # else: disk full, warned, the previous state kept
        self.time = time.time()

    def restore(self, state):
        """Put a saved state (load_state) back into the objects and the global RNGs, then let the
        loaded copy of the objects go (the caller may keep `state` for the whole run); the run's
        checkpoints (models.json, latest and best) are put back once the run is open. Raises
        ValueError (one line) naming the first part that does not fit."""
        for name, obj in self.objects.items():
            try:
                restore_object(obj, state["objects"][name])
            except Exception as e:  # a hand-edited or damaged state: any kind of error
                why = (str(e).strip().splitlines() or [type(e).__name__])[0]
                raise ValueError(f"its {STATE_FILE} does not fit ({name}: {why})") from None
        try:
            torch.set_rng_state(state["rngs"]["torch"])
            np.random.set_state(state["rngs"]["numpy"])
            random.setstate(state["rngs"]["random"])
        except Exception as e:
            raise ValueError(f"its {STATE_FILE} is damaged (RNG: {type(e).__name__})") from None
        self.run.pending, self.state_step = state["logs"], state["step"]
        state["objects"].clear()  # the objects hold it now: a buffer's steps are not kept twice

    def stopped(self, step):
        """The run's last word: stopped by a signal before the last step, the line naming the saved
        state and the command that resumes it; a write that failed to the end, what is missing.
        Later signals are ignored (Python's exit would let them kill a finished run). -> the exit
        status: 128 + the signal's number, 1 where a record or the last state is missing, else
        None"""
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)
        run_dir, missing = self.run.dir, []
        if self.run.unwritten:
            steps = ", ".join(str(r["step"]) for r in self.run.unwritten)
            missing.append(f"the evaluations of steps {steps} could not be written to {run_dir}")
        if self.state_step != step:
            saved = "no training state" if self.state_step is None else f"step {self.state_step}'s"
            missing.append(f"the training state could not be written: {saved} is the last saved")
        if self.signals and step < self.args.total_timesteps:  # else: done
            name = signal.Signals(self.signals[0]).name
            state = f"the training state of step {self.state_step} is in {run_dir}"
            command = f"python {sys.argv[0]} --resume {run_dir}"
            print(f"stopped by {name} at step {step}; {state}: {command} continues it")
        for line in missing:
            print(f"{self.script}: error: {line}", file=sys.stderr)
        if self.signals and step < self.args.total_timesteps:
            return 128 + self.signals[0]
        return 1 if missing else None


def load_state(run_dir):
    """The training state saved in run_dir, on the CPU, checked, with the run held for this
    process (state["lock"]: guard.lock_run_dir) before it is read. Raises ValueError (one line)
    with nothing written."""
    path = os.path.join(run_dir, STATE_FILE)
    if not os.path.isdir(run_dir):
        raise ValueError(f"--resume: no directory {run_dir!r}")
    if not os.path.isfile(path):
        every = "runs write it every --checkpoint-every minutes"
        raise ValueError(f"--resume {run_dir!r}: no {STATE_FILE} in it ({every})")
    try:
        lock = lock_run_dir(run_dir)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # truncated, flipped, not a zip, a pickle of something else
            raise ValueError(f"its {STATE_FILE} is damaged ({type(e).__name__})") from None
        if problem := state_problem(state):
            raise ValueError(problem)
        check_snapshot(run_dir, state["models"])
    except ValueError as e:
        raise ValueError(f"--resume {run_dir!r}: {e}") from None
    return state | dict(lock=lock)


def state_problem(state):
    """What makes `state` no training state (its parts and their kinds), or None."""
    if not isinstance(state, dict) or not PARTS <= set(state):
        return f"its {STATE_FILE} is damaged (its parts are missing)"
    kinds = dict(script=str, args=dict, step=int, elapsed=float, objects=dict, rngs=dict)
    kinds |= dict(models=dict, logs=dict)
    for part, kind in kinds.items():
        if not isinstance(state[part], kind) or isinstance(state[part], bool):
            return f"its {STATE_FILE} is damaged ({part} is no {kind.__name__})"
    if state["step"] < 0 or not {"torch", "numpy", "random"} <= set(state["rngs"]):
        return f"its {STATE_FILE} is damaged (step or RNGs)"
    if not all(isinstance(k, str) and logged_values(v) for k, v in state["logs"].items()):
        return f"its {STATE_FILE} is damaged (logs)"
    return None


def restore_object(obj, saved):
    """Put `saved` (TrainingState.save) back into obj, as save() took it: an object of the script's
    own (a buffer, a rollout) gets its numpy arrays back as numpy arrays (saved as tensors)."""
    if isinstance(obj, torch.nn.Module | torch.optim.Optimizer):
        obj.load_state_dict(saved)
    elif hasattr(obj, "load_state_dict"):
        obj.load_state_dict(tree_map(as_numpy, saved))
    elif isinstance(obj, np.random.Generator):
        obj.bit_generator.state = saved
    elif hasattr(obj, "random_states"):
        obj.restore(saved)
    elif hasattr(obj, "random_state"):
        obj.random_state = saved
    else:  # its attributes (the loop's dataclass: its fields), each of the kind it has now
        kinds = {k: float if of_type(v, float) else type(v) for k, v in vars(obj).items()}
        if dataclasses.is_dataclass(obj):
            kinds = {field.name: field.type for field in dataclasses.fields(obj)}
        for name, kind in kinds.items():
            if not of_type(saved[name], kind):
                raise ValueError(f"{name} is {saved[name]!r}")
        vars(obj).update(saved)


def tree_map(leaf, x):
    """x with leaf() applied to everything inside its dicts, lists and tuples."""
    if isinstance(x, dict):
        return {k: tree_map(leaf, v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return type(x)(tree_map(leaf, v) for v in x)
    return leaf(x)


def portable(x):
    """numpy arrays as tensors (shared, not copied: a buffer may fill the memory), numpy scalars as
    Python's: what torch.load(weights_only=True) reads back."""
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x if x.flags.writeable else x.copy())
    return x.item() if isinstance(x, np.generic) else x


def as_numpy(x):
    """Tensors (saved numpy arrays) back to numpy: tree_map(as_numpy, saved)."""
    return x.numpy() if isinstance(x, torch.Tensor) else x
