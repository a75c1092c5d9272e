"""Union-find (disjoint sets) over hashable keys: joins keys transitively into components."""

from __future__ import annotations

from collections.abc import Hashable


class UnionFind:
    """Disjoint sets of hashable keys. A component's representative is its smallest key
    (so keys must be mutually comparable); `groups` lists components in the order their
    first key was seen."""

    def __init__(self) -> None:
        self.parent: dict[Hashable, Hashable] = {}

    def find(self, x: Hashable) -> Hashable:
        """The representative of x's component (x joins as its own component if new)."""
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: Hashable, b: Hashable) -> None:
        """Join the components of a and b."""
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def groups(self) -> list[list[Hashable]]:
        """Every component, its keys in the order they were seen."""
        out: dict[Hashable, list[Hashable]] = {}
        for x in list(self.parent):
            out.setdefault(self.find(x), []).append(x)
        return list(out.values())
