"""SMAClite (uoe-agents/smaclite) behind the cleanmarl env contract, with the classic SMAC maps.

SMAClite registers a dozen SMAC scenarios; the classic ones it lacks (3m, 8m, ...) are defined
here as this project's own map data and built through `smaclite/custom-v0`. SMAClite has no
time limit: SMAC's per-map episode limits are the task's horizon (a battle not won by then is lost),
so reaching one terminates and obs and state carry the time (base.MultiAgentEnv).
"""

import contextlib
import dataclasses
import importlib.util
import io
import os

import numpy as np

from cleanmarl.env.base import EnvError, MultiAgentEnv, require

INSTALL = (
    "pip install --no-deps git+https://github.com/uoe-agents/smaclite.git "
    "(then pip install -e '.[smaclite]' for its dependencies); without it these families work: "
    "lbf (Foraging-8x8-2p-2f-coop-v3), pz (simple_spread_v3) and gym tuple envs (rware:rware-tiny-2ag-v2)"
)

RVO2_INSTALL = (
    "pip install cython && pip install --no-build-isolation git+https://github.com/micadam/SMAClite-Python-RVO2.git "
    "(needs cmake and a C++ compiler)"
)

# SMAC's episode limits (smac/env/starcraft2/maps/smac_maps.py), in env steps.
EPISODE_LIMITS = {
    "3m": 60, "8m": 120, "25m": 150, "5m_vs_6m": 70, "8m_vs_9m": 120, "10m_vs_11m": 150,
    "27m_vs_30m": 180, "MMM": 150, "MMM2": 180, "2s3z": 120, "3s5z": 150, "3s5z_vs_3s6z": 170,
    "3s_vs_3z": 150, "3s_vs_4z": 200, "3s_vs_5z": 250, "1c3s5z": 180, "2m_vs_1z": 150,
    "corridor": 400, "2s_vs_1sc": 300, "so_many_baneling": 100, "bane_vs_bane": 200,
    "2c_vs_64zg": 400,
}  # fmt: skip

# Classic SMAC maps SMAClite does not register: (ally units, enemy units, shields, unit type ids).
# Armies start at SMAClite's standard positions (9, 16) and (23, 16) on its SIMPLE terrain.
CLASSIC_MAPS = {
    "3m": ({"MARINE": 3}, {"MARINE": 3}, (False, False), None),
    "8m": ({"MARINE": 8}, {"MARINE": 8}, (False, False), None),
    "25m": ({"MARINE": 25}, {"MARINE": 25}, (False, False), None),
    "5m_vs_6m": ({"MARINE": 5}, {"MARINE": 6}, (False, False), None),
    "8m_vs_9m": ({"MARINE": 8}, {"MARINE": 9}, (False, False), None),
    "2m_vs_1z": ({"MARINE": 2}, {"ZEALOT": 1}, (False, True), None),
    "3s_vs_3z": ({"STALKER": 3}, {"ZEALOT": 3}, (True, True), None),
    "3s_vs_4z": ({"STALKER": 3}, {"ZEALOT": 4}, (True, True), None),
    "so_many_baneling": ({"ZEALOT": 7}, {"BANELING": 32}, (True, False), None),
    "1c3s5z": (
        {"COLOSSUS": 1, "STALKER": 3, "ZEALOT": 5},
        {"COLOSSUS": 1, "STALKER": 3, "ZEALOT": 5},
        (True, True),
        {"COLOSSUS": 0, "STALKER": 1, "ZEALOT": 2},
    ),
}


# SMAClite's baneling deals 80 to any unit it blasts: StarCraft II's figure against buildings. Against
# units SC2's is 16, +19 against light ones (zealots): Liquipedia, "Baneling (Legacy of the Void)".
# With 80 a zealot falls to two blasts and no policy tried wins so_many_baneling (docs/smaclite.md).
# The classic maps defined here take SC2's figures; SMAClite's own maps (bane_vs_bane) keep its own.
UNIT_FIXES = {"BANELING": {"damage": 16, "bonuses": {"LIGHT": 19}}}


