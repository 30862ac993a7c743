"""num_envs copies of one env, each in its own worker process, stepped at once (docs/env.md).

Each worker is a multiprocessing Process that answers the parent's commands on a Pipe of its own,
one answer per command. An env that ends an episode resets in the same step and also hands back
its final observation and info (truncated episodes bootstrap from them); play_async() has the
workers play whole episodes (evaluation) while the parent goes on. The obs are the env's own (what
the agent networks see besides, their ids and last actions, is the training script's). Besides:

- env i is make_env(..., seed=seed[i]) for a list of seeds (qmix_multienvs.py passes SeedSequence
  children of the run's seed), seed + i for an int, built in its worker: no random state is
  inherited from the parent. The parent builds env 0 first, to read the sizes: a user mistake
  (EnvError) or a broken library is raised there, with its one line or its trace;
- resume: start_states() is each env's random state at the start of its current episode
  (MultiAgentEnv.random_state); restore(states, actions) on a fresh VectorEnv of the same
  arguments sets them and replays each episode's actions so far, which rebuilds the envs' inner
  state; random_states() and restore(states) alone suit envs between episodes;
- workers are forked (a worker starts in milliseconds; spawn would import the training script in
  each). A worker closes its copies of the parent's pipe ends, so when the parent dies, even by
  SIGKILL, it reads end-of-file (once the workers forked later by another VectorEnv, holding
  copies, are gone); on Linux the kernel also SIGKILLs it at once (prctl PR_SET_PDEATHSIG),
  which covers a worker busy in a long env step;
- workers ignore SIGINT and SIGTERM, which a terminal or a job scheduler sends to the whole
  process group: the parent stops and closes them (SIGKILL if need be), also at interpreter exit;
- the parent holds SIGINT and SIGTERM back while it forks the workers (a child inherits the held
  mask, so one that arrives before the worker ignores them is dropped, not run by the parent's
  handler in the child) and while it closes them (a second Ctrl-C mid-close would leave some
  workers unclosed): a signal held back is delivered when the block ends;
- a worker's exception, or its death, becomes one WorkerError line naming the env (raised where
  its answer is read), and the other workers are stopped;
- load() says how busy the workers were since it was last asked (each answer carries its worker's
  CPU seconds so far) and how long the caller waited in step_wait(): which side to feed.
"""

import atexit
import contextlib
import ctypes
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import threading
import time

import numpy as np

from cleanmarl.env import EnvError, MultiAgentEnv, make_env

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
SIZES = ("n_agents", "n_actions", "obs_size", "state_size", "episode_limit")


class WorkerError(EnvError):
    """An env failed in its worker, could not be built there, or died: one line naming the env."""


@contextlib.contextmanager
def _stop_signals_held():
    """SIGINT and SIGTERM stay pending inside the block; delivered (handlers run) when it ends."""
    main = threading.current_thread() is threading.main_thread()
    if not hasattr(signal, "pthread_sigmask") or not main:
        yield  # no signal masks (Windows), or not the thread Python runs signal handlers in
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _post(pipe, message):
    # Plain pickle: tensors by value, not as shared-memory fds passed by a resource-sharer thread.
    pipe.send_bytes(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))


def _arrays(obs, state, avail_actions):
    """obs and state as float32 copies (an env may reuse its buffers), avail_actions as bool."""
    return np.array(obs, np.float32), np.array(state, np.float32), np.array(avail_actions, bool)


