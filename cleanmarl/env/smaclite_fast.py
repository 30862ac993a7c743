"""SMAClite's episodes, bit for bit, at 1.6-2.5x its steps/s (docs/env.md, "SMAClite speed").

Three per-step costs in SMAClite are overhead around tiny inputs, not its game logic (cProfile over 1000 steps):
1. Neighbour search. SMAClite rebuilds a scikit-learn KDTree of the few units of each plane after every step and
   queries it several times a step; scikit-learn validates the inputs of each call (check_array probes them for
   dataframe types), more than half of a step on 2s3z. RadiusNeighbours answers the same queries with scipy.
2. Static obstacles (numpy RVO2). ObstacleFinder asks its R-tree for the obstacles in a box that it sets to the
   whole map, for every unit at every step (a fifth of a step); the obstacles never move, so the answer is the same
   list in the same order each time: CachedIntersection asks once per box.
3. point_inside_circle on two float32 2-vectors, tens of thousands of times per thousand steps: numpy's per-call
   overhead was a sixth of a step with the C++ RVO2. The same float32 comparisons on scalars.

SMAClite has no licence: these re-implement the interfaces they replace and copy none of its code. FastPath
swaps 1 and 3 in only while one of our envs runs (another env in the process may run SMAClite's own path); a
SMAClite that lacks an attribute replaced here keeps its own code for it, without an error.
"""

import importlib

import numpy as np

# The modules that bind point_inside_circle (smaclite.env.util's) by name
POINT_IN_CIRCLE_USERS = (
    "smaclite.env.smaclite",
    "smaclite.env.units.unit",
    "smaclite.env.units.targeters.targeter",
)


class RadiusNeighbours:
    """scikit-learn's `KDTree(points).query_radius(X, r, return_distance)` as SMAClite uses it.

    Up to 2 * leaf_size (80) points scikit-learn's tree is one leaf, which it scans in index order keeping the points
    with (x - p)^2 + (y - q)^2 <= r^2 and reporting the square root of that: scipy's sqeuclidean cdist does the same
    arithmetic, so neighbours, their order and their distances are the same bits. Larger sets (no map has 80 units
    in one plane) keep scikit-learn's tree, whose traversal order is its own.
    """

    MAX_POINTS = (
        80  # 2 * scikit-learn's default leaf_size: one more point and its tree has two leaves
    )

    def __init__(self, points, fallback=None):
        self.points = np.array(points, dtype=np.float64).reshape(len(points), -1)  # [P, 2]
        self.tree = (
            fallback(points) if fallback is not None and len(points) > self.MAX_POINTS else None
        )

    def query_radius(self, X, r, return_distance=False):
        """-> ind (one index array per row of X), and dist (one distance array per row) with return_distance."""
        from scipy.spatial.distance import (
            cdist,
        )  # scipy comes with scikit-learn, which SMAClite needs

        if self.tree is not None:
            return self.tree.query_radius(X, r, return_distance=return_distance)
        X = np.array(X, dtype=np.float64).reshape(-1, self.points.shape[1])  # [Q, 2]
        r = np.asarray(r, dtype=np.float64).reshape(-1)  # one radius, or one per row of X
        if r.shape != (1,) and r.shape != (len(X),):
            raise ValueError(
                f"r must be one radius or one per query point: {r.shape[0]} radii, {len(X)} points"
            )
        rdist = cdist(X, self.points, "sqeuclidean")  # [Q, P]
        within = rdist <= (r * r)[:, None]  # a leaf compares squared distances with r^2
        ind = [row.nonzero()[0] for row in within]
        if not return_distance:
            return ind
        return ind, [np.sqrt(d[i]) for d, i in zip(rdist, ind, strict=True)]


class CachedIntersection:
    """An R-tree index whose `intersection(box)` is asked once per box: for an index that never changes."""

    def __init__(self, index):
        self.index, self.answers = index, {}

    def intersection(self, box):
        key = tuple(box)
        if key not in self.answers:
            self.answers[key] = list(self.index.intersection(box))
        return self.answers[key]


def point_inside_circle(point, center, radius):
    """SMAClite's test, |point - center| <= radius with its shortcuts, on numpy scalars of the inputs' dtype (float32
    unit positions): the comparisons and sums round as its 2-vector ones do, in the same order."""
    (px, py), (cx, cy) = point, center
    dx, dy = abs(px - cx), abs(py - cy)
    if dx > radius or dy > radius:
        return False
    if dx + dy <= radius:
        return True
    dpos = np.array((dx, dy))
    return np.inner(dpos, dpos) <= radius**2


def _module(name):
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def speed_up(env):
    """Per env: cache the static obstacles' R-tree answers (numpy RVO2 only; the C++ port has no ObstacleFinder)."""
    finder = getattr(getattr(env, "velocity_updater", None), "obstacle_finder", None)
    if finder is not None and hasattr(getattr(finder, "index", None), "intersection"):
        finder.index = CachedIntersection(finder.index)


class FastPath:
    """`with FastPath(fast):` SMAClite builds RadiusNeighbours for its KDTree and calls our point_inside_circle
    (fast), or runs its own code (not fast). What is swapped is found once, here; what a SMAClite lacks stays its own.
    """

    def __init__(self, fast):
        self.swaps = []  # (module, attribute, ours)
        finder, util = _module("smaclite.env.rvo2.neighbour_finder"), _module("smaclite.env.util")
        if fast and finder is not None and hasattr(finder, "KDTree"):
            original = finder.KDTree
            self.swaps.append(
                (finder, "KDTree", lambda points: RadiusNeighbours(points, fallback=original))
            )
        theirs = getattr(util, "point_inside_circle", None)
        for name in POINT_IN_CIRCLE_USERS if fast and theirs is not None else ():
            if getattr(module := _module(name), "point_inside_circle", None) is theirs:
                self.swaps.append((module, "point_inside_circle", point_inside_circle))
        self.originals = [getattr(module, attribute) for module, attribute, _ in self.swaps]

    def __enter__(self):
        for module, attribute, ours in self.swaps:
            setattr(module, attribute, ours)

    def __exit__(self, *exc):
        for (module, attribute, _), original in zip(self.swaps, self.originals, strict=True):
            setattr(module, attribute, original)
