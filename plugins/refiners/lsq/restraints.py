"""Automatic restraints for disordered parts of a model (SHELXL's SAME and RIGU, in spirit).

A published refinement of a disordered structure always carries restraints; a refinement
started from a rough model needs them even more. For atoms in disorder components
(PART > 0) this module generates:

- *similar geometry* (SAME-like): every 1,2 and 1,3 distance inside one component equals
  the corresponding distance of the other components (atoms matched to their nearest
  partner of the same element, within 1.6 Å); σ 0.02 Å (1,2) and 0.04 Å (1,3);
- *rigid bond* (RIGU-like): for bonded pairs involving a disordered atom, both
  anisotropic, the mean-square displacements along the bond are equal; σ 0.004 Å²;
- *similar ADPs* (SIMU-like): bonded atoms involving a disordered atom have similar
  Cartesian U components; σ 0.04 Å² (0.08 Å² for terminal atoms);
- *approximately isotropic* (ISOR-like) ADPs for disordered atoms with occupancy below
  one half; σ 0.1 Å².

Disordered atoms are those of a PART other than 0 (negative PARTs, disorder across a
symmetry element, get the ADP restraints; the similar-geometry restraint needs two
numbered components).

A user's own SHELXL restraints (DFIX, SADI, SAME, FLAT, DELU, RIGU, SIMU, ISOR) are turned
into the same kinds of pseudo-observation by `user_restraints.py`; the kinds are:

- "same": d(pair1) - d(pair2) (SAME, SADI); "distances": d(pair1) - target (DFIX, DANG),
  one-sided for an anti-bumping DFIX;
- "flat": the volume (triple product, Å³) of the tetrahedron of the set's first three atoms
  and one further atom, as SHELXL restrains FLAT;
- "rigu": one component of the difference of two atoms' U in a frame along their bond
  (component 0: along the bond, DELU and RIGU; 1 and 2: the two cross terms with the bond
  direction, RIGU only);
- "simu" / "isor": one Cartesian U component of a difference / of the anisotropic part;
- "sump": Σ aᵢ·occupancy(atomᵢ) - target, linear in occupancies: SHELXL's SUMP on free
  variables, written through each variable's lead atom (`user_restraints`).

Each restraint is a pseudo-observation (target 0, weight 1/σ²) added to the normal
equations and to the sum of squares, exactly as SHELXL adds restraints to Σ w Δ². The
distance, RIGU, SIMU and ISOR terms are computed for all restraints of their kind at once
(arrays over their atom pairs): a large disordered model has tens of thousands.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from refractor_core.crystal.cell import orthogonalization_matrix
from refractor_core.crystal.symmetry import u_transform_matrix

from .model import WorkingModel, is_hydrogen
from .parameters import RAW, Parameterisation

SIGMA_12 = 0.02
SIGMA_13 = 0.04
SIGMA_RIGU = 0.004
SIGMA_SIMU = 0.04
SIGMA_ISOR = 0.1
PARTNER_DISTANCE = 1.6
#: distances of two components differing more than this (Å) are not taken as equivalent
MAX_MISMATCH = 0.2


@dataclass(frozen=True)
class Image:
    """Atom `atom` moved by operation `op` and lattice `shift` (fractional)."""

    atom: int
    op: int = 0
    shift: tuple[int, int, int] = (0, 0, 0)


@dataclass(frozen=True)
class Restraint:
    kind: str  # "same", "distances", "flat", "rigu", "simu", "isor" or "sump" (see the module docstring)
    pair1: tuple[Image, Image] | None
    pair2: tuple[Image, Image] | None
    sigma: float
    component: int = 0  # simu/isor: Cartesian U component (11, 22, 33, 12, 13, 23); rigu: see above
    target: float = 0.0  # "distances": the target distance
    one_sided: bool = False  # "distances": only values below the target count (anti-bumping)
    atoms: tuple[Image, ...] = ()  # "flat": the four corners of the tetrahedron; "sump": its atoms
    coefficients: tuple[float, ...] = ()  # "sump": the factor of each atom's occupancy
    #: its weight in the least squares is weight/σ² ("same": 2/n in a set of n equal
    #: distances, as SHELXL minimises them; see `user_restraints`)
    weight: float = 1.0

    def distance_terms(self) -> tuple[tuple[tuple[Image, Image], ...], tuple[float, ...]]:
        """The pairs and coefficients of a distance restraint ("same" or "distances")."""
        if self.kind == "same":
            return (self.pair1, self.pair2), (1.0, -1.0)
        return (self.pair1,), (1.0,)


class RestraintBatch(NamedTuple):
    """Restraints of one kind computed at once: their indices into the restraint list (k,),
    values (k,), and per term (P,): its restraint's position among the k, its first and
    second atom, and the value's gradients w.r.t. those atoms' raw parameters (P, width)
    each (xyz: width 3; U*: width 6)."""

    index: np.ndarray
    values: np.ndarray
    owner: np.ndarray
    atoms_a: np.ndarray
    atoms_b: np.ndarray
    grad_a: np.ndarray
    grad_b: np.ndarray

    @classmethod
    def empty(cls, width: int) -> "RestraintBatch":
        none = np.zeros(0, np.int64)
        return cls(none, np.zeros(0), none, none, none, np.zeros((0, width)), np.zeros((0, width)))


def _adp_restraints(model: WorkingModel, restraints: list[Restraint], m: np.ndarray, us: np.ndarray) -> RestraintBatch:
    """The SIMU and ISOR terms of anisotropic atoms, all at once: a component of the
    Cartesian U of the first atom's image less the second's (SIMU) or less its isotropic
    part (ISOR, diagonal components), one term per restraint, gradients w.r.t. U* (ISOR:
    the atom twice, the second gradient zero); `us`: the model's `u_star_all()`."""
    index, atoms_a, atoms_b, ops_a, ops_b, components, simu = [], [], [], [], [], [], []
    for idx, r in enumerate(restraints):
        if r.kind not in ("simu", "isor"):
            continue
        a, b = r.pair1 if r.kind == "simu" else (r.pair1[0], r.pair1[0])
        if not (model.aniso[a.atom] and model.aniso[b.atom]):
            continue
        index.append(idx)
        atoms_a.append(a.atom)
        atoms_b.append(b.atom)
        ops_a.append(a.op)
        ops_b.append(b.op)
        components.append(r.component)
        simu.append(r.kind == "simu")
    if not index:
        return RestraintBatch.empty(6)
    # U* (CIF order) -> Cartesian U of the image under each operation
    to_cart = np.array([u_transform_matrix(m @ rot.astype(np.float64)) for rot in model.symmetry.rotations])
    k = np.array(components)
    ga = to_cart[ops_a, k]
    trace = to_cart[ops_a, :3].sum(axis=1) / 3.0
    isor = ~np.array(simu)
    ga[isor & (k < 3)] -= trace[isor & (k < 3)]
    gb = np.where(isor[:, None], 0.0, -to_cart[ops_b, k])
    atoms_a, atoms_b = np.array(atoms_a), np.array(atoms_b)
    values = np.einsum("pk,pk->p", ga, us[atoms_a]) + np.einsum("pk,pk->p", gb, us[atoms_b])
    return RestraintBatch(np.array(index, np.int64), values, np.arange(len(index)), atoms_a, atoms_b, ga, gb)


