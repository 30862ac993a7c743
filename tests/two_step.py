"""The two-step cooperative matrix game of the QMIX paper (Rashid et al., 2018, Sec. 6.1).

Step 1: agent 0's action picks the second matrix (0 -> 2A, 1 -> 2B); all rewards are 0.
Step 2: 2A pays 7 for every joint action; 2B pays [[0, 1], [1, 8]]. The optimum is 8, which needs
non-linear mixing: VDN's additive decomposition settles for 7. Both agents see the state.
TwoStepLate-v0 is the same game paying 0 for its first episodes, TwoStepLateConstant-v0 paying 1 at every step of
them (both test reward normalisation).
"""

import gymnasium as gym
import numpy as np

PAYOFF_2B = np.array([[0.0, 1.0], [1.0, 8.0]])


class TwoStepGame(gym.Env):
    def __init__(self):
        self.observation_space = gym.spaces.Tuple([gym.spaces.Box(0, 1, (3,), np.float32)] * 2)
        self.action_space = gym.spaces.Tuple([gym.spaces.Discrete(2)] * 2)
        self._state = 0

    def get_state(self):
        return np.eye(3, dtype=np.float32)[self._state]

    def _obs(self):
        return (self.get_state(), self.get_state())

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self._state = 0
        return self._obs(), {}

    def step(self, actions):
        a0, a1 = actions
        if self._state == 0:
            self._state = 1 + int(a0)
            return self._obs(), 0.0, False, False, {}
        reward = 7.0 if self._state == 1 else float(PAYOFF_2B[a0, a1])
        return self._obs(), reward, True, False, {}


class LateRewardTwoStepGame(TwoStepGame):
    """Pays 0 until its 6th reset: the first updates run while the reward std is still 0."""

    resets = 0

    def reset(self, seed=None, options=None):
        self.resets += 1
        return super().reset(seed=seed, options=options)

    def step(self, actions):
        obs, reward, terminated, truncated, info = super().step(actions)
        return obs, reward if self.resets > 5 else 0.0, terminated, truncated, info


class LateConstantTwoStepGame(LateRewardTwoStepGame):
    """Pays 1 at every step until its 6th reset: the first updates learn a constant nonzero reward (std 0)."""

    def step(self, actions):
        obs, reward, terminated, truncated, info = super().step(actions)
        return obs, reward if self.resets > 5 else 1.0, terminated, truncated, info


gym.register("TwoStep-v0", entry_point=TwoStepGame, max_episode_steps=2)
gym.register("TwoStepLate-v0", entry_point=LateRewardTwoStepGame, max_episode_steps=2)
gym.register("TwoStepLateConstant-v0", entry_point=LateConstantTwoStepGame, max_episode_steps=2)
