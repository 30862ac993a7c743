"""2c_vs_64zg on SMAClite is no test (docs/smaclite_notes.md#2c_vs_64zg): a policy uniform over the
available actions wins every battle, and colossi that only stop survive every 400-step episode.

    python benchmarks/smaclite_2c_vs_64zg.py
"""

import numpy as np

from cleanmarl.env import make_env


def battle(env, policy):
    """-> (won, episode length in env steps)"""
    obs, state, avail, info = env.reset()
    steps, terminated, truncated = 0, False, False
    while not (terminated or truncated):
        obs, state, avail, reward, terminated, truncated, info = env.step(policy(avail))
        steps += 1
    return info["battle_won"], steps


if __name__ == "__main__":
    env = make_env("smaclite", "2c_vs_64zg", seed=0)
    # uniform over available actions
    random_play = [battle(env, lambda avail: env.sample_actions()) for _ in range(20)]
    print("random policy:", sum(won for won, _ in random_play), "of 20 battles won")
    # action 1: stop (0: dead)
    stop_only = [battle(env, lambda avail: np.where(avail[:, 1], 1, 0)) for _ in range(5)]
    print("colossi that only stop: episode lengths", [steps for _, steps in stop_only])
