"""The one contract every env family implements (see docs/env.md).

A family subclass sets the sizes, then implements `_reset` and `_step` over per-agent arrays;
this base class adds the time limit, the horizon of a fixed-horizon task (with the time in obs and
state), the team reward and uniform sampling over available actions, so all families behave the
same. What the agent networks see besides each agent's observation (its id, its last action) is
the training script's to build.
"""

import importlib
import inspect
import os

import numpy as np


class EnvError(ValueError):
    """A user mistake (unknown name, missing package). Its message is one line meant for the user."""


def require(module: str, install: str):
    """Import an optional family library, or fail with one line that says how to install it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name != module:
            raise  # the library is installed but broken: show the real trace
        raise EnvError(f"{module} is not installed: {install}") from None


class MultiAgentEnv:
    """Cooperative multi-agent env with one team reward.

    Attributes: n_agents, n_actions (max over agents; smaller per-agent spaces are masked),
    obs_size (each agent's observation, with the time feature when there is a horizon),
    state_size, episode_limit (steps), horizon (steps, or None).

    horizon: the length of the task itself when the benchmark fixes it (MPE's max_cycles; SMAC's map
    limits, after which a battle counts as lost). Reaching it ends the task: terminated, no bootstrap.
    The values then depend on the time left, so obs and state end with the elapsed fraction t / horizon
    (Pardo et al., 2018, "Time Limits in Reinforcement Learning"; SMAC's obs/state_timestep_number).
    A time_limit below the horizon only cuts episodes short: truncated, the target bootstraps.
    """

    def __init__(
        self,
        n_agents,
        n_actions,
        obs_size,
        state_size,
        episode_limit,
        seed,
        horizon=None,
    ):
        if not episode_limit or episode_limit <= 0:
            raise EnvError("this env has no episode limit of its own: pass time_limit (env steps)")
        if horizon is not None and episode_limit > horizon:
            raise EnvError(
                f"time_limit {episode_limit} is longer than the task, whose episodes end after {horizon} env steps "
                f"(its horizon): use a time_limit <= {horizon}"
            )
        self.horizon = None if horizon is None else int(horizon)
        timed = self.horizon is not None  # one more feature in obs and state: t / horizon
        self.n_agents = int(n_agents)
        self.n_actions = int(n_actions)
        self.obs_size = int(obs_size) + timed
        self.state_size = int(state_size) + timed
        self.episode_limit = int(episode_limit)
        self._pending_seed = seed  # make_env's seed is used by the first reset() without a seed
        self._rng = np.random.default_rng(seed)  # for sample_actions
        self._avail = None
        self.t = 0

    # Families implement these two; obs are [n_agents, obs_size] without the time feature.
    def _reset(self, seed):
        raise NotImplementedError

    def _step(self, actions):
        raise NotImplementedError

    def _timed_obs(self, obs):
        """obs [N, obs_size] float32, a new array (families may reuse theirs), ending with
        t / horizon where there is a horizon."""
        if self.horizon is None:
            return np.array(obs, dtype=np.float32)
        column = np.full((len(obs), 1), self.t / self.horizon, dtype=np.float32)
        return np.concatenate([np.asarray(obs, dtype=np.float32), column], axis=1)

    def _timed(self, state):
        if self.horizon is None:
            return state
        return np.append(state, np.float32(self.t / self.horizon)).astype(
            np.float32, copy=False
        )  # one copy per step

    def reset(self, seed=None):
        """-> obs [N, obs_size] float32, state [state_size] float32, avail_actions [N, A] bool, info."""
        if seed is None:
            seed, self._pending_seed = self._pending_seed, None
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        raw_obs, state, avail, info = self._reset(seed)
        self.t = 0
        self._avail = avail
        if self.recording:  # --capture-video: this episode's frames, from its first state on
            self.frames = [video_frame(self.render_frame())]
        return self._timed_obs(raw_obs), self._timed(state), avail, info

    def step(self, actions):
        """-> obs, state, avail_actions, reward (team), terminated, truncated, info.

        terminated: the task really ended (the TD target must not bootstrap), its horizon reached included.
        truncated: the episode was cut by the time limit only (the TD target bootstraps).
        info["rewards"]: the env's own rewards, [N] per agent (or [1] for a team-reward env).
        """
        actions = np.asarray(actions)
        raw_obs, state, avail, rewards, terminated, truncated, info = self._step(actions)
        self.t += 1
        terminated = bool(terminated) or (self.horizon is not None and self.t >= self.horizon)
        truncated = not terminated and (bool(truncated) or self.t >= self.episode_limit)
        info["rewards"] = rewards
        self._avail = avail
        obs, state = self._timed_obs(raw_obs), self._timed(state)
        if self.recording:
            self.frames.append(video_frame(self.render_frame()))
            self.recording = not (terminated or truncated)  # one episode per request
        return obs, state, avail, float(rewards.sum()), terminated, truncated, info

    _recording, _can_draw, frames = False, False, ()

    @property
    def recording(self):
        """--capture-video: set True, the next episode is drawn frame by frame into `frames`
        (take_frames()). Setting it True fails in one line (EnvError) where the env cannot draw or
        imageio, the video writer, is missing. Drawing uses no random state."""
        return self._recording

    @recording.setter
    def recording(self, value):
        if value and not self._can_draw:
            require("imageio", "pip install 'cleanmarl[video]'")  # --capture-video's writer
            self._can_draw = self.render_frame() is not None  # None: not reset yet, checked again
        self._recording = bool(value)

    def render_frame(self):
        """The env as it is now, an RGB image [H, W, 3] uint8, drawn by the family's own renderer in its rgb_array mode
        (pygame: no window; LBF and rware draw with pyglet, which needs a display: xvfb-run keeps it virtual). Raises
        EnvError (one line) where the family cannot draw here; None before the first reset where there is nothing yet."""
        core = self._core()
        os.environ.setdefault(
            "SDL_VIDEODRIVER", "dummy"
        )  # pygame (MPE, SMAClite): no window, no display needed
        os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
        old_api = (
            "mode" in inspect.signature(core.render).parameters
        )  # LBF, rware: render(mode="rgb_array")
        try:
            if getattr(core, "render_mode", None) != "rgb_array":
                core.render_mode = "rgb_array"
            frame = core.render(mode="rgb_array") if old_api else core.render()
        except Exception as e:
            display = "Display" in repr(e)
            if self._avail is None and not display:
                return None  # before the first reset LBF has nothing to draw: the display is what can be checked
            needs = (
                ": it draws with pyglet, which needs a display (run under xvfb-run -a)"
                if display
                else ""
            )
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise EnvError(
                f"{type(self).__name__} cannot render frames here ({reason}){needs}"
            ) from None
        if frame is None or np.ndim(frame) != 3:
            raise EnvError(
                f"{type(self).__name__} cannot render frames: its env draws no rgb_array"
            )
        return np.ascontiguousarray(np.asarray(frame)[..., :3], dtype=np.uint8)

    def take_frames(self):
        """The frames recorded since the last call (list of [H, W, 3] uint8), and forget them."""
        frames, self.frames = list(self.frames), ()
        return frames

    def _core(self):
        """The family's own env object (under its wrappers), whose attributes hold its random generators."""
        core = getattr(self, "_env", None)
        return getattr(core, "unwrapped", core)

    @property
    def random_state(self):
        """Every random generator's state, as a plain dict (torch.load(weights_only=True) loads it back).

        Set on a fresh env of the same make_env call, its episodes from the next reset() on are those of the env it
        was taken from. Taken at an episode boundary: an env's inner mid-episode state (positions, health) is not in
        it; the vector env replays the episode's actions for that (VectorEnv.restore).
        "core": each np.random.Generator kept as an attribute of the family's env (gymnasium's _np_random, mpe2's
        np_random, SMAClite's _np_random); None ones are left out (a gymnasium env not seeded yet draws one later).
        """
        core = self._core()
        generators = {
            k: v
            for k, v in getattr(core, "__dict__", {}).items()
            if isinstance(v, np.random.Generator)
        }
        return {
            "pending_seed": self._pending_seed,
            "rng": self._rng.bit_generator.state,
            "core": {name: generator.bit_generator.state for name, generator in generators.items()},
        }

    @random_state.setter
    def random_state(self, state):
        self._pending_seed = state["pending_seed"]  # None: the next reset() does not reseed
        self._rng.bit_generator.state = state["rng"]
        core = self._core()
        for name, generator_state in state["core"].items():
            generator = getattr(core, name, None)
            if (
                generator is None
            ):  # not drawn yet on this env (an unseeded gymnasium env makes it on first use)
                generator = np.random.Generator(
                    getattr(np.random, generator_state["bit_generator"])()
                )
                setattr(core, name, generator)
            # In place: the env's other objects may hold this very generator.
            generator.bit_generator.state = generator_state

    def sample_actions(self):
        """Uniform random action per agent over its available actions -> int64 [N]."""
        noise = np.where(self._avail, self._rng.random(self._avail.shape), -1.0)
        return noise.argmax(axis=1)

    def close(self):
        pass


def video_frame(frame, max_side=512):
    """A recorded frame, every k-th pixel so that no side exceeds max_side: an episode's frames stay in memory until
    written (SMAClite draws 1024 px and more)."""
    k = -(-max(frame.shape[:2]) // max_side)
    return frame[::k, ::k].copy() if k > 1 else frame


def action_space_mask(sizes):
    """avail_actions [N, max(sizes)] for agents whose own action spaces have `sizes` actions."""
    return np.arange(max(sizes)) < np.asarray(sizes)[:, None]
