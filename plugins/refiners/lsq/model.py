"""The working model of a refinement: numpy arrays for every atom, plus the overall terms.

`WorkingModel.from_structure` reads a `Structure`, moves atoms near special positions onto
them (site symmetry from the kernel's `SymmetryOps.special_position`, i.e. from gemmi's
operators) and keeps the constraint bases; `to_structure` writes the refined model back.
ADPs are held as U* (dimensionless, CIF component order) for anisotropic atoms and as
U_iso (Å²) for isotropic ones.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch

from refractor_core.crystal.cell import (
    is_positive_definite,
    matrix_to_sym6,
    orthogonalization_matrix,
    reciprocal_metric,
    sym6_to_matrix,
    u_cif_to_u_star,
    u_star_to_u_cif,
)
from refractor_core.crystal.formula import normalize_element
from refractor_core.crystal.structure_factors import AtomTensors
from refractor_core.crystal.symmetry import SymmetryOps
from refractor_core.types import MIN_RIGID_GROUP_ATOMS, Site, Structure, per_site_unrounded

#: image distance (Å) below which an atom counts as sitting on a special position exactly
EXACT_SPECIAL = 0.05
#: smallest eigenvalue (Å²) kept in an anisotropic U, and smallest U_iso
U_FLOOR = 1e-4
#: largest |fractional coordinate| and U (Å²) a refinement step may produce
MAX_PLAUSIBLE_XYZ = 4.0
MAX_PLAUSIBLE_U = 10.0


def metric6(cell) -> np.ndarray:
    """G* as a 6-vector (11, 22, 33, 12, 13, 23): U* of U_iso = 1 Å²."""
    g = reciprocal_metric(cell)
    return np.array([g[0, 0], g[1, 1], g[2, 2], g[0, 1], g[0, 2], g[1, 2]])


def _copy_group(g):
    new = copy.copy(g)
    new.slots = list(g.slots)
    new.atoms = list(g.atoms)
    return new


def _reindex(nb, keep: np.ndarray, new_index: np.ndarray):
    if nb is None or not keep[nb.atom]:
        return None
    return type(nb)(int(new_index[nb.atom]), nb.op, nb.shift)


def _without_labels(variables: dict[int, list[tuple[str, float]]], gone: set[str]) -> dict[int, list[tuple[str, float]]]:
    """Free variables {k: [(label, coefficient), ...]} without the atoms labelled `gone`."""
    kept = {k: [(x, c) for x, c in members if x not in gone] for k, members in variables.items()}
    return {k: members for k, members in kept.items() if members}


def without_fixed(basis: np.ndarray, fixed) -> np.ndarray:
    """A (3, k) orthonormal position basis restricted to shifts that leave the `fixed`
    coordinates (3 bools) unchanged."""
    fixed = np.asarray(fixed, dtype=bool)
    if not fixed.any() or basis.shape[1] == 0:
        return basis
    rows = basis[fixed]  # the fixed coordinates' change per basis parameter
    _, s, vt = np.linalg.svd(rows)
    rank = int(np.sum(s > 1e-9))
    return basis @ vt[rank:].T  # orthonormal: basis and the null space both are


def is_hydrogen(element: str) -> bool:
    return element in ("H", "D")


@dataclass
class WorkingModel:
    """Mutable arrays of one model under refinement (see module docstring)."""

    structure: Structure  # the starting structure (cell, space group, name, meta)
    symmetry: SymmetryOps
    labels: list[str]
    elements: list[str]
    xyz: np.ndarray  # (n, 3) fractional
    u_iso: np.ndarray  # (n,) Å² (U_eq for anisotropic atoms, kept in step)
    u_star: np.ndarray  # (n, 6) U* of anisotropic atoms (zeros for isotropic ones)
    aniso: np.ndarray  # (n,) bool
    occupancy: np.ndarray  # (n,) chemical occupancy
    order: np.ndarray  # (n,) site-symmetry order
    part: np.ndarray  # (n,) int
    position_basis: list[np.ndarray]  # per atom (3, k)
    ustar_basis: list[np.ndarray]  # per atom (6, m)
    riding: np.ndarray  # (n,) parent index for riding H, else -1
    u_ratio: np.ndarray  # (n,) U_iso(H) = ratio · U_eq(parent) for riding H
    afix: np.ndarray  # (n,) SHELX AFIX code of riding H (0 otherwise)
    #: (n,) atom whose U_eq sets this atom's U_iso (u_ratio · U_eq) while its position is
    #: free: an H refined freely with a riding U (SHELXL's -1.2 on an AFIX 0 atom); -1 otherwise
    u_parent: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    #: (n,) a riding H whose U_iso is a parameter of its own (SHELXL AFIX m with a positive
    #: U), not u_ratio · U_eq of its parent
    u_own: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    scale: float = 1.0
    extinction: float | None = None
    twin_ops: list[np.ndarray] = field(default_factory=lambda: [np.eye(3)])
    twin_fractions: np.ndarray = field(default_factory=lambda: np.zeros(0))  # BASF of components 2..
    su: dict = field(default_factory=dict)  # filled after refinement
    h_groups: list = field(default_factory=list)  # riding-H groups (hydrogens.HGroup)
    group_cache: tuple | None = None  # (signature, site groups): fixed while atoms do not change
    #: the user's EADP/EXYZ constraints: (labels, shared position too?); None when the user
    #: gave no restraints or constraints (sites and ADPs are then shared automatically)
    user_sites: list[tuple[tuple[str, ...], bool]] | None = None
    #: the user's BIND pairs (upper-case labels, or PART numbers as text): bonds across
    #: disorder components, which are otherwise never bonded
    bind: tuple[tuple[str, str], ...] = ()
    #: the user's FREE pairs (upper-case labels): never bonded, whatever their distance
    free: tuple[tuple[str, str], ...] = ()
    #: the model's SHELXL free variables of occupancy: {k: [(label, c), ...]}, where atom
    #: label's chemical occupancy changes by c per unit change of fv_k (c = p × site order
    #: of its code 10k + p; negative for the partner component at 1 - fv_k)
    free_variables: dict[int, list[tuple[str, float]]] = field(default_factory=dict)
    #: the model's SHELXL free variables of U_iso: {k: [(label, p), ...]} of the isotropic
    #: atoms coded 10k + p (`Site.u_variable`); riding H with one (k, p) share one refined
    #: U_iso (`parameters.riding_u_sets`)
    u_variables: dict[int, list[tuple[str, float]]] = field(default_factory=dict)
    #: (n, 3) bool: coordinates held fixed (`Site.fixed_xyz`), left out of `position_basis`
    fixed_xyz: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), dtype=bool))
    #: (n, 6) bool: U* components held fixed (`Site.fixed_u`; all six for a fixed U_iso),
    #: left out of `ustar_basis`; an atom with a fixed U_iso is never made anisotropic
    fixed_u: np.ndarray = field(default_factory=lambda: np.zeros((0, 6), dtype=bool))
    #: (n,) int: the rigid group (`Site.rigid_group`) of each atom, -1 for a free atom
    rigid_group: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __post_init__(self) -> None:
        if self.fixed_xyz.shape != (len(self.labels), 3):  # not given: nothing fixed
            self.fixed_xyz = np.zeros((len(self.labels), 3), dtype=bool)
        if self.fixed_u.shape != (len(self.labels), 6):
            self.fixed_u = np.zeros((len(self.labels), 6), dtype=bool)
        if self.rigid_group.shape != (len(self.labels),):
            self.rigid_group = np.full(len(self.labels), -1, dtype=np.int64)

    # -- construction ------------------------------------------------------------------
    @classmethod
    def from_structure(
        cls,
        structure: Structure,
        symmetry: SymmetryOps | None = None,
        *,
        special_tolerance: float = 0.2,
    ) -> "WorkingModel":
        """Arrays from a Structure; atoms within `special_tolerance` Å of a special
        position (fully occupied ones only) are moved onto it. Atoms of a negative PART are
        general positions wherever they lie: SHELXL switches special-position constraints
        off for them (its symmetry-generated copies are the disorder), and the .res
        reader gives them site-symmetry order 1. Coordinates a site holds fixed
        (`Site.fixed_xyz`) are left out of its `position_basis`, so they are not refined,
        and fixed U components (`Site.fixed_u`) out of its `ustar_basis`."""
        sym = symmetry or SymmetryOps.from_space_group(structure.space_group)
        cell = structure.cell
        n = len(structure.sites)
        labels, elements = [], []
        xyz = np.zeros((n, 3))
        u_iso = np.zeros(n)
        u_star = np.zeros((n, 6))
        aniso = np.zeros(n, dtype=bool)
        occ = np.zeros(n)
        order = np.ones(n, dtype=np.int64)
        part = np.zeros(n, dtype=np.int64)
        pos_b: list[np.ndarray] = []
        u_b: list[np.ndarray] = []
        fixed = np.array([s.fixed_xyz for s in structure.sites], dtype=bool).reshape(n, 3)
        fixed_u = np.array([s.fixed_u_components for s in structure.sites], dtype=bool).reshape(n, 6)
        free_variables: dict[int, list[tuple[str, float]]] = {}
        u_variables: dict[int, list[tuple[str, float]]] = {}
        for i, s in enumerate(structure.sites):
            labels.append(s.label)
            elements.append(normalize_element(s.element))
            x = np.asarray(s.xyz, dtype=np.float64)
            # a full atom closer than 2·tol to its own image is on the special position
            tol = 2.0 * special_tolerance if s.occupancy >= 0.75 else EXACT_SPECIAL
            con = sym.site_constraint(cell, x, tol, part=s.part)
            if con.order > 1:
                x = con.xyz
            xyz[i] = x
            order[i] = con.order
            pos_b.append(without_fixed(con.position_basis, fixed[i]))
            u_b.append(without_fixed(con.ustar_basis, fixed_u[i]))
            occ[i] = s.occupancy
            part[i] = s.part
            if s.occupancy_variable is not None:
                k, p = s.occupancy_variable
                # p·order, the free variable's coefficient in the chemical occupancy, with the
                # rounding of a p written to five decimals undone (0.33333 on a 3-fold axis
                # gives 1, not 0.99999, which a riding H would inherit and the .res show as 20.99999)
                coefficient = per_site_unrounded(float(p), con.order, 5, 3)
                free_variables.setdefault(int(k), []).append((s.label, coefficient))
            if s.u_aniso is not None:
                us = u_cif_to_u_star(cell, np.asarray(s.u_aniso, dtype=np.float64))
                b = con.ustar_basis
                u_star[i] = b @ (b.T @ us)
                aniso[i] = True
            else:
                u_iso[i] = float(s.u_iso)
                if s.u_variable is not None:
                    u_variables.setdefault(int(s.u_variable[0]), []).append((s.label, float(s.u_variable[1])))
        model = cls(
            structure=structure,
            symmetry=sym,
            labels=labels,
            elements=elements,
            xyz=xyz,
            u_iso=u_iso,
            u_star=u_star,
            aniso=aniso,
            occupancy=occ,
            order=order,
            part=part,
            position_basis=pos_b,
            ustar_basis=u_b,
            riding=np.full(n, -1, dtype=np.int64),
            u_ratio=np.zeros(n),
            afix=np.zeros(n, dtype=np.int64),
            u_parent=np.full(n, -1, dtype=np.int64),
            u_own=np.zeros(n, dtype=bool),
            free_variables=free_variables,
            u_variables=u_variables,
            fixed_xyz=fixed,
            fixed_u=fixed_u,
            rigid_group=np.array([-1 if s.rigid_group is None else int(s.rigid_group) for s in structure.sites],
                                 dtype=np.int64),
        )
        model.update_u_eq()
        return model

    def copy(self) -> "WorkingModel":
        """A deep copy (the starting structure and symmetry are shared)."""
        new = copy.copy(self)
        for name in ("xyz", "u_iso", "u_star", "aniso", "occupancy", "order", "part", "riding", "u_ratio", "afix",
                     "u_parent", "u_own", "twin_fractions", "fixed_xyz", "fixed_u", "rigid_group"):
            setattr(new, name, getattr(self, name).copy())
        new.labels = list(self.labels)
        new.elements = list(self.elements)
        new.position_basis = list(self.position_basis)
        new.ustar_basis = list(self.ustar_basis)
        new.twin_ops = list(self.twin_ops)
        new.su = dict(self.su)
        new.h_groups = [_copy_group(g) for g in self.h_groups]
        return new

    # -- basic properties --------------------------------------------------------------
    @property
    def n(self) -> int:
        return len(self.labels)

    @property
    def cell(self):
        return self.structure.cell

    def may_bond(self, i: int, j: int) -> bool:
        """Whether atoms i and j may bond (close enough or not): not a FREE pair, and not in
        two different PARTs unless a BIND (of the two atoms or of their two PARTs) joins them."""
        labels = (self.labels[i].upper(), self.labels[j].upper())
        if labels in self.free or labels[::-1] in self.free:
            return False
        if not self.in_two_parts(i, j):
            return True
        pi, pj = int(self.part[i]), int(self.part[j])
        pair = {labels, (str(pi), str(pj))}
        return any(b in pair or b[::-1] in pair for b in self.bind)

    def in_two_parts(self, i: int, j: int) -> bool:
        """Whether atoms i and j belong to two different disorder components (two different
        non-zero PARTs), which are never present together, whatever BIND says."""
        pi, pj = int(self.part[i]), int(self.part[j])
        return pi != 0 and pj != 0 and pi != pj

    def label_index(self) -> dict[str, int]:
        """Atom index by upper-case label (SHELX names are case-insensitive)."""
        return {label.upper(): i for i, label in enumerate(self.labels)}

    def riders(self) -> dict[int, list[int]]:
        """Riding H of each parent atom: {parent index: [H indices]}."""
        out: dict[int, list[int]] = {}
        for h in np.nonzero(self.riding >= 0)[0]:
            out.setdefault(int(self.riding[h]), []).append(int(h))
        return out

    @property
    def hydrogen(self) -> np.ndarray:
        return np.array([is_hydrogen(e) for e in self.elements], dtype=bool)

    @property
    def metric6(self) -> np.ndarray:
        return metric6(self.cell)

    def u_star_all(self) -> np.ndarray:
        """(n, 6) U* of every atom (isotropic atoms as U_iso·G*)."""
        out = self.u_star.copy()
        iso = ~self.aniso
        out[iso] = self.u_iso[iso, None] * self.metric6[None, :]
        return out

    def u_cart(self, i: int) -> np.ndarray:
        """Cartesian U (3, 3) of atom i."""
        m = orthogonalization_matrix(self.cell)
        return m @ sym6_to_matrix(self.u_star_all()[i]) @ m.T

    def update_u_eq(self) -> None:
        """Refresh U_eq of anisotropic atoms and U_iso of riding H."""
        if self.aniso.any():
            m = orthogonalization_matrix(self.cell)
            us = sym6_to_matrix(self.u_star[self.aniso])
            uc = m[None] @ us @ m.T[None]
            self.u_iso[self.aniso] = np.trace(uc, axis1=1, axis2=2) / 3.0
        rid = np.nonzero((self.riding >= 0) & ~self.u_own)[0]
        if len(rid):
            self.u_iso[rid] = self.u_ratio[rid] * self.u_iso[self.riding[rid]]
        follow = np.nonzero(self.u_parent >= 0)[0]
        if len(follow):
            self.u_iso[follow] = self.u_ratio[follow] * self.u_iso[self.u_parent[follow]]

    def cartesian(self, xyz: np.ndarray | None = None) -> np.ndarray:
        x = self.xyz if xyz is None else xyz
        return x @ orthogonalization_matrix(self.cell).T

    # -- ADP handling ------------------------------------------------------------------
    def make_anisotropic(self, atoms: np.ndarray) -> None:
        """Turn isotropic atoms into anisotropic ones with the same U (U* = U G*); an
        atom whose U_iso is held fixed stays isotropic."""
        g6 = self.metric6
        for i in np.nonzero(atoms & ~self.aniso & ~self.fixed_u.all(axis=1))[0]:
            b = self.ustar_basis[i]
            self.u_star[i] = b @ (b.T @ (self.u_iso[i] * g6))
            self.aniso[i] = True
        self.update_u_eq()

    def make_isotropic(self, atoms: np.ndarray) -> None:
        """Turn anisotropic atoms into isotropic ones with U_iso = U_eq."""
        self.update_u_eq()
        idx = np.nonzero(atoms & self.aniso)[0]
        self.aniso[idx] = False
        self.u_star[idx] = 0.0

    def enforce_adp_limits(self) -> list[int]:
        """Keep U_iso ≥ floor and anisotropic U positive definite (eigenvalues ≥ floor).

        Returns the atoms that had to be corrected (a sign of a wrong element or a
        misplaced atom, reported by the refiner and penalised by the composite ranker).
        """
        fixed: list[int] = []
        m = orthogonalization_matrix(self.cell)
        minv = np.linalg.inv(m)
        for i in range(self.n):
            if self.riding[i] >= 0 and not self.u_own[i]:
                continue
            if not self.aniso[i]:
                if not self.u_iso[i] >= U_FLOOR:
                    self.u_iso[i] = U_FLOOR
                    fixed.append(i)
                continue
            uc = m @ sym6_to_matrix(self.u_star[i]) @ m.T
            w, v = np.linalg.eigh(uc)
            if w[0] >= U_FLOOR:
                continue
            uc = (v * np.maximum(w, U_FLOOR)) @ v.T
            us = matrix_to_sym6(minv @ uc @ minv.T)
            b = self.ustar_basis[i]
            self.u_star[i] = b @ (b.T @ us)
            fixed.append(i)
        self.update_u_eq()
        return fixed

    def plausible(self) -> bool:
        """Finite parameters, coordinates within a few cells of the origin and ADPs below
        MAX_PLAUSIBLE_U (Å²): what any least-squares step must keep."""
        if not (np.all(np.isfinite(self.xyz)) and np.all(np.isfinite(self.u_iso)) and np.all(np.isfinite(self.u_star))):
            return False
        if self.n and np.abs(self.xyz).max() > MAX_PLAUSIBLE_XYZ:
            return False
        return not (self.n and np.max(self.u_iso) > MAX_PLAUSIBLE_U)

    def non_positive_definite(self) -> list[int]:
        """Atoms whose ADP is at the floor or not positive definite."""
        bad = []
        for i in range(self.n):
            if self.riding[i] >= 0 and not self.u_own[i]:
                continue
            if self.aniso[i]:
                uc = self.u_cart(i)
                if np.linalg.eigvalsh(uc)[0] <= 1.0001 * U_FLOOR:
                    bad.append(i)
            elif self.u_iso[i] <= 1.0001 * U_FLOOR:
                bad.append(i)
        return bad

    # -- engine input ------------------------------------------------------------------
    def atom_tensors(self, index: np.ndarray | None = None, dtype=torch.float64, device="cpu") -> AtomTensors:
        """The atoms (all, or a subset) as the structure-factor engine's input."""
        idx = np.arange(self.n) if index is None else np.asarray(index, dtype=np.int64)
        t = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=dtype, device=device)  # noqa: E731
        return AtomTensors(
            xyz=t(self.xyz[idx]),
            occupancy=t(self.occupancy[idx]),
            weight=1.0 / t(np.maximum(self.order[idx], 1).astype(np.float64)),
            u_star=t(self.u_star_all()[idx]),
            aniso=torch.as_tensor(self.aniso[idx], device=device),
            u_iso=t(self.u_iso[idx]),
            elements=[self.elements[i] for i in idx],
            labels=[self.labels[i] for i in idx],
        )

    # -- editing -----------------------------------------------------------------------
    def remove_atoms(self, drop: np.ndarray) -> np.ndarray:
        """Delete atoms (boolean mask); riding H of deleted parents go too. Returns the mask
        of the atoms kept (over the atoms before), for arrays kept beside the model."""
        self.group_cache = None
        drop = np.asarray(drop, dtype=bool).copy()
        changed = True
        while changed:
            changed = False
            for i in np.nonzero((self.riding >= 0) & ~drop)[0]:
                if drop[self.riding[i]]:
                    drop[i] = True
                    changed = True
        keep = ~drop
        new_index = np.cumsum(keep) - 1
        for name in ("xyz", "u_iso", "u_star", "aniso", "occupancy", "order", "part", "u_ratio", "afix", "u_own",
                     "fixed_xyz", "fixed_u", "rigid_group"):
            setattr(self, name, getattr(self, name)[keep])
        riding = self.riding[keep]
        self.riding = np.where(riding >= 0, new_index[np.maximum(riding, 0)], -1)
        # an atom whose U followed a deleted atom keeps its last U as its own
        u_parent = self.u_parent[keep]
        alive = (u_parent >= 0) & keep[np.maximum(u_parent, 0)]
        self.u_parent = np.where(alive, new_index[np.maximum(u_parent, 0)], -1)
        gone = {x for x, k in zip(self.labels, keep) if not k}
        self.labels = [x for x, k in zip(self.labels, keep) if k]
        self.elements = [x for x, k in zip(self.elements, keep) if k]
        # (a later atom given a deleted atom's label must not inherit its free variable)
        self.free_variables = _without_labels(self.free_variables, gone)
        self.u_variables = _without_labels(self.u_variables, gone)
        self.position_basis = [x for x, k in zip(self.position_basis, keep) if k]
        self.ustar_basis = [x for x, k in zip(self.ustar_basis, keep) if k]
        groups = []
        for g in self.h_groups:
            if not keep[g.parent]:
                continue
            g = _copy_group(g)
            pairs = [(s, a) for s, a in zip(g.slots, g.atoms) if keep[a]] if g.slots else [(None, a) for a in g.atoms if keep[a]]
            g.parent = int(new_index[g.parent])
            g.atoms = [int(new_index[a]) for _, a in pairs]
            if g.slots:
                g.slots = [s for s, _ in pairs]
            g.neighbours = [_reindex(nb, keep, new_index) for nb in g.neighbours]
            if any(nb is None for nb in g.neighbours):
                continue
            if g.reference is not None:
                g.reference = _reindex(g.reference, keep, new_index)
            if g.atoms:
                groups.append(g)
        self.h_groups = groups
        return keep

    def add_atom(
        self,
        label: str,
        element: str,
        xyz: np.ndarray,
        *,
        u_iso: float,
        occupancy: float = 1.0,
        part: int = 0,
        riding: int = -1,
        u_ratio: float = 0.0,
        afix: int = 0,
        special_tolerance: float = EXACT_SPECIAL,
    ) -> int:
        """Append an isotropic atom (moved onto a special position within tolerance, unless
        it belongs to a negative PART: see `from_structure`)."""
        self.group_cache = None
        con = self.symmetry.site_constraint(self.cell, np.asarray(xyz, dtype=np.float64), 2.0 * special_tolerance, part=part)
        x = con.xyz if con.order > 1 else np.asarray(xyz, dtype=np.float64)
        self.labels.append(label)
        self.elements.append(normalize_element(element))
        self.xyz = np.vstack([self.xyz, x[None]])
        self.u_iso = np.append(self.u_iso, u_iso)
        self.u_star = np.vstack([self.u_star, np.zeros((1, 6))])
        self.aniso = np.append(self.aniso, False)
        self.occupancy = np.append(self.occupancy, occupancy)
        self.order = np.append(self.order, con.order)
        self.part = np.append(self.part, part)
        self.position_basis.append(con.position_basis)
        self.ustar_basis.append(con.ustar_basis)
        self.riding = np.append(self.riding, riding)
        self.u_ratio = np.append(self.u_ratio, u_ratio)
        self.afix = np.append(self.afix, afix)
        self.u_parent = np.append(self.u_parent, -1)
        self.u_own = np.append(self.u_own, False)
        self.fixed_xyz = np.vstack([self.fixed_xyz, np.zeros((1, 3), dtype=bool)])
        self.fixed_u = np.vstack([self.fixed_u, np.zeros((1, 6), dtype=bool)])
        self.rigid_group = np.append(self.rigid_group, -1)
        return self.n - 1

    def rigid_groups(self) -> dict[int, list[int]]:
        """{group: atoms} of the rigid groups with at least MIN_RIGID_GROUP_ATOMS atoms
        (fewer cannot define a rigid body's rotations: such atoms are refined as free atoms)."""
        out: dict[int, list[int]] = {}
        for i, g in enumerate(self.rigid_group):
            if g >= 0:
                out.setdefault(int(g), []).append(i)
        return {g: atoms for g, atoms in out.items() if len(atoms) >= MIN_RIGID_GROUP_ATOMS}

    def unique_label(self, element: str) -> str:
        """A new label `ElementN` not used yet."""
        used = set(self.labels)
        k = 1
        while f"{element}{k}" in used:
            k += 1
        return f"{element}{k}"

    # -- output ------------------------------------------------------------------------
    def to_structure(self, *, with_su: bool = True) -> Structure:
        """The model as a Structure (standard uncertainties where known)."""
        cell = self.cell
        sites: list[Site] = []
        su = self.su if with_su else {}
        # (free variable, chemical coefficient) by label; a riding H placed here with its
        # parent's occupancy moves with the parent's free variable by the same coefficient
        coded = {label: (k, c) for k, members in self.free_variables.items() for label, c in members}
        for h in np.nonzero(self.riding >= 0)[0]:
            parent = self.labels[self.riding[h]]
            if self.labels[h] not in coded and parent in coded and abs(self.occupancy[h] - self.occupancy[self.riding[h]]) < 1e-9:
                coded[self.labels[h]] = coded[parent]
        u_coded = {label: (k, p) for k, members in self.u_variables.items() for label, p in members}
        for i in range(self.n):
            u_aniso = None
            if self.aniso[i]:
                u_aniso = tuple(float(v) for v in u_star_to_u_cif(cell, self.u_star[i]))
            riding = self.riding[i] >= 0
            u_parent = int(self.riding[i] if riding else self.u_parent[i])
            xyz_su = su.get("xyz", {}).get(i)
            sites.append(
                Site(
                    label=self.labels[i],
                    element=self.elements[i],
                    xyz=tuple(float(v) for v in self.xyz[i]),
                    occupancy=float(self.occupancy[i]),
                    u_iso=float(self.u_iso[i]),
                    u_aniso=u_aniso,
                    calc=bool(riding),
                    riding_on=self.labels[u_parent] if u_parent >= 0 else None,
                    own_u=bool(riding and self.u_own[i]),
                    part=int(self.part[i]),
                    site_symmetry_order=int(self.order[i]),
                    afix=int(self.afix[i]),
                    occupancy_variable=None if self.labels[i] not in coded else
                    (coded[self.labels[i]][0], coded[self.labels[i]][1] / max(int(self.order[i]), 1)),
                    # (a riding H whose U follows its parent's no longer refers to the variable)
                    u_variable=None if self.aniso[i] or (riding and not self.u_own[i]) else u_coded.get(self.labels[i]),
                    fixed_xyz=tuple(bool(v) for v in self.fixed_xyz[i]),
                    fixed_u=self._site_fixed_u(i),
                    rigid_group=None if self.rigid_group[i] < 0 else int(self.rigid_group[i]),
                    xyz_su=None if xyz_su is None else tuple(float(v) for v in xyz_su),
                    occupancy_su=su.get("occupancy", {}).get(i),
                    u_iso_su=su.get("u_iso", {}).get(i),
                    u_aniso_su=None
                    if su.get("u_aniso", {}).get(i) is None
                    else tuple(float(v) for v in su["u_aniso"][i]),
                )
            )
        return self.structure.model_copy(update={"sites": sites})

    def _site_fixed_u(self, i: int) -> tuple[bool, ...]:
        """`Site.fixed_u` of atom i."""
        if not self.fixed_u[i].any():
            return ()
        if not self.aniso[i]:
            return (True,)
        return tuple(bool(v) for v in self.fixed_u[i])

    def adp_problems(self) -> list[str]:
        """Labels of atoms whose ADP is not positive definite in the written model."""
        out = []
        for i in range(self.n):
            if self.aniso[i]:
                u = u_star_to_u_cif(self.cell, self.u_star[i])
                if not bool(is_positive_definite(self.cell, u)):
                    out.append(self.labels[i])
            elif self.u_iso[i] <= 0:
                out.append(self.labels[i])
        return out
