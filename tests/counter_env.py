"""Envs for the vector-env and qmix_multienvs.py tests and benchmarks.

Counter-v0: two agents whose observation is [episode, t, seed] (the episode counted per env, t the step in it, the
seed the env was built with): a stored step says which env, episode and step it came from. An episode terminates with
probability 0.3 after each step (drawn from the env's seeded generator) or is truncated at 6 steps; the reward is t.
BusyCounter-v0: SlowCounter-v0 whose steps compute for 3 ms of CPU instead of waiting (VectorEnv.load's test).
SlowCounter-v0: each step waits 2 ms first and an episode terminates with probability 0.05 after each step or is
cut at 30 steps (about 16 steps on average): an env whose steps and episodes cost about what a small SMAClite map's do,
to time stepping envs in parallel. Its observation is kept small, [t / 30, episode % 2, seed % 2] (a vector env's
SeedSequence seeds run to 2**32: as inputs they blow a network up). FailingCounter-v0: raises RuntimeError at the 20th step of the env built
with a seed of 2 modulo 4 (env 2 of a vector env seeded 0, 4, ...).
Importing this module registers the four ids.
"""

import time

import gymnasium as gym
import numpy as np


class Counter(gym.Env):
    def __init__(self, delay=0.0, fail=False, end_probability=0.3, small_obs=False, spin=0.0):
        self.observation_space = gym.spaces.Tuple([gym.spaces.Box(0, np.inf, (3,), np.float32)] * 2)
        self.action_space = gym.spaces.Tuple([gym.spaces.Discrete(3)] * 2)
        self.delay, self.fail, self.end_probability = delay, fail, end_probability
        self.small_obs, self.spin = small_obs, spin
        self.seed, self.episode, self.t, self.steps = -1, -1, 0, 0

    def _obs(self):
        obs = (
            [self.t / 30, self.episode % 2, self.seed % 2]
            if self.small_obs
            else [self.episode, self.t, self.seed]
        )
        obs = np.array(obs, np.float32)
        return (obs, obs.copy())

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self.seed = seed
        self.episode, self.t = self.episode + 1, 0
        return self._obs(), {}

    def step(self, actions):
        if self.delay:
            time.sleep(self.delay)
        start = time.process_time()
        while time.process_time() - start < self.spin:
            pass
        self.t, self.steps = self.t + 1, self.steps + 1
        if self.fail and self.seed % 4 == 2 and self.steps == 20:
            raise RuntimeError("counter broke at step 20")
        terminated = bool(self.np_random.random() < self.end_probability)
        return self._obs(), float(self.t), terminated, False, {}


gym.register("Counter-v0", entry_point=Counter, max_episode_steps=6)
gym.register(
    "SlowCounter-v0",
    entry_point=Counter,
    kwargs={"delay": 0.002, "end_probability": 0.05, "small_obs": True},
    max_episode_steps=30,
)
gym.register(
    "BusyCounter-v0",
    entry_point=Counter,
    kwargs={"spin": 0.003, "end_probability": 0.05, "small_obs": True},
    max_episode_steps=30,
)
gym.register("FailingCounter-v0", entry_point=Counter, kwargs={"fail": True}, max_episode_steps=6)
