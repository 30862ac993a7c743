"""Whether any policy wins so_many_baneling with SMAClite's baneling, and with StarCraft II's blast
(docs/smaclite_notes.md#so_many_baneling).

    python benchmarks/record.py smaclite_baneling -- python benchmarks/smaclite_baneling.py

SMAClite's baneling blasts every unit within 2.2 for 80 (SC2's figure against buildings); SC2's
blasts units for 16, +19 against light ones such as zealots: 35 (cleanmarl.env.smaclite.UNIT_FIXES,
which the classic maps take). Seven zealots against 32 banelings, each baneling version played by
three policies: attack only (attack a baneling in reach, else stop: the banelings come to the
zealots), spread (the zealots walk apart, north and south by 3 steps per place from the middle one,
then attack only) and uniform (each agent a uniform available action: epsilon 1 in
qmix.select_actions). Prints one markdown table: battles, won, mean return, banelings left, length.
Needs SMAClite.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import cleanmarl.env.smaclite as smaclite_module  # noqa: E402
from cleanmarl.env import make_env  # noqa: E402
from cleanmarl.qmix import select_actions  # noqa: E402

NORTH, SOUTH, STOP, ATTACK = 2, 3, 1, 6  # ATTACK: the first attack action (enemy 0)
BANELINGS = {"SMAClite's: 80": {}, "SC2's: 16, +19 light": None}


def scripted(avail, policy, t):
    """Each zealot's action: attack the first baneling in reach, else stop; spread walks first."""
    actions = []
    for i, a in enumerate(avail):
        if not a[STOP]:  # dead: no-op is its only action
            actions.append(0)
            continue
        place, attack = i - len(avail) // 2, np.flatnonzero(a[ATTACK:])
        walk = NORTH if place > 0 else SOUTH
        if policy == "spread" and t < 3 * abs(place) and a[walk]:
            actions.append(walk)
        else:
            actions.append(ATTACK + int(attack[0]) if len(attack) else STOP)
    return actions


def play(env, policy, rng):
    """One battle -> won, return, banelings left, length."""
    obs, state, avail, info = env.reset()
    score, t, done = 0.0, 0, False
    while not done:
        greedy = np.eye(env.n_actions)[scripted(avail, policy, t)]
        actions = select_actions(greedy, avail, 1.0 if policy == "uniform" else 0.0, rng)
        obs, state, avail, reward, terminated, truncated, info = env.step(actions)
        score, t, done = score + reward, t + 1, terminated or truncated
    left = sum(unit.hp > 0 for unit in env._env.enemies.values())
    return bool(info["battle_won"]), score, left, t


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--battles", type=int, default=100, help="battles per row")
    parser.add_argument("--seed", type=int, default=0, help="of the envs and the uniform policy")
    args = parser.parse_args(argv)
    fixes = dict(smaclite_module.UNIT_FIXES)
    print("| baneling | policy | battles | won | return | banelings left | length |")
    print("|---|---|---|---|---|---|---|")
    for baneling, unit_fixes in BANELINGS.items():
        smaclite_module.UNIT_FIXES = fixes if unit_fixes is None else unit_fixes
        env = make_env("smaclite", "so_many_baneling", seed=args.seed)
        rng = np.random.default_rng(args.seed)
        for policy in ("attack only", "spread", "uniform"):
            outcomes = np.array([play(env, policy, rng) for _ in range(args.battles)], float)
            won, score, left, length = outcomes.T
            cells = [baneling, policy, f"{args.battles:,}", f"{int(won.sum()):,}"]
            cells += [f"{np.mean(score):.2f}", f"{np.mean(left):.1f}", f"{np.mean(length):.0f}"]
            print("| " + " | ".join(cells) + " |", flush=True)
        env.close()
    smaclite_module.UNIT_FIXES = fixes


if __name__ == "__main__":
    main()
