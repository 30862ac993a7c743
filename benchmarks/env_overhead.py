"""Random-policy steps/s of each raw env and of its cleanmarl wrapper, measured side by side.

    python benchmarks/env_overhead.py [--seconds 3] [--rounds 3]

Raw and wrapped loops alternate in rounds so machine noise hits both alike; the ratio is
wrapper / raw (target >= 0.85). SMAClite 3m is measured when smaclite is installed.
"""

import argparse
import importlib.util
import time

import gymnasium as gym
import lbforaging  # noqa: F401  (registers the Foraging ids)
import numpy as np

from cleanmarl.env import make_env


def steps_per_second(step, seconds):
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        n += 1
    return n / (time.perf_counter() - start)


def raw_lbf():
    env = gym.make("Foraging-8x8-2p-2f-coop-v3")
    env.reset(seed=0)
    env.action_space.seed(0)

    def step():
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()

    return step


def raw_mpe():
    from mpe2 import simple_spread_v3

    env = simple_spread_v3.parallel_env()
    env.reset(seed=0)
    for agent in env.possible_agents:
        env.action_space(agent).seed(0)

    def step():
        env.step({a: env.action_space(a).sample() for a in env.agents})
        if not env.agents:
            env.reset()

    return step


def raw_smaclite():
    from cleanmarl.env.smaclite import classic_map_info

    use_cpp = importlib.util.find_spec("rvo2") is not None  # the same RVO2 port the wrapper picks
    env = gym.make(
        "smaclite/custom-v0", map_info=classic_map_info("3m"), seed=0, use_cpp_rvo2=use_cpp
    ).unwrapped
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    t = [0]

    def step():
        # SMAClite rejects unavailable actions, so a raw random policy must read its mask too.
        avail = np.array(env.get_avail_actions(), dtype=bool)
        actions = [int(rng.choice(np.flatnonzero(a))) for a in avail]
        _, _, terminated, _, _ = env.step(actions)
        t[0] += 1
        if terminated or t[0] >= 60:  # SMAC's 3m limit, as the wrapper applies it
            env.reset()
            t[0] = 0

    return step


def wrapped(env_type, env_name, **kwargs):
    env = make_env(env_type, env_name, seed=0, **kwargs)
    env.reset()

    def step():
        *_, terminated, truncated, _ = env.step(env.sample_actions())
        if terminated or truncated:
            env.reset()

    return step


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating raw/wrapped rounds")
    args = parser.parse_args()
    cases = [
        (
            "LBF Foraging-8x8-2p-2f-coop-v3",
            raw_lbf,
            lambda: wrapped("lbf", "Foraging-8x8-2p-2f-coop-v3"),
        ),
        (
            "MPE simple_spread_v3",
            raw_mpe,
            lambda: wrapped("pz", "simple_spread_v3", env_family="mpe"),
        ),
    ]
    if importlib.util.find_spec("smaclite") is not None:
        cases.append(("SMAClite 3m", raw_smaclite, lambda: wrapped("smaclite", "3m")))
    else:
        print("SMAClite not installed: skipped")
    print(f"{'env':32s} {'raw steps/s':>12s} {'wrapper steps/s':>16s} {'ratio':>6s}")
    for name, make_raw, make_wrapped in cases:
        raw_step, wrapped_step = make_raw(), make_wrapped()
        raw, wrap = [], []
        for _ in range(args.rounds):
            raw.append(steps_per_second(raw_step, args.seconds))
            wrap.append(steps_per_second(wrapped_step, args.seconds))
        print(
            f"{name:32s} {np.mean(raw):12.0f} {np.mean(wrap):16.0f} {np.mean(wrap) / np.mean(raw):6.2f}"
        )
