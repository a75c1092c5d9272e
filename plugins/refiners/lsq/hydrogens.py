"""Riding hydrogen atoms placed geometrically, as SHELXL's AFIX/HFIX does.

Connectivity of the non-H atoms comes from covalent radii (gemmi) over all symmetry images
(a cKDTree per refinement); each C, N and O atom's hybridisation is judged from the number
of its neighbours, their angles and bond lengths, and hydrogens are placed with SHELXL's
geometry and X-H distances:

    AFIX 137 CH3 / NH3+   AFIX 23 CH2   AFIX 13 CH   AFIX 43 aromatic CH, sp2 NH
    AFIX 93  =CH2 / NH2   AFIX 163 ≡CH  AFIX 147 OH

U_iso(H) = 1.5 U_eq(parent) for CH3, NH3 and OH, 1.2 U_eq(parent) otherwise. Groups that
are certain from the geometry (CH, CH2, CH3, aromatic CH) are always placed; groups that
depend on the protonation state (OH, NH, NH2, NH3) are placed in order of the difference
density at their predicted H positions until the formula's H count is reached (or by the
default chemistry when the formula does not say). Rotating groups (CH3, NH3, OH) start
from the torsion with the most difference density, where the data show one (SHELXL's
circular Fourier search), and their torsion is then refined by least squares as one
parameter per group (AFIX 137/147; `geometry_derivatives`), and with AFIX m8 its X-H
distance too. H atoms are re-placed after
every least-squares shift (`update_riding`), and their coordinate derivatives are added to
the parent's (the riding model).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree

from refractor_core.crystal.cell import fractionalization_matrix, orthogonalization_matrix

from .model import EXACT_SPECIAL, WorkingModel, is_hydrogen
from .parameters import SPLIT_MIXED_DISTANCE

TETRA = math.radians(109.47)

#: SHELXL X-H distances (Å): (low temperature, room temperature)
DISTANCES = {
    "CH3": (0.98, 0.96),
    "CH2": (0.99, 0.97),
    "CH": (1.00, 0.98),
    "ArCH": (0.95, 0.93),
    "=CH2": (0.95, 0.93),
    "CH-sp": (0.95, 0.93),
    "NH": (0.88, 0.86),
    "NH2": (0.88, 0.86),
    "NH3": (0.91, 0.89),
    "NH-sp3": (0.88, 0.86),  # not used by SHELXL defaults; as sp2 NH
    "NH2-sp3": (0.92, 0.90),  # AFIX 23 on N (an amine on a metal, R2NH2+): SHELXL's 0.92 Å at 120 K
    "OH": (0.84, 0.82),
}
#: AFIX of a rotating group whose torsion is not refined (riding, n = 3)
AFIX_FIXED_TORSION = {"CH3": 33, "NH3": 33, "OH": 83}
AFIX = {"CH3": 137, "CH2": 23, "CH": 13, "ArCH": 43, "=CH2": 93, "CH-sp": 163, "NH": 43, "NH2": 93, "NH3": 137, "NH-sp3": 13,
        "NH2-sp3": 23, "OH": 147}
U_RATIO = {"CH3": 1.5, "NH3": 1.5, "OH": 1.5}
ROTATING = ("CH3", "NH3", "OH")
N_H = {"CH3": 3, "CH2": 2, "CH": 1, "ArCH": 1, "=CH2": 2, "CH-sp": 1, "NH": 1, "NH2": 2, "NH3": 3, "NH-sp3": 1, "NH2-sp3": 2,
       "OH": 1}

#: SHELXL AFIX m of a riding group -> the group kind, by parent element (the model's own
#: H groups, `RefinementInstructions.hfix`); m 12 (a methyl disordered over two
#: orientations) is placed as one rotating methyl
AFIX_KINDS = {
    "C": {1: "CH", 2: "CH2", 3: "CH3", 4: "ArCH", 9: "=CH2", 12: "CH3", 13: "CH3", 16: "CH-sp"},
    "N": {1: "NH-sp3", 2: "NH2-sp3", 3: "NH3", 4: "NH", 9: "NH2", 13: "NH3"},
    "O": {8: "OH", 14: "OH"},
}
#: non-H neighbours each group kind is built from
GROUP_NEIGHBOURS = {"CH3": 1, "CH2": 2, "CH": 3, "ArCH": 2, "=CH2": 1, "CH-sp": 1, "NH": 2, "NH2": 1, "NH3": 1,
                    "NH-sp3": 3, "NH2-sp3": 2, "OH": 1}
#: kinds whose H positions need a torsion reference (a neighbour of the neighbour)
NEEDS_REFERENCE = ("CH3", "=CH2", "NH2", "NH3", "OH")

#: typical single-bond lengths (Å) used to judge bond orders
SINGLE = {("C", "C"): 1.53, ("C", "N"): 1.47, ("C", "O"): 1.43, ("N", "N"): 1.45, ("N", "O"): 1.42, ("O", "O"): 1.48,
          ("B", "C"): 1.58, ("C", "Si"): 1.87, ("C", "S"): 1.82, ("C", "P"): 1.84, ("C", "F"): 1.35, ("C", "Cl"): 1.77,
          ("C", "Br"): 1.94, ("N", "S"): 1.68, ("O", "S"): 1.58, ("O", "P"): 1.60, ("N", "P"): 1.70, ("O", "Si"): 1.64}
BOND_TOLERANCE = 0.45
MULTIPLE = 0.95  # d / single below this: a multiple (or aromatic) bond
AROMATIC = 0.93  # below this a bond is clearly multiple (aromatic rings of any size)
TRIPLE = 0.83


@dataclass
class Neighbour:
    """An atom image: index, operation, lattice shift (fractional = R x + t + shift)."""

    atom: int
    op: int
    shift: tuple[int, int, int]


@dataclass
class HGroup:
    """One riding group: its parent, its kind, the atoms defining it and its H atoms."""

    parent: int
    kind: str
    neighbours: list[Neighbour]
    reference: Neighbour | None = None  # torsion reference (rotating and =CH2/NH2 groups)
    torsion: float = 180.0  # degrees
    distance: float = 0.96
    slots: list[int] = field(default_factory=list)  # which generated positions are kept
    atoms: list[int] = field(default_factory=list)  # the H atoms (model indices), per slot
    refine_torsion: bool = False  # a rotating group whose torsion is a least-squares parameter
    refine_distance: bool = False  # ... whose X-H distance is one too (SHELXL AFIX m8)
    fixed_by_symmetry: bool = False  # a rotating group with an H on a symmetry element
    staggered: bool = False  # a model's AFIX 33/83 group: staggered, never fitted to the density
    own: bool = False  # the model's own H (`attach_existing`), kept through the placing of riding H


@dataclass
class Placement:
    """What `place_hydrogens` did."""

    model: WorkingModel
    counts: dict
    lines: list[str]

    def summary(self) -> str:
        c = self.counts
        parts = ", ".join(f"{v} {k}" for k, v in sorted(c.get("groups", {}).items()))
        msg = f"riding H placed: {c.get('n_h', 0)} H atoms ({parts or 'none'})"
        if c.get("free_h_asu"):
            msg += f"; {c['free_h_asu']:.1f} H per asymmetric unit refined freely"
        if c.get("expected_h") is not None:
            msg += f"; formula asks for {c['expected_h']:.1f} per asymmetric unit"
        return msg


# --------------------------------------------------------------------------------------
# connectivity
# --------------------------------------------------------------------------------------


def covalent_radius(element: str) -> float:
    """Covalent radius (Å) of an element (gemmi's table)."""
    import gemmi

    return float(gemmi.Element(element).covalent_r)


def _is_metal(element: str) -> bool:
    import gemmi

    return bool(gemmi.Element(element).is_metal)


def single_bond(a: str, b: str) -> float:
    """Typical single-bond length between two elements."""
    key = tuple(sorted((a, b)))
    if key in SINGLE:
        return SINGLE[key]
    return covalent_radius(a) + covalent_radius(b) + 0.05


def neighbours(model: WorkingModel, atoms: np.ndarray | None = None) -> dict[int, list[tuple[Neighbour, np.ndarray, float]]]:
    """Bonded non-H neighbours (all symmetry images) of each non-H atom.

    Returns {atom: [(Neighbour, Cartesian position, distance), ...]}.
    """
    sym = model.symmetry
    cell_m = orthogonalization_matrix(model.cell)
    heavy = np.array([i for i in range(model.n) if not is_hydrogen(model.elements[i])], dtype=np.int64)
    if atoms is None:
        atoms = heavy
    out: dict[int, list] = {int(i): [] for i in atoms}
    if len(heavy) == 0:
        return out
    radii = np.array([covalent_radius(model.elements[i]) for i in heavy])
    # images of all heavy atoms, wrapped into [0,1) plus neighbouring cells
    img = np.einsum("sij,nj->sni", sym.rotations.astype(np.float64), model.xyz[heavy]) + sym.translations[:, None, :]
    base = np.floor(img)
    img = img - base  # in [0, 1)
    shifts = np.array([(i, j, k) for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)], dtype=np.float64)
    pts = (img[None, :, :, :] + shifts[:, None, None, :])  # (27, s, n, 3)
    frac_all = pts.reshape(-1, 3)
    cart_all = frac_all @ cell_m.T
    n_s, n_h = img.shape[0], img.shape[1]
    idx_shift = np.repeat(np.arange(27), n_s * n_h)
    idx_op = np.tile(np.repeat(np.arange(n_s), n_h), 27)
    idx_atom = np.tile(heavy, 27 * n_s)
    idx_pos = np.tile(np.arange(n_h), 27 * n_s)
    tree = cKDTree(cart_all)
    max_r = 2.0 * radii.max() + BOND_TOLERANCE
    for i in atoms:
        i = int(i)
        xi = model.xyz[i]
        ci = xi @ cell_m.T
        # bring atom i into the [0,1) cell frame used by the images
        off = np.floor(xi)
        ci0 = (xi - off) @ cell_m.T
        hits = tree.query_ball_point(ci0, max_r)
        ri = covalent_radius(model.elements[i])
        for h in hits:
            j = int(idx_atom[h])
            d = float(np.linalg.norm(cart_all[h] - ci0))
            if d < 0.5:
                continue
            if d > ri + radii[idx_pos[h]] + BOND_TOLERANCE:
                continue
            pi, pj = model.part[i], model.part[j]
            if not model.may_bond(i, j):
                continue
            op = int(idx_op[h])
            shift_total = shifts[idx_shift[h]] - base[op, idx_pos[h]] + off
            sh = tuple(int(round(v)) for v in shift_total)
            if pj < 0 and pi == pj and (op != 0 or any(sh)):
                continue
            pos = ci + (cart_all[h] - ci0)
            if any(np.linalg.norm(pos - q) < 0.1 for _, q, _ in out[i]):
                continue  # the same image reached through a site-symmetry operation
            out[i].append((Neighbour(j, op, sh), pos, d))
    return out