def _image_positions(model: WorkingModel, images: list[Image]) -> tuple[np.ndarray, np.ndarray]:
    """Fractional positions (P, 3) of the images and the rotations (P, 3, 3) that make them."""
    sym = model.symmetry
    atom = np.array([im.atom for im in images], dtype=np.int64)
    op = np.array([im.op for im in images], dtype=np.int64)
    shift = np.array([im.shift for im in images], dtype=np.float64).reshape(-1, 3)
    rot = sym.rotations.astype(np.float64)[op]
    return np.einsum("pij,pj->pi", rot, model.xyz[atom]) + np.asarray(sym.translations, np.float64)[op] + shift, rot


def _pair_geometry(model: WorkingModel, pairs: list[tuple[Image, Image]], m: np.ndarray):
    """Cartesian distances (P,) between the images of each pair and their gradients w.r.t.
    the fractional xyz of each pair's first and second atom ((P, 3) each), for all pairs
    at once."""
    fa, ra = _image_positions(model, [p[0] for p in pairs])
    fb, rb = _image_positions(model, [p[1] for p in pairs])
    v = (fa - fb) @ m.T
    d = np.linalg.norm(v, axis=1)
    g = (v @ m) / np.maximum(d, 1e-9)[:, None]  # ∂d/∂(first image's fractional xyz)
    return d, np.einsum("pi,pij->pj", g, ra), -np.einsum("pi,pij->pj", g, rb)


