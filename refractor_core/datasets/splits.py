"""Splits without leakage: no prototype and no formula on both sides.

Every structure carries two keys: its `group` (the AFLOW prototype label for prototypes and
their element substitutions; otherwise "formula") and its reduced sum formula. Structures
sharing either key are joined (union-find) into one component, and whole components are
assigned to train/val/test. Components are taken in the order of a seeded hash of their
smallest key and each goes to the split furthest below its target share, so the result is
deterministic and close to the requested fractions. The test split is held out: nothing in
the builder or in training code looks at it except `refractor benchmark --suite simulated`.
"""

from __future__ import annotations

from collections import defaultdict

from ..union_find import UnionFind
from .sources import StructureRecord, stable_seed

SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}


def reduced_formula_key(record: StructureRecord) -> str:
    """The formula key: the Hill formula per formula unit, spaces removed."""
    return "F:" + record.formula.replace(" ", "")


def split_keys(record: StructureRecord) -> list[str]:
    keys = [reduced_formula_key(record)]
    if record.group and record.group != "formula":
        keys.append("P:" + record.group)
    return keys


def assign_splits(
    records: list[StructureRecord], fractions: dict[str, float] | None = None, seed: int = 0
) -> dict[str, str]:
    """structure id -> split name, keeping every connected component on one side."""
    fractions = fractions or DEFAULT_FRACTIONS
    total_f = sum(fractions.values())
    uf = UnionFind()
    for r in records:
        keys = split_keys(r)
        for k in keys[1:]:
            uf.union(keys[0], k)
        uf.find(keys[0])
    components: dict[str, list[StructureRecord]] = defaultdict(list)
    for r in records:
        components[uf.find(split_keys(r)[0])].append(r)
    order = sorted(components, key=lambda k: (stable_seed(seed, "split", k), k))
    counts = {s: 0 for s in fractions}
    out: dict[str, str] = {}
    n_total = len(records)
    for key in order:
        members = components[key]
        # the split furthest below its target share takes this component
        deficit = {s: fractions[s] / total_f * n_total - counts[s] for s in fractions}
        target = max(deficit, key=lambda s: (deficit[s], -list(fractions).index(s)))
        for r in members:
            out[r.id] = target
        counts[target] += len(members)
    return out


def check_no_leakage(records: list[StructureRecord]) -> list[str]:
    """Keys found in more than one split (empty when the split is clean)."""
    where: dict[str, set[str]] = defaultdict(set)
    for r in records:
        for k in split_keys(r):
            where[k].add(r.split or "?")
    return sorted(k for k, s in where.items() if len(s) > 1)