class _WorkerEnv:
    """One env of the vector, inside its worker: each method answers one command of the parent."""

    def __init__(self, env_type, env_name, seed, kwargs):
        self.env = make_env(env_type, env_name, seed=seed, **kwargs)
        self.start_state = self.env.random_state  # what its first reset starts from

    def reset(self):
        # Before the reset: step() resets here too, so start_state is always the current episode's.
        self.start_state = self.env.random_state
        return _arrays(*self.env.reset()[:3])

    def step(self, actions):
        """-> final (obs, state, avail_actions), reward, terminated, truncated, info, and those to
        act on next: a new episode's first where this one ended, else final again."""
        obs, state, avail_actions, reward, terminated, truncated, info = self.env.step(actions)
        final = _arrays(obs, state, avail_actions)
        acting = self.reset() if terminated or truncated else final
        return final, reward, terminated, truncated, info, acting

    def restore(self, random_state, actions):
        """Set the env's random state; with actions [t, N] (the episode so far), replay them from
        a reset. -> the obs, state and avail_actions to act on next (None without actions)."""
        self.env.random_state = random_state
        if actions is None:  # an env between episodes
            return None
        acting = self.reset()
        for t, row in enumerate(actions):
            obs, state, avail_actions, _, terminated, truncated, _ = self.env.step(row)
            if terminated or truncated:  # these actions are not of the episode random_state starts
                raise RuntimeError(f"the replayed episode ended at step {t + 1} of {len(actions)}")
            acting = _arrays(obs, state, avail_actions)
        return acting

    def random_state(self, at_start):
        """The env's random state now, or at the start of its current episode."""
        return self.start_state if at_start else self.env.random_state

    def render_frame(self):
        return self.env.render_frame()

    def play(self, index, recording, episode_fn, args, num_episodes, num_envs):
        """Episodes index, index + num_envs, ... of num_episodes, each episode_fn(env, *args), the
        first drawn where recording. -> their results, and the frames drawn."""
        self.env.recording = recording
        results = [episode_fn(self.env, *args) for _ in range(index, num_episodes, num_envs)]
        return results, self.env.take_frames()


def _work(index, pipe, parent_ends, parent_pid, env_type, env_name, seed, kwargs):
    """A worker: build env `index`, then answer the parent's commands until "close"."""
    for signum in STOP_SIGNALS:  # one held back since the fork is dropped here
        signal.signal(signum, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):  # held back from the fork (see _stop_signals_held)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    with contextlib.suppress(OSError, AttributeError):  # Linux only
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)
    for end in parent_ends:  # copies kept here would hide the parent's death (no end-of-file)
        end.close()
    worker, busy = None, 0.0  # CPU seconds spent on commands
    try:
        worker = _WorkerEnv(env_type, env_name, seed, kwargs)
        while True:
            try:
                command, args = pipe.recv()
            except EOFError:  # the parent is gone
                return
            if command == "close":
                return
            start = time.process_time()
            answer = getattr(worker, command)(*args)
            busy += time.process_time() - start
            _post(pipe, (True, answer, busy))
    except Exception as e:  # one line for the parent, which cannot show this process's trace
        line = (str(e).strip().splitlines() or [""])[0]
        with contextlib.suppress(OSError):
            _post(pipe, (False, f"env {index} ({env_name}) raised {type(e).__name__}: {line}"))
    finally:
        if worker is not None:
            worker.env.close()


