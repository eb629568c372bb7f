"""A sum tree (and its min twin) over numpy arrays, batched: the data structure behind
proportional prioritized replay (Schaul et al. 2016, Appendix B.2.1).

Leaf ``j`` holds a priority ``p_j >= 0``; every inner node holds the sum of its children, so the
root holds ``total = sum_j p_j``. Drawing slot ``j`` with probability ``p_j / total`` is then one
descent per draw: a value ``v`` in ``[0, total)`` enters the child whose prefix-sum interval
holds it, less the sums of the children to its left, and ends at the leaf whose interval
``[p_0 + .. + p_{j-1}, p_0 + .. + p_j)`` holds ``v``. Both operations cost ``O(depth)``; all B
items of a batch descend (or climb) together, one level at a time, with a few numpy operations
per level and no Python loop over the batch.

The tree has ``fanout`` children per node (16 by default: 5 levels for a million slots, where a
binary tree has 20). Python's cost is per level, not per child, so a wide tree is ~2x faster
per batch; within a node the children's prefix sums are one ``cumsum``.

A second tree holds the minimum of the positive leaves under each node (zero leaves count as
``+inf``), so the smallest stored priority -- what normalises importance weights over the whole
buffer -- is read at the root too.

Every inner node is recomputed from its children (``cumsum(children)[-1]``, a fixed order of
additions), never patched by a difference, so no round-off accumulates and the tree is a
function of its leaves alone: saving the leaves saves the tree, bit for bit.
"""

from __future__ import annotations

import numpy as np


