"""Matching a found structure to a reference: origin shifts, enantiomorph, alternative axes.

Two descriptions of one crystal in the same cell differ by an operation of the Euclidean
normaliser of the space group: an origin shift, possibly the inversion (enantiomorph) and,
for some groups, an axis permutation. gemmi does not tabulate normalisers, so the search
here covers a superset:

- point parts W: every integer matrix with entries in {-1, 0, 1} that preserves the metric
  of the cell (the lattice holohedry, inversion included; 2 for triclinic, 48 for cubic);
- translations t: every vector that superposes a found atom of the anchor element (the
  reference element with the fewest asymmetric-unit sites, heavier first) onto one of
  (up to three of) the reference atoms of that element. The correct (W, t) is among them
  whenever one of those anchor atoms was found, including the free origin along polar axes.

Candidates are ranked on images of the 12 heaviest reference sites; the best 24 are
scored on the whole cell.

For each (W, t) the found atoms of the whole cell (symmetry applied) are mapped as
x -> W x + t and every atom of the reference *cell* is matched to the nearest mapped atom
within `tolerance` (0.3 Å, k-d tree); a reference site counts as matched when 3/4
of its images are (comparing whole cells is what rejects a shift that is not an allowed
origin shift: it moves the asymmetric unit but not its images). The best (W, t) maximises
matched sites of the same element, then of any element. Hydrogen atoms are ignored.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from functools import lru_cache

import numpy as np

from ..crystal.cell import metric_tensor, orthogonalization_matrix
from ..crystal.formula import atomic_number
from ..crystal.symmetry import SymmetryOps
from ..types import Structure, UnitCell

MATCH_TOLERANCE = 0.3  # Å
MAX_TRANSLATIONS = 4000
MAX_ANCHORS = 3
SUBSET = 12  # reference sites used to rank candidate superpositions
KEEP = 24  # candidates scored on every site
IMAGE_FRACTION = 0.75  # share of a site's images that must match


@dataclass
class MatchResult:
    """How well a found structure reproduces a reference (non-H sites)."""

    n_reference: int
    n_found: int
    matched: int  # reference sites with a found atom (any element) within tolerance
    matched_same_element: int
    fraction_matched: float
    fraction_matched_same_element: float
    element_agreement: float  # matched_same_element / matched
    found_correct: float  # fraction of found non-H sites lying on a reference site
    rms: float  # Å, over matched sites
    inverted: bool
    operation: list[list[int]] = field(default_factory=list)
    shift: list[float] = field(default_factory=list)
    note: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def _non_h(structure: Structure):
    return [s for s in structure.sites if s.element.upper() not in ("H", "D")]


@lru_cache(maxsize=64)
def _holohedry(params: tuple[float, ...], tol: float = 0.02) -> np.ndarray:
    """Integer matrices W (entries -1..1, det ±1) with Wᵀ G W ≈ G: the lattice point group."""
    cell = UnitCell(**dict(zip(("a", "b", "c", "alpha", "beta", "gamma"), params)))
    g = metric_tensor(cell)
    mats = np.array(list(itertools.product((-1, 0, 1), repeat=9)), dtype=np.int64).reshape(-1, 3, 3)
    det = np.round(np.linalg.det(mats)).astype(int)
    mats = mats[np.abs(det) == 1]
    gg = np.einsum("nji,jk,nkl->nil", mats, g, mats)
    scale = np.max(np.abs(g))
    ok = np.all(np.abs(gg - g) < tol * scale, axis=(1, 2))
    out = mats[ok]
    # identity first, then inversion, then the rest (stable order)
    key = [0 if np.array_equal(m, np.eye(3)) else 1 if np.array_equal(m, -np.eye(3)) else 2 for m in out]
    return out[np.argsort(key, kind="stable")]


def _cell_images(structure: Structure, sites) -> tuple[np.ndarray, list[str], np.ndarray]:
    """All positions of `sites` in the cell (fractional, wrapped), their elements, and owner index."""
    sym = SymmetryOps.from_space_group(structure.space_group)
    pos, els, owner = [], [], []
    for i, s in enumerate(sites):
        imgs = np.mod(sym.images(np.array(s.xyz, dtype=np.float64)), 1.0)
        imgs = np.unique(np.round(imgs, 5) % 1.0, axis=0)
        pos.append(imgs)
        els += [s.element] * len(imgs)
        owner += [i] * len(imgs)
    if not pos:
        return np.zeros((0, 3)), [], np.zeros(0, dtype=int)
    return np.concatenate(pos), els, np.array(owner)


def _cells_compatible(a: UnitCell, b: UnitCell, tol: float = 0.02) -> bool:
    la, lb = np.array(a.parameters[:3]), np.array(b.parameters[:3])
    aa, ab = np.array(a.parameters[3:]), np.array(b.parameters[3:])
    return bool(np.all(np.abs(la / lb - 1.0) < tol) and np.all(np.abs(aa - ab) < 2.0))


class _Cloud:
    """The found cell (with its 26 neighbour cells) in a k-d tree, one per element too."""

    def __init__(self, frac: np.ndarray, elements: np.ndarray, orth: np.ndarray, owner: np.ndarray):
        from scipy.spatial import cKDTree

        shifts = np.array(list(itertools.product((-1, 0, 1), repeat=3)), dtype=np.float64)
        pts = (frac[None, :, :] + shifts[:, None, :]).reshape(-1, 3)
        self.owner = np.tile(owner, len(shifts))
        self.elements = np.tile(elements, len(shifts))
        self.orth = orth
        self.tree = cKDTree(pts @ orth.T)
        self.by_element = {}
        for e in set(elements.tolist()):
            sel = self.elements == e
            self.by_element[e] = (cKDTree((pts[sel]) @ orth.T), np.nonzero(sel)[0])

    def query(self, frac: np.ndarray, elements: np.ndarray, tol: float):
        """(distance to nearest atom, to nearest atom of the same element, index of nearest)."""
        cart = np.mod(frac, 1.0) @ self.orth.T
        d_any, idx = self.tree.query(cart, k=1, distance_upper_bound=4 * tol)
        d_same = np.full(len(frac), np.inf)
        for e in set(elements.tolist()):
            if e not in self.by_element:
                continue
            sel = elements == e
            d, _ = self.by_element[e][0].query(cart[sel], k=1, distance_upper_bound=4 * tol)
            d_same[sel] = d
        return d_any, d_same, idx


def _site_counts(d_any, d_same, owner, n_sites, tol):
    """Sites matched: a site counts when at least 3/4 of its images are matched."""
    img = np.bincount(owner, minlength=n_sites).astype(float)
    hit_any = np.bincount(owner, weights=(d_any < tol).astype(float), minlength=n_sites)
    hit_same = np.bincount(owner, weights=(d_same < tol).astype(float), minlength=n_sites)
    ok_any = hit_any >= IMAGE_FRACTION * img
    ok_same = hit_same >= IMAGE_FRACTION * img
    return ok_any, ok_same


def match_structures(found: Structure, reference: Structure, tolerance: float = MATCH_TOLERANCE) -> MatchResult:
    """Best superposition of `found` on `reference` (see the module docstring)."""
    ref_sites = _non_h(reference)
    found_sites = _non_h(found)
    n_ref, n_found = len(ref_sites), len(found_sites)
    empty = MatchResult(n_ref, n_found, 0, 0, 0.0, 0.0, 0.0, 0.0, float("nan"), False)
    if not ref_sites or not found_sites:
        empty.note = "no non-H atoms"
        return empty
    if not _cells_compatible(found.cell, reference.cell):
        empty.note = "the cells differ (different setting or wrong cell): not matched"
        return empty
    cell = reference.cell
    orth = orthogonalization_matrix(cell)
    ref_el_site = np.array([s.element for s in ref_sites])
    r_pos, r_el, r_owner = _cell_images(reference, ref_sites)
    r_el = np.array(r_el)
    f_pos, f_el, f_owner = _cell_images(found, found_sites)
    f_el = np.array(f_el)
    cloud = _Cloud(f_pos, f_el, orth, f_owner)

    # anchor: the reference element with the fewest sites that the found structure also has
    counts = {e: int((ref_el_site == e).sum()) for e in set(ref_el_site.tolist())}
    shared = [e for e in counts if (f_el == e).any()] or list(counts)
    anchor = min(shared, key=lambda e: (counts[e], -atomic_number(e)))
    anchor_sites = [i for i, s in enumerate(ref_sites) if s.element == anchor][:MAX_ANCHORS]
    a_ref = np.array([ref_sites[i].xyz for i in anchor_sites], dtype=np.float64)
    f_anchor = f_pos[f_el == anchor] if (f_el == anchor).any() else f_pos

    # stage-1 subset: images of the heaviest reference sites (at most 8 images each)
    heavy = np.argsort([-atomic_number(s.element) for s in ref_sites], kind="stable")[:SUBSET]
    sub_idx = np.concatenate([np.nonzero(r_owner == i)[0][:8] for i in heavy])
    sub_map = {int(i): k for k, i in enumerate(heavy)}
    sub_owner = np.array([sub_map[int(o)] for o in r_owner[sub_idx]])
    candidates = []
    for w in _holohedry(tuple(round(x, 4) for x in cell.parameters)):
        w_inv = np.rint(np.linalg.inv(w)).astype(np.int64)
        moved = f_anchor @ w.T
        shifts = (a_ref[:, None, :] - moved[None, :, :]).reshape(-1, 3) % 1.0
        shifts = np.unique(np.round(shifts, 4) % 1.0, axis=0)[:MAX_TRANSLATIONS]
        for t in shifts:
            frac = (r_pos[sub_idx] - t) @ w_inv.T
            d_any, d_same, _ = cloud.query(frac, r_el[sub_idx], tolerance)
            ok_any, ok_same = _site_counts(d_any, d_same, sub_owner, len(heavy), tolerance)
            candidates.append((int(ok_same.sum()) * (n_ref + 1) + int(ok_any.sum()), w, w_inv, t))
    candidates.sort(key=lambda c: -c[0])
    best = None
    for _, w, w_inv, t in candidates[:KEEP]:
        frac = (r_pos - t) @ w_inv.T
        d_any, d_same, idx = cloud.query(frac, r_el, tolerance)
        ok_any, ok_same = _site_counts(d_any, d_same, r_owner, n_ref, tolerance)
        score = int(ok_same.sum()) * (n_ref + 1) + int(ok_any.sum())
        if best is None or score > best[0]:
            best = (score, w, t, ok_any, ok_same, d_any, idx)
        if int(ok_same.sum()) == n_ref:
            break
    _, w, t, ok_any, ok_same, d_any, idx = best
    n_any, n_same = int(ok_any.sum()), int(ok_same.sum())
    matched_images = d_any < tolerance
    rms = float(np.sqrt(np.mean(d_any[matched_images] ** 2))) if matched_images.any() else float("nan")
    correct_owners = set(cloud.owner[idx[matched_images]].tolist())
    return MatchResult(
        n_reference=n_ref,
        n_found=n_found,
        matched=n_any,
        matched_same_element=n_same,
        fraction_matched=n_any / n_ref,
        fraction_matched_same_element=n_same / n_ref,
        element_agreement=(n_same / n_any) if n_any else 0.0,
        found_correct=len(correct_owners) / n_found,
        rms=rms,
        inverted=bool(np.linalg.det(w) < 0),
        operation=w.astype(int).tolist(),
        shift=[round(float(x), 4) for x in t],
    )
