"""PettingZoo parallel envs (MPE through the mpe2 package) behind the cleanmarl env contract."""

import importlib

import numpy as np

from cleanmarl.env.base import EnvError, MultiAgentEnv, action_space_mask, require

# Cooperative families with parallel envs; atari and classic are mostly zero-sum games (and classic has no parallel
# API), where the sum of the players' rewards is no team objective.
PZ_FAMILIES = ("mpe", "butterfly", "sisl")
MPE_ENVS = (
    "simple_v3",
    "simple_reference_v3",
    "simple_speaker_listener_v4",
    "simple_spread_v3",
)  # cooperative
# Adversaries against good agents: the sum of everyone's rewards, our team reward, is no objective for either side.
MPE_COMPETITIVE = (
    "simple_adversary_v3",
    "simple_crypto_v3",
    "simple_push_v3",
    "simple_tag_v3",
    "simple_world_comm_v3",
)


def _load_module(env_family, env_name):
    if env_family not in PZ_FAMILIES:
        raise EnvError(f"unknown env_family {env_family!r}: choose one of {', '.join(PZ_FAMILIES)}")
    if env_family == "mpe":
        # PettingZoo >= 1.26 moved MPE out to the mpe2 package.
        package = require("mpe2", "pip install mpe2")
        if env_name in MPE_COMPETITIVE:
            raise EnvError(
                f"{env_name} pits adversaries against the other agents, so the sum of their rewards is no team "
                f"reward: choose a cooperative MPE env ({', '.join(MPE_ENVS)})"
            )
        if env_name not in MPE_ENVS:
            raise EnvError(f"unknown MPE env {env_name!r}: choose one of {', '.join(MPE_ENVS)}")
        return importlib.import_module(f"{package.__name__}.{env_name}")
    require("pettingzoo", "pip install pettingzoo")
    try:
        return importlib.import_module(f"pettingzoo.{env_family}.{env_name}")
    except ModuleNotFoundError as e:
        if e.name.startswith(f"pettingzoo.{env_family}"):
            raise EnvError(f"unknown PettingZoo {env_family} env {env_name!r}") from None
        raise EnvError(
            f"{env_name} needs {e.name}: pip install 'pettingzoo[{env_family}]'"
        ) from None


class PettingZooEnv(MultiAgentEnv):
    """Team reward = sum over agents' rewards; state = the env's own state() where it has one,
    else the padded observations concatenated. Agents that leave get zero obs and only action 0.
    """

    def __init__(
        self,
        env_name,
        env_family="mpe",
        seed=None,
        time_limit=None,
        **kwargs,
    ):
        module = _load_module(env_family, env_name)
        if time_limit is not None and env_family in ("butterfly", "sisl"):
            kwargs["max_cycles"] = time_limit  # the env truncates itself, so the two limits agree
        self._env = module.parallel_env(**kwargs)
        self.agents = list(self._env.possible_agents)
        spaces = [self._env.action_space(a) for a in self.agents]
        if not all(hasattr(s, "n") for s in spaces):
            raise EnvError(
                f"{env_name} has non-discrete actions: QMIX needs Discrete action spaces"
            )
        self._obs_sizes = [int(np.prod(self._env.observation_space(a).shape)) for a in self.agents]
        self._full_avail = action_space_mask([int(s.n) for s in spaces])
        n_agents, n_actions = self._full_avail.shape
        self._gone_avail = np.zeros((n_agents, n_actions), dtype=bool)
        self._gone_avail[:, 0] = True  # an agent that left only "acts" with the no-op index 0
        raw_obs_size = max(self._obs_sizes)
        self._raw_obs = np.zeros((n_agents, raw_obs_size), dtype=np.float32)
        self._env.reset(seed=seed)
        # MPE's state() is exactly every agent's observation concatenated (mpe2 simple_env.state):
        # build it from the observations we already have instead of computing them all twice.
        self._state_from_obs = env_family == "mpe"
        try:
            state_size = (
                sum(self._obs_sizes)
                if self._state_from_obs
                else int(np.prod(self._env.state().shape))
            )
            self._has_state = True
        except (NotImplementedError, AttributeError):
            state_size, self._has_state = n_agents * raw_obs_size, False
        limit = time_limit or getattr(self._env.unwrapped, "max_cycles", None)
        core = self._env.unwrapped
        self._scenario, self._world = (
            (core.scenario, core.world) if env_family == "mpe" else (None, None)
        )
        # MPE's tasks are fixed-horizon: their return is summed over max_cycles steps (25), which are part of the task,
        # and no state of an unbounded run is ever learned from. A time_limit below it only cuts episodes short.
        horizon = core.max_cycles if env_family == "mpe" else None
        super().__init__(
            n_agents,
            n_actions,
            raw_obs_size,
            state_size,
            limit,
            seed,
            horizon=horizon,
        )

    def _observe(self, obs):
        if len(obs) == self.n_agents:  # everyone is still in the episode (always, in MPE)
            for i, agent in enumerate(self.agents):
                self._raw_obs[i, : self._obs_sizes[i]] = obs[agent].ravel()
            avail = self._full_avail.copy()
        else:
            self._raw_obs.fill(0.0)
            avail = self._gone_avail.copy()
            for i, agent in enumerate(self.agents):
                if agent in obs:
                    self._raw_obs[i, : self._obs_sizes[i]] = np.ravel(obs[agent])
                    avail[i] = self._full_avail[i]
        raw_obs = self._raw_obs.copy()
        if self._state_from_obs:
            state = np.concatenate([raw_obs[i, :n] for i, n in enumerate(self._obs_sizes)])
        elif self._has_state:
            state = self._env.state().astype(np.float32).ravel()
        else:
            state = raw_obs.reshape(-1)
        return raw_obs, state, avail

    def _reset(self, seed):
        obs, info = self._env.reset(seed=seed)
        return *self._observe(obs), info

    def _step(self, actions):
        live = set(self._env.agents)
        action_dict = {a: int(actions[i]) for i, a in enumerate(self.agents) if a in live}
        obs, rewards, terminations, truncations, infos = self._env.step(action_dict)
        raw_obs, state, avail = self._observe(obs)
        reward = np.array([rewards.get(a, 0.0) for a in self.agents], dtype=np.float32)
        # The episode really ends when every agent that was still in it terminated.
        terminated = bool(terminations) and all(terminations.values())
        truncated = any(truncations.values())
        if truncated and self._scenario is not None and self._scenario.is_terminal(self._world):
            # mpe2 checks its step limit before is_terminal (terminate_on_success), so a success on the
            # last step arrives as truncation: it is a real end, and its target must not bootstrap.
            terminated, truncated = True, False
        return raw_obs, state, avail, reward, terminated, truncated, {"agents": infos}

    def close(self):
        self._env.close()
