"""A task only the last action solves: every agent sees the same constant observation at every step and is paid for
switching between its two actions.

Each of the LENGTH steps pays 0.5 per agent whose action differs from its own previous one (at the first step every
action counts as a switch), and the episode terminates after LENGTH steps. The optimum is LENGTH (alternate). An agent
that sees only its observation sees the same input at every step, so its greedy policy repeats one action and earns 1.0
(the first step); an agent whose input holds its last action (QMIX paper, Sec. 4) can alternate. The state (for the
mixer) holds the last actions and the step.
Importing this module registers "tests.alternate:Alternate-v0".
"""

import gymnasium as gym
import numpy as np

LENGTH = 8


class Alternate(gym.Env):
    n_agents = 2

    def __init__(self):
        self.observation_space = gym.spaces.Tuple(
            [gym.spaces.Box(1, 1, (1,), np.float32)] * self.n_agents
        )
        self.action_space = gym.spaces.Tuple([gym.spaces.Discrete(2)] * self.n_agents)
        self.last, self.t = np.full(self.n_agents, -1), 0

    def get_state(self):
        return np.concatenate([self.last == 0, self.last == 1, np.eye(LENGTH + 1)[self.t]]).astype(
            np.float32
        )

    def _obs(self):
        return tuple(np.ones((self.n_agents, 1), np.float32))

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.last, self.t = np.full(self.n_agents, -1), 0
        return self._obs(), {}

    def step(self, actions):
        actions = np.asarray(actions)
        reward = 0.5 * float(np.sum(actions != self.last))
        self.last, self.t = actions, self.t + 1
        return self._obs(), reward, self.t == LENGTH, False, {}


gym.register("Alternate-v0", entry_point=Alternate, max_episode_steps=LENGTH)