def pair_distance(model: WorkingModel, pair: tuple[Image, Image]) -> float:
    """Cartesian distance (Å) between the two images of a pair."""
    return float(_pair_geometry(model, [pair], orthogonalization_matrix(model.cell))[0][0])


def _distance_restraints(model: WorkingModel, restraints: list[Restraint], m: np.ndarray) -> RestraintBatch:
    """The "same" and "distances" restraints, all their pairs computed at once: one term per
    pair, gradients w.r.t. xyz times the term's coefficient. A one-sided restraint satisfied
    has value 0 and no gradient."""
    index, pairs, owner, coefs, targets, one_sided = [], [], [], [], [], []
    for idx, r in enumerate(restraints):
        if r.kind not in ("same", "distances"):
            continue
        terms, cs = r.distance_terms()
        for pair, c in zip(terms, cs):
            pairs.append(pair)
            owner.append(len(index))
            coefs.append(c)
        index.append(idx)
        targets.append(r.target)
        one_sided.append(r.one_sided)
    if not pairs:
        return RestraintBatch.empty(3)
    owner_of = np.array(owner, dtype=np.int64)
    d, ga, gb = _pair_geometry(model, pairs, m)
    c = np.array(coefs)
    values = np.zeros(len(index))
    np.add.at(values, owner_of, c * d)
    values -= np.array(targets)
    satisfied = np.array(one_sided) & (values > 0.0)
    values[satisfied] = 0.0
    c = np.where(satisfied[owner_of], 0.0, c)[:, None]
    atoms_a = np.array([p[0].atom for p in pairs], dtype=np.int64)
    atoms_b = np.array([p[1].atom for p in pairs], dtype=np.int64)
    return RestraintBatch(np.array(index, np.int64), values, owner_of, atoms_a, atoms_b, c * ga, c * gb)


