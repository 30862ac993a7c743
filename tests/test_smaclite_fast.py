"""cleanmarl/env/smaclite_fast.py: SMAClite's fast path gives its episodes bit for bit.

Where SMAClite is installed, random-policy episodes on every map the project offers are compared step for step with
SMAClite's own path. Everywhere (CI has no SMAClite): the neighbour search against scikit-learn's KDTree on random
and borderline point sets with every argument SMAClite passes, the R-tree cache, point_inside_circle against the
exact answer, and the swap in and out of SMAClite's modules with its guards.
"""

import hashlib
import importlib.util
import sys
import types

import numpy as np
import pytest

from cleanmarl.env import EnvError, make_env
from cleanmarl.env import smaclite as smaclite_module
from cleanmarl.env.smaclite_fast import (
    POINT_IN_CIRCLE_USERS,
    CachedIntersection,
    FastPath,
    RadiusNeighbours,
    point_inside_circle,
)
from tests.test_env import fake_smaclite  # noqa: F401  (SMACliteEnv over a stand-in of SMAClite)

HAS_SMACLITE = importlib.util.find_spec("smaclite") is not None
NEEDS_SMACLITE = pytest.mark.skipif(not HAS_SMACLITE, reason="needs smaclite (README, SMAClite)")
NEEDS_SKLEARN = pytest.mark.skipif(
    importlib.util.find_spec("sklearn") is None,
    reason="needs scikit-learn: pip install -e '.[test]'",
)


def point_sets(rng):
    """(points, queries) as SMAClite makes them: float32 unit positions on a 32 x 32 map, queried by units of the
    set and by others; on a lattice too, where distances of exactly the radius occur (3-4-5 triangles)."""
    for n in (1, 2, 3, 7, 20, 57, 80, 81, 120):
        points = (rng.random((n, 2)) * 32).astype(np.float32)
        yield (
            points,
            np.concatenate(
                [points[: rng.integers(1, n + 1)], (rng.random((3, 2)) * 32).astype(np.float32)]
            ),
        )
        lattice = rng.integers(0, 12, (n, 2)).astype(np.float32)
        yield lattice, lattice[: rng.integers(1, n + 1)]


@NEEDS_SKLEARN
@pytest.mark.parametrize("return_distance", [False, True])
def test_radius_neighbours_answers_as_scikit_learns_kdtree(return_distance):
    """The same neighbours in the same order, the same distance bits, for one radius and for one radius per query
    (SMAClite passes both, as floats and ints); up to 80 points ours, beyond that scikit-learn's own tree."""
    from sklearn.neighbors import KDTree

    rng = np.random.default_rng(0)
    cases, borderline = 0, 0
    for points, queries in point_sets(rng):
        for r in (
            5,
            5.0,
            9.0,
            0.375,
            [float(x) for x in rng.choice([1.0, 3.0, 5.0, 6.5], len(queries))],
        ):
            theirs = KDTree(points).query_radius(queries, r, return_distance=return_distance)
            ours = RadiusNeighbours(points, fallback=KDTree).query_radius(
                queries, r, return_distance=return_distance
            )
            their_ind, their_dist = theirs if return_distance else (theirs, None)
            our_ind, our_dist = ours if return_distance else (ours, None)
            assert len(our_ind) == len(their_ind) == len(queries)
            radii = np.broadcast_to(np.asarray(r, dtype=np.float64), len(queries))
            for i in range(len(queries)):
                assert our_ind[i].tolist() == their_ind[i].tolist(), (len(points), r, i)
                if return_distance:
                    assert our_dist[i].tobytes() == their_dist[i].tobytes(), (len(points), r, i)
                distances = np.hypot(*(points.astype(np.float64) - queries[i]).T)
                borderline += int(np.sum(distances[their_ind[i]] == radii[i]))
            cases += 1
    assert cases == 90 and borderline > 50  # the lattice put neighbours exactly on the radius


def test_a_neighbour_exactly_on_the_radius_is_found():
    points = np.array([[0, 0], [3, 4], [6, 8]], dtype=np.float32)
    ind, dist = RadiusNeighbours(points).query_radius(points[:1], 5.0, return_distance=True)
    assert ind[0].tolist() == [0, 1] and dist[0].tolist() == [0.0, 5.0]
    assert [i.tolist() for i in RadiusNeighbours(points).query_radius(points[:2], [5, 4.99])] == [
        [0, 1],
        [1],
    ]
    with pytest.raises(ValueError, match="one radius or one per query point"):
        RadiusNeighbours(points).query_radius(points[:2], [1.0, 2.0, 3.0])


def test_cached_intersection_asks_the_index_once_per_box():
    calls = []

    class Index:
        def intersection(self, box):
            calls.append(box)
            return iter([3, 1, 2] if box[0] < 0 else [1])

    cached = CachedIntersection(Index())
    whole = (-100, -100, 100, 100)
    assert [cached.intersection(whole) for _ in range(3)] == [[3, 1, 2]] * 3
    assert cached.intersection((0, 0, 1, 1)) == [1] and calls == [whole, (0, 0, 1, 1)]