def _registered_maps(gym):
    return {
        k[len("smaclite/") : -len("-v0")]: k
        for k in gym.registry
        if k.startswith("smaclite/") and k != "smaclite/custom-v0"
    }


def classic_map_info(name):
    """Build SMAClite's MapInfo for one of CLASSIC_MAPS."""
    from smaclite.env.maps.map import Group, MapInfo
    from smaclite.env.terrain.terrain import TerrainPreset
    from smaclite.env.units.unit_type import Attribute, CustomUnitType, StandardUnit
    from smaclite.env.util.faction import Faction

    allies, enemies, (ally_shields, enemy_shields), type_ids = CLASSIC_MAPS[name]

    def unit_type(u):
        """SMAClite's unit u, or a copy with UNIT_FIXES' figures (same name, so same targeter)."""
        if u not in UNIT_FIXES:
            return StandardUnit[u]
        fix = dict(UNIT_FIXES[u])
        if "bonuses" in fix:  # attribute names -> SMAClite's Attribute
            fix["bonuses"] = {Attribute[a]: b for a, b in fix["bonuses"].items()}
        stats = dataclasses.replace(StandardUnit[u].value, **fix)
        return CustomUnitType(stats, f"{u} (SC2's figures)")

    def group(x, faction, units):
        units = [(unit_type(u), n) for u, n in units.items()]
        return Group(x=x, y=16, faction=faction, units=units)

    return MapInfo(
        name=name,
        num_allied_units=sum(allies.values()),
        num_enemy_units=sum(enemies.values()),
        groups=[group(9, Faction.ALLY, allies), group(23, Faction.ENEMY, enemies)],
        attack_point=(9, 16),
        terrain=TerrainPreset.SIMPLE.value,
        ally_has_shields=ally_shields,
        enemy_has_shields=enemy_shields,
        num_unit_types=len(type_ids) if type_ids else 0,
        unit_type_ids={unit_type(u): i for u, i in type_ids.items()} if type_ids else None,
    )


def guard_laser_beam(targeter_module):
    """Make SMAClite's colossus beam (LaserBeamTargeter.target) hit nobody where it would raise. Process-wide, once.

    An attack order outlives its target within the 8 world steps of an env step: a colossus keeps firing at the spot
    of a unit that died, and when no unit is left within the beam's reach SMAClite rotates an empty position array
    (np.dot raises "shapes (0,) and (2,2) not aligned"). On 2c_vs_64zg random play hits it within ~15 episodes.
    The beam's damage there is a sum over no units, 0: the guard returns that and calls SMAClite's own code
    otherwise, so every episode that did not raise is unchanged.
    """
    beam = getattr(targeter_module, "LaserBeamTargeter", None)
    original = getattr(beam, "target", None)
    if original is None or getattr(original, "guarded", False):
        return

    def target(self, origin, target, **kwargs):
        if len(kwargs["neighbour_finder"].query_radius([target], self.radius)[0]) == 0:
            return 0
        return original(self, origin, target, **kwargs)

    target.guarded = True
    beam.target = target


_REPORTED = set()


def report(line):
    """Print `line` once per process: a run builds a training and an evaluation env (multienvs, one per worker)."""
    if line not in _REPORTED:
        _REPORTED.add(line)
        print(line, flush=True)


def env_flag(name):
    """True / False from a 0/1 environment variable, None when it is unset or empty."""
    value = os.environ.get(name, "")
    if value not in ("", "0", "1"):
        raise EnvError(f"{name} must be 0 or 1, got {value!r}")
    return None if value == "" else value == "1"