def _bond_frames(v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit vectors (k, 3) along each row of v and two perpendicular to it."""
    n = v / np.maximum(np.linalg.norm(v, axis=1), 1e-9)[:, None]
    helper = np.eye(3)[np.argmin(np.abs(n), axis=1)]
    p1 = np.cross(n, helper)
    p1 /= np.linalg.norm(p1, axis=1)[:, None]
    return n, p1, np.cross(n, p1)


def _rigu_restraints(model: WorkingModel, restraints: list[Restraint], m: np.ndarray, us: np.ndarray,
                     frames: dict[int, np.ndarray]) -> RestraintBatch:
    """The RIGU terms between two anisotropic atoms, all at once: e1·U_a·n - e1·U_b·n
    (Cartesian U, frame along a-b: component 0 takes e1 = n, 1 and 2 the two directions
    perpendicular to n), one term per restraint, gradients w.r.t. U*; `us`: the model's
    `u_star_all()`, `frames`: bond vectors to take the frame from (`bond_frames`; else the
    model's own)."""
    index = [idx for idx, r in enumerate(restraints)
             if r.kind == "rigu" and model.aniso[r.pair1[0].atom] and model.aniso[r.pair1[1].atom]]
    if not index:
        return RestraintBatch.empty(6)
    pairs = [restraints[idx].pair1 for idx in index]
    bonds = np.array([frames[idx] if idx in frames else bond_vector(model, a, b, m)
                      for idx, (a, b) in zip(index, pairs)])
    n, p1, p2 = _bond_frames(bonds)
    component = np.array([restraints[idx].component for idx in index])[:, None]
    e1 = np.where(component == 0, n, np.where(component == 1, p1, p2))
    rot = model.symmetry.rotations.astype(np.float64)
    out = []
    for k in (0, 1):
        atom = np.array([p[k].atom for p in pairs], dtype=np.int64)
        r = rot[np.array([p[k].op for p in pairs], dtype=np.int64)]
        # e1·(M R U* Rᵀ Mᵀ)·n = q1ᵀ U* q2
        q1 = np.einsum("pji,pj->pi", r, e1 @ m)
        q2 = np.einsum("pji,pj->pi", r, n @ m)
        coef = np.stack([q1[:, 0] * q2[:, 0], q1[:, 1] * q2[:, 1], q1[:, 2] * q2[:, 2],
                         q1[:, 0] * q2[:, 1] + q1[:, 1] * q2[:, 0], q1[:, 0] * q2[:, 2] + q1[:, 2] * q2[:, 0],
                         q1[:, 1] * q2[:, 2] + q1[:, 2] * q2[:, 1]], axis=1)
        out.append((atom, np.einsum("pk,pk->p", coef, us[atom]), coef))
    (atoms_a, va, ga), (atoms_b, vb, gb) = out
    return RestraintBatch(np.array(index, np.int64), va - vb, np.arange(len(index)), atoms_a, atoms_b, ga, -gb)


def bond_vector(model: WorkingModel, a: Image, b: Image, m: np.ndarray) -> np.ndarray:
    """Cartesian vector from image b to image a."""
    f, _ = _image_positions(model, [a, b])
    return m @ (f[0] - f[1])


def bond_frames(model: WorkingModel, restraints: list[Restraint]) -> dict[int, np.ndarray]:
    """The bond vector of every RIGU/DELU restraint (by index), to hold while a cycle tries
    its steps.

    Rigid-bond restraints are restraints on the ADPs: their derivatives are taken w.r.t.
    the U only (as SHELXL and cctbx take them), the bond direction held. A sum of squares
    that let the direction follow the trial positions would not be the one the normal
    equations minimise, and near the minimum the Levenberg-Marquardt test would refuse the
    steps they ask for (the refinement then stalls short of convergence).
    """
    m = orthogonalization_matrix(model.cell)
    return {idx: bond_vector(model, r.pair1[0], r.pair1[1], m) for idx, r in enumerate(restraints) if r.kind == "rigu"}


def _sump_terms(model: WorkingModel, r: Restraint) -> tuple[float, dict[int, float]]:
    """Value and occupancy gradients {atom: factor} of a "sump" restraint."""
    grads: dict[int, float] = {}
    for im, c in zip(r.atoms, r.coefficients):
        grads[im.atom] = grads.get(im.atom, 0.0) + c
    return float(sum(c * model.occupancy[a] for a, c in grads.items())) - r.target, grads


def _flat_terms(model: WorkingModel, r: Restraint, m: np.ndarray):
    """Chiral volume (p1-p0)·[(p2-p0)×(p3-p0)] of the four atoms of a FLAT term (Å³; zero
    when they are coplanar) and its xyz gradients."""
    f, rots = _image_positions(model, list(r.atoms))
    p = f @ m.T
    e1, e2, e3 = p[1] - p[0], p[2] - p[0], p[3] - p[0]
    value = float(e1 @ np.cross(e2, e3))
    g = [None, np.cross(e2, e3), np.cross(e3, e1), np.cross(e1, e2)]
    g[0] = -(g[1] + g[2] + g[3])
    grads: dict[int, np.ndarray] = {}
    for im, rot, g_cart in zip(r.atoms, rots, g):
        grads[im.atom] = grads.get(im.atom, 0.0) + rot.T @ (m.T @ g_cart)
    return value, grads


def generate(model: WorkingModel) -> list[Restraint]:
    """Restraints for the disorder components of a model (empty when there is no disorder)."""
    from .hydrogens import neighbours

    heavy = np.array([i for i in range(model.n) if not is_hydrogen(model.elements[i]) and model.riding[i] < 0])
    disordered = [int(i) for i in heavy if model.part[i] != 0]
    if not disordered:
        return []
    nb = neighbours(model, heavy)
    cart = model.cartesian()
    bonds: dict[int, list[Image]] = {}
    for i, lst in nb.items():
        bonds[i] = []
        for n, pos, _ in lst:
            if is_hydrogen(model.elements[n.atom]):
                continue
            if np.linalg.norm(pos - cart[n.atom]) < 0.01:
                bonds[i].append(Image(n.atom))  # the atom itself, reached through site symmetry
            else:
                bonds[i].append(Image(n.atom, n.op, tuple(n.shift)))
    parts = sorted({int(model.part[i]) for i in disordered if model.part[i] > 0})

    def nearest(a: int, q: int) -> int | None:
        cands = [j for j in heavy if model.part[j] == q and model.elements[j] == model.elements[a]]
        if not cands:
            return None
        d = [np.linalg.norm(cart[j] - cart[a]) for j in cands]
        k = int(np.argmin(d))
        return int(cands[k]) if d[k] < PARTNER_DISTANCE else None

    direct_nb: dict[int, set[int]] = {
        int(i): {b.atom for b in lst if b.op == 0 and b.shift == (0, 0, 0)} for i, lst in bonds.items()
    }
    matches: dict[tuple[int, int], int] = {}  # (atom, other part) -> partner

    def match_parts(p: int, q: int) -> None:
        """Partners between components p and q: mutual nearest atoms of one element, then
        propagated through the bonds (an unmatched atom bonded to a matched one takes the
        only unmatched atom of its element bonded to the partner)."""
        in_p = [int(i) for i in heavy if model.part[i] == p]
        in_q = [int(i) for i in heavy if model.part[i] == q]
        for a in in_p:
            b = nearest(a, q)
            if b is not None and nearest(b, p) == a:
                matches[(a, q)] = b
                matches[(b, p)] = a
        changed = True
        while changed:
            changed = False
            for a in in_p:
                if (a, q) in matches:
                    continue
                for nbr in direct_nb.get(a, ()):
                    nb_partner = nbr if model.part[nbr] == 0 else matches.get((nbr, q))
                    if nb_partner is None:
                        continue
                    cands = [c for c in direct_nb.get(nb_partner, ()) if c in in_q and (c, p) not in matches
                             and model.elements[c] == model.elements[a]]
                    if len(cands) == 1:
                        matches[(a, q)] = cands[0]
                        matches[(cands[0], p)] = a
                        changed = True
                        break

    def partner(a: int, q: int) -> int | None:
        """a itself (PART 0) or its matched atom in component q."""
        if model.part[a] == 0:
            return a
        return matches.get((a, q))

    direct_bonds = {(int(i), b.atom) for i, lst in bonds.items() for b in lst if b.op == 0 and b.shift == (0, 0, 0)}

    def connected(a: int, b: int, sigma: float) -> bool:
        if sigma == SIGMA_12:
            return (a, b) in direct_bonds
        return any((a, j) in direct_bonds and (j, b) in direct_bonds for j in range(model.n))

    out: list[Restraint] = []
    seen: set = set()
    for p in parts:
        for q in parts:
            if q > p:
                match_parts(p, q)
    for p in parts:
        members = [i for i in heavy if model.part[i] in (0, p)]
        for q in parts:
            if q <= p:
                continue
            for i in members:
                # 1,2 pairs inside component p (same asymmetric-unit image) and 1,3 pairs
                direct = [b.atom for b in bonds.get(int(i), []) if b.op == 0 and b.shift == (0, 0, 0) and model.part[b.atom] in (0, p)]
                pairs = [(int(i), j, SIGMA_12) for j in direct if j > i]
                for j in direct:
                    for b in bonds.get(j, []):
                        k = b.atom
                        if k != i and k > i and b.op == 0 and b.shift == (0, 0, 0) and model.part[k] in (0, p):
                            pairs.append((int(i), k, SIGMA_13))
                for a, b, sigma in pairs:
                    if model.part[a] == 0 and model.part[b] == 0:
                        continue
                    pa, pb = partner(a, q), partner(b, q)
                    if pa is None or pb is None or pa == pb or not connected(pa, pb, sigma):
                        continue
                    d1 = np.linalg.norm(cart[a] - cart[b])
                    d2 = np.linalg.norm(cart[pa] - cart[pb])
                    if abs(d1 - d2) > MAX_MISMATCH:
                        continue  # not the same chemical bond in the two components
                    key = (min(a, b), max(a, b), min(pa, pb), max(pa, pb))
                    if key in seen or (key[2], key[3], key[0], key[1]) in seen:
                        continue
                    seen.add(key)
                    out.append(Restraint("same", (Image(a), Image(b)), (Image(pa), Image(pb)), sigma))
    # ADP restraints for bonds touching disorder (not for atoms whose ADP is already shared
    # with a disorder partner: that constraint is stronger)
    from .parameters import cached_site_groups

    shared = {a for g in cached_site_groups(model) if len(g.atoms) > 1 for a in g.atoms}
    for i in heavy:
        if int(i) in shared:
            continue
        for b in bonds.get(int(i), []):
            j = b.atom
            if (j, i) in seen or (int(i), j) in seen or j in shared:
                continue
            if model.part[i] == 0 and model.part[j] == 0:
                continue
            if model.part[i] > 0 and model.part[j] > 0 and model.part[i] != model.part[j]:
                continue
            seen.add((int(i), j))
            out.append(Restraint("rigu", (Image(int(i)), b), None, SIGMA_RIGU))
            terminal = len(bonds.get(int(i), [])) <= 1 or len(bonds.get(j, [])) <= 1
            for k in range(6):
                out.append(Restraint("simu", (Image(int(i)), b), None, 2 * SIGMA_SIMU if terminal else SIGMA_SIMU, k))
    for i in disordered:
        if model.occupancy[i] < 0.5 and i not in shared:
            for k in range(6):
                out.append(Restraint("isor", (Image(i), Image(i)), None, SIGMA_ISOR, k))
    return out


def residuals(model: WorkingModel, restraints: list[Restraint], frames: dict[int, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(value - target, σ) of every restraint (RIGU terms are zero for isotropic atoms);
    `frames`: bond vectors to hold for the RIGU terms (`bond_frames`)."""
    if not restraints:
        return np.zeros(0), np.zeros(0)
    m = orthogonalization_matrix(model.cell)
    us = model.u_star_all()
    frames = frames or {}
    batched: dict[int, float] = {}  # distance, RIGU, SIMU and ISOR terms, each kind computed at once
    for batch in (_distance_restraints(model, restraints, m), _rigu_restraints(model, restraints, m, us, frames),
                  _adp_restraints(model, restraints, m, us)):
        batched.update(zip(batch.index.tolist(), batch.values.tolist()))
    vals, sig = [], []
    for idx, r in enumerate(restraints):
        if idx in batched:
            vals.append(batched[idx])
        elif r.kind == "flat":
            vals.append(_flat_terms(model, r, m)[0])
        elif r.kind == "sump":
            vals.append(_sump_terms(model, r)[0])
        else:  # RIGU, SIMU, ISOR with an isotropic atom: nothing to restrain
            vals.append(0.0)
        sig.append(r.sigma)
    return np.array(vals), np.array(sig)


def sum_of_squares(model: WorkingModel, restraints: list[Restraint], weight_scale: float = 1.0,
                   frames: dict[int, np.ndarray] | None = None, as_reported: bool = False) -> float:
    """Σ weight_scale·weight·(value/σ)² of the restraints, the restraints' part of the sum
    the refinement minimises (`frames`: see `residuals`); `as_reported`: every restraint at
    weight 1, the sum SHELXL reports in its restrained GooF."""
    v, s = residuals(model, restraints, frames)
    if not len(v):
        return 0.0
    weight = np.ones(len(v)) if as_reported else np.array([r.weight for r in restraints])
    return float(weight_scale * np.sum(weight * (v / s) ** 2))


def add_to_normal_equations(ne, params: Parameterisation, restraints: list[Restraint], weight_scale: float = 1.0,
                            frames: dict[int, np.ndarray] | None = None) -> None:
    """Add restraint rows (weight weight_scale/σ², target 0) to normal equations over
    `ne.columns`. SHELXL scales the restraint weights by the mean w(Fo² - Fc²)² of the data
    (the refinement driver passes it as `weight_scale`); `frames`: see `residuals`.

    The rows are gathered into one sparse matrix A (restraints × parameters), so that
    AᵀWA is one sparse product rather than an outer product per restraint."""
    if not restraints:
        return
    frames = frames or {}
    model = params.model
    m = orthogonalization_matrix(model.cell)
    us = model.u_star_all()
    c_mat, atoms, atom_cols = params.constraint_matrix(None)
    pos = {int(a): k for k, a in enumerate(atoms)}
    rows, cols, vals = [], [], []  # gradients w.r.t. the raw atom coordinates, per restraint
    weights, values = [], []
    # the distance, RIGU, SIMU and ISOR restraints first, each kind computed at once; their
    # gradients go to the raw xyz (from raw column 0) or U* (from raw column 3) of their atoms
    done: set[int] = set()
    for batch, first in ((_distance_restraints(model, restraints, m), 0),
                         (_rigu_restraints(model, restraints, m, us, frames), 3),
                         (_adp_restraints(model, restraints, m, us), 3)):
        index, batch_values, owner, atoms_a, atoms_b, grad_a, grad_b = batch  # a RestraintBatch
        owner = owner + len(weights)
        for atoms_end, grad in ((atoms_a, grad_a), (atoms_b, grad_b)):
            k = np.array([pos.get(int(a), -1) for a in atoms_end], dtype=np.int64)
            inside = k >= 0
            width = grad.shape[1]
            rows.extend(np.repeat(owner[inside], width).tolist())
            cols.extend((k[inside, None] * RAW + first + np.arange(width)[None, :]).reshape(-1).tolist())
            vals.extend(grad[inside].reshape(-1).tolist())
        for idx, value in zip(index.tolist(), batch_values.tolist()):
            w = weight_scale * restraints[idx].weight / restraints[idx].sigma**2
            ne.chi2 += w * value * value
            weights.append(w)
            values.append(value)
        done.update(index.tolist())
    for idx, r in enumerate(restraints):
        raw = {}
        if idx in done or r.kind in ("rigu", "simu", "isor"):  # (with an isotropic atom: no row)
            continue
        if r.kind == "flat":
            value, grads = _flat_terms(model, r, m)
            for atom, g in grads.items():
                raw.setdefault(atom, np.zeros(RAW))[:3] += g
        else:  # "sump"
            value, factors = _sump_terms(model, r)
            for atom, g in factors.items():
                raw.setdefault(atom, np.zeros(RAW))[9] += g
        w = weight_scale * r.weight / r.sigma**2
        # every restraint counts in the sum of squares, also one whose atoms are outside
        # this block: the sum must equal what `sum_of_squares` gives for a trial model
        ne.chi2 += w * value * value
        row = len(weights)
        for atom, g in raw.items():
            k = pos.get(atom)
            if k is None:
                continue
            nz = np.nonzero(g)[0]
            rows.extend([row] * len(nz))
            cols.extend((k * RAW + nz).tolist())
            vals.extend(g[nz].tolist())
        weights.append(w)
        values.append(value)
    if not rows:
        return
    raw_grad = sp.csr_matrix((vals, (rows, cols)), shape=(len(weights), c_mat.shape[0]))
    col_index = {int(c): k for k, c in enumerate(atom_cols)}
    sel = np.array([col_index.get(int(c), -1) for c in ne.columns], dtype=np.int64)
    keep = np.nonzero(sel >= 0)[0]
    if not len(keep):
        return
    design = (raw_grad @ c_mat.tocsc()[:, sel[keep]]).tocsr()  # (restraints, kept columns)
    w = np.asarray(weights)
    weighted = sp.diags(w) @ design
    ne.matrix[np.ix_(keep, keep)] += (design.T @ weighted).toarray()
    ne.rhs[keep] += weighted.T @ (-np.asarray(values))


def _atoms_of(r: Restraint) -> list[Image]:
    if r.kind in ("same", "distances"):
        pairs, _ = r.distance_terms()
        return [im for pair in pairs for im in pair]
    if r.kind == "flat":
        return [r.atoms[3]]
    if r.kind == "sump":
        return list(r.atoms)
    return list(r.pair1 or ())


_KIND_NAMES = {"rigu": "RIGU/DELU", "simu": "SIMU", "isor": "ISOR", "flat": "FLAT", "same": "SAME/SADI", "distances": "DFIX/DANG",
               "sump": "SUMP"}
_U_COMPONENTS = ("U11", "U22", "U33", "U12", "U13", "U23")
#: what `Restraint.component` means, for the kinds where it names a component
_COMPONENT_NAMES = {"rigu": ("along", "cross 1", "cross 2"), "simu": _U_COMPONENTS, "isor": _U_COMPONENTS}


def disagreeable(model: WorkingModel, restraints: list[Restraint], z_min: float = 3.0, limit: int = 10) -> list[str]:
    """The restraints the refined model disagrees with most (|value - target| > z_min·σ),
    worst first, as text naming kind, atoms, deviation and σ (SHELXL's "disagreeable
    restraints")."""
    if not restraints:
        return []
    values, sigmas = residuals(model, restraints)
    z = np.abs(values) / sigmas
    out = []
    for k in np.argsort(-z)[:limit]:
        if z[k] <= z_min:
            break
        r = restraints[k]
        names: list[str] = []
        for im in _atoms_of(r):
            label = model.labels[im.atom] + ("'" * (im.op != 0 or any(im.shift)))
            if label not in names:
                names.append(label)
        what = _KIND_NAMES[r.kind]
        detail = _COMPONENT_NAMES[r.kind][r.component] if r.kind in _COMPONENT_NAMES else ""
        unit = {"rigu": "Å²", "simu": "Å²", "isor": "Å²", "flat": "Å³", "sump": "(occupancy)"}.get(r.kind, "Å")
        out.append(f"{what} {' '.join(names)}{(' ' + detail) if detail else ''}: deviation "
                   f"{values[k]:+.4f} {unit}, σ {sigmas[k]:.4f} ({z[k]:.1f} σ)")
    return out