def test_point_inside_circle_is_exact_on_float32_positions():
    """Away from the boundary by more than float32 rounding the answer is the exact one; on it (integer lattice),
    points at exactly the radius are inside."""
    rng = np.random.default_rng(1)
    point = (rng.random((20000, 2)) * 32).astype(np.float32)
    center = (point + rng.normal(0, 5, point.shape)).astype(np.float32)
    radius = rng.random(20000) * 8
    exact = np.hypot(*(point.astype(np.float64) - center).T)
    clear = np.abs(exact - radius) > 1e-4
    ours = np.array(
        [point_inside_circle(p, c, r) for p, c, r in zip(point, center, radius, strict=True)]
    )
    assert clear.sum() > 19000 and (ours[clear] == (exact <= radius)[clear]).all()
    on_circle = [((0, 0), (3, 4), 5.0), ((1, 1), (1, 6), 5), ((2, 2), (5, 6), 5.0)]
    for p, c, r in on_circle:
        assert point_inside_circle(np.float32(p), np.float32(c), r)
        assert not point_inside_circle(np.float32(p), np.float32(c), r - 1e-3)


@pytest.mark.skipif(not HAS_SMACLITE, reason="needs smaclite (README, SMAClite)")
def test_point_inside_circle_answers_as_smaclites():
    from smaclite.env.util import point_inside_circle as theirs

    rng = np.random.default_rng(2)
    for _ in range(50000):
        p = (rng.integers(0, 20, 2) if rng.random() < 0.3 else rng.random(2) * 32).astype(
            np.float32
        )
        c = (p + (rng.integers(-6, 7, 2) if rng.random() < 0.3 else rng.normal(0, 4, 2))).astype(
            np.float32
        )
        r = float(rng.integers(1, 8)) if rng.random() < 0.3 else float(rng.random() * 8)
        assert bool(point_inside_circle(p, c, r)) == bool(theirs(p, c, r)), (p, c, r)


@pytest.fixture
def fake_smaclite_modules(monkeypatch):
    """Stand-ins for the SMAClite modules FastPath swaps into: -> (neighbour_finder, util, users)."""
    finder = types.ModuleType("smaclite.env.rvo2.neighbour_finder")
    util = types.ModuleType("smaclite.env.util")
    finder.KDTree = object()
    util.point_inside_circle = object()
    users = [types.ModuleType(name) for name in POINT_IN_CIRCLE_USERS]
    for module in users:
        module.point_inside_circle = util.point_inside_circle
    for module in (finder, util, *users):
        monkeypatch.setitem(sys.modules, module.__name__, module)
    return finder, util, users


def test_the_fast_path_is_swapped_in_only_inside_its_block(fake_smaclite_modules):
    finder, util, users = fake_smaclite_modules
    kdtree, theirs = finder.KDTree, util.point_inside_circle
    fast = FastPath(True)
    with fast:
        assert isinstance(finder.KDTree([[0.0, 0.0]]), RadiusNeighbours)
        assert all(m.point_inside_circle is point_inside_circle for m in users)
    assert finder.KDTree is kdtree and all(m.point_inside_circle is theirs for m in users)
    with pytest.raises(RuntimeError), fast:
        raise RuntimeError("a step failed")
    assert finder.KDTree is kdtree and all(m.point_inside_circle is theirs for m in users)
    with FastPath(False):
        assert finder.KDTree is kdtree and all(m.point_inside_circle is theirs for m in users)


def test_a_smaclite_without_what_is_replaced_keeps_its_own(fake_smaclite_modules, monkeypatch):
    finder, util, users = fake_smaclite_modules
    del finder.KDTree
    monkeypatch.setattr(users[0], "point_inside_circle", "its own, rebound")
    with FastPath(True):
        assert not hasattr(finder, "KDTree") and users[0].point_inside_circle == "its own, rebound"
        assert users[1].point_inside_circle is point_inside_circle
    monkeypatch.setitem(sys.modules, "smaclite.env.util", None)  # a module that cannot be imported
    with FastPath(True):
        assert users[1].point_inside_circle is util.point_inside_circle


def test_the_physics_is_reported_once_and_switched_by_env_variables(
    monkeypatch,
    capsys,
    fake_smaclite,  # noqa: F811
):
    monkeypatch.setattr(smaclite_module, "_REPORTED", set())
    monkeypatch.setenv("CLEANMARL_SMACLITE_CPP_RVO2", "0")
    envs = [make_env("smaclite", "3m", seed=0) for _ in range(2)]
    assert capsys.readouterr().out.splitlines() == [
        "SMAClite physics: numpy RVO2, fast path (docs/env.md, SMAClite speed)"
    ]
    assert (
        envs[0].physics == "numpy RVO2, fast path" and envs[0].fast_path and len(fake_smaclite) == 2
    )
    monkeypatch.setenv("CLEANMARL_SMACLITE_FAST_PATH", "0")
    assert make_env("smaclite", "3m", seed=0).physics == "numpy RVO2, original path"
    assert make_env("smaclite", "3m", seed=0, fast_path=True).fast_path  # the keyword wins
    monkeypatch.setenv("CLEANMARL_SMACLITE_FAST_PATH", "no")
    with pytest.raises(EnvError, match="CLEANMARL_SMACLITE_FAST_PATH must be 0 or 1, got 'no'"):
        make_env("smaclite", "3m", seed=0)


