"""num_envs copies of one env, each in its own worker process, stepped at once (docs/env.md, "Vector envs").

gymnasium's AsyncVectorEnv does the work: observations come back through shared memory, a worker's exception is
raised again in the parent, and with autoreset_mode SAME_STEP an env that ends an episode resets in the same step and
hands its final observation back in `info`, which truncated episodes need to bootstrap from. This module adapts the
env API to it (a Dict observation of obs, state and avail_actions; MultiDiscrete actions) and owns the workers' life:

- env i is make_env(..., seed=seed + i), built in its worker: no random state is inherited from the parent;
- play_async() has the workers play whole episodes (evaluation) while the parent goes on; play_wait() collects them;
- resume: start_states() is each env's random state at the start of its current episode (MultiAgentEnv.random_state);
  restore(states, actions) on a fresh VectorEnv of the same arguments sets them and replays each episode's actions so
  far, which rebuilds the envs' inner state; random_states() and restore(states) alone suit envs between episodes;
- workers are forked (a worker starts in milliseconds; spawn would import the training script in each). When the
  parent dies, even by SIGKILL, each reads end-of-file on its pipe once the parent and the later workers (which
  inherited copies of its pipe's parent end) are gone; on Linux they also ask the kernel to SIGKILL them at once
  (prctl PR_SET_PDEATHSIG), which covers a worker busy in a long env step;
- workers ignore SIGINT and SIGTERM, which a terminal or a job scheduler sends to the whole process group: the parent
  decides when to stop and closes them (SIGKILL for any that do not exit), also at interpreter exit;
- the parent holds SIGINT and SIGTERM back while it forks the workers (a child inherits the held mask, so one that
  arrives before the worker ignores them is dropped, not run by the parent's handler in the child) and while it closes
  them (a second Ctrl-C mid-close would leave some workers unclosed, reading end-of-file): a signal held back is
  delivered when the block ends;
- a worker's exception becomes one WorkerError line naming the env, and the other workers are stopped.
"""

import atexit
import contextlib
import ctypes
import functools
import multiprocessing
import os
import signal
import threading

import gymnasium as gym
import numpy as np

from cleanmarl.env import EnvError, make_env


class WorkerError(EnvError):
    """An env failed in its worker process (or could not be built there). The message is one line naming the env."""


@contextlib.contextmanager
def _stop_signals_held():
    """SIGINT and SIGTERM stay pending inside the block and are delivered (their handlers run) when it ends."""
    held = {signal.SIGINT, signal.SIGTERM}
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield  # no signal masks (Windows), or not the thread Python runs signal handlers in
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class _WorkerEnv(gym.Env):
    """One env of the vector, inside its worker: the env API as a gymnasium env."""

    def __init__(self, index, env_type, env_name, seed, kwargs, parent_pid):
        if os.getpid() != parent_pid:  # a worker (gymnasium also builds env 0 in the parent, to read the spaces)
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # one held back since the fork is dropped here
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            if hasattr(signal, "pthread_sigmask"):  # held back from the fork (see _stop_signals_held)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
            with contextlib.suppress(OSError, AttributeError):  # Linux only
                ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
            if os.getppid() != parent_pid:  # the parent died before prctl took effect
                os._exit(1)
        self.index, self.label = index, f"env {index} ({env_name})"
        self.env = make_env(env_type, env_name, seed=seed, **kwargs)
        n, a = self.env.n_agents, self.env.n_actions
        self.episode_limit, self.raw_obs_size = self.env.episode_limit, self.env.raw_obs_size
        self.observation_space = gym.spaces.Dict(
            obs=gym.spaces.Box(-np.inf, np.inf, (n, self.env.obs_size), np.float32),
            state=gym.spaces.Box(-np.inf, np.inf, (self.env.state_size,), np.float32),
            avail_actions=gym.spaces.MultiBinary((n, a)),
        )
        self.action_space = gym.spaces.MultiDiscrete(np.full(n, a))
        self.start_state = self.env.random_state  # what its first reset starts from

    def _call(self, method, *args):
        try:
            return method(*args)
        except Exception as e:  # one line for the parent, which cannot show this process's trace
            message = (str(e).strip().splitlines() or [""])[0]
            raise WorkerError(f"{self.label} raised {type(e).__name__}: {message}") from None

    def _reset(self):
        # Before the reset: gymnasium's SAME_STEP autoreset resets here as an episode ends, so start_state is always
        # the random state the env's current episode started from.
        self.start_state = self.env.random_state
        return self.env.reset()

    def reset(self, seed=None, options=None):
        obs, state, avail_actions, info = self._call(self._reset)
        return dict(obs=obs, state=state, avail_actions=avail_actions.astype(np.int8)), info

    def step(self, actions):
        obs, state, avail_actions, reward, terminated, truncated, info = self._call(self.env.step, actions)
        return (
            dict(obs=obs, state=state, avail_actions=avail_actions.astype(np.int8)),
            reward,
            terminated,
            truncated,
            info,
        )

    @property
    def random_state(self):
        return self.env.random_state

    def _restore(self, random_state, actions):
        self.env.random_state = random_state
        if actions is None:  # an env between episodes
            return
        obs, state, avail_actions, _ = self._reset()
        for t, row in enumerate(actions):
            obs, state, avail_actions, _, terminated, truncated, _ = self.env.step(row)
            if terminated or truncated:  # these actions are not of the episode that random_state starts
                raise RuntimeError(f"the replayed episode ended at step {t + 1} of {len(actions)}")
        self.acting = (obs, state, avail_actions)

    # Set through gymnasium's set_attr (one value per env): (random_state, the actions [t, N] of the episode so far
    # or None). With actions, the episode is replayed and `acting` holds the obs, state and avail_actions to act on.
    restored = property(fset=lambda self, value: self._call(self._restore, *value))

    # --capture-video: set through set_attr, read through call (the env's own, in this worker).
    recording = property(lambda self: self.env.recording, lambda self, value: setattr(self.env, "recording", value))

    def take_frames(self):
        return self._call(self.env.take_frames)

    def render_frame(self):
        return self._call(self.env.render_frame)

    def play(self, episode_fn, args, num_episodes, num_envs):
        """Episodes index, index + num_envs, ... of num_episodes, each episode_fn(env, *args), one after another."""
        return [self._call(episode_fn, self.env, *args) for _ in range(len(range(self.index, num_episodes, num_envs)))]

    def close(self):
        self.env.close()