class SumTree:
    """``capacity`` leaves of float64 priorities.

    Layout: ``sums[level]`` for ``level = 0`` (the root, one node) .. ``depth`` (the leaves);
    the children of node ``i`` of a level are nodes ``fanout * i .. fanout * i + fanout - 1``
    of the next. Each level below the root has ``fanout`` times as many entries as the one
    above has nodes (``size`` leaves in all); the padding stays 0 and is never found. ``mins``
    has the same layout.

    Args:
        capacity: number of leaves (slots) that can hold a priority.
        fanout: children per inner node (>= 2).
    """

    def __init__(self, *, capacity: int, fanout: int = 16) -> None:
        if capacity < 1 or fanout < 2:
            raise ValueError(f"a sum tree needs capacity >= 1, fanout >= 2: {capacity}, {fanout}")
        self.capacity, self.fanout = capacity, fanout
        nodes = [capacity]  # per level, leaves first: ceil(nodes below / fanout)
        while nodes[-1] > 1:
            nodes.append(-(-nodes[-1] // fanout))
        # every level but the root padded to whole rows of fanout children
        lengths = [1] + [fanout * n for n in reversed(nodes[1:])]
        self.depth = len(lengths) - 1  # levels below the root
        self.size = lengths[-1]  # leaves, padding included
        self.sums = [np.zeros(n, dtype=np.float64) for n in lengths]
        self.mins = [np.full(n, np.inf, dtype=np.float64) for n in lengths]
        # row i of _child_sums[level]: the children of node i of that level (one gather each)
        self._child_sums = [s.reshape(-1, fanout) for s in self.sums[1:]]
        self._child_mins = [m.reshape(-1, fanout) for m in self.mins[1:]]

    @property
    def total(self) -> float:
        """``sum_j p_j`` over all leaves (the root)."""
        return float(self.sums[0][0])

    @property
    def min(self) -> float:
        """The smallest positive priority, ``+inf`` when every leaf is 0."""
        return float(self.mins[0][0])

    @property
    def leaves(self) -> np.ndarray:
        """``(capacity,)`` view of the priorities (read it; write through ``update``)."""
        return self.sums[-1][: self.capacity]

    def get(self, indices: np.ndarray) -> np.ndarray:
        """Priorities ``(B,)`` of the leaves ``indices`` ``(B,)``."""
        return self.sums[-1].take(indices)

    def update(self, indices: np.ndarray, priorities: np.ndarray | float) -> None:
        """Set ``p_j = priorities`` at leaves ``indices`` ``(B,)`` (a scalar sets them all) and
        recompute their ancestors, one level at a time.

        A leaf named twice keeps its *last* priority in the batch (the batch order is the order
        of the writes; made explicit by a stable sort, numpy's fancy assignment leaves it open).
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size == 0:
            return
        p = np.broadcast_to(np.asarray(priorities, dtype=np.float64), idx.shape)
        if not ((p >= 0) & (p < np.inf)).all():
            raise ValueError("priorities must be finite and >= 0")
        if idx.min() < 0 or idx.max() >= self.capacity:
            raise IndexError(f"leaf indices must lie in [0, {self.capacity})")
        if idx.size > 1:  # keep the last write of every leaf
            order = np.argsort(idx, kind="stable")
            idx = idx[order]
            last = np.empty(idx.size, dtype=bool)
            np.not_equal(idx[1:], idx[:-1], out=last[:-1])
            last[-1] = True
            idx, p = idx[last], p[order[last]]
        self.sums[-1][idx] = p
        self.mins[-1][idx] = np.where(p > 0, p, np.inf)
        if idx.size * self.fanout * self.depth > self.size:  # many leaves: rebuild instead
            self._rebuild()
            return
        node = idx
        for level in range(self.depth - 1, -1, -1):
            node = node // self.fanout  # a parent named twice gets the same value twice
            self.sums[level][node] = np.cumsum(self._child_sums[level][node], axis=1)[:, -1]
            self.mins[level][node] = self._child_mins[level][node].min(axis=1)

    def set_all(self, leaves: np.ndarray) -> None:
        """Replace every priority by ``leaves`` ``(capacity,)`` (e.g. loaded from a checkpoint)."""
        leaves = np.asarray(leaves, dtype=np.float64)
        if leaves.shape != (self.capacity,):
            raise ValueError(f"expected {self.capacity} leaves, got shape {leaves.shape}")
        if not ((leaves >= 0) & (leaves < np.inf)).all():
            raise ValueError("priorities must be finite and >= 0")
        self.sums[-1][:] = 0.0
        self.sums[-1][: self.capacity] = leaves
        self.mins[-1][:] = np.where(self.sums[-1] > 0, self.sums[-1], np.inf)
        self._rebuild()

    def _rebuild(self) -> None:
        """Recompute every inner node from the leaves, level by level (``O(size)``); the same
        additions in the same order as ``update``'s."""
        for level in range(self.depth - 1, -1, -1):
            rows = self._child_sums[level].shape[0]  # nodes with children (the rest: padding)
            self.sums[level][:rows] = np.cumsum(self._child_sums[level], axis=1)[:, -1]
            np.min(self._child_mins[level], axis=1, out=self.mins[level][:rows])

    def find(self, values: np.ndarray) -> np.ndarray:
        """The leaf ``(B,) int64`` whose prefix-sum interval holds each of ``values`` ``(B,)``:
        the smallest ``j`` with ``values < p_0 + .. + p_j``, so a value exactly on a boundary
        ``p_0 + .. + p_{j-1}`` belongs to leaf ``j`` (intervals are half-open).

        Only leaves with ``p_j > 0`` are ever returned (``total`` must be > 0). At each node the
        value is first clamped below the node's sum; the child then chosen, ``c`` with
        ``cs[c-1] <= v < cs[c]`` (``cs`` the children's prefix sums), has ``cs[c] > cs[c-1]``,
        i.e. a positive sum. So a value at or past ``total``, or one pushed past its node's sum
        by float round-off, ends at the last positive leaf before it, never on a zero leaf.
        """
        if not self.sums[0][0] > 0:
            raise ValueError("cannot search a sum tree whose total is 0")
        v = np.maximum(np.asarray(values, dtype=np.float64).reshape(-1), 0.0)
        node = np.zeros(v.size, dtype=np.int64)
        rows = np.arange(v.size)
        prefix = np.zeros((v.size, self.fanout + 1))  # [0, cs[0], .., cs[fanout - 1]]
        cs = prefix[:, 1:]
        for level in range(self.depth):
            np.cumsum(self._child_sums[level][node], axis=1, out=cs)
            np.minimum(v, np.nextafter(cs[:, -1], 0.0), out=v)  # v < this node's sum
            child = (cs <= v[:, None]).sum(axis=1)
            v -= prefix[rows, child]
            node *= self.fanout
            node += child
        return node
