"""How often epsilon-greedy exploration around a scripted policy wins 2s_vs_1sc and 2m_vs_1z, and
what each policy is worth under QMIX's discount (docs/smaclite.md): the questions a map that QMIX
never wins at the defaults asks.

    python benchmarks/record.py smaclite_exploration -- python benchmarks/smaclite_exploration.py

plays, on each map, the policy a learner settles into first (attack only: attack the enemy when in
range, else walk to just inside range on 2s_vs_1sc, whose crawler cannot move, and stop on
2m_vs_1z, whose zealot comes to the marines: the docs' snippets) and, on 2s_vs_1sc, two policies
that win: the docs' kite (the crawler's target steps out of range at 13 health) and a shield
regeneration (both stalkers fire until their shields are gone, step out of range until the shields
are full again, then attack only). Each is played with the scripts' own exploration
(qmix.select_actions: each agent independently, with probability epsilon, a uniform available
action) at epsilons of a run: 0 (greedy evaluation), 0.025 (the defaults' final), 0.1, 0.3, 1
(uniform). Prints one markdown table: battles, battles won, the mean return, the mean discounted
return from the first step at gamma 0.99 (the default) and 0.995, the mean length. Needs SMAClite.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cleanmarl.env import make_env  # noqa: E402
from cleanmarl.qmix import select_actions  # noqa: E402

MOVES = {2: (0, 2), 3: (0, -2), 4: (2, 0), 5: (-2, 0)}  # north, south, east, west
ATTACK, STOP = 6, 1  # attack enemy 0; stop
EPSILONS = (0.0, 0.025, 0.1, 0.3, 1.0)
GAMMAS = (0.99, 0.995)


def scripted(sim, avail, policy, memory):
    """Each living agent's action under policy: "attack only", "kite" or "regeneration"."""
    enemy, actions = sim.enemies[0], []
    alive = list(sim.agents.values())
    if policy == "regeneration":  # phase 0: fight until no shields left; 1: wait for full shields
        phase = memory.setdefault("phase", 0)
        if phase == 0 and all(unit.shield <= 0 for unit in alive):
            memory["phase"] = 1
        elif phase == 1 and all(unit.shield >= unit.max_shield for unit in alive):
            memory["phase"] = 2
    for i in range(len(avail)):
        if i not in sim.agents:  # dead: no-op
            actions.append(0)
            continue
        me, other = sim.agents[i], sim.agents.get(1 - i)
        moves = [m for m in MOVES if avail[i][m]]
        distance = {m: np.linalg.norm(me.pos + MOVES[m] - enemy.pos) for m in moves}.get
        reach = me.attack_range + me.radius + enemy.radius - 0.1
        if policy == "kite":  # the crawler's target, at 13 health, steps out while targeted
            health = lambda unit: unit.hp + unit.shield  # noqa: E731
            start = health(me) <= 13 and other and health(other) > health(me)
            memory[i] = enemy.target is me and (memory.get(i, False) or bool(start))
            away = memory[i]
        else:  # regeneration: out of range while its shields regenerate
            phase = memory.get("phase", 2)
            away = phase == 1 or (phase == 0 and me.shield <= 0)
        if away:
            far = np.linalg.norm(me.pos - enemy.pos) > reach + 4  # out of range, with a margin
            actions.append(STOP if far else max(moves, key=distance))
        elif avail[i][ATTACK]:
            actions.append(ATTACK)
        elif enemy.max_velocity > 0:  # it comes to us
            actions.append(STOP)
        else:  # approach to just inside range, no closer
            near = [m for m in moves if distance(m) <= reach]
            actions.append(max(near, key=distance) if near else min(moves, key=distance))
    return actions


def play(env, policy, epsilon, rng):
    """One battle with the scripted policy explored at epsilon -> won, rewards."""
    obs, state, avail, info = env.reset()
    memory, rewards, done = {}, [], False
    while not done:
        greedy = np.eye(env.n_actions)[scripted(env._env, avail, policy, memory)]
        actions = select_actions(greedy, avail, epsilon, rng)
        obs, state, avail, reward, terminated, truncated, info = env.step(actions)
        rewards.append(reward)
        done = terminated or truncated
    return bool(info["battle_won"]), np.array(rewards)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--battles", type=int, default=300, help="battles per row")
    parser.add_argument("--seed", type=int, default=0, help="of the envs and the exploration")
    args = parser.parse_args(argv)
    rows = [("2s_vs_1sc", "attack only", EPSILONS), ("2s_vs_1sc", "kite", EPSILONS[:3])]
    rows += [("2s_vs_1sc", "regeneration", EPSILONS[:3]), ("2m_vs_1z", "attack only", EPSILONS)]
    gammas = " | ".join(f"discounted return, gamma {gamma:g}" for gamma in GAMMAS)
    print(f"| map | policy | epsilon | battles | won | return | {gammas} | length |")
    print("|---|---|---|---|---|---|" + "---|" * len(GAMMAS) + "---|")
    for map_name, policy, epsilons in rows:
        env = make_env("smaclite", map_name, seed=args.seed)
        rng = np.random.default_rng(args.seed)
        for epsilon in epsilons:
            outcomes = [play(env, policy, epsilon, rng) for _ in range(args.battles)]
            won = sum(w for w, _ in outcomes)
            cells = [f"`{map_name}`", policy, f"{epsilon:g}", f"{args.battles:,}", f"{won:,}"]
            cells.append(f"{np.mean([r.sum() for _, r in outcomes]):.2f}")
            for gamma in GAMMAS:
                discounted = [r @ gamma ** np.arange(len(r)) for _, r in outcomes]
                cells.append(f"{np.mean(discounted):.2f}")
            cells.append(f"{np.mean([len(r) for _, r in outcomes]):.0f}")
            print("| " + " | ".join(cells) + " |", flush=True)
        env.close()


if __name__ == "__main__":
    main()
