"""A task only memory solves: each agent sees a cue (0 or 1) at the first step only, waits, and is paid for repeating
it at the last step.

Observation per agent: [cue one-hot (zeros after t = 0), this is the last step]. Step 0 shows the cue; steps 1 .. DELAY
show nothing; the actions of step DELAY are paid, 0.5 per agent whose action equals its own cue, and the episode
terminates. The optimum is 1.0. A feed-forward agent sees the same observation at the last step whatever its cue, so
no such policy beats 0.5 in expectation; a recurrent one must carry the cue DELAY steps. The state (for the mixer)
holds both cues and the step.
Importing this module registers "tests.memory_cue:MemoryCue-v0".
"""

import gymnasium as gym
import numpy as np

DELAY = 3  # steps between seeing the cue and acting on it


class MemoryCue(gym.Env):
    n_agents = 2

    def __init__(self):
        self.observation_space = gym.spaces.Tuple(
            [gym.spaces.Box(0, 1, (3,), np.float32)] * self.n_agents
        )
        self.action_space = gym.spaces.Tuple([gym.spaces.Discrete(2)] * self.n_agents)
        self.cues, self.t = np.zeros(self.n_agents, np.int64), 0

    def get_state(self):
        return np.concatenate([self.cues, np.eye(DELAY + 1)[self.t]]).astype(np.float32)

    def _obs(self):
        obs = np.zeros((self.n_agents, 3), np.float32)
        if self.t == 0:
            obs[np.arange(self.n_agents), self.cues] = 1.0
        obs[:, 2] = self.t == DELAY
        return tuple(obs)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.cues, self.t = self.np_random.integers(0, 2, self.n_agents), 0
        return self._obs(), {}

    def step(self, actions):
        if self.t == DELAY:
            return (
                self._obs(),
                0.5 * float(np.sum(np.asarray(actions) == self.cues)),
                True,
                False,
                {},
            )
        self.t += 1
        return self._obs(), 0.0, False, False, {}


gym.register("MemoryCue-v0", entry_point=MemoryCue, max_episode_steps=DELAY + 1)
