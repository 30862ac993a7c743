"""Level-Based Foraging (lbforaging >= 2.0) behind the cleanmarl env contract."""

import dataclasses
import functools

import numpy as np

from cleanmarl.env.base import EnvError, MultiAgentEnv, require


class LBFEnv(MultiAgentEnv):
    """State = the agents' observations concatenated (LBF has no global state of its own).

    Observations are divided by their space's upper bounds (grid size - 1, max levels), so they
    lie in [-1/7, 1] on 8x8 instead of [-1, 7]: raw coordinates fed to the mixer's hypernetworks
    blow Q_tot up (losses ~1e3 and a Q_tot that grows without reward, measured in docs/env.md).
    `scale_obs=False` gives LBF's raw observations.

    LBF reports its own step limit as `terminated=True` (lbforaging 2.0): here an episode is
    terminated only when all food is collected, and the step limit surfaces as truncation.
    """

    def __init__(
        self,
        env_name,
        seed=None,
        time_limit=None,
        scale_obs=True,
        **kwargs,
    ):
        gym = require("gymnasium", "pip install gymnasium")
        require("lbforaging", "pip install lbforaging")
        if env_name not in gym.registry or "Foraging" not in env_name:
            raise EnvError(
                f"unknown LBF env {env_name!r}: use an lbforaging id such as "
                "Foraging-8x8-2p-2f-coop-v3 (Foraging[-2s]-{size}x{size}-{p}p-{f}f[-coop]-v3)"
            )
        spec = gym.spec(env_name)
        # LBF keeps its limit inside the env, so a longer time_limit must reach the env itself;
        # gym.make(max_episode_steps=...) would only add an outer TimeLimit.
        limit = time_limit or spec.kwargs["max_episode_steps"]
        spec = dataclasses.replace(
            spec, kwargs={**spec.kwargs, **kwargs, "max_episode_steps": limit}
        )
        # .unwrapped: the gymnasium checker/order wrappers only cost time on every step.
        self._env = gym.make(spec).unwrapped
        if self._env._grid_observation:
            raise EnvError(
                "grid-observation LBF envs are not supported: use the vector ids (no -grid)"
            )
        # LBF builds them through per-agent Python objects and checks them against its space at
        # every step; observations() computes the same numbers directly
        self._env._make_gym_obs = functools.partial(observations, self._env)
        n_agents = len(self._env.players)
        high = self._env.observation_space[0].high
        scale = (
            np.where(high > 0, 1.0 / np.maximum(high, 1e-8), 1.0)
            if scale_obs
            else np.ones_like(high)
        )
        self._obs_scale = scale.astype(np.float32)
        raw_obs_size = self._env.observation_space[0].shape[0]
        n_actions = self._env.action_space[0].n
        super().__init__(
            n_agents,
            n_actions,
            raw_obs_size,
            n_agents * raw_obs_size,
            limit,
            seed,
        )

    def _avail_actions(self):
        # LBF's own mask: an action that would leave the grid or walk into food/players is invalid
        # (LBF silently turns it into NONE, which would make the stored action a lie).
        avail = np.zeros((self.n_agents, self.n_actions), dtype=bool)
        for i, player in enumerate(self._env.players):
            for action in self._env._valid_actions[player]:
                avail[i, action.value] = True
        return avail

    def _reset(self, seed):
        obs, info = self._env.reset(seed=seed)
        obs *= self._obs_scale  # observations(): a new [N, obs] array
        return obs, obs.reshape(-1), self._avail_actions(), info

    def _step(self, actions):
        obs, rewards, _, _, info = self._env.step(actions.tolist())
        obs *= self._obs_scale
        terminated = not self._env.field.any()  # all food collected: the only real end
        truncated = self._env.current_step >= self._env._max_episode_steps
        rewards = np.asarray(rewards, dtype=np.float32)
        return obs, obs.reshape(-1), self._avail_actions(), rewards, terminated, truncated, info

    @property
    def random_state(self):
        """MultiAgentEnv.random_state and the players' positions: LBF's reset() places each player on a cell that is
        free of the players' previous positions too, so an episode's start depends on where the last one ended."""
        positions = [
            None if p.position is None else [int(x) for x in p.position] for p in self._env.players
        ]
        return {**MultiAgentEnv.random_state.fget(self), "positions": positions}

    @random_state.setter
    def random_state(self, state):
        MultiAgentEnv.random_state.fset(self, state)
        for player, position in zip(self._env.players, state["positions"], strict=True):
            player.position = None if position is None else tuple(position)

    def close(self):
        self._env.close()


def observations(lbf):
    """ForagingEnv._make_gym_obs's vector observations as one [N, obs] float32 array.

    Agent i sees the food of its window, the cells within `sight` of it cut at the grid's edges, as
    (row, col, level) from the window's top-left corner in row-major order, then (-1, -1, 0) for the
    rest of max_num_food; then itself and, in LBF's player order, each other player whose offset
    from that corner lies in [0, 2 * sight] (LBF's test, which near an edge reaches past the window),
    as (row, col[, level]), then (-1, -1[, 0]) for the players it does not see.
    """
    sight, unseen = lbf.sight, [-1, -1, 0] if lbf._observe_agent_levels else [-1, -1]
    rows, cols = np.nonzero(lbf.field)  # row-major, as each window lists its food
    food = list(zip(rows.tolist(), cols.tolist(), lbf.field[rows, cols].tolist(), strict=True))
    obs = []
    for me in lbf.players:
        (row, col), seen = me.position, []
        top, left = max(row - sight, 0), max(col - sight, 0)
        for y, x, level in food:
            if top <= y <= row + sight and left <= x <= col + sight:
                seen += [y - top, x - left, level]
        seen += [-1, -1, 0] * (lbf.max_num_food - len(seen) // 3)
        players_seen = 0
        for player in [me] + [p for p in lbf.players if p is not me]:
            y, x = player.position[0] - top, player.position[1] - left
            if 0 <= y <= 2 * sight and 0 <= x <= 2 * sight:
                seen += [y, x, player.level][: len(unseen)]
                players_seen += 1
        obs.append(seen + unseen * (len(lbf.players) - players_seen))
    return np.array(obs, np.float32)
