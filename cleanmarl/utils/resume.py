"""--resume: the whole training state, saved atomically in the run directory and put back exactly,
and the stop signals (Ctrl-C, SIGTERM) that save it before the run ends (docs/qmix.md, "Resume")."""

import os
import random
import signal
import sys
import time
import types

import numpy as np
import torch

from cleanmarl.utils.checkpoints import models_snapshot, restore_models
from cleanmarl.utils.layout import STATE_FILE, atomic_save

PARTS = {"script", "args", "step", "elapsed", "objects", "rngs", "models"}  # of a saved state


def catch_stop_signals(defer):
    """SIGINT and SIGTERM end the run without a traceback, exit status 128 + signal number.
    defer=False (nothing to save yet): at once. defer=True: appended to the returned list, which the
    loop reads once a pass (TrainingState.due) to save and stop; a second signal stops at once (the
    previous state stays whole)."""
    received = []

    def handler(signum, frame):
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
            self.restore(resume)

    def due(self, end=False):
        """Whether to save now: at the end, after a stop signal (read once here: `stopping` keeps
        what was read), or --checkpoint-every minutes after the last save."""
        self.stopping = bool(self.signals)
        return end or self.stopping or time.time() - self.time >= 60 * self.args.checkpoint_every

    def save(self, step):
        """Save the state of env step `step`, atomically (a kill mid-write keeps the last one)."""
        self.run.writer.flush()  # every log up to this state is on disk: a resume purges later ones
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
        state["wandb_id"] = self.run.wandb and self.run.wandb.id
        if atomic_save(tree_map(portable, state), os.path.join(self.run.dir, STATE_FILE)):
            self.state_step = step  # else: disk full, warned, the previous state kept
        self.time = time.time()

    def restore(self, state):
        """Put a saved state (load_state) back into the objects, the global RNGs and the run's
        checkpoints (models.json, latest and best: their evaluations are the records kept), then
        let the loaded copy of the objects go (the caller may keep `state` for the whole run)."""
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
        self.state_step = state["step"]
        restore_models(self.run.dir, state["models"])
        state["objects"].clear()  # the objects hold it now: a buffer's steps are not kept twice

    def stopped(self, step):
        """Stopped by a signal before the last step: print the line naming the saved state and the
        command that resumes it. -> the exit status, 128 + the signal's number; else None"""
        if not self.signals or step >= self.args.total_timesteps:  # after the last step: done
            return None
        name, run_dir = signal.Signals(self.signals[0]).name, self.run.dir
        state = f"the training state of step {self.state_step} is in {run_dir}"
        command = f"python {sys.argv[0]} --resume {run_dir}"
        print(f"stopped by {name} at step {step}; {state}: {command} continues it")
        return 128 + self.signals[0]


def load_state(run_dir, script):
    """The training state saved in run_dir by `script`, on the CPU. Raises ValueError (one line)."""
    path = os.path.join(run_dir, STATE_FILE)
    if not os.path.isdir(run_dir):
        raise ValueError(f"--resume: no directory {run_dir!r}")
    if not os.path.isfile(path):
        every = "runs write it every --checkpoint-every minutes"
        raise ValueError(f"--resume {run_dir!r}: no {STATE_FILE} in it ({every})")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or not PARTS <= set(state):
            raise ValueError("its parts are missing")
    except Exception as e:
        raise ValueError(
            f"--resume {run_dir!r}: its {STATE_FILE} is damaged ({type(e).__name__})"
        ) from None
    if state["script"] != script:
        raise ValueError(
            f"--resume {run_dir!r} is a run of {state['script']}: resume it with that script"
        )
    return state


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
