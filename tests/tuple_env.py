"""A tiny deterministic gymnasium env with Tuple spaces, for the "gym" family in tests/test_env.py.

Three agents walk on a line of `size` cells to one shared goal cell. Agents 0 and 1 have 3 actions
(STAY, LEFT, RIGHT) and observe (position, goal, t); agent 2 can also JUMP two cells right and
observes the others' mean position too, so the wrapper must pad both obs and actions.

Rewards are a per-agent list. The task really ends when every agent stands on the goal; the env's
own step limit `max_steps` is also reported as `terminated=True`, as rware and lbforaging do.
Importing this module registers both ids, so "tests.tuple_env:TupleChase-v0" works as a gym id.
"""

import gymnasium as gym
import numpy as np
from gymnasium import spaces

ENV_ID = "TupleChase-v0"
MASKED_ENV_ID = "TupleChaseMasked-v0"
STAY, LEFT, RIGHT, JUMP = range(4)
N_ACTIONS = (3, 3, 4)
OBS_SIZES = (3, 3, 4)


class TupleChaseEnv(gym.Env):
    """No action masks of its own: the wrapper derives them from the Discrete sizes. Moves are clipped at the edges."""

    metadata = {"render_modes": []}

    def __init__(self, size=7, max_steps=20):
        self.size, self.max_steps = size, max_steps
        self.action_space = spaces.Tuple([spaces.Discrete(n) for n in N_ACTIONS])
        high = float(max(size, max_steps))
        self.observation_space = spaces.Tuple(
            [spaces.Box(0.0, high, (n,), np.float32) for n in OBS_SIZES]
        )
        self.pos = np.zeros(len(N_ACTIONS), dtype=np.int64)
        self.goal, self.t = 0, 0
        self.all_on_goal = False  # lets tests tell a real end from the step-limit "termination"

    def _obs(self):
        obs = []
        for i, n in enumerate(OBS_SIZES):
            others = np.delete(self.pos, i).mean()
            obs.append(np.array([self.pos[i], self.goal, self.t, others][:n], dtype=np.float32))
        return tuple(obs)

    def get_state(self):
        return np.array([*self.pos, self.goal], dtype=np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.goal = int(self.np_random.integers(self.size))
        pos = self.np_random.integers(self.size - 1, size=len(N_ACTIONS))
        self.pos = np.where(pos >= self.goal, pos + 1, pos)  # nobody starts on the goal
        self.t, self.all_on_goal = 0, False
        return self._obs(), {}

    def step(self, actions):
        assert len(actions) == len(N_ACTIONS)
        was_on_goal = self.pos == self.goal
        for i, a in enumerate(actions):
            assert 0 <= a < N_ACTIONS[i], f"agent {i} got action {a}"
            move = {STAY: 0, LEFT: -1, RIGHT: 1, JUMP: 2}[int(a)]
            self.pos[i] = min(max(self.pos[i] + move, 0), self.size - 1)
        self.t += 1
        on_goal = self.pos == self.goal
        rewards = [
            1.0 if on and not was else (0.0 if on else -0.1)
            for on, was in zip(on_goal, was_on_goal, strict=True)
        ]
        self.all_on_goal = bool(on_goal.all())
        terminated = self.all_on_goal or self.t >= self.max_steps
        return self._obs(), rewards, terminated, False, {}


class MaskedTupleChaseEnv(TupleChaseEnv):
    """Same task with get_avail_actions: no move off the line, and an agent on the goal may only STAY.

    reuse_buffers: get_state/get_avail_actions return the same arrays on every call, as many envs do.
    """

    def __init__(self, size=7, max_steps=20, reuse_buffers=False):
        super().__init__(size, max_steps)
        self.reuse_buffers = reuse_buffers
        self._state = np.zeros(len(N_ACTIONS) + 1, dtype=np.float32)
        self._avail = np.zeros((len(N_ACTIONS), max(N_ACTIONS)), dtype=bool)

    def get_state(self):
        if not self.reuse_buffers:
            return super().get_state()
        self._state[:] = super().get_state()
        return self._state

    def get_avail_actions(self):
        avail = self._avail if self.reuse_buffers else np.zeros_like(self._avail)
        avail[:] = False
        for i, n in enumerate(N_ACTIONS):
            p = self.pos[i]
            if p == self.goal:
                avail[i, STAY] = True
                continue
            avail[i, [STAY, LEFT, RIGHT]] = True, p > 0, p < self.size - 1
            if n > JUMP:
                avail[i, JUMP] = p + 2 <= self.size - 1
        return avail


for _id, _cls in ((ENV_ID, TupleChaseEnv), (MASKED_ENV_ID, MaskedTupleChaseEnv)):
    if _id not in gym.registry:
        gym.register(
            id=_id, entry_point=_cls
        )  # no max_episode_steps: the env's own limit is the only one