def _env_info(batched, i):
    """Env i's info out of gymnasium's batched one (arrays [E] with `_key` masks, dicts batched key by key)."""
    info = {}
    for key, value in batched.items():
        if key.startswith("_") or key in ("final_obs", "final_info"):
            continue
        if isinstance(value, dict):
            info[key] = _env_info(value, i)
        elif batched[f"_{key}"][i]:
            info[key] = value[i]
    return info


class VectorEnv:
    """The env API over num_envs workers, batched: arrays gain a leading [E] axis (E = num_envs).

    reset() -> obs [E, N, obs_size], state [E, state_size], avail_actions [E, N, A] (bool).
    step(actions [E, N]) -> next_obs, next_state, next_avail_actions, reward [E], terminated [E], truncated [E], infos
    (a list of E dicts), then obs, state, avail_actions to act on next; step_async(actions) then step_wait() is the
    same in two halves. Where env i ended its episode, next_* are the
    episode's final values and infos[i] its final info, while obs[i] ... start its next episode; elsewhere both are the
    same. Attributes as the env API: num_envs, n_agents, n_actions, obs_size, raw_obs_size, state_size, episode_limit.
    """

    def __init__(self, env_type, env_name, num_envs, seed, **kwargs):
        context = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        # Not gymnasium's multi-line reports of a worker's exception: WorkerError says it in one line.
        gym.logger.min_level = gym.logger.ERROR + 1
        env_fns = [
            functools.partial(_WorkerEnv, i, env_type, env_name, seed + i, kwargs, os.getpid()) for i in range(num_envs)
        ]
        self.num_envs, self.env_name = num_envs, env_name
        with _stop_signals_held():  # a Ctrl-C meanwhile acts once the workers are built and close is registered
            try:
                self._envs = gym.vector.AsyncVectorEnv(
                    env_fns,
                    shared_memory=True,
                    copy=True,
                    context=context,
                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
                )
            except (EOFError, OSError):  # a worker failed to build its env; the others wait, ignoring SIGTERM: kill
                for process in multiprocessing.active_children():
                    if process.name.startswith("Worker<AsyncVectorEnv>"):
                        process.kill()
                        process.join()
                raise WorkerError(f"a worker could not build {env_name} (its trace is above)") from None
            atexit.register(self.close)  # before multiprocessing's own exit handler, which would wait on the workers
        space = self._envs.single_observation_space
        self.n_agents, self.obs_size = space["obs"].shape
        self.n_actions, self.state_size = space["avail_actions"].shape[1], space["state"].shape[0]
        self.episode_limit = self._guarded(self._envs.get_attr, "episode_limit")[0]
        self.raw_obs_size = self._guarded(self._envs.get_attr, "raw_obs_size")[0]

    def _guarded(self, method, *args):
        """Run a call on the workers; a failure stops them all and raises WorkerError naming the env."""
        try:
            return method(*args)
        except WorkerError:
            self.close()
            raise
        except (EOFError, OSError) as e:  # a worker died without a word (killed, out of memory)
            dead = [i for i, p in enumerate(self._envs.processes) if not p.is_alive()]
            code = self._envs.processes[dead[0]].exitcode if dead else None
            self.close()
            which = f"env {dead[0]} ({self.env_name})" if dead else f"a worker of {self.env_name}"
            raise WorkerError(f"{which} stopped (exit code {code}): {type(e).__name__}") from None

    @staticmethod
    def _unpack(observation):
        return observation["obs"], observation["state"], observation["avail_actions"].astype(bool)

    def reset(self):
        observation, _ = self._guarded(self._envs.reset)
        return self._unpack(observation)

    def step(self, actions):
        self.step_async(actions)
        return self.step_wait()

    def step_async(self, actions):
        """Send the actions; the workers step while the caller goes on. step_wait() collects what step() returns."""
        self._guarded(self._envs.step_async, np.asarray(actions))

    def play_async(self, episode_fn, args, num_episodes):
        """Start num_episodes whole episodes in the workers and return at once: worker i plays episodes i, i + E, ...,
        each episode_fn(its env, *args) -> (return, length, info), one after another (for evaluation)."""
        self._guarded(self._envs.call_async, "play", episode_fn, args, num_episodes, self.num_envs)
        self._playing = num_episodes

    def play_ready(self):
        """Whether every worker has finished what play_async started (never blocks)."""
        return all(pipe.poll() for pipe in self._envs.parent_pipes)

    def play_wait(self):
        """Wait for what play_async started. -> its num_episodes results, in episode order."""
        per_worker, num_episodes = self._guarded(self._envs.call_wait), self._playing
        return [per_worker[j % self.num_envs][j // self.num_envs] for j in range(num_episodes)]

    @property
    def recording(self):
        return self._guarded(self._envs.get_attr, "recording")[0]

    @recording.setter
    def recording(self, value):
        """--capture-video: the first worker draws the first episode it plays next (play_async: episode 0)."""
        self._guarded(self._envs.set_attr, "recording", [bool(value)] + [False] * (self.num_envs - 1))

    def take_frames(self):
        """The first worker's recorded frames (MultiAgentEnv.take_frames)."""
        return self._guarded(self._envs.call, "take_frames")[0]

    def render_frame(self):
        """The first worker's env drawn now (MultiAgentEnv.render_frame); WorkerError (one line) where it cannot."""
        return self._guarded(self._envs.call, "render_frame")[0]

    def start_states(self):
        """Each env's random state at the start of its current episode (MultiAgentEnv.random_state), for restore()."""
        return list(self._guarded(self._envs.get_attr, "start_state"))

    def random_states(self):
        """Each env's random state now: restore(states) without actions resumes envs that are between episodes."""
        return list(self._guarded(self._envs.get_attr, "random_state"))

    def restore(self, states, actions=None):
        """Set each env's random state (from start_states() or random_states() of a VectorEnv of the same arguments).

        actions: per env, the actions [t, N] of its current episode so far (t may be 0), replayed from a reset, which
        rebuilds each env's inner state. -> the obs, state and avail_actions to act on next, as step() gives them;
        None without actions (the envs then start new episodes at their next reset).
        """
        if actions is not None:
            actions = [np.asarray(a, dtype=np.int64).reshape(-1, self.n_agents) for a in actions]
        values = list(zip(states, actions or [None] * len(states), strict=True))
        self._guarded(self._envs.set_attr, "restored", values)
        if actions is None:
            return None
        acting = self._guarded(self._envs.get_attr, "acting")
        obs, state, avail_actions = (np.stack(x) for x in zip(*acting, strict=True))
        return obs, state, avail_actions.astype(bool)

    def step_wait(self):
        observation, reward, terminated, truncated, info = self._guarded(self._envs.step_wait)
        obs, state, avail_actions = self._unpack(observation)
        next_obs, next_state, next_avail_actions = obs.copy(), state.copy(), avail_actions.copy()
        ended = terminated | truncated
        infos = [_env_info(info, i) for i in range(self.num_envs)]
        for i in np.flatnonzero(ended):  # the final observation and info of the episode env i just ended
            next_obs[i], next_state[i], next_avail_actions[i] = self._unpack(info["final_obs"][i])
            infos[i] = _env_info(info["final_info"], i)
        return (next_obs, next_state, next_avail_actions, reward, terminated, truncated, infos), (
            obs,
            state,
            avail_actions,
        )

    def close(self, timeout=10.0):
        """Ask every worker to close its env and exit; SIGKILL those still running after `timeout` seconds."""
        # Signals held back: a second Ctrl-C raising mid-close would leave the later workers unclosed, each printing
        # the end-of-file on its pipe; held, it stops the run once every worker is closed.
        with _stop_signals_held():
            envs, self._envs = getattr(self, "_envs", None), None
            if envs is None:
                return
            atexit.unregister(self.close)
            pipes = [p for p in envs.parent_pipes if p is not None and not p.closed]
            for pipe in pipes:
                with contextlib.suppress(OSError):
                    pipe.send(("close", None))
            for pipe in pipes:
                with contextlib.suppress(OSError, EOFError):
                    if pipe.poll(timeout):
                        pipe.recv()
            for process in envs.processes:
                process.join(timeout=0 if not process.is_alive() else 1)
                if process.is_alive():
                    process.kill()
                    process.join()
            for pipe in pipes:
                pipe.close()
            envs.closed = True  # its own close() would SIGTERM the workers, which ignore it, and then wait forever
