"""A one-step, two-agent env whose reward is the next number of its seeded generator, so an episode's return tells
which seed (and which reset) produced it: tests check with it that the training and evaluation envs are seeded apart.
Importing this module registers "tests.seed_echo:SeedEcho-v0"."""

import gymnasium as gym
import numpy as np


class SeedEchoEnv(gym.Env):
    def __init__(self):
        self.observation_space = gym.spaces.Tuple([gym.spaces.Box(0, 1, (1,), np.float32)] * 2)
        self.action_space = gym.spaces.Tuple([gym.spaces.Discrete(2)] * 2)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        return (np.zeros(1, np.float32),) * 2, {}

    def step(self, actions):
        return (np.ones(1, np.float32),) * 2, float(self.np_random.random()), True, False, {}


gym.register("SeedEcho-v0", entry_point=SeedEchoEnv, max_episode_steps=1)