def neighbour_position(model: WorkingModel, nb: Neighbour) -> np.ndarray:
    """Cartesian position of a neighbour image in the current model."""
    sym = model.symmetry
    f = sym.rotations[nb.op].astype(np.float64) @ model.xyz[nb.atom] + sym.translations[nb.op] + np.array(nb.shift, dtype=np.float64)
    return f @ orthogonalization_matrix(model.cell).T


# --------------------------------------------------------------------------------------
# geometry of each group
# --------------------------------------------------------------------------------------


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v)
    return v / n if n > 1e-12 else v


def _perpendicular(u: np.ndarray, hint: np.ndarray | None) -> np.ndarray:
    """A unit vector perpendicular to u, towards `hint` where possible."""
    if hint is not None:
        e = hint - (hint @ u) * u
        if np.linalg.norm(e) > 1e-6:
            return _unit(e)
    trial = np.array([1.0, 0.0, 0.0]) if abs(u[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    return _unit(trial - (trial @ u) * u)


def _hch_half_angle(xcy: float) -> float:
    """Half of the H-C-H angle of a CH2 group given its X-C-Y angle (radians), as SHELXL
    builds AFIX 23: H-C-H = 122.76° - 0.1326 X-C-Y, a line fitted to the CH2 groups of
    SHELXL-refined models (SHELXL-97 to 2018; within 0.02° for X-C-Y of 102-113°), held
    to X-C-Y between 60° (an epoxide's CH2: 114.8°, near its 116°) and 150°."""
    x = min(max(math.degrees(xcy), 60.0), 150.0)
    return math.radians(122.76 - 0.1326 * x) / 2.0


def group_positions(model: WorkingModel, g: HGroup) -> np.ndarray:
    """Cartesian positions (k, 3) of all H of a group (before slot selection)."""
    cell_m = orthogonalization_matrix(model.cell)
    p = model.xyz[g.parent] @ cell_m.T
    nbs = [neighbour_position(model, nb) for nb in g.neighbours]
    d = g.distance
    k = g.kind
    if k in ("CH", "NH-sp3") and len(nbs) == 3:
        # SHELXL AFIX 13: the three X-C-H angles equal, i.e. along the normal of the plane
        # through the tips of the three bond unit vectors (not their negative sum, which
        # differs by several degrees when the X-C-X angles differ, as in sugar rings)
        u1, u2, u3 = (_unit(x - p) for x in nbs)
        v = np.cross(u2 - u1, u3 - u1)
        if float(v @ (u1 + u2 + u3)) > 0.0:
            v = -v
        if float(np.linalg.norm(v)) < 1e-8:  # (the bonds' tips on one line: no unique normal)
            v = -(u1 + u2 + u3)
        return (p + d * _unit(v))[None]
    if k in ("ArCH", "NH") or (k == "NH-sp3" and len(nbs) == 2):
        v = -(_unit(nbs[0] - p) + _unit(nbs[1] - p))
        return (p + d * _unit(v))[None]
    if k in ("CH2", "NH2-sp3"):  # (SHELXL's AFIX 23, on C or N)
        u1, u2 = _unit(nbs[0] - p), _unit(nbs[1] - p)
        b = _unit(u1 + u2)
        n = _unit(np.cross(u1, u2))
        half = _hch_half_angle(math.acos(float(np.clip(u1 @ u2, -1.0, 1.0))))
        return np.stack([p + d * (-b * math.cos(half) + n * math.sin(half)), p + d * (-b * math.cos(half) - n * math.sin(half))])
    y = nbs[0]
    u = _unit(p - y)  # from the neighbour towards the parent
    if k == "CH-sp":
        return (p + d * u)[None]
    ref = neighbour_position(model, g.reference) if g.reference is not None else None
    e1 = _perpendicular(u, None if ref is None else ref - y)
    e2 = np.cross(u, e1)
    if k in ("=CH2", "NH2"):
        c, s = math.cos(math.radians(60.0)), math.sin(math.radians(60.0))
        return np.stack([p + d * (u * c + e1 * s), p + d * (u * c - e1 * s)])
    # rotating groups: tetrahedral angle at the parent, torsion from the reference
    c, s = math.cos(math.pi - TETRA), math.sin(math.pi - TETRA)
    n_h = N_H[k]
    out = []
    for m in range(n_h):
        t = math.radians(g.torsion) + 2.0 * math.pi * m / n_h
        out.append(p + d * (u * c + s * (math.cos(t) * e1 + math.sin(t) * e2)))
    return np.array(out)


def update_riding(model: WorkingModel) -> None:
    """Re-place every riding H from its parent's (and neighbours') current positions."""
    f_m = fractionalization_matrix(model.cell)
    for g in model.h_groups:
        place_group(model, g, f_m)
    model.update_u_eq()


def place_group(model: WorkingModel, g: HGroup, f_m: np.ndarray) -> None:
    """Re-place one group's H atoms (`f_m`: the cell's fractionalization matrix)."""
    if g.kind == "fixed":
        for a in g.atoms:
            model.xyz[a] = model.xyz[g.parent] + g.offset @ f_m.T
        return
    pos = group_positions(model, g)
    for slot, atom in zip(g.slots, g.atoms):
        model.xyz[atom] = pos[slot] @ f_m.T


# --------------------------------------------------------------------------------------
# classification
# --------------------------------------------------------------------------------------


@dataclass
class Choice:
    parent: int
    kind: str
    neighbours: list[Neighbour]
    reference: Neighbour | None
    optional: bool
    priority: float = 0.0
    refine_torsion: bool = True  # (rotating groups) SHELXL AFIX n = 7 or 8 rather than 3
    refine_distance: bool = False  # (rotating groups) SHELXL AFIX n = 8: the X-H distance too


def _angle(p, a, b) -> float:
    """Angle a-p-b (°)."""
    return _vector_angle(a - p, b - p)


def _vector_angle(a, b) -> float:
    """Angle (°) between two vectors."""
    u, v = _unit(a), _unit(b)
    return math.degrees(math.acos(float(np.clip(u @ v, -1.0, 1.0))))


#: the atoms riding H are placed on (`classify`)
RIDING_PARENTS = ("C", "N", "O")


#: farthest (Å) an H may be from the atom the model names as its own (an M-H hydride bond
#: included): farther, the named atom is only the one its riding U follows
STATED_PARENT_DISTANCE = 2.2


def hydrogen_parents(model: WorkingModel, stated: dict[str, str] | None = None) -> dict[int, int]:
    """{H atom: the non-H atom it belongs to} (empty without non-H atoms; indices change when
    atoms are removed: use at once). The parent the model names (`stated`: H label -> parent
    label, from its AFIX groups or the CIF's calc-attached atom) where that is a non-H atom of
    the model and within STATED_PARENT_DISTANCE of the H (an H refined freely names only the
    atom its riding U follows, wherever the atom list puts it); else the nearest non-H atom
    the H may bond to: not one of another disorder component, and of its own negative PART
    only the atom itself, not its symmetry images (which are alternatives to it)."""
    heavy = np.array([i for i in range(model.n) if not is_hydrogen(model.elements[i])], dtype=np.int64)
    if len(heavy) == 0:
        return {}
    from .completion import closest_image, image_distances

    index = model.label_index()
    stated = {k.upper(): v.upper() for k, v in (stated or {}).items()}
    out: dict[int, int] = {}
    for h in np.nonzero(model.hydrogen)[0]:
        named = index.get(stated.get(model.labels[h].upper(), ""))
        if named is not None and not is_hydrogen(model.elements[named]) and \
                closest_image(model, model.xyz[h], model.xyz[named])[0] <= STATED_PARENT_DISTANCE:
            out[int(h)] = int(named)
            continue
        dist = image_distances(model, model.xyz[h], heavy)
        own = int(model.part[h])
        for k, j in enumerate(heavy):
            if model.in_two_parts(int(h), int(j)):
                dist[k] = np.inf
            elif own < 0 and int(model.part[j]) == own:
                dist[k] = closest_image(model, model.xyz[h], model.xyz[j], identity_only=True)[0]
        if not np.isfinite(dist).any():
            dist = image_distances(model, model.xyz[h], heavy)
        out[int(h)] = int(heavy[int(np.argmin(dist))])
    return out


def unplaceable_hydrogens(model: WorkingModel, parents: dict[int, int] | None = None) -> np.ndarray:
    """Mask of the H atoms whose parent (`hydrogen_parents`, computed when not given) is not
    one riding H are placed on (metal, B, Si, P hydrides): removed to be re-placed, they
    would be lost."""
    parents = hydrogen_parents(model) if parents is None else parents
    out = np.zeros(model.n, dtype=bool)
    for h, parent in parents.items():
        out[h] = model.elements[parent] not in RIDING_PARENTS
    return out


def classify(model: WorkingModel, nbmap: dict, forced: dict[int, int] | None = None) -> list[Choice]:
    """Candidate H groups for every C, N and O atom, marked optional where uncertain.

    `forced` (atom -> SHELXL AFIX code, 0 for H refined freely) are the model's own H
    groups: those atoms get the group their AFIX code names (when their neighbours can
    hold it), atoms with freely refined H get what the geometry says, and atoms not in it
    get none, as SHELXL places only the H groups it is told to.
    """
    cell_m = orthogonalization_matrix(model.cell)
    out: list[Choice] = []
    for i, nbl in nbmap.items():
        el = model.elements[i]
        if el not in RIDING_PARENTS:
            continue
        p = model.xyz[i] @ cell_m.T
        organic = [(nb, pos, d) for nb, pos, d in nbl if not _is_metal(model.elements[nb.atom])]
        metals = [(nb, pos, d) for nb, pos, d in nbl if _is_metal(model.elements[nb.atom])]
        ratios = [d / single_bond(el, model.elements[nb.atom]) for nb, pos, d in organic]
        nbs = [nb for nb, _, _ in organic]
        pos = [x for _, x, _ in organic]
        n = len(organic)

        def reference_of(k: int) -> Neighbour | None:
            """The torsion reference of a group on atom i bonded to organic neighbour k: that
            neighbour's shortest bond to another non-H atom (an H only if it has none), as
            SHELXL staggers an XH3 group (AFIX 33) against the shortest other bond."""
            nb = nbs[k]
            sub = neighbours(model, np.array([nb.atom]))[nb.atom]
            best, best_key = None, None
            for cand, _, dist in sub:
                if cand.atom == i and cand.op == 0:
                    continue
                # express the reference relative to the neighbour's image
                ref = _compose(model, nb, cand)
                if ref is None:
                    continue
                rpos = neighbour_position(model, ref)
                if np.linalg.norm(rpos - p) < 0.5:
                    continue
                key = (is_hydrogen(model.elements[cand.atom]), dist)
                if best_key is None or key < best_key:
                    best, best_key = ref, key
            return best

        if forced is not None:
            if i not in forced:
                continue
            kind = AFIX_KINDS.get(el, {}).get(forced[i] // 10) if forced[i] else None
            # the group's neighbours: its atom's organic ones, then metals where the group
            # asks for more (an amine N on a metal in AFIX 23), as SHELXL bonds them all
            wanted = GROUP_NEIGHBOURS[kind] if kind is not None else 0
            group_nbs = nbs + [nb for nb, _, _ in metals][: max(wanted - n, 0)]
            if kind is not None and len(group_nbs) == wanted:
                out.append(Choice(i, kind, group_nbs, reference_of(0) if kind in NEEDS_REFERENCE else None, False,
                                  refine_torsion=forced[i] % 10 in (7, 8), refine_distance=forced[i] % 10 == 8))
                continue
        if el == "C":
            if metals and n == 1 and ratios[0] < 0.9 and model.elements[nbs[0].atom] == "O":
                continue  # carbonyl ligand
            if n == 3:
                planar = sum(_angle(p, pos[a], pos[b]) for a, b in ((0, 1), (0, 2), (1, 2))) > 350.0
                if not planar:
                    out.append(Choice(i, "CH", nbs, None, False))
            elif n == 2:
                ang = _angle(p, pos[0], pos[1])
                if ang > 165.0:
                    continue
                sp2 = min(ratios) < AROMATIC or ang > 122.0 or (ang > 116.0 and min(ratios) < MULTIPLE)
                out.append(Choice(i, "ArCH" if sp2 else "CH2", nbs, None, False))
            elif n == 1:
                r = ratios[0]
                other = model.elements[nbs[0].atom]
                if r < TRIPLE:
                    if other == "C":
                        out.append(Choice(i, "CH-sp", nbs, None, False))
                elif r < 0.90 and other in ("C", "N"):
                    out.append(Choice(i, "=CH2", nbs, reference_of(0), False))
                elif r >= 0.90:
                    out.append(Choice(i, "CH3", nbs, reference_of(0), False))
        elif el == "N":
            if n == 0 and metals:
                out.append(Choice(i, "NH3", [metals[0][0]], None, True, priority=0.3))  # ammine ligand
            elif n == 3:
                planar = sum(_angle(p, pos[a], pos[b]) for a, b in ((0, 1), (0, 2), (1, 2))) > 350.0
                if not planar and not metals:
                    out.append(Choice(i, "NH-sp3", nbs, None, True, priority=-1.0))
            elif n == 2:
                ang = _angle(p, pos[0], pos[1])
                if ang > 160.0:
                    continue
                if metals:
                    if ang < 115.0 and min(ratios) >= MULTIPLE:
                        out.append(Choice(i, "NH-sp3", nbs + [m[0] for m in metals[:1]], None, True))
                    continue
                out.append(Choice(i, "NH", nbs, None, True, priority=0.5 if min(ratios) >= 0.88 else 0.0))
            elif n == 1:
                r = ratios[0]
                if r < TRIPLE:
                    continue  # nitrile
                if metals:  # an amine on a metal: tetrahedral NH2 between C and the metal
                    out.append(Choice(i, "NH2-sp3", nbs + [metals[0][0]], None, True))
                elif r < MULTIPLE:
                    out.append(Choice(i, "NH2", nbs, reference_of(0), True, priority=0.5))
                else:
                    out.append(Choice(i, "NH3", nbs, reference_of(0), True, priority=0.3))
        elif el == "O":
            if n == 1 and not metals:
                r = ratios[0]
                other = model.elements[nbs[0].atom]
                if r >= 0.90 and other in ("C", "N", "P", "S", "Si", "B"):
                    out.append(Choice(i, "OH", nbs, reference_of(0), True, priority=1.0 if (other == "C" and r >= MULTIPLE) else 0.0))
    return out


def _compose(model: WorkingModel, outer: Neighbour, inner: Neighbour) -> Neighbour | None:
    """The image `inner` (given relative to outer.atom's own frame) seen from atom i's frame."""
    sym = model.symmetry
    r1 = sym.rotations[outer.op].astype(np.float64)
    t1 = sym.translations[outer.op] + np.array(outer.shift, dtype=np.float64)
    r2 = sym.rotations[inner.op].astype(np.float64)
    t2 = sym.translations[inner.op] + np.array(inner.shift, dtype=np.float64)
    # inner position: r2 x + t2, then mapped by outer: r1 (r2 x + t2) + t1
    found = sym.find_operation(r1 @ r2, r1 @ t2 + t1)
    return None if found is None else Neighbour(inner.atom, *found)


# --------------------------------------------------------------------------------------
# placement
# --------------------------------------------------------------------------------------


def place_hydrogens(
    model: WorkingModel,
    *,
    expected_h: float | None = None,
    distances: str = "low-temperature",
    refinement=None,
    forced: dict[int, int] | None = None,
    refine_torsions: bool = True,
) -> Placement:
    """Add riding H atoms to `model` (a copy is returned inside the Placement); `forced`:
    the model's own H groups (see `classify`); `refine_torsions`: rotating groups (CH3, NH3,
    OH) have their torsion refined by least squares (SHELXL AFIX 137/147; a model's own
    AFIX 33/83 group keeps the torsion it is placed with)."""
    m = model.copy()
    _drop_riding(m)
    own = list(m.h_groups)  # the model's own H kept: their atoms get no other H
    col = 0 if distances == "low-temperature" else 1
    nbmap = neighbours(m)
    choices = [c for c in classify(m, nbmap, forced) if c.parent not in {g.parent for g in own}]
    certain = [c for c in choices if not c.optional]
    optional = [c for c in choices if c.optional]
    density = None
    if refinement is not None and optional:
        density = DensityProbe.from_refinement(refinement, m)
    groups: list[HGroup] = []
    for c in certain:
        groups.append(_new_group(m, c, col, refine_torsions))
    count = _ghost_count(m, groups) + free_h_count(m) + _ghost_count(m, own, materialised=True)
    # water (O with no non-metal neighbour) needs two H from the budget: keep them aside
    reserved = 0.0
    for i, nbl in nbmap.items():
        if m.elements[i] == "O" and not any(not _is_metal(m.elements[nb.atom]) for nb, _, _ in nbl):
            reserved += 2.0 * m.occupancy[i] / max(m.order[i], 1)
    if optional:
        scored = []
        for c in optional:
            g = _new_group(m, c, col, refine_torsions)
            pos = group_positions(m, g)
            score = c.priority
            if density is not None:
                if g.kind in ROTATING:
                    _best_torsion(m, g, density)
                    pos = group_positions(m, g)
                score = float(np.mean(density.at(pos))) / max(density.rms, 1e-6) + c.priority
            scored.append((score, g, c))
        scored.sort(key=lambda t: -t[0])
        for score, g, c in scored:
            h_add = N_H[g.kind] * m.occupancy[g.parent] / max(m.order[g.parent], 1)
            if expected_h is not None:
                if count + 0.5 * h_add > expected_h - reserved + 1e-6:
                    continue
            elif score < 0.5:
                continue
            groups.append(g)
            count += h_add
    # rotating groups: torsion from the difference density
    if refinement is not None:
        if density is None:
            density = DensityProbe.from_refinement(refinement, m)
        for g in groups:
            if g.kind in ROTATING and not g.staggered:
                _best_torsion(m, g, density)
    kinds: dict[str, int] = {}
    n_h = 0
    for g in groups:
        n_h += _materialise(m, g)
        kinds[g.kind] = kinds.get(g.kind, 0) + 1
    m.h_groups = own + [g for g in groups if g.atoms]
    update_riding(m)

    counts = {"n_h": n_h, "groups": kinds, "expected_h": expected_h, "placed_h_asu": _ghost_count(m, m.h_groups, materialised=True),
              "free_h_asu": free_h_count(m)}
    return Placement(m, counts, [])


def approximated_afix(model: WorkingModel, forced: dict[int, int]) -> list[str]:
    """Lines naming the model's AFIX codes this placement does not build (their atoms get
    the group their geometry says instead)."""
    unknown = [f"{model.labels[i]} (AFIX {code})" for i, code in sorted(forced.items())
               if code and AFIX_KINDS.get(model.elements[i], {}).get(code // 10) is None]
    return [f"H groups placed by geometry instead of the model's AFIX code: {', '.join(unknown)}"] if unknown else []


def _new_group(m: WorkingModel, c: Choice, col: int, refine_torsions: bool) -> HGroup:
    kind = c.kind
    # (an H anti to the reference: SHELXL staggers XH3 against the shortest other bond)
    torsion = 180.0 if kind in ("OH",) else 60.0
    refine_torsion = refine_torsions and kind in ROTATING and c.refine_torsion
    return HGroup(parent=c.parent, kind=kind, neighbours=c.neighbours, reference=c.reference, torsion=torsion,
                  distance=DISTANCES[kind][col], refine_torsion=refine_torsion,
                  refine_distance=refine_torsion and c.refine_distance,
                  staggered=kind in ROTATING and not c.refine_torsion)


def afix_code(g: HGroup) -> int:
    """The SHELXL AFIX code of a group's H atoms (n = 7 for a refined torsion, 8 when the
    X-H distance is refined too, 3 otherwise)."""
    if g.kind in ROTATING and not g.refine_torsion:
        return AFIX_FIXED_TORSION[g.kind]
    return AFIX[g.kind] + (1 if g.refine_distance else 0)


def free_h_count(m: WorkingModel) -> float:
    """H per asymmetric unit refined freely (not riding): a model's own free H, hydrides."""
    return float(sum(m.occupancy[a] / max(m.order[a], 1) for a in range(m.n)
                     if is_hydrogen(m.elements[a]) and m.riding[a] < 0))


def _ghost_count(m: WorkingModel, groups: list[HGroup], materialised: bool = False) -> float:
    """H per asymmetric unit the groups hold (parent occupancy and site symmetry counted)."""
    total = 0.0
    for g in groups:
        if materialised:
            total += sum(m.occupancy[a] / max(m.order[a], 1) for a in g.atoms)
        else:
            total += N_H[g.kind] * m.occupancy[g.parent] / max(m.order[g.parent], 1)
    return total


def _materialise(m: WorkingModel, g: HGroup) -> int:
    """Add the group's H atoms to the model, skipping symmetry duplicates."""
    f_m = fractionalization_matrix(m.cell)
    cell_m = orthogonalization_matrix(m.cell)
    pos = group_positions(m, g)
    existing_h = [a for a in range(m.n) if is_hydrogen(m.elements[a])]
    added = 0
    base = m.labels[g.parent]
    suffixes = "ABCDEFGH"
    own = int(m.part[g.parent])
    for slot, cart in enumerate(pos):
        frac = cart @ f_m.T
        # a duplicate of an H already present (through symmetry)?
        dup = False
        for a in existing_h:
            if m.part[a] != 0 and own != 0 and m.part[a] != own:
                continue  # the other component of a disorder
            # atoms of one negative PART are alternatives to their own symmetry copies
            img = m.symmetry.images(m.xyz[a])[:1] if own < 0 and m.part[a] == own else m.symmetry.images(m.xyz[a])
            dd = img - frac
            dd -= np.round(dd)
            if np.min(np.linalg.norm(dd @ cell_m.T, axis=1)) < 0.3:
                dup = True
                break
        if dup:
            continue
        label = f"H{base[len(m.elements[g.parent]):] or ''}"
        label = label + (suffixes[slot] if N_H[g.kind] > 1 else "")
        if label in m.labels:
            label = m.unique_label("H")
        idx = m.add_atom(
            label, "H", frac, u_iso=U_RATIO.get(g.kind, 1.2) * m.u_iso[g.parent],
            occupancy=float(m.occupancy[g.parent]), part=int(m.part[g.parent]), riding=g.parent,
            u_ratio=U_RATIO.get(g.kind, 1.2), afix=afix_code(g), special_tolerance=0.15,
        )
        g.slots.append(slot)
        g.atoms.append(idx)
        existing_h.append(idx)
        added += 1
    # a group on a special position whose H do not map onto themselves is disordered over
    # the site symmetry: share its H between the images (a group on a general position is
    # never shared: the images of a negative PART are alternatives its occupancy allows for)
    if g.atoms and m.order[g.parent] > 1:
        p = m.xyz[g.parent]
        images = []
        for a in g.atoms:
            img = m.symmetry.images(m.xyz[a])
            dd = img - p
            dd -= np.round(dd)
            near = np.linalg.norm(dd @ cell_m.T, axis=1) < 1.3
            for v in (p + dd[near]):
                if not any(np.linalg.norm((v - w) @ cell_m.T) < 0.3 for w in images):
                    images.append(v)
        if len(images) > N_H[g.kind]:
            factor = N_H[g.kind] / len(images)
            for a in g.atoms:
                m.occupancy[a] = m.occupancy[g.parent] * factor
    if g.kind in ROTATING and any(m.order[a] > 1 for a in g.atoms):
        # an H on a symmetry element (an NH3 on a mirror, its third H the mirror image of
        # the second): the symmetry fixes the torsion, and turning the group would take
        # that H off the element while its images turn the other way
        g.refine_torsion = False
        g.fixed_by_symmetry = True
        for a in g.atoms:
            m.afix[a] = afix_code(g)
    return added


def add_partner_hydrogens(m: WorkingModel, partners: dict[int, int]) -> int:
    """Riding H for the minor atoms of split sites (`partners`: major atom -> minor atom):
    each major atom's riding groups copied onto its minor atom, their defining neighbours
    swapped for those neighbours' own minor atoms where they have one. Returns H added."""
    added = 0
    for g in list(m.h_groups):
        if g.parent not in partners or not g.neighbours:
            continue  # (H found in the map have no geometry to copy)

        def swap(nb: Neighbour | None) -> Neighbour | None:
            return None if nb is None else Neighbour(partners.get(nb.atom, nb.atom), nb.op, nb.shift)

        new = HGroup(parent=partners[g.parent], kind=g.kind, neighbours=[swap(nb) for nb in g.neighbours],
                     reference=swap(g.reference), torsion=g.torsion, distance=g.distance,
                     refine_torsion=g.refine_torsion, staggered=g.staggered)
        added += _materialise(m, new)
        if new.atoms:
            m.h_groups.append(new)
    if added:
        update_riding(m)
    return added


def _offset_from(model: WorkingModel, parent: int, xyz: np.ndarray) -> np.ndarray:
    """Cartesian vector from atom `parent` to the image of fractional `xyz` closest to it."""
    from .completion import closest_image

    _, op, shift = closest_image(model, model.xyz[parent], xyz)
    image = model.symmetry.images(np.asarray(xyz, dtype=np.float64))[op] + shift
    return orthogonalization_matrix(model.cell) @ (image - model.xyz[parent])


def model_h_names(model: WorkingModel, hydrogens: np.ndarray, parents: dict[int, int]) -> dict[str, list[tuple[str, np.ndarray]]]:
    """{parent label: [(H label, Cartesian offset from the parent)]} of the H atoms of a
    mask (`parents`: `hydrogen_parents`), for `restore_h_names` once they are re-placed."""
    out: dict[str, list[tuple[str, np.ndarray]]] = {}
    for h in np.nonzero(hydrogens)[0]:
        parent = parents.get(int(h))
        if parent is not None:
            out.setdefault(model.labels[parent].upper(), []).append(
                (model.labels[h], _offset_from(model, parent, model.xyz[h])))
    return out


def adopt_model_torsions(m: WorkingModel, names: dict[str, list[tuple[str, np.ndarray]]]) -> int:
    """Turn each rotating group (CH3, NH3, OH) on an atom that carried H of the model's own
    (`model_h_names`) to the torsion that puts its H closest to those H: SHELXL goes on from
    the model's H (a refined AFIX 137/147 torsion, or the staggering of an AFIX 33/83 group
    as the SHELXL that wrote the model chose it) rather than from the difference density;
    a group whose X-H distance is refined (AFIX m8) also takes the distance of the model's
    H. Returns the number of groups turned."""
    cell_m = orthogonalization_matrix(m.cell)
    turned = 0
    for g in m.h_groups:
        named = names.get(m.labels[g.parent].upper())
        if g.kind not in ROTATING or g.own or g.fixed_by_symmetry or not g.atoms or not named:
            continue
        p = cell_m @ m.xyz[g.parent]
        targets = np.array([offset for _, offset in named])
        if g.refine_distance:  # (AFIX m8) the X-H distance the model refined, as SHELXL goes on from it
            g.distance = float(np.mean(np.linalg.norm(targets, axis=1)))

        def cost(t: float) -> float:
            g.torsion = float(t)
            pos = group_positions(m, g) - p
            return float(np.sum(np.min(np.linalg.norm(pos[None, :, :] - targets[:, None, :], axis=-1), axis=1)))

        period = 360.0 / N_H[g.kind]
        coarse = min(np.arange(0.0, period, 1.0), key=cost)
        g.torsion = float(min(np.arange(coarse - 1.0, coarse + 1.0, 0.05), key=cost) % period)
        turned += 1
    if turned:
        update_riding(m)
    return turned


def restore_h_names(m: WorkingModel, names: dict[str, list[tuple[str, np.ndarray]]]) -> int:
    """Give the riding H re-placed on an atom the names the model's own H on that atom had
    (`model_h_names`), as SHELXL keeps the names of the H it re-places: within each group,
    the assignment of names to H with the smallest summed distance between old and new
    positions. An atom holding one of those names otherwise is renamed. Returns H renamed."""
    from itertools import permutations

    targets: dict[int, str] = {}
    for g in m.h_groups:
        named = names.get(m.labels[g.parent].upper())
        if g.own or not named or not g.atoms:
            continue
        offsets = [_offset_from(m, g.parent, m.xyz[h]) for h in g.atoms]
        if len(offsets) <= len(named):  # (H, name) pairings: each H a name, or each name an H
            pairings = (list(enumerate(ns)) for ns in permutations(range(len(named)), len(offsets)))
        else:
            pairings = ([(a, b) for b, a in enumerate(hs)] for hs in permutations(range(len(offsets)), len(named)))
        best = min(pairings, key=lambda pairs: sum(float(np.linalg.norm(offsets[a] - named[b][1])) for a, b in pairs))
        targets.update({g.atoms[a]: named[b][0] for a, b in best})
    targets = {h: name for h, name in targets.items() if m.labels[h].upper() != name.upper()}
    if not targets:
        return 0
    wanted = {name.upper() for name in targets.values()}
    displaced = [i for i in range(m.n) if i not in targets and m.labels[i].upper() in wanted]
    for i in list(targets) + displaced:
        m.labels[i] = f"?{i}"  # out of the way while the names move
    for h, name in targets.items():
        m.labels[h] = name
    for i in displaced:
        m.labels[i] = m.unique_label(m.elements[i])
    return len(targets)


def keep_model_hydrogens(m: WorkingModel, names: dict[str, list[tuple[str, np.ndarray]]],
                         own_u: dict[str, float], u_variables: dict[str, tuple[int, float]] | None = None) -> None:
    """What the model's own H keep once re-placed as riding H, as SHELXL keeps it: the
    torsions of their rotating groups (`adopt_model_torsions`), their names
    (`restore_h_names`; `names`: `model_h_names`), and a U_iso refined on its own (`own_u`:
    upper-case label -> U_iso) instead of 1.2/1.5 U_eq of the parent, on the free variable
    its model codes it on (`u_variables`: upper-case label -> (k, p); see
    `WorkingModel.u_variables`)."""
    if names:
        adopt_model_torsions(m, names)
        restore_h_names(m, names)
    coded: dict[int, list[tuple[str, float]]] = {k: list(v) for k, v in m.u_variables.items()}
    for h in np.nonzero(m.riding >= 0)[0]:
        label = m.labels[h]
        u = own_u.get(label.upper())
        if u is not None:
            m.u_own[h], m.u_iso[h] = True, u
            code = (u_variables or {}).get(label.upper())
            if code is not None and all(x != label for x, _ in coded.get(code[0], [])):
                coded.setdefault(code[0], []).append((label, code[1]))
    m.u_variables = coded


def restore_unplaced_hydrogens(m: WorkingModel, names: dict[str, list[tuple[str, np.ndarray]]],
                               expected_h: float | None = None) -> list[str]:
    """Put back, riding where the model had them, the model's own H (`model_h_names`) on
    atoms that got none from the geometry or the difference map: an OH or water on metals
    only has no geometry to place its H by, and its peak may be lost beside heavy atoms
    (SHELXL keeps such an H where it is, AFIX 3). Only as many as the formula's H per
    asymmetric unit (`expected_h`, if known) leaves room for. U_iso 1.5 (O) or 1.2 U_eq of
    the parent. The next placement drops them like any riding H, and tries again. Returns
    the labels put back."""
    room = None if expected_h is None else expected_h - float(np.sum(m.occupancy[m.hydrogen] / np.maximum(m.order[m.hydrogen], 1)))
    index = m.label_index()
    carrying = {g.parent for g in m.h_groups if g.atoms}
    cell_m = orthogonalization_matrix(m.cell)
    back = []
    for parent_label, named in names.items():
        parent = index.get(parent_label)
        if parent is None or parent in carrying:
            continue
        ratio = 1.5 if m.elements[parent] == "O" else 1.2
        share = float(m.occupancy[parent]) * len(named)
        if room is not None and share > room + 0.25:
            continue
        room = None if room is None else room - share
        for label, offset in named:
            xyz = m.xyz[parent] + np.linalg.solve(cell_m, offset)
            label = label if label.upper() not in index else m.unique_label("H")
            index[label.upper()] = add_fixed_hydrogen(m, label, parent, xyz, ratio, float(m.occupancy[parent]),
                                                      int(m.part[parent]))
            back.append(label)
    return back


def add_fixed_hydrogen(m: WorkingModel, label: str, parent: int, xyz: np.ndarray, ratio: float, occupancy: float,
                       part: int, special_tolerance: float = EXACT_SPECIAL) -> int:
    """Add an H riding on `parent` at a fixed Cartesian offset (SHELXL's AFIX 3) at the
    fractional position `xyz`, with U_iso `ratio` times the parent's; returns its index."""
    h = m.add_atom(label, "H", xyz, u_iso=ratio * m.u_iso[parent], occupancy=occupancy, part=part, riding=parent,
                   u_ratio=ratio, afix=3, special_tolerance=special_tolerance)
    offset = (m.xyz[h] - m.xyz[parent]) @ orthogonalization_matrix(m.cell).T
    m.h_groups = [*m.h_groups, FixedGroup(parent=parent, atoms=[h], offset=offset)]
    return h


def _drop_riding(m: WorkingModel) -> None:
    """Remove the riding H placed before; the model's own kept H (`own` groups) stay."""
    own = [g for g in m.h_groups if g.own]
    kept = np.zeros(m.n, dtype=bool)
    kept[[a for g in own for a in g.atoms]] = True
    m.h_groups = own
    if ((m.riding >= 0) & ~kept).any():
        m.remove_atoms((m.riding >= 0) & ~kept)


def attach_existing(model: WorkingModel, labels: set[str] | None = None, own: bool = False,
                    stated: dict[str, str] | None = None) -> None:
    """Make the model's own H atoms (all, or those with the given labels) ride on their
    parent (`hydrogen_parents`: the atom the model names in `stated`, else the nearest of
    its own disorder component), Cartesian offset kept; an H given beside a symmetry image
    of its parent is moved to the equivalent position beside the parent itself. An H more
    than 1.3 Å from its parent stays free. `own`: their groups survive the placing of
    riding H (`place_hydrogens` places none on their atoms)."""
    from .completion import closest_image

    cell_m = orthogonalization_matrix(model.cell)
    parents = hydrogen_parents(model, stated)
    sym = model.symmetry
    groups = []
    for h, parent in parents.items():
        if model.riding[h] >= 0 or (labels is not None and model.labels[h] not in labels):
            continue
        dist, op, shift = closest_image(model, model.xyz[h], model.xyz[parent], identity_only=True)
        if dist > 1.3 and int(model.part[h]) >= 0:
            dist, op, shift = closest_image(model, model.xyz[h], model.xyz[parent])
        if dist > 1.3:
            continue
        # the H beside the parent itself: the inverse of the operation taking the parent
        # to the image beside the H
        rot = sym.rotations[op].astype(np.float64)
        model.xyz[h] = np.linalg.solve(rot, model.xyz[h] - sym.translations[op] - shift)
        model.riding[h] = parent
        model.u_ratio[h] = model.u_iso[h] / max(model.u_iso[parent], 1e-4)
        groups.append(FixedGroup(parent=parent, atoms=[h], offset=(model.xyz[h] - model.xyz[parent]) @ cell_m.T,
                                 own=own))
    model.h_groups = list(model.h_groups) + groups


@dataclass
class FixedGroup(HGroup):
    """An H kept at a fixed Cartesian offset from its parent."""

    parent: int = 0
    kind: str = "fixed"
    neighbours: list = field(default_factory=list)
    offset: np.ndarray = field(default_factory=lambda: np.zeros(3))
    atoms: list[int] = field(default_factory=list)


# --------------------------------------------------------------------------------------
# difference density for rotating groups and optional H
# --------------------------------------------------------------------------------------


class DensityProbe:
    """Difference density of a model (H of rotating groups omitted), sampled by interpolation."""

    def __init__(self, rho: np.ndarray, cell):
        self.rho = rho
        self.cell = cell
        self.rms = float(np.sqrt(np.mean(rho**2)))
        self.f_m = fractionalization_matrix(cell)

    @classmethod
    def from_refinement(cls, refinement, model: WorkingModel) -> "DensityProbe":
        from .maps import difference_density

        rho = difference_density(refinement, model)
        return cls(rho, model.cell)

    def at(self, cart: np.ndarray) -> np.ndarray:
        """Trilinear interpolation of the map at Cartesian points (k, 3)."""
        frac = np.asarray(cart) @ self.f_m.T
        shape = np.array(self.rho.shape)
        g = np.mod(frac, 1.0) * shape
        i0 = np.floor(g).astype(np.int64)
        t = g - i0
        out = np.zeros(len(g))
        for dx in (0, 1):
            for dy in (0, 1):
                for dz in (0, 1):
                    w = (t[:, 0] if dx else 1 - t[:, 0]) * (t[:, 1] if dy else 1 - t[:, 1]) * (t[:, 2] if dz else 1 - t[:, 2])
                    idx = (i0 + np.array([dx, dy, dz])) % shape
                    out += w * self.rho[idx[:, 0], idx[:, 1], idx[:, 2]]
        return out


def _best_torsion(m: WorkingModel, g: HGroup, density: DensityProbe, step: float = 5.0) -> None:
    """Set a rotating group's torsion to the one with most difference density.

    Keeps the staggered default when the density does not discriminate (flat within
    one r.m.s. of the map).
    """
    period = 360.0 / N_H[g.kind]
    angles = np.arange(0.0, period, step)
    scores = []
    original = g.torsion
    for t in angles:
        g.torsion = float(t)
        scores.append(float(np.sum(density.at(group_positions(m, g)))))
    scores = np.array(scores)
    if scores.max() - scores.min() < density.rms:
        g.torsion = original
        return
    g.torsion = float(angles[int(np.argmax(scores))])


def refit_rotating_groups(model: WorkingModel, refinement) -> WorkingModel:
    """Re-choose the torsions of rotating groups from a fresh difference map (those whose
    torsion is not a least-squares parameter)."""
    groups = [g for g in model.h_groups if _refittable(g)]
    if not groups:
        return model
    m = model.copy()
    m.h_groups = [_copy_group(g) for g in model.h_groups]
    rot_atoms = np.zeros(m.n, dtype=bool)
    for g in m.h_groups:
        if _refittable(g):
            rot_atoms[g.atoms] = True
    probe_model = m.copy()
    probe_model.occupancy = np.where(rot_atoms, 0.0, probe_model.occupancy)
    density = DensityProbe.from_refinement(refinement, probe_model)
    for g in m.h_groups:
        if _refittable(g):
            _best_torsion(m, g, density)
    update_riding(m)
    return m


def _refittable(g: HGroup) -> bool:
    """A rotating group whose torsion is re-fitted to the density (not a least-squares
    parameter, not fixed by symmetry, not one of the model's staggered AFIX 33/83 groups)."""
    return g.kind in ROTATING and not g.refine_torsion and not g.fixed_by_symmetry and not g.staggered


def _copy_group(g: HGroup) -> HGroup:
    import copy

    new = copy.copy(g)
    new.slots = list(g.slots)
    new.atoms = list(g.atoms)
    return new


# --------------------------------------------------------------------------------------
# H atoms from difference-map peaks (water, hydroxide, ammonium, terminal hydrides...)
# --------------------------------------------------------------------------------------

PEAK_H_RANGE = (0.6, 1.2)
PEAK_H_SIGMA = 3.0
#: terminal E-H distances (Å) of the main-group hydrides whose H no geometry places (an
#: AlH2 or GaH3 group): a difference peak 0.8-1.2 times as far from the atom is taken as one
#: of its H, at the peak's own distance (X-ray E-H distances vary more than C-H ones)
HYDRIDE_DISTANCES = {"B": 1.12, "Al": 1.55, "Ga": 1.50, "In": 1.70, "Si": 1.42, "Ge": 1.50, "Sn": 1.70}
HYDRIDE_RANGE = (0.8, 1.2)
#: smallest angle (°) between an E-H found at a peak and a bond of E to a non-H atom
HYDRIDE_MIN_ANGLE = 85.0
#: an O bonded to one non-metal atom that the geometry gave no H (the O-H of an acid whose
#: H sits in a short, nearly symmetric hydrogen bond: both C-O bonds alike) takes an H from
#: a peak ACID_H_RANGE (Å) away (up to half of a short O...O), only with an X-O-H angle
#: in ACID_H_ANGLES (°) and a hydrogen bond from that H: an O or N acceptor at H...A within
#: ACID_H_ACCEPTOR (Å), the O-H...A angle at least ACID_H_MIN_ANGLE (°); the bonding and
#: lone-pair density of a C=O (peaks nearer the O) makes no such peak
ACID_H_RANGE = (0.8, 1.35)
ACID_H_ANGLES = (95.0, 135.0)
ACID_H_ACCEPTOR = (1.2, 2.2)
ACID_H_MIN_ANGLE = 120.0


def add_peak_hydrogens(model: WorkingModel, refinement, expected_h: float | None, distances: str = "low-temperature") -> tuple[WorkingModel, int]:
    """H atoms the geometry cannot place (water, hydroxide, ...) from difference-map peaks.

    Only while the model holds fewer H than the formula asks for; best run once the heavy
    atoms are refined anisotropically, when H peaks stand out of the map.
    """
    if expected_h is None:
        return model, 0
    missing = expected_h - _ghost_count(model, model.h_groups, materialised=True) - free_h_count(model)
    if missing <= 0.4:
        return model, 0
    m = model.copy()
    col = 0 if distances == "low-temperature" else 1
    added = _peak_hydrogens(m, refinement, neighbours(m), missing, col)
    return (m, added) if added else (model, 0)


def _peak_hydrogens(m: WorkingModel, refinement, nbmap: dict, missing: float, col: int) -> int:
    """Add up to `missing` H (per asymmetric unit) on O/N atoms without organic neighbours,
    at difference-map peaks 0.6-1.2 Å away; on an O bonded to one non-metal atom only with
    the angle and the hydrogen bond of an acid O-H (ACID_H_*); and on B, Al, Ga, In, Si, Ge,
    Sn atoms (terminal hydrides) at peaks 0.8-1.2 times their E-H distance away and at least
    85° from their bonds; they ride on their parent at a fixed offset."""
    from .maps import difference_peaks

    cell_m = orthogonalization_matrix(m.cell)
    ranges, bonds = {}, {}  # the atoms that may carry an H from a peak: distance range, bond directions
    acid: dict[int, np.ndarray] = {}  # terminal O on a non-metal: the direction of its bond
    for i, nbl in nbmap.items():
        if any(g.parent == i for g in m.h_groups):
            continue
        element = m.elements[i]
        if element in ("O", "N"):
            organic = [pos for nb, pos, _ in nbl if not _is_metal(m.elements[nb.atom])]
            if element == "O" and len(organic) == 1 and len(nbl) == 1:
                acid[i] = _unit(organic[0] - m.xyz[i] @ cell_m.T)
                ranges[i] = ACID_H_RANGE
            elif not organic:
                ranges[i] = PEAK_H_RANGE
        elif element in HYDRIDE_DISTANCES:
            d = HYDRIDE_DISTANCES[element]
            ranges[i] = (HYDRIDE_RANGE[0] * d, HYDRIDE_RANGE[1] * d)
            bonds[i] = [_unit(pos - m.xyz[i] @ cell_m.T) for _, pos, _ in nbl]
    if not ranges:
        return 0
    rho, peaks = difference_peaks(refinement, m, max_peaks=80, min_distance=0.5)
    sigma = float(rho.std())
    f_m = fractionalization_matrix(m.cell)
    options = []
    for p in peaks:
        if p.height < PEAK_H_SIGMA * sigma:
            continue
        img = m.symmetry.images(p.xyz)
        for i, (lo, hi) in ranges.items():
            dd = img - m.xyz[i]
            dd -= np.round(dd)
            dist = np.linalg.norm(dd @ cell_m.T, axis=1)
            k = int(np.argmin(dist))
            if not lo <= dist[k] <= hi:
                continue
            vec = dd[k] @ cell_m.T
            if any(_vector_angle(vec, b) < HYDRIDE_MIN_ANGLE for b in bonds.get(i, ())):
                continue  # a peak along a bond of the atom (a hydride H points away from them)
            if i in acid and not ACID_H_ANGLES[0] <= _vector_angle(vec, acid[i]) <= ACID_H_ANGLES[1]:
                continue
            options.append((p.height, i, vec))
    options.sort(key=lambda o: -o[0])
    per_atom: dict[int, list[np.ndarray]] = {}
    added = 0
    for height, i, vec in options:
        w = m.occupancy[i] / max(m.order[i], 1)
        if missing < 0.5 * w:
            continue
        mine = per_atom.setdefault(i, [])
        if len(mine) >= (2 if m.elements[i] == "O" else 3):
            continue
        u = _unit(vec)
        if any(not (85.0 <= _vector_angle(u, v) <= 135.0) for v in mine):
            continue
        if m.elements[i] in ("O", "N") and i not in acid:
            d = DISTANCES["OH" if m.elements[i] == "O" else "NH"][col]
        else:
            # a hydride H, or the H of a short hydrogen bond (not at an ordinary O-H
            # distance), where its peak is
            d = float(np.linalg.norm(vec))
        cart = m.xyz[i] @ cell_m.T + d * u
        frac = cart @ f_m.T
        h_atoms = [a for a in range(m.n) if is_hydrogen(m.elements[a])]
        if h_atoms and m.symmetry.nearest_image_distance(m.cell, frac, m.xyz[h_atoms]) < 1.2:
            continue  # too close to an H already there
        if i in acid and not _donates_hydrogen_bond(m, i, cart, cell_m):
            continue
        label = m.unique_label("H")
        # an H on one atom of a split site (an Al/Ga pair of PARTs 1 and 2) belongs to the
        # whole site: PART 0, the site's occupancy (SHELXL models refine it so)
        occupancy, part = _site_occupancy(m, i)
        idx = add_fixed_hydrogen(m, label, i, frac, 1.5, occupancy, part, special_tolerance=0.15)
        mine.append(u)
        missing -= m.occupancy[idx] / max(m.order[idx], 1)
        added += 1
    return added


def _donates_hydrogen_bond(m: WorkingModel, donor: int, h_cart: np.ndarray, cell_m: np.ndarray) -> bool:
    """True when an H at `h_cart` on `donor` has an O or N acceptor (any symmetry image of
    any atom, the donor's own images included, as across the inversion centre of an acid
    dimer) at ACID_H_ACCEPTOR from it with a D-H...A angle of ACID_H_MIN_ANGLE or more (the
    donor itself, at 0°, never counts)."""
    acceptors = [a for a in range(m.n) if m.elements[a] in ("O", "N")]
    if not acceptors:
        return False
    h_frac = h_cart @ fractionalization_matrix(m.cell).T
    d = m.symmetry.images(m.xyz[acceptors]) - h_frac  # (k, n_ops, 3)
    d -= np.round(d)
    to_acceptor = d @ cell_m.T
    dist = np.linalg.norm(to_acceptor, axis=-1)
    to_donor = m.xyz[donor] @ cell_m.T - h_cart
    for v in to_acceptor[(dist >= ACID_H_ACCEPTOR[0]) & (dist <= ACID_H_ACCEPTOR[1])]:
        if _vector_angle(v, to_donor) >= ACID_H_MIN_ANGLE:
            return True
    return False


def _site_occupancy(m: WorkingModel, i: int) -> tuple[float, int]:
    """(occupancy, PART) of an H on atom i: i's own, unless i is one component of a split
    site (atoms of other non-zero PARTs within SPLIT_MIXED_DISTANCE, as for the partners of a
    split mixed site that share an ADP), whose H belong to the whole site: PART 0 and the
    components' summed occupancy (at most 1)."""
    own = (float(m.occupancy[i]), int(m.part[i]))
    if m.part[i] == 0:
        return own
    others = [j for j in range(m.n) if j != i and m.riding[j] < 0 and not is_hydrogen(m.elements[j])
              and m.part[j] not in (0, m.part[i])]
    if not others:
        return own
    d = m.symmetry.image_distances(m.cell, m.xyz[i], m.xyz[others]).min(axis=-1)
    total = own[0] + sum(float(m.occupancy[j]) for j, dj in zip(others, d) if dj < SPLIT_MIXED_DISTANCE)
    return (min(total, 1.0), 0) if total > own[0] + 1e-6 else own


# --------------------------------------------------------------------------------------
# derivatives of the riding positions (the chain rule of the riding model)
# --------------------------------------------------------------------------------------


def riding_jacobians(model: WorkingModel, step: float = 1e-6) -> dict[int, list[tuple[int, np.ndarray]]]:
    """For each riding H: [(defining atom, ∂x_H/∂x_atom (3, 3) in fractional units), ...].

    A geometric H moves with its parent and turns with the parent's neighbours (and the
    torsion reference); the derivatives are taken numerically from the placement geometry,
    which is cheap. A fixed-offset H moves with its parent only (identity).
    """
    out: dict[int, list[tuple[int, np.ndarray]]] = {}
    f_m = fractionalization_matrix(model.cell)
    for g in model.h_groups:
        if g.kind == "fixed":
            for a in g.atoms:
                out[a] = [(g.parent, np.eye(3))]
            continue
        defining = [g.parent] + [nb.atom for nb in g.neighbours]
        if g.reference is not None:
            defining.append(g.reference.atom)
        defining = list(dict.fromkeys(defining))
        derivs = {a: [] for a in g.atoms}
        for d in defining:
            cols = []
            for k in range(3):
                saved = model.xyz[d, k]
                model.xyz[d, k] = saved + step
                up = group_positions(model, g)
                model.xyz[d, k] = saved - step
                down = group_positions(model, g)
                model.xyz[d, k] = saved
                cols.append(((up - down) / (2.0 * step)) @ f_m.T)  # (n_slots, 3) fractional
            jac = np.stack(cols, axis=-1)  # (n_slots, 3, 3): d x_H / d x_d
            for slot, a in zip(g.slots, g.atoms):
                if np.any(np.abs(jac[slot]) > 1e-9):
                    derivs[a].append((d, jac[slot]))
        out.update(derivs)
    return out


#: finite-difference steps of a riding group's geometry parameters (degrees, Å)
GEOMETRY_STEP = {"torsion": 0.01, "distance": 0.001}


def geometry_derivatives(model: WorkingModel, g: HGroup, attribute: str = "torsion") -> list[tuple[int, np.ndarray]]:
    """[(H atom, ∂x_H/∂parameter (3,) in fractional units), ...] of a rotating group, for its
    torsion (per degree) or its X-H distance (per Å)."""
    f_m = fractionalization_matrix(model.cell)
    step = GEOMETRY_STEP[attribute]
    saved = getattr(g, attribute)
    setattr(g, attribute, saved + step)
    up = group_positions(model, g)
    setattr(g, attribute, saved - step)
    down = group_positions(model, g)
    setattr(g, attribute, saved)
    deriv = ((up - down) / (2.0 * step)) @ f_m.T
    return [(a, deriv[slot]) for slot, a in zip(g.slots, g.atoms)]
