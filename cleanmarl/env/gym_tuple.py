"""Any gymnasium env whose action space is a Tuple of Discrete (rware, user envs).

`env_name` is a gymnasium id, or "module:EnvId" to import the module that registers it first.
"""

import numpy as np

from cleanmarl.env.base import EnvError, MultiAgentEnv, action_space_mask, require


class GymTupleEnv(MultiAgentEnv):
    """Per-agent rewards (a list) are summed into the team reward; a scalar reward is the team reward.

    Action masks: the env's `get_avail_actions()` if it has one, else each agent's own Discrete
    size. State: the env's `get_state()`/`state()` if it has one, else the observations concatenated.
    Many such envs (rware, lbforaging) report their own step limit as `terminated`; a termination
    on the step where the env's limit is reached is therefore treated as a truncation.
    """

    def __init__(self, env_name, seed=None, time_limit=None, **kwargs):
        gym = require("gymnasium", "pip install gymnasium")
        try:
            self._env = gym.make(
                env_name, max_episode_steps=time_limit, disable_env_checker=True, **kwargs
            )
        except gym.error.Error as e:
            raise EnvError(f"unknown gymnasium env {env_name!r}: {e}") from None
        except ModuleNotFoundError as e:
            module = e.name or env_name.split(":")[0]
            raise EnvError(
                f"{env_name!r} needs the module {module!r}: pip install {module}"
            ) from None
        core = self._env.unwrapped
        act, obs = self._env.action_space, self._env.observation_space
        if not isinstance(act, gym.spaces.Tuple) or not all(
            isinstance(s, gym.spaces.Discrete) for s in act
        ):
            raise EnvError(f"{env_name} needs a Tuple of Discrete action spaces, got {act}")
        if not isinstance(obs, gym.spaces.Tuple) or len(obs) != len(act):
            raise EnvError(
                f"{env_name} needs a Tuple observation space with one entry per agent, got {obs}"
            )
        n_agents = len(act)
        self._obs_spaces, self._obs_sizes = list(obs), [gym.spaces.flatdim(s) for s in obs]
        self._flatten = (
            gym.spaces.flatten
        )  # Discrete -> one-hot, Dict/Tuple -> concatenated, Box -> raveled
        self._full_avail = action_space_mask([int(s.n) for s in act])
        self._get_avail = getattr(core, "get_avail_actions", None)
        self._get_state = getattr(core, "get_state", None) or getattr(core, "state", None)
        if not callable(self._get_state):
            self._get_state = None
        self._env_limit = getattr(core, "max_steps", None) or getattr(
            core, "_max_episode_steps", None
        )
        # The env's own limit ends its episodes whatever time_limit says (gym.make only replaces the outer
        # TimeLimit): a longer time_limit would be a silent lie, so it is refused.
        if time_limit and self._env_limit and time_limit > self._env_limit:
            self._env.close()
            raise EnvError(
                f"time_limit {time_limit} exceeds {env_name}'s own step limit of {self._env_limit}: "
                f"pass a time_limit <= {self._env_limit}"
            )
        limits = [
            self._env.spec and self._env.spec.max_episode_steps,
            self._env_limit,
        ]  # the shorter ends first
        limit = time_limit or min((n for n in limits if n), default=None)
        raw_obs_size = max(self._obs_sizes)
        self._raw_obs = np.zeros((n_agents, raw_obs_size), dtype=np.float32)
        self._env.reset(seed=seed)
        state_size = np.size(self._get_state()) if self._get_state else n_agents * raw_obs_size
        super().__init__(
            n_agents,
            self._full_avail.shape[1],
            raw_obs_size,
            state_size,
            limit,
            seed,
        )

    def _observe(self, obs):
        for i, o in enumerate(obs):
            self._raw_obs[i, : self._obs_sizes[i]] = self._flatten(self._obs_spaces[i], o)
        raw_obs = self._raw_obs.copy()
        # copies: an env may reuse the arrays it hands out
        state = (
            np.array(self._get_state(), dtype=np.float32).ravel()
            if self._get_state
            else raw_obs.reshape(-1)
        )
        avail = (
            np.array(self._get_avail(), dtype=bool) if self._get_avail else self._full_avail.copy()
        )
        return raw_obs, state, avail

    def _reset(self, seed):
        obs, info = self._env.reset(seed=seed)
        return *self._observe(obs), info

    def _step(self, actions):
        obs, reward, terminated, truncated, info = self._env.step(tuple(actions.tolist()))
        rewards = np.atleast_1d(np.asarray(reward, dtype=np.float32))
        terminated, truncated = bool(np.all(terminated)), bool(np.any(truncated))
        if terminated and self._env_limit and self.t + 1 >= self._env_limit:
            terminated, truncated = False, True  # the env's own step limit, reported as terminated
        return *self._observe(obs), rewards, terminated, truncated, info

    def close(self):
        self._env.close()
