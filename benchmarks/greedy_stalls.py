"""How often a saved qmix.py policy stalls: greedy against epsilon-greedy episodes of one checkpoint.

    python benchmarks/greedy_stalls.py runs/<run_name>/qmix.cleanmarl_model [--episodes 200] [--epsilon 0.025]

Plays the checkpoint's env (from the flags saved with it) on fresh episodes, once greedily and
once at --epsilon, and prints per mode: mean return, mean length, the fraction of episodes cut by
the time limit, and the fraction that ended with the whole env standing still, i.e. whose last
--still steps repeated the same observations (a loop a deterministic policy cannot leave).
"""

import argparse

import numpy as np
import torch

from cleanmarl import qmix
from cleanmarl.env import make_env


def play(env, weights, epsilon, rng, still):
    obs, _, avail, _ = env.reset()
    ep_return, history, terminated, truncated = 0.0, [obs], False, False
    while not (terminated or truncated):
        actions = qmix.select_actions(qmix.q_values_numpy(weights, obs), avail, epsilon, rng)
        obs, _, avail, reward, terminated, truncated, _ = env.step(actions)
        ep_return += reward
        history.append(obs)
    stalled = truncated and all(np.array_equal(h, history[-1]) for h in history[-still:])
    return ep_return, len(history) - 1, truncated, stalled


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("model", help="a checkpoint written by qmix.py --save-model")
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--epsilon", type=float, default=0.025)
    parser.add_argument("--still", type=int, default=10, help="steps without any change that count as a stall")
    parser.add_argument("--seed", type=int, default=12345, help="env and exploration seed (not a training seed)")
    args = parser.parse_args()
    checkpoint = torch.load(args.model, weights_only=True)
    flags = checkpoint["args"]
    env_kwargs = dict(env_family=flags["env_family"], agent_ids=flags["agent_ids"], time_limit=flags["time_limit"])
    env = make_env(flags["env_type"], flags["env_name"], seed=args.seed, **env_kwargs)
    q_network = qmix.QNetwork(env.obs_size, env.n_actions, flags["hidden_dim"], flags["num_layers"])
    q_network.load_state_dict(checkpoint["q_network"])
    weights = qmix.numpy_weights(q_network)
    print(f"{flags['env_name']}, {args.episodes} episodes per mode, stall = last {args.still} steps unchanged")
    for epsilon in (0.0, args.epsilon):
        rng = np.random.default_rng(args.seed)
        results = np.array([play(env, weights, epsilon, rng, args.still) for _ in range(args.episodes)], dtype=float)
        ret, length, cut, stalled = results.mean(0)
        print(
            f"epsilon {epsilon:<6} return {ret:.3f}  length {length:5.1f}  time-limit cut {cut:.1%}  stalled {stalled:.1%}"
        )