class SMACliteEnv(MultiAgentEnv):
    """Team reward as SMAClite gives it (one shared, scaled reward); info carries battle_won.

    use_cpp_rvo2: SMAClite's C++ RVO2 port (None: when the rvo2 module is importable, or CLEANMARL_SMACLITE_CPP_RVO2).
    fast_path: smaclite_fast's speed-ups and the mask handed to step(), same episodes (None: on, or
    CLEANMARL_SMACLITE_FAST_PATH=0 for off).
    """

    def __init__(
        self,
        env_name,
        seed=None,
        time_limit=None,
        use_cpp_rvo2=None,
        fast_path=None,
        **kwargs,
    ):
        from cleanmarl.env.smaclite_fast import FastPath, _module, speed_up

        gym = require("gymnasium", "pip install gymnasium")
        require("smaclite", INSTALL)
        guard_laser_beam(_module("smaclite.env.units.targeters.targeter"))
        registered = _registered_maps(gym)
        if env_name in CLASSIC_MAPS:
            map_info = classic_map_info(env_name)
        elif env_name in registered:
            map_info = gym.spec(registered[env_name]).kwargs["map_info"]
        else:
            names = sorted(set(CLASSIC_MAPS) | set(registered), key=str.lower)
            raise EnvError(f"unknown SMAClite map {env_name!r}: choose one of {', '.join(names)}")
        use_cpp_rvo2 = (
            env_flag("CLEANMARL_SMACLITE_CPP_RVO2") if use_cpp_rvo2 is None else use_cpp_rvo2
        )
        if use_cpp_rvo2 is None:  # the C++ RVO2 module is much faster; use it whenever it is there
            use_cpp_rvo2 = importlib.util.find_spec("rvo2") is not None
        elif use_cpp_rvo2 and importlib.util.find_spec("rvo2") is None:
            raise EnvError(f"use_cpp_rvo2 needs the rvo2 module: {RVO2_INSTALL}")
        fast_path = env_flag("CLEANMARL_SMACLITE_FAST_PATH") if fast_path is None else fast_path
        self.use_cpp_rvo2, self.fast_path = use_cpp_rvo2, fast_path is not False
        self.physics = f"{'C++' if use_cpp_rvo2 else 'numpy'} RVO2, {'fast' if self.fast_path else 'original'} path"
        report(f"SMAClite physics: {self.physics} (docs/env.md, SMAClite speed)")
        self._fast = FastPath(self.fast_path)
        with (
            contextlib.redirect_stdout(io.StringIO()),
            self._fast,
        ):  # SMAClite prints which RVO2 port it uses
            env = gym.make(
                "smaclite/custom-v0",
                map_info=map_info,
                seed=seed,
                use_cpp_rvo2=use_cpp_rvo2,
                **kwargs,
            )
        self._env = env.unwrapped
        if self.fast_path:
            speed_up(self._env)
        # SMAC's map limit is part of the task: a battle not won by then is lost (SMAC's win rate). Maps without one
        # have no horizon, and time_limit only cuts their episodes.
        horizon = EPISODE_LIMITS.get(env_name)
        limit = time_limit or horizon
        e = self._env
        super().__init__(
            e.n_agents,
            e.n_actions,
            e.obs_size,
            e.state_size,
            limit,
            seed,
            horizon=horizon,
        )

    def _observe(self, obs):
        """Called inside the fast path: the avail mask asks point_inside_circle of every agent-target pair (half of its
        calls in a step)."""
        avail = type(self._env).get_avail_actions(self._env)
        if self.fast_path:  # SMAClite's step() first checks the actions against this state's mask
            self._env.get_avail_actions = lambda: avail
        return np.asarray(obs, dtype=np.float32), self._env.get_state(), np.array(avail, dtype=bool)

    def _reset(self, seed):
        with self._fast:
            obs, info = self._env.reset(seed=seed)
            # SMAClite keeps the last joint action (part of the state) across resets: clear it, or
            # every episode's first state would carry the previous episode's final actions.
            self._env.last_actions = np.zeros_like(self._env.last_actions)
            return *self._observe(obs), info

    def _step(self, actions):
        # SMAClite asserts Python ints, and action 0 (no-op) for dead agents (its mask says so too).
        with self._fast:
            obs, reward, terminated, _, info = self._env.step(actions.tolist())
            return (
                *self._observe(obs),
                np.array([reward], dtype=np.float32),
                terminated,
                False,
                info,
            )

    def close(self):
        self._env.close()