class VectorEnv:
    """The env API over num_envs workers, batched: arrays gain a leading [E] axis (E = num_envs).

    reset() -> obs [E, N, obs_size], state [E, state_size], avail_actions [E, N, A] (bool).
    step(actions [E, N]) -> next_obs, next_state, next_avail_actions, reward [E], terminated [E],
    truncated [E], infos (a list of E dicts), then obs, state, avail_actions to act on next;
    step_async(actions) then step_wait() is the same in two halves. Where env i ended its episode,
    next_* are the episode's final values and infos[i] its final info, while obs[i] ... start its
    next episode; elsewhere both are the same. Attributes as the env API: num_envs, n_agents,
    n_actions, obs_size, state_size, episode_limit, recording.
    """

    # --capture-video: set True, the first worker draws episode 0 of the next play_async (frames:
    # take_frames()). Setting it True checks what an env's does (it can draw, imageio is installed).
    recording = MultiAgentEnv.recording
    _recording = _can_draw = False

    def __init__(self, env_type, env_name, num_envs, seed, **kwargs):
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        self.num_envs, self.env_name = num_envs, env_name
        self._pipes, self._workers, self._waiting, self._frames = [], [], set(), []
        self._busy, self._waited, self._load_at = [0.0] * num_envs, 0.0, None
        # A Ctrl-C meanwhile acts once the workers are built and close is registered.
        with _stop_signals_held():
            seeds = list(seed) if hasattr(seed, "__len__") else [seed + i for i in range(num_envs)]
            env = make_env(env_type, env_name, seed=seeds[0], **kwargs)
            for name in SIZES:
                setattr(self, name, getattr(env, name))
            env.close()
            # Before multiprocessing's exit handler, which would wait on the workers forever.
            atexit.register(self.close)
            try:
                for i in range(num_envs):
                    parent_end, child_end = context.Pipe()
                    self._pipes.append(parent_end)
                    args = (i, child_end, list(self._pipes), os.getpid(), env_type, env_name)
                    args += (seeds[i], kwargs)
                    process = context.Process(target=_work, args=args, daemon=True)
                    process.start()
                    self._workers.append(process)
                    child_end.close()  # the worker's alone: its death is end-of-file here
            except BaseException:
                self.close()
                raise

    @staticmethod
    def auto_num_envs():
        """--num-envs auto: a worker for each core this process may run on but one, which the
        learner keeps; 12 at least, so that on few cores a half's step (qmix_multienvs.py's
        --overlap) has work for as long as an update of the learner's for the other half."""
        cores = (
            os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else [0] * os.cpu_count()
        )
        return max(12, len(cores) - 1)

    def _send(self, command, *args, per_env=None, envs=None):
        """Send a command to the workers of envs (default: all): the same args, or per_env[j] to
        the j-th of them."""
        envs = range(self.num_envs) if envs is None else envs
        if self._pipes is None:
            raise WorkerError(f"the workers of {self.env_name} are closed")
        if self._waiting.intersection(envs):
            raise RuntimeError(f"the workers of {self.env_name} have a command under way")
        self._waiting.update(envs)
        for i, each in zip(envs, per_env or [args] * len(envs), strict=True):
            with contextlib.suppress(OSError):  # a dead worker: said when its answer is read
                _post(self._pipes[i], (command, each))

    def _recv(self, envs=None):
        """The answers of the workers of envs (default: all) to the command sent, in env order."""
        if self._pipes is None:
            raise WorkerError(f"the workers of {self.env_name} are closed")
        answers = []
        for i in range(self.num_envs) if envs is None else envs:
            pipe = self._pipes[i]
            try:
                ok, answer, *busy = pipe.recv()  # busy: the worker's CPU seconds so far
                self._busy[i] = busy[0] if busy else self._busy[i]
            except (EOFError, OSError) as e:  # it died without a word (killed, out of memory)
                self._workers[i].join(timeout=1)  # its exit code, once it has exited
                code, name = self._workers[i].exitcode, type(e).__name__
                ok, answer = False, f"env {i} ({self.env_name}) stopped (exit code {code}): {name}"
            if not ok:
                self.close()
                raise WorkerError(answer)
            answers.append(answer)
            self._waiting.discard(i)
        return answers

    def _all(self, command, *args, per_env=None):
        self._send(command, *args, per_env=per_env)
        return self._recv()

    def reset(self):
        return tuple(np.stack(x) for x in zip(*self._all("reset"), strict=True))

    def step(self, actions):
        self.step_async(actions)
        return self.step_wait()

    def step_async(self, actions, envs=None):
        """Send the actions; the workers step while the caller goes on. step_wait() collects what
        step() returns. envs: the indices of the envs to step (default: all), one row of actions
        each; their step_wait(envs) answers for them alone, the others may step meanwhile."""
        self._send("step", per_env=[(row,) for row in np.asarray(actions)], envs=envs)

    def step_wait(self, envs=None):
        start = time.perf_counter()
        answers = self._recv(envs)
        self._waited += time.perf_counter() - start
        final, reward, terminated, truncated, infos, acting = zip(*answers, strict=True)
        next_obs, next_state, next_avail = (np.stack(x) for x in zip(*final, strict=True))
        obs, state, avail_actions = (np.stack(x) for x in zip(*acting, strict=True))
        ended = np.array(terminated, np.bool_), np.array(truncated, np.bool_)
        out = next_obs, next_state, next_avail, np.array(reward, np.float64), *ended, list(infos)
        return out, (obs, state, avail_actions)

    def load(self):
        """Since the last call (or the first step): envs_busy, the workers' mean share of the wall
        time spent computing (CPU seconds), and learner_waiting, the caller's share spent waiting in
        step_wait(). -> {} at the first call"""
        now, busy = time.perf_counter(), sum(self._busy)
        last, self._load_at = self._load_at, (now, busy, self._waited)
        if last is None or now <= last[0]:
            return {}
        wall = now - last[0]
        envs_busy = (busy - last[1]) / wall / self.num_envs
        return dict(envs_busy=envs_busy, learner_waiting=(self._waited - last[2]) / wall)

    def play_async(self, episode_fn, args, num_episodes):
        """Start num_episodes whole episodes in the workers and return at once: worker i plays
        episodes i, i + E, ..., each episode_fn(its env, *args) -> its result, one after another
        (for evaluation)."""
        n, first = self.num_envs, self.recording
        per_env = [(i, first and i == 0, episode_fn, args, num_episodes, n) for i in range(n)]
        self._send("play", per_env=per_env)
        self._playing, self.recording = num_episodes, False

    def play_ready(self):
        """Whether every worker has finished what play_async started, or died (never blocks)."""
        return self._pipes is None or all(pipe.poll() for pipe in self._pipes)

    def play_wait(self):
        """Wait for what play_async started. -> its num_episodes results, in episode order."""
        answers, n = self._recv(), self.num_envs
        self._frames = answers[0][1]
        return [answers[j % n][0][j // n] for j in range(self._playing)]

    def take_frames(self):
        """The frames the first worker drew in the last play (MultiAgentEnv.take_frames), once."""
        frames, self._frames = self._frames, []
        return frames

    def render_frame(self):
        """The first worker's env drawn now (MultiAgentEnv.render_frame); else WorkerError."""
        return self._all("render_frame")[0]

    def start_states(self):
        """Each env's random state at the start of its current episode (MultiAgentEnv.random_state),
        for restore()."""
        return self._all("random_state", True)

    def random_states(self):
        """Each env's random state now: restore(states) without actions resumes envs that are
        between episodes."""
        return self._all("random_state", False)

    def restore(self, states, actions=None):
        """Set each env's random state (from start_states() or random_states() of a VectorEnv of
        the same arguments); actions: per env, the actions [t, N] of its current episode so far
        (t may be 0), replayed from a reset, which rebuilds its inner state. -> the obs, state and
        avail_actions to act on next, as step() gives them; None without actions (the envs then
        start new episodes at their next reset)."""
        if actions is not None:
            actions = [np.asarray(a, dtype=np.int64).reshape(-1, self.n_agents) for a in actions]
        per_env = list(zip(states, actions or [None] * len(states), strict=True))
        acting = self._all("restore", per_env=per_env)
        if actions is None:
            return None
        return tuple(np.stack(x) for x in zip(*acting, strict=True))

    def close(self, timeout=10.0):
        """Ask every worker to close its env and exit; SIGKILL any still running after timeout s."""
        # Signals held back: a second Ctrl-C raising mid-close would leave the later workers
        # unclosed; held, it stops the run once every worker is closed.
        with _stop_signals_held():
            pipes, self._pipes = self._pipes, None
            if pipes is None:
                return
            atexit.unregister(self.close)
            for pipe in pipes:
                with contextlib.suppress(OSError):
                    pipe.send(("close", ()))
            deadline, left = time.monotonic() + timeout, list(pipes)
            while left and deadline > time.monotonic():  # read what is under way until end-of-file
                for pipe in multiprocessing.connection.wait(left, deadline - time.monotonic()):
                    try:
                        pipe.recv()
                    except (EOFError, OSError):  # the worker has exited
                        left.remove(pipe)
            for process in self._workers:
                process.join(timeout=max(deadline - time.monotonic(), 0.1))
                if process.is_alive():
                    process.kill()
                    process.join()
            for pipe in pipes:
                pipe.close()
