"""How often a saved qmix.py policy stalls: greedy against epsilon-greedy episodes of one checkpoint.

    python benchmarks/greedy_stalls.py runs/<run_name>/qmix.cleanmarl_model [--episodes 200] [--epsilon 0.025]

Plays the checkpoint's env (from the flags saved with it) on fresh episodes, once greedily and
once at --epsilon, and prints per mode: mean return, mean length, the fraction of episodes cut by
the time limit, and the fraction that ended with the whole env standing still, i.e. whose last
--still steps repeated the same observations (a loop a deterministic policy cannot leave).

For the greedy stalls it also prints how far apart the learned Q_tot puts the joint actions at the
stalled state. A joint action that leaves the state unchanged and earns nothing is worth exactly
gamma * V(s), so under the optimal Q it trails the best joint action by (1 - gamma) of the state's
value (1% at gamma 0.99): a greedy policy only escapes when its Q_tot resolves gaps that small.
And it prints Q_tot of the greedy joint action at the episodes' first states (times the checkpoint's
reward_scale, so in reward units) beside the discounted return the greedy policy then earns: a
Q_tot far above that return is a value no reward backs (e.g. a policy that waits for the time limit).
"""

import argparse
import itertools
import types

import numpy as np
import torch

from cleanmarl import qmix
from cleanmarl.env import make_env
from cleanmarl.utils.checkpoints import load_checkpoint


@torch.no_grad()
def play(env, q_network, flags, epsilon, rng, still, gamma):
    obs, state, avail, _ = env.reset()
    obs = qmix.agent_inputs(obs, None, env.n_actions, flags)  # what the agents see
    ep_return, discounted, history, terminated, truncated = (
        0.0,
        0.0,
        [(obs, state, avail)],
        False,
        False,
    )
    while not (terminated or truncated):
        q_values = q_network(torch.from_numpy(obs)).numpy()
        actions = qmix.select_actions(q_values, avail, epsilon, rng)
        obs, state, avail, reward, terminated, truncated, _ = env.step(actions)
        obs = qmix.agent_inputs(obs, actions, env.n_actions, flags)
        discounted += gamma ** (len(history) - 1) * reward
        ep_return += reward
        history.append((obs, state, avail))
    stalled = truncated and all(np.array_equal(h[0], history[-1][0]) for h in history[-still:])
    return (ep_return, len(history) - 1, truncated, stalled, discounted), history[-1], history[0]


@torch.no_grad()
def greedy_q_tot(q_network, mixer, obs, state, avail):
    """Q_tot of the greedy joint action over the available actions (in the mixer's units)."""
    q_values = q_network(torch.as_tensor(obs)).masked_fill(~torch.as_tensor(avail), -torch.inf)
    return float(mixer(q_values.max(-1).values[None], torch.as_tensor(state)[None]))


@torch.no_grad()
def joint_gap(q_network, mixer, obs, state, avail):
    """(Q_tot best - Q_tot second best) / |Q_tot best| over all available joint actions."""
    q_agents = q_network(torch.as_tensor(obs))  # [N, A]
    joint = list(itertools.product(*[np.flatnonzero(a) for a in avail]))
    chosen = q_agents[torch.arange(len(avail)), torch.as_tensor(np.array(joint))]  # [J, N]
    q_tot = mixer(chosen, torch.as_tensor(state).expand(len(joint), -1))
    top = q_tot.topk(2).values
    return float((top[0] - top[1]) / top[0].abs())


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("model", help="a checkpoint written by qmix.py --save-model")
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--epsilon", type=float, default=0.025)
    parser.add_argument(
        "--still", type=int, default=10, help="steps without any change that count as a stall"
    )
    parser.add_argument(
        "--seed", type=int, default=12345, help="env and exploration seed (not a training seed)"
    )
    args = parser.parse_args()
    try:
        # on the CPU, also from a GPU run
        checkpoint = load_checkpoint(args.model, qmix.CHECKPOINT_FLAGS, qmix.CHECKPOINT_NETS)
    except ValueError as e:
        raise SystemExit(f"greedy_stalls.py: error: {e}") from None
    flags = checkpoint["args"]
    env_kwargs = {k: flags[k] for k in ("env_family", "time_limit")}
    env = make_env(flags["env_type"], flags["env_name"], seed=args.seed, **env_kwargs)
    inputs = types.SimpleNamespace(**flags)  # agent_ids, last_action: what the agents saw
    obs = np.zeros((env.n_agents, env.obs_size), np.float32)
    obs_size = qmix.agent_inputs(obs, None, env.n_actions, inputs).shape[-1]
    q_network = qmix.QNetwork(obs_size, env.n_actions, flags["hidden_dim"], flags["num_layers"])
    q_network.load_state_dict(checkpoint["q_network"])
    mixer = qmix.QMixer(env.n_agents, env.state_size, flags["mixer_embed_dim"])
    mixer.load_state_dict(checkpoint["mixer"])
    # The mixer learned rewards / reward_scale (--normalize-reward); checkpoints before it was saved lack it.
    scale = checkpoint.get("reward_scale", 1.0)
    units = "reward units" if "reward_scale" in checkpoint else "mixer units"
    print(
        f"{flags['env_name']}, {args.episodes} episodes per mode, stall = last {args.still} steps unchanged"
    )
    for epsilon in (0.0, args.epsilon):
        rng = np.random.default_rng(args.seed)
        played = [
            play(env, q_network, inputs, epsilon, rng, args.still, flags["gamma"])
            for _ in range(args.episodes)
        ]
        ret, length, cut, stalled, discounted = np.array([p[0] for p in played], dtype=float).mean(
            0
        )
        print(
            f"epsilon {epsilon:<6} return {ret:.3f}  length {length:5.1f}  time-limit cut {cut:.1%}  stalled {stalled:.1%}"
        )
        if (
            epsilon == 0.0
        ):  # what Q_tot promises at the first state against what the greedy policy then earns
            start_q = (
                np.mean([greedy_q_tot(q_network, mixer, *first) for _, _, first in played]) * scale
            )
            print(
                f"  Q_tot at the first states (greedy joint action, {units}): {start_q:.3f}; "
                f"the greedy policy's discounted return from them: {discounted:.3f}"
            )
        stalls = [last for (_, _, _, is_stalled, _), last, _ in played if is_stalled]
        if epsilon == 0.0 and stalls and env.n_actions**env.n_agents <= 4096:
            gaps = [joint_gap(q_network, mixer, *last) for last in stalls]
            print(
                f"  at the {len(stalls)} stalled states, Q_tot's best joint action leads the second by a median "
                f"{np.median(gaps):.2%} of its value (max {np.max(gaps):.2%}); a step wasted in place costs "
                f"1 - gamma = {1 - flags['gamma']:.0%} under the optimal Q"
            )