def episode_hashes(env_name, use_cpp_rvo2, fast_path, steps):
    """One hash per step of random-policy play (obs, state, avail_actions, reward, terminated, truncated)."""
    env = make_env(
        "smaclite",
        env_name,
        seed=7,
        use_cpp_rvo2=use_cpp_rvo2,
        fast_path=fast_path,
        time_limit=None,
    )
    env.reset()
    hashes = []
    for _ in range(steps):
        obs, state, avail, reward, terminated, truncated, _ = env.step(env.sample_actions())
        fields = (obs, state, avail, np.float64(reward), np.bool_(terminated), np.bool_(truncated))
        hashes.append(
            hashlib.sha256(b"".join(np.ascontiguousarray(f).tobytes() for f in fields)).hexdigest()
        )
        if terminated or truncated:
            env.reset()
    env.close()
    return hashes


def offered_maps():
    if not HAS_SMACLITE:
        return ["3m"]
    import gymnasium as gym
    import smaclite  # noqa: F401  (registers its maps in gymnasium)

    return sorted(
        set(smaclite_module.CLASSIC_MAPS) | set(smaclite_module._registered_maps(gym)),
        key=str.lower,
    )


@NEEDS_SMACLITE
@pytest.mark.parametrize("use_cpp_rvo2", [False, True], ids=["numpy-rvo2", "cpp-rvo2"])
@pytest.mark.parametrize("env_name", offered_maps())
def test_the_fast_path_plays_the_same_episodes(env_name, use_cpp_rvo2):
    """Random-policy play, step for step identical with SMAClite's own path (every map the project offers)."""
    if use_cpp_rvo2 and importlib.util.find_spec("rvo2") is None:
        pytest.skip("needs the C++ RVO2 module (README, SMAClite)")
    steps = 60 if env_name in ("corridor", "2c_vs_64zg", "27m_vs_30m", "bane_vs_bane") else 120
    original, fast = (
        episode_hashes(env_name, use_cpp_rvo2, fast_path, steps) for fast_path in (False, True)
    )
    first_difference = next(
        (t for t, (a, b) in enumerate(zip(original, fast, strict=True)) if a != b), None
    )
    assert first_difference is None, f"{env_name}: step {first_difference} differs"


@NEEDS_SMACLITE
def test_smaclites_own_point_inside_circle_is_not_called_on_the_fast_path(monkeypatch):
    """Reset, step and what the wrapper asks after them (the avail mask, the obs, the state: half of the calls) all
    run inside the fast path, so SMAClite's own point_inside_circle is never called there."""
    util, calls = importlib.import_module("smaclite.env.util"), []
    theirs = util.point_inside_circle

    def counted(*args):
        calls.append(1)
        return theirs(*args)

    for name in (
        "smaclite.env.util",
        *POINT_IN_CIRCLE_USERS,
    ):  # SMAClite's function, counted, wherever it is bound
        monkeypatch.setattr(importlib.import_module(name), "point_inside_circle", counted)
    for fast_path in (False, True):
        env = make_env("smaclite", "3s5z_vs_3s6z", seed=0, fast_path=fast_path)
        calls.clear()
        env.reset(seed=0)
        for _ in range(20):
            env.step(env.sample_actions())
        env.close()
        assert (len(calls) == 0) == fast_path, (fast_path, len(calls))


@NEEDS_SMACLITE
def test_the_fast_path_computes_each_states_mask_once(monkeypatch):
    """SMAClite's step() checks the actions against the mask of the state it starts from, which the
    wrapper has read already: on the fast path it gets that one (once per state: reset + steps),
    on SMAClite's own path it computes it again (twice per step)."""
    smaclite_env, calls = importlib.import_module("smaclite.env.smaclite"), []
    (cls,) = [c for c in vars(smaclite_env).values() if hasattr(c, "get_avail_actions")]
    theirs = cls.get_avail_actions

    def counted(self):
        calls.append(1)
        return theirs(self)

    monkeypatch.setattr(cls, "get_avail_actions", counted)
    for fast_path in (False, True):
        env = make_env("smaclite", "3m", seed=0, fast_path=fast_path)
        calls.clear()
        env.reset(seed=0)
        for _ in range(10):
            *_, terminated, truncated, _ = env.step(env.sample_actions())
            assert not (terminated or truncated)
        env.close()
        assert len(calls) == (11 if fast_path else 21), (fast_path, len(calls))
