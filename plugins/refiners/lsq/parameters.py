"""Free parameters of a refinement and their map onto the working model.

The parameter vector is: overall scale; SHELXL extinction x (optional); twin fractions
(BASF, optional; the inversion-twin fraction is the Flack parameter); then, per site group
(atoms sharing one position and ADP, e.g. a mixed Ag/Na site), the free coordinate shifts
in the special-position basis, the ADP (U_iso, or U* in the site-symmetry basis) and, for
mixed sites, occupancy fractions whose sum is kept.

The Jacobian of the model intensities w.r.t. the free parameters is obtained from the
engine's per-atom derivatives by a sparse constraint matrix C: raw per-atom derivatives
(x, y, z, U*11..U*23, occupancy: 10 per atom) times C. Riding H atoms contribute their
coordinate derivatives to their parent's coordinate parameters (SHELXL's riding model).

A two-component disorder assembly (PART 2k-1 against PART 2k) can have one free
occupancy, SHELXL's free variable: its first component has occupancy p, its second 1 - p
(riding H follow their parents). It is a site group of its own that moves occupancies only.
Likewise a rotating riding group (CH3, NH3, OH; SHELXL AFIX 137/147) has its torsion, in
degrees, as a site group of its own: it moves the group's H atoms about the parent bond;
with AFIX m8 its X-H distance (Å) is one more such group, moving them along their bonds.
A rigid group (SHELXL AFIX n = 6) is a site group of six parameters, a translation (Å)
and a rotation (radians, about the group's centroid) in Cartesian axes, that move its
atoms together; its atoms' ADPs stay their own. A riding H with a U_iso of its own is a
site group of that U_iso only, shared by riding H coded on one SHELXL free variable
(`riding_u_sets`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from refractor_core.crystal.cell import orthogonalization_matrix, sym6_to_matrix
from refractor_core.types import free_variable_from_share

from .model import U_FLOOR, WorkingModel

RAW = 10  # raw derivatives per atom: x, y, z, U*(6), occupancy
#: a refined X-H distance (SHELXL AFIX m8) stays within this range (Å)
H_DISTANCE_RANGE = (0.7, 1.2)

#: bounds of a refined twin fraction (BASF)
TWIN_FRACTION_RANGE = (-0.1, 1.0)
#: atoms closer than this (Å) share one site (mixed sites, EXYZ)
SHARED_SITE_DISTANCE = 0.02
#: disorder partners (different PARTs) closer than this (Å) share one ADP (EADP)
SPLIT_DISTANCE = 0.7
#: partners of different elements share an ADP (and their occupancy sum) only this close (Å)
SPLIT_MIXED_DISTANCE = 0.3


@dataclass
class SiteGroup:
    """Atoms refined with one ADP: one atom, a mixed site (one position too), or a split
    site (disorder partners closer than SPLIT_DISTANCE, own positions: SHELXL's EADP)."""

    atoms: list[int]
    share_xyz: bool = True
    free_occupancy: bool = False  # mixed site: fractions refined, their sum kept
    occupancy_sum: float = 1.0
    single_occupancy: bool = False  # an isolated atom with its occupancy refined
    refine_xyz: bool = True
    refine_adp: bool = True
    #: a free variable: each atom's occupancy change per unit of it (+1 for atoms whose
    #: occupancy is p, -1 for 1 - p in a disorder assembly)
    occupancy_signs: list[float] | None = None
    #: the SHELXL number of the model's free variable the group refines (None: a disorder
    #: assembly split by the refiner, or no free variable)
    free_variable: int | None = None
    #: a rotating riding group's torsion (index into model.h_groups); atoms: its parent
    torsion_group: int | None = None
    #: a rotating riding group's X-H distance (SHELXL AFIX m8; index into model.h_groups)
    distance_group: int | None = None
    #: a rigid group (`WorkingModel.rigid_group` number): its atoms move as one body
    rigid_group: int | None = None

    def position_sets(self) -> list[list[int]]:
        """Atoms sharing one set of coordinate parameters."""
        return [list(self.atoms)] if self.share_xyz else [[a] for a in self.atoms]


@dataclass
class Segment:
    """A run of a site group's free-parameter columns and what they move.

    kind: "xyz" (atoms: one position set; basis: its position basis, 3 x k), "u_aniso"
    (atoms: the group; basis: the lead atom's U* basis, 6 x k), "u_iso" (one column),
    "occ_mixed" (fractions of all atoms but the last, whose occupancy keeps the sum),
    "occ_single" (the lead atom's occupancy), "occ_free" (a free variable, of a
    disorder assembly or of the model's SHELXL file: each atom's occupancy moves by δ times
    its entry in the group's occupancy_signs) or
    "torsion" (a rotating riding group's torsion in degrees; atoms: the group's H atoms) or
    "hdist" (its X-H distance in Å, SHELXL AFIX m8; atoms: the group's H atoms) or
    "rigid" (a rigid group's translation and rotation, 6 columns; atoms: its members)."""

    kind: str
    group: int
    atoms: list[int]
    columns: np.ndarray
    basis: np.ndarray | None = None


@dataclass
class ParameterInfo:
    """What one free parameter is (for logs and shift/su reporting)."""

    kind: str  # scale, extinction, basf, xyz, uiso, ustar, occ, torsion, hdist, rigid
    group: int = -1
    atom: int = -1
    component: int = 0


@dataclass
class Parameterisation:
    """The free parameters of a model and the constraint matrix mapping them to raw ones."""

    model: WorkingModel
    groups: list[SiteGroup]
    refine_extinction: bool = False
    refine_twin: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    info: list[ParameterInfo] = field(default_factory=list)
    group_columns: list[np.ndarray] = field(default_factory=list)
    n_global: int = 0
    occupancy_cap: float = 1.0
    riding_chain: bool = False  # see `build`
    _riding_jac: dict | None = None

    # -- construction ------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        model: WorkingModel,
        *,
        refine_extinction: bool = False,
        refine_twin: np.ndarray | None = None,
        refine_mixed_occupancy: bool = True,
        refine_partial_occupancy: bool = False,
        fixed_atoms: set[int] | None = None,
        occupancy_only: bool = False,
        refine_disorder_occupancy: bool = False,
        refine_free_variables: bool = False,
        riding_chain: bool = False,
        held_occupancy: set[int] | None = None,
    ) -> "Parameterisation":
        """Group atoms into sites and enumerate the free parameters.

        `occupancy_only`: positions and ADPs fixed, one free occupancy per single-atom site
        (a measure of each site's scattering power, used to assign elements).
        `refine_disorder_occupancy`: one free variable per disorder assembly (see
        `disorder_assemblies`). `refine_free_variables`: one parameter per SHELXL free
        variable the model's occupancies refer to (`model.free_variables`); their atoms'
        occupancies are refined through it only. Rotating riding groups marked
        `refine_torsion` get their torsion as a parameter (unless their parent is fixed).
        `held_occupancy`: atoms whose mixed site keeps the fractions given (a user's model
        that holds them). `riding_chain`: a riding H's derivatives go to every atom defining its position and,
        through U_eq, to its U's parent ADP (the exact chain rule); by default they go to its
        parent atom's position only, as in SHELXL's riding model, whose converged model is
        the one this then converges to.
        """
        groups = cached_site_groups(model)
        fixed_atoms = fixed_atoms or set()
        if occupancy_only:
            for g in groups:
                g.refine_xyz = g.refine_adp = False
                g.single_occupancy = len(g.atoms) == 1 and g.atoms[0] not in fixed_atoms
            twin = np.zeros(len(model.twin_fractions), dtype=bool)
            p = cls(model=model, groups=groups, refine_extinction=False, refine_twin=twin, occupancy_cap=20.0)
            p._enumerate()
            return p
        free = free_variable_groups(model, fixed_atoms) if refine_free_variables else []
        governed = {a for g in free for a in g.atoms}  # occupancies a free variable moves
        for g in groups:
            elements = {model.elements[i] for i in g.atoms}
            own_occupancy = not governed.intersection(g.atoms)
            held = bool(held_occupancy) and bool(held_occupancy.intersection(g.atoms))
            if len(g.atoms) > 1 and len(elements) > 1 and refine_mixed_occupancy and own_occupancy and not held:
                g.free_occupancy = True
                g.occupancy_sum = float(sum(model.occupancy[i] for i in g.atoms))
            elif len(g.atoms) == 1 and refine_partial_occupancy and own_occupancy:
                i = g.atoms[0]
                if model.part[i] == 0 and model.occupancy[i] < 0.999:
                    g.single_occupancy = True
            if all(i in fixed_atoms for i in g.atoms):
                g.refine_xyz = g.refine_adp = False
                g.free_occupancy = g.single_occupancy = False
            if all(model.u_parent[i] >= 0 for i in g.atoms):  # their U follows another atom's
                g.refine_adp = False
            if model.fixed_u[g.atoms[0]].all():  # the group's U is its lead atom's, held fixed
                g.refine_adp = False
        rigid = model.rigid_groups()
        in_rigid = {a for atoms in rigid.values() for a in atoms}
        for g in groups:
            if in_rigid.intersection(g.atoms):  # the rigid body moves them
                g.refine_xyz = False
        groups.extend(free)
        for number, atoms in sorted(rigid.items()):
            if not all(a in fixed_atoms for a in atoms):
                groups.append(SiteGroup(atoms=atoms, refine_xyz=False, refine_adp=False, rigid_group=number))
        if refine_disorder_occupancy:
            for first, second in disorder_assemblies(model):
                if any(i in fixed_atoms or i in governed for i in first + second):
                    continue
                groups.append(SiteGroup(atoms=first + second, refine_xyz=False, refine_adp=False,
                                        occupancy_signs=[1.0] * len(first) + [-1.0] * len(second)))
        for atoms in riding_u_sets(model):  # riding H with a U of their own
            if not any(h in fixed_atoms or int(model.riding[h]) in fixed_atoms for h in atoms):
                groups.append(SiteGroup(atoms=atoms, refine_xyz=False, refine_adp=True))
        for k, hg in enumerate(model.h_groups):
            if hg.refine_torsion and hg.atoms and hg.parent not in fixed_atoms:
                groups.append(SiteGroup(atoms=[hg.parent], refine_xyz=False, refine_adp=False, torsion_group=k))
            if hg.refine_distance and hg.atoms and hg.parent not in fixed_atoms:
                groups.append(SiteGroup(atoms=[hg.parent], refine_xyz=False, refine_adp=False, distance_group=k))
        twin = np.zeros(len(model.twin_fractions), dtype=bool) if refine_twin is None else np.asarray(refine_twin, bool)
        p = cls(model=model, groups=groups, refine_extinction=refine_extinction and model.extinction is not None, refine_twin=twin,
                riding_chain=riding_chain)
        p._enumerate()
        return p

    def _enumerate(self) -> None:
        m = self.model
        info: list[ParameterInfo] = [ParameterInfo("scale")]
        if self.refine_extinction:
            info.append(ParameterInfo("extinction"))
        for k, on in enumerate(self.refine_twin):
            if on:
                info.append(ParameterInfo("basf", component=k))
        self.n_global = len(info)
        cols = []
        for gi, g in enumerate(self.groups):
            start = len(info)
            lead = g.atoms[0]
            if g.refine_xyz:
                for ps in g.position_sets():
                    for c in range(m.position_basis[ps[0]].shape[1]):
                        info.append(ParameterInfo("xyz", gi, ps[0], c))
            if g.refine_adp:
                if m.aniso[lead]:
                    for c in range(m.ustar_basis[lead].shape[1]):
                        info.append(ParameterInfo("ustar", gi, lead, c))
                else:
                    info.append(ParameterInfo("uiso", gi, lead))
            if g.free_occupancy:
                for a in g.atoms[:-1]:
                    info.append(ParameterInfo("occ", gi, a))
            elif g.single_occupancy or g.occupancy_signs is not None:
                info.append(ParameterInfo("occ", gi, lead))
            if g.torsion_group is not None:
                info.append(ParameterInfo("torsion", gi, lead))
            if g.distance_group is not None:
                info.append(ParameterInfo("hdist", gi, lead))
            if g.rigid_group is not None:
                info.extend(ParameterInfo("rigid", gi, lead, c) for c in range(6))
            cols.append(np.arange(start, len(info)))
        self.info = info
        self.group_columns = cols

    @property
    def n(self) -> int:
        return len(self.info)

    # -- constraint matrix ------------------------------------------------------------------
    def constraint_matrix(self, group_subset: list[int] | None = None) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
        """(C, atoms, columns): raw derivatives of `atoms` (RAW each, in that order) times C
        give the Jacobian columns `columns` of the groups (all, or a subset)."""
        m = self.model
        groups = range(len(self.groups)) if group_subset is None else group_subset
        atoms: list[int] = []
        for gi in groups:  # (an assembly's atoms also belong to their own site groups)
            for a in self.groups[gi].atoms:
                if a not in atoms:
                    atoms.append(a)
        riders = m.riders()
        atom_list, in_groups = list(atoms), set(atoms)
        for a in atoms:  # (a riding H with a U of its own is also an atom of its own group)
            atom_list.extend(h for h in riders.get(a, []) if h not in in_groups)
        pos = {a: k for k, a in enumerate(atom_list)}
        riding_jac = self.riding_jacobians()
        columns = np.concatenate([self.group_columns[gi] for gi in groups]) if len(groups) else np.zeros(0, int)
        col_pos = {int(c): k for k, c in enumerate(columns)}
        rows, cols, vals = [], [], []
        g6 = m.metric6
        xyz_cols, adp_cols, occ_cols, geometry_cols = self._atom_columns(groups)
        for a, (pcols, b) in xyz_cols.items():
            for c, pc in enumerate(pcols):
                col = col_pos[int(pc)]
                for j in range(3):
                    if b[j, c] != 0.0:
                        rows.append(pos[a] * RAW + j)
                        cols.append(col)
                        vals.append(b[j, c])
        for a, (pcols, b) in adp_cols.items():
            if b is None:  # isotropic: U* = U_iso G*
                col = col_pos[int(pcols[0])]
                for j in range(6):
                    rows.append(pos[a] * RAW + 3 + j)
                    cols.append(col)
                    vals.append(g6[j])
                continue
            for c, pc in enumerate(pcols):
                col = col_pos[int(pc)]
                for j in range(6):
                    if b[j, c] != 0.0:
                        rows.append(pos[a] * RAW + 3 + j)
                        cols.append(col)
                        vals.append(b[j, c])
        for gi, ocols in occ_cols.items():
            g = self.groups[gi]
            if g.free_occupancy:  # fractions of a mixed site, their sum kept
                last = g.atoms[-1]
                for a, pc in zip(g.atoms[:-1], ocols):
                    col = col_pos[int(pc)]
                    rows += [pos[a] * RAW + 9, pos[last] * RAW + 9]
                    cols += [col, col]
                    vals += [1.0, -1.0]
            elif g.single_occupancy:
                rows.append(pos[g.atoms[0]] * RAW + 9)
                cols.append(col_pos[int(ocols[0])])
                vals.append(1.0)
            elif g.occupancy_signs is not None:  # free variable: riding H follow their parents
                col = col_pos[int(ocols[0])]
                for a, sign in zip(g.atoms, g.occupancy_signs):
                    rows.append(pos[a] * RAW + 9)
                    cols.append(col)
                    vals.append(sign)
                    for h in riders.get(a, []):
                        rows.append(pos[h] * RAW + 9)
                        cols.append(col)
                        vals.append(sign * _rider_share(m, h, a))
        if geometry_cols:
            from .hydrogens import geometry_derivatives
        for gi, (tcols, k, attribute) in geometry_cols.items():  # a rotating group turns (or
            col = col_pos[int(tcols[0])]  # stretches) its H about (along) the bond
            for h, dx in geometry_derivatives(m, m.h_groups[k], attribute):
                for j in range(3):
                    if dx[j] != 0.0:
                        rows.append(pos[h] * RAW + j)
                        cols.append(col)
                        vals.append(dx[j])
        # riding H: coordinates follow their parent (`riding_chain`: every atom that defines
        # them), U_iso(H), a multiple of a parent's U_eq, adds to that ADP only with
        # `riding_chain` (as does that of an H with a free position and a riding U)
        grad_ueq = ueq_gradient(m.cell)

        def u_follows(h: int, parent: int) -> None:
            if not self.riding_chain or parent not in adp_cols or m.aniso[h] or m.u_own[h]:
                return
            pcols, basis = adp_cols[parent]
            for c, pc in enumerate(pcols):
                if int(pc) not in col_pos:
                    continue
                dueq = 1.0 if basis is None else float(grad_ueq @ basis[:, c])
                for j in range(6):
                    rows.append(pos[h] * RAW + 3 + j)
                    cols.append(col_pos[int(pc)])
                    vals.append(m.u_ratio[h] * g6[j] * dueq)

        for h in np.nonzero(m.u_parent >= 0)[0]:
            if int(h) in pos:
                u_follows(int(h), int(m.u_parent[h]))
        for h, pairs in riding_jac.items():
            if h not in pos:
                continue
            for d, dmat in pairs:
                if d not in xyz_cols:
                    continue
                pcols, b = xyz_cols[d]
                contrib = dmat @ b  # (3, k)
                for c, pc in enumerate(pcols):
                    if int(pc) not in col_pos:
                        continue
                    for j in range(3):
                        if contrib[j, c] != 0.0:
                            rows.append(pos[h] * RAW + j)
                            cols.append(col_pos[int(pc)])
                            vals.append(contrib[j, c])
            u_follows(h, int(m.riding[h]))
        c = sp.csr_matrix((vals, (rows, cols)), shape=(len(atom_list) * RAW, len(columns)))
        return c, np.asarray(atom_list, dtype=np.int64), columns

    def riding_jacobians(self) -> dict[int, list[tuple[int, np.ndarray]]]:
        """∂x_H/∂x_atom of every riding H (computed once per parameterisation)."""
        if self._riding_jac is None:
            from .hydrogens import riding_jacobians

            m = self.model
            if self.riding_chain:
                self._riding_jac = riding_jacobians(m) if m.h_groups else {}
            else:  # SHELXL's riding model: an H shifts as its parent does
                self._riding_jac = {int(h): [(int(m.riding[h]), np.eye(3))] for h in np.nonzero(m.riding >= 0)[0]}
        return self._riding_jac

    def segments(self, groups=None):
        """The groups' (all, or a subset) parameter columns in order, as Segments: the one
        walk over group_columns that every user of the columns shares."""
        m = self.model
        for gi in range(len(self.groups)) if groups is None else groups:
            g = self.groups[gi]
            gcols = self.group_columns[gi]
            lead = g.atoms[0]
            k = 0
            if g.refine_xyz:
                for ps in g.position_sets():
                    b = m.position_basis[ps[0]]
                    yield Segment("xyz", gi, list(ps), gcols[k : k + b.shape[1]], b)
                    k += b.shape[1]
            if g.refine_adp:
                if m.aniso[lead]:
                    b = m.ustar_basis[lead]
                    yield Segment("u_aniso", gi, list(g.atoms), gcols[k : k + b.shape[1]], b)
                    k += b.shape[1]
                else:
                    yield Segment("u_iso", gi, list(g.atoms), gcols[k : k + 1])
                    k += 1
            if g.free_occupancy:
                yield Segment("occ_mixed", gi, list(g.atoms), gcols[k : k + len(g.atoms) - 1])
            elif g.single_occupancy:
                yield Segment("occ_single", gi, [lead], gcols[k : k + 1])
            elif g.occupancy_signs is not None:
                yield Segment("occ_free", gi, list(g.atoms), gcols[k : k + 1])
            if g.torsion_group is not None:
                yield Segment("torsion", gi, list(m.h_groups[g.torsion_group].atoms), gcols[k : k + 1])
            if g.distance_group is not None:
                yield Segment("hdist", gi, list(m.h_groups[g.distance_group].atoms), gcols[k : k + 1])
            if g.rigid_group is not None:
                yield Segment("rigid", gi, list(g.atoms), gcols[k : k + 6])

    def _atom_columns(self, groups) -> tuple[dict, dict, dict, dict]:
        """The groups' parameter columns: atom -> (xyz columns, position basis), atom -> (ADP
        columns, U* basis or None for U_iso), group -> its occupancy columns and group -> (its
        torsion or X-H distance column, the riding group's index, "torsion" or "distance")."""
        xyz, adp, occ, geometry = {}, {}, {}, {}
        for seg in self.segments(groups):
            if seg.kind == "xyz":
                for a in seg.atoms:
                    xyz[a] = (seg.columns, seg.basis)
            elif seg.kind in ("u_aniso", "u_iso"):
                for a in seg.atoms:
                    adp[a] = (seg.columns, seg.basis)
            elif seg.kind == "torsion":
                geometry[seg.group] = (seg.columns, self.groups[seg.group].torsion_group, "torsion")
            elif seg.kind == "hdist":
                geometry[seg.group] = (seg.columns, self.groups[seg.group].distance_group, "distance")
            elif seg.kind == "rigid":  # each member's position basis: how the body moves it
                for a, b in zip(seg.atoms, rigid_bases(self.model, seg.atoms)):
                    xyz[a] = (seg.columns, b)
            else:
                occ[seg.group] = seg.columns
        return xyz, adp, occ, geometry

    # -- applying shifts ---------------------------------------------------------------
    def apply(self, shift: np.ndarray, columns: np.ndarray | None = None) -> WorkingModel:
        """A new model with `shift` added to the free parameters (`columns` if a subset)."""
        full = np.zeros(self.n)
        if columns is None:
            full[:] = shift
        else:
            full[columns] = shift
        m = self.model.copy()
        k = 0
        m.scale = m.scale + full[0]
        k = 1
        if self.refine_extinction:  # (x < 0 has no meaning, and far below 0 no square root)
            m.extinction = max(float(m.extinction) + full[k], 0.0)
            k += 1
        for j, on in enumerate(self.refine_twin):
            if on:  # (slightly negative allowed, as a Flack x may be; not so far as to make Fc² < 0)
                m.twin_fractions[j] = float(np.clip(m.twin_fractions[j] + full[k], *TWIN_FRACTION_RANGE))
                k += 1
        for seg in self.segments():
            d = full[seg.columns]
            if seg.kind == "xyz":
                dx = seg.basis @ d
                for a in seg.atoms:
                    m.xyz[a] += dx
            elif seg.kind == "u_aniso":
                du = seg.basis @ d
                for a in seg.atoms:
                    m.u_star[a] += du
            elif seg.kind == "u_iso":
                for a in seg.atoms:
                    m.u_iso[a] += d[0]
            elif seg.kind == "occ_mixed":
                last = seg.atoms[-1]
                for a, da in zip(seg.atoms[:-1], d):
                    m.occupancy[a] += da
                    m.occupancy[last] -= da
                _clip_occupancies(m, self.groups[seg.group])
            elif seg.kind == "occ_free":
                _shift_free_variable(m, self.groups[seg.group], d[0])
            elif seg.kind == "torsion":  # (the H atoms are re-placed with the other riders)
                m.h_groups[self.groups[seg.group].torsion_group].torsion += float(d[0])
            elif seg.kind == "hdist":  # (kept within the range of X-H distances)
                g = m.h_groups[self.groups[seg.group].distance_group]
                g.distance = float(np.clip(g.distance + d[0], *H_DISTANCE_RANGE))
            elif seg.kind == "rigid":
                m.xyz[seg.atoms] = move_rigid(m, seg.atoms, d[:3], d[3:])
            else:
                lead = seg.atoms[0]
                m.occupancy[lead] = float(np.clip(m.occupancy[lead] + d[0], 0.0, self.occupancy_cap))
        m.update_u_eq()
        return m

    def effective_shift(self, new: WorkingModel) -> np.ndarray:
        """The shifts of the free parameters that took `self.model` to `new` (n,).

        Differs from the solved shift where a step was cut back after solving (an ADP
        held at its positivity limit, an occupancy clipped): such a parameter moved only
        as far as its bound allows, and it is this actual move that counts for shift/su
        and for the predicted decrease of the sum of squares."""
        old = self.model
        out = np.zeros(self.n)
        out[0] = new.scale - old.scale
        k = 1
        if self.refine_extinction:
            out[k] = float(new.extinction or 0.0) - float(old.extinction or 0.0)
            k += 1
        for j, on in enumerate(self.refine_twin):
            if on:
                out[k] = new.twin_fractions[j] - old.twin_fractions[j]
                k += 1
        for seg in self.segments():
            cols, lead = seg.columns, seg.atoms[0]
            if seg.kind == "xyz":
                out[cols] = seg.basis.T @ (new.xyz[lead] - old.xyz[lead])
            elif seg.kind == "u_aniso":
                out[cols] = seg.basis.T @ (new.u_star[lead] - old.u_star[lead])
            elif seg.kind == "u_iso":
                out[cols[0]] = new.u_iso[lead] - old.u_iso[lead]
            elif seg.kind == "occ_mixed":
                for a, c in zip(seg.atoms[:-1], cols):
                    out[c] = new.occupancy[a] - old.occupancy[a]
            elif seg.kind == "torsion":
                k = self.groups[seg.group].torsion_group
                out[cols[0]] = new.h_groups[k].torsion - old.h_groups[k].torsion
            elif seg.kind == "hdist":
                k = self.groups[seg.group].distance_group
                out[cols[0]] = new.h_groups[k].distance - old.h_groups[k].distance
            elif seg.kind == "rigid":  # the body's move to first order (least squares over its atoms)
                b = np.vstack(rigid_bases(old, seg.atoms))
                out[cols] = np.linalg.lstsq(b, (new.xyz[seg.atoms] - old.xyz[seg.atoms]).reshape(-1), rcond=None)[0]
            elif seg.kind == "occ_free":  # the free variable: the lead's occupancy over its coefficient
                g = self.groups[seg.group]
                out[cols[0]] = free_variable_value(new, g) - free_variable_value(old, g)
            else:
                out[cols[0]] = new.occupancy[lead] - old.occupancy[lead]
        return out

    def bound_constraints(self, solved: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Linear equalities (rows (k, n), values (k,)) that hold each anisotropic U the
        shift `solved` takes below the positivity limit (the U it aims at has eigenvalues
        under the floor: `WorkingModel.enforce_adp_limits` cuts that step back) at the
        limit along each such principal direction v (vᵀ U v = floor), free in the others.
        Other bounds (U_iso, occupancies) are not held: from a rough start many of them are
        hit at once, and the step solved again with all of them held led muscovite (seed +1
        of the perturbed benchmark) off to R1 0.54."""
        rows: list[np.ndarray] = []
        values: list[float] = []
        m = self.model
        o = orthogonalization_matrix(m.cell)
        for seg in self.segments():
            if seg.kind != "u_aniso":
                continue
            lead = seg.atoms[0]
            target = o @ sym6_to_matrix(m.u_star[lead] + seg.basis @ solved[seg.columns]) @ o.T
            w, v = np.linalg.eigh(target)
            if w[0] >= U_FLOOR:
                continue
            cart = m.u_cart(lead)
            for k in np.nonzero(w < U_FLOOR)[0]:
                axis = v[:, k]
                per_column = [axis @ (o @ sym6_to_matrix(b) @ o.T) @ axis for b in seg.basis.T]
                row = np.zeros(self.n)
                row[seg.columns] = per_column
                rows.append(row)
                values.append(float(U_FLOOR - axis @ cart @ axis))
        if not rows:
            return np.zeros((0, self.n)), np.zeros(0)
        return np.array(rows), np.array(values)

    # -- floating origin ---------------------------------------------------------------
    def origin_restraints(self) -> list[np.ndarray]:
        """Rows a (length n) of the floating-origin restraints Σ w_i Δx_i·d = 0.

        In polar space groups the origin may move along directions d left fixed by every
        rotation of the point group; the sum of squares does not change when all atoms
        move together along d, so the normal matrix is singular. As SHELXL does, the
        scattering-power-weighted centroid is held fixed along each such direction.
        """
        directions = free_origin_directions(self.model.symmetry)
        if not directions.shape[1]:
            return []
        m = self.model
        positions = [seg for seg in self.segments() if seg.kind == "xyz"]
        bodies = [(seg, rigid_bases(m, seg.atoms)) for seg in self.segments() if seg.kind == "rigid"]
        rows = []
        for d in directions.T:
            if origin_pinned(m, d):
                continue  # a coordinate held fixed defines the origin along d already
            a = np.zeros(self.n)
            for seg in positions:
                w = sum(origin_weight(m, a_) for a_ in seg.atoms)
                a[seg.columns] = w * (seg.basis.T @ d)
            for seg, bases in bodies:
                a[seg.columns] = sum(origin_weight(m, i) * (b.T @ d) for i, b in zip(seg.atoms, bases))
            if np.any(a):
                rows.append(a)
        return rows

    # -- groups as blocks ------------------------------------------------------------------
    def blocks(self, size: int) -> list[list[int]]:
        """Consecutive site groups in blocks of about `size` parameters."""
        out: list[list[int]] = []
        cur: list[int] = []
        count = 0
        for gi, cols in enumerate(self.group_columns):
            if not len(cols):
                continue
            if cur and count + len(cols) > size:
                out.append(cur)
                cur, count = [], 0
            cur.append(gi)
            count += len(cols)
        if cur:
            out.append(cur)
        return out

    def describe(self, j: int) -> str:
        """A short name of parameter j (e.g. 'O1 y', 'C3 U', 'scale')."""
        p = self.info[j]
        if p.kind in ("scale", "extinction"):
            return p.kind
        if p.kind == "basf":
            return f"BASF{p.component + 1}"
        label = self.model.labels[p.atom]
        if p.kind == "xyz":
            b = self.model.position_basis[p.atom][:, p.component]
            axis = "xyz"[int(np.argmax(np.abs(b)))]
            return f"{label} {axis}"
        if p.kind == "uiso":
            return f"{label} Uiso"
        if p.kind == "ustar":
            return f"{label} U{p.component + 1}"
        if p.kind == "torsion":
            return f"{label} H torsion"
        if p.kind == "hdist":
            return f"{label} X-H distance"
        if p.kind == "rigid":
            return f"{label} rigid group {('x', 'y', 'z', 'rotation x', 'rotation y', 'rotation z')[p.component]}"
        return f"{label} occ"


def rigid_bases(m: WorkingModel, atoms: list[int]) -> list[np.ndarray]:
    """Per atom of a rigid group, the (3, 6) change of its fractional coordinates per unit
    translation (Å, Cartesian) and rotation (radians, about the group's centroid) of the
    body: F [I | -[r - c]x]."""
    orth = orthogonalization_matrix(m.cell)
    frac = np.linalg.inv(orth)
    r = m.xyz[atoms] @ orth.T
    centre = r.mean(axis=0)
    out = []
    for v in r - centre:
        out.append(frac @ np.hstack([np.eye(3), -_skew(v)]))  # ω × v = -[v]x ω
    return out


def _skew(v: np.ndarray) -> np.ndarray:
    """[v]x: the matrix of the cross product v × (·)."""
    return np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])


def move_rigid(m: WorkingModel, atoms: list[int], translation: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """New fractional coordinates of a rigid group's atoms: turned by the rotation vector
    (radians) about their centroid, then translated (Å); distances stay exactly as they were."""
    orth = orthogonalization_matrix(m.cell)
    r = m.xyz[atoms] @ orth.T
    centre = r.mean(axis=0)
    angle = float(np.linalg.norm(rotation))
    turn = np.eye(3)
    if angle > 0:
        kx = _skew(np.asarray(rotation, dtype=np.float64) / angle)
        turn = np.eye(3) + math.sin(angle) * kx + (1.0 - math.cos(angle)) * (kx @ kx)
    moved = centre + np.asarray(translation, dtype=np.float64) + (r - centre) @ turn.T
    return moved @ np.linalg.inv(orth).T


def origin_pinned(m: WorkingModel, d: np.ndarray) -> bool:
    """Whether an atom (not riding) holds fixed coordinates that fix its position along the
    direction d (so the origin may not float along d)."""
    fixed = m.fixed_xyz
    if not fixed.any():
        return False
    for i in np.nonzero(fixed.any(axis=1) & (m.riding < 0))[0]:
        if np.linalg.norm(d[fixed[i]]) > (1.0 - 1e-6) * np.linalg.norm(d):
            return True
    return False


def _rider_share(m: WorkingModel, h: int, parent: int) -> float:
    """Occupancy of riding H per unit occupancy of its parent (none for an H of PART 0 on an
    atom of a PART: it belongs to the whole split site, as its SHELXL code would say)."""
    if m.part[h] == 0 and m.part[parent] != 0:
        return 0.0
    return float(m.occupancy[h] / m.occupancy[parent]) if m.occupancy[parent] > 0 else 1.0


def free_variable_value(m: WorkingModel, g: SiteGroup) -> float:
    """The value of a free variable from its lead atom's occupancy: occupancy c·p, or
    c·(p - 1) for a negative coefficient c (the partner component)."""
    lead, c = g.atoms[0], (g.occupancy_signs or [1.0])[0]
    return free_variable_from_share(float(m.occupancy[lead]), c)


def free_variable_groups(model: WorkingModel, fixed_atoms: set[int] | None = None) -> list[SiteGroup]:
    """One occupancy-only site group per SHELXL free variable of `model.free_variables`
    with an atom present, not riding (riding H follow their parents) and not fixed."""
    index = model.label_index()
    fixed_atoms = fixed_atoms or set()
    out = []
    for k in sorted(model.free_variables):
        members = [(index[label.upper()], c) for label, c in model.free_variables[k] if label.upper() in index]
        members = [(a, c) for a, c in members if model.riding[a] < 0 and c != 0.0]
        if not members or any(a in fixed_atoms for a, _ in members):
            continue
        out.append(SiteGroup(atoms=[a for a, _ in members], refine_xyz=False, refine_adp=False,
                             occupancy_signs=[c for _, c in members], free_variable=k))
    return out


def riding_u_sets(model: WorkingModel) -> list[list[int]]:
    """The riding H with a U_iso of their own (`WorkingModel.u_own`), one list per refined
    U_iso: those coded on one free variable with one p (`WorkingModel.u_variables`) share
    it, as SHELXL refines fv_k; any other has its own."""
    index = model.label_index()
    code = {index[label.upper()]: (k, round(p, 5)) for k, members in model.u_variables.items()
            for label, p in members if label.upper() in index}
    sets: dict[tuple, list[int]] = {}
    for h in np.nonzero((model.riding >= 0) & model.u_own)[0]:
        sets.setdefault(code.get(int(h), ("own", int(h))), []).append(int(h))
    return list(sets.values())


def _shift_free_variable(m: WorkingModel, g: SiteGroup, delta: float) -> None:
    """Move a free variable p by delta (p kept within [0.01, 0.99]); each atom's occupancy
    moves by its coefficient times the step."""
    p = free_variable_value(m, g)
    delta = float(np.clip(p + delta, 0.01, 0.99)) - p
    riders = m.riders()
    for a, sign in zip(g.atoms, g.occupancy_signs or []):
        for h in riders.get(a, []):
            m.occupancy[h] += sign * delta * _rider_share(m, h, a)
        m.occupancy[a] += sign * delta


def disorder_assemblies(model: WorkingModel) -> list[tuple[list[int], list[int]]]:
    """(atoms of PART 2k-1, atoms of PART 2k) for every k with both components present:
    the two-component disorder assemblies that can share one free occupancy. Riding H are
    left out (they follow their parents)."""
    out = []
    parts = {int(p) for p, r in zip(model.part, model.riding) if p > 0 and r < 0}
    for p in sorted(parts):
        if p % 2 == 1 and p + 1 in parts:
            first = [i for i in range(model.n) if model.part[i] == p and model.riding[i] < 0]
            second = [i for i in range(model.n) if model.part[i] == p + 1 and model.riding[i] < 0]
            out.append((first, second))
    return out


def _clip_occupancies(m: WorkingModel, g: SiteGroup) -> None:
    """Keep every fraction of a mixed site within [0, sum]."""
    occ = np.array([m.occupancy[a] for a in g.atoms])
    occ = np.clip(occ, 0.0, g.occupancy_sum)
    total = occ.sum()
    occ = occ * (g.occupancy_sum / total) if total > 0 else np.full(len(occ), g.occupancy_sum / len(occ))
    for a, v in zip(g.atoms, occ):
        m.occupancy[a] = v


def site_groups(model: WorkingModel) -> list[SiteGroup]:
    """Non-riding atoms grouped into sites.

    The user's EADP/EXYZ sets (`model.user_sites`) come first: their atoms share one ADP
    (and, for EXYZ, their position). Without such instructions (`user_sites` None), atoms
    closer than SHARED_SITE_DISTANCE share position and ADP (a mixed site), and single
    atoms of different positive PARTs closer than SPLIT_DISTANCE (disorder partners, each
    paired with its nearest partner) share their ADP only. Members of a group have the
    same ADP type and site-symmetry ADP basis; riding H atoms are not grouped.
    """
    idx = [i for i in range(model.n) if model.riding[i] < 0]
    if not idx:
        return []
    cart = model.cartesian()
    assigned: dict[int, int] = {}
    groups: list[SiteGroup] = []

    def compatible(i: int, j: int) -> bool:
        bi, bj = model.ustar_basis[i], model.ustar_basis[j]
        return bool(model.aniso[j] == model.aniso[i] and bi.shape == bj.shape and np.allclose(bi, bj))

    index = model.label_index()
    user = model.user_sites is not None
    for labels, together in model.user_sites or []:
        members = [index[x.upper()] for x in labels if x.upper() in index]
        members = [i for i in members if model.riding[i] < 0 and i not in assigned]
        members = [i for i in members if compatible(members[0], i)] if members else []
        if len(members) < 2:
            continue
        for i in members:
            assigned[i] = len(groups)
        groups.append(SiteGroup(atoms=members, share_xyz=together))
    for i in idx:
        if i in assigned:
            continue
        members = [i]
        near = [] if user else np.nonzero(np.linalg.norm(cart - cart[i], axis=1) < SHARED_SITE_DISTANCE)[0]
        for j in near:
            j = int(j)
            if j <= i or j in assigned or model.riding[j] >= 0 or not compatible(i, j):
                continue
            members.append(j)
        for j in members:
            assigned[j] = len(groups)
        groups.append(SiteGroup(atoms=members))
    # disorder partners
    # (the user's own EADP instructions, when given, are the only ADP sharing)
    singles = [] if user else [gi for gi, g in enumerate(groups) if len(g.atoms) == 1 and model.part[g.atoms[0]] > 0]
    merged: set[int] = set()
    for gi in singles:
        if gi in merged:
            continue
        a = groups[gi].atoms[0]
        best, best_d = None, SPLIT_DISTANCE
        for gj in singles:
            if gj == gi or gj in merged:
                continue
            b = groups[gj].atoms[0]
            if model.part[b] == model.part[a]:
                continue
            d = float(np.linalg.norm(cart[a] - cart[b]))
            # partners of one element (a disordered atom), or a split mixed-metal site
            same_kind = model.elements[a] == model.elements[b] or (
                d < SPLIT_MIXED_DISTANCE and _is_metal(model.elements[a]) and _is_metal(model.elements[b])
            )
            if d < best_d and same_kind and compatible(a, b):
                best, best_d = gj, d
        if best is not None:
            groups[gi].atoms.append(groups[best].atoms[0])
            groups[gi].share_xyz = False
            merged.add(gi)
            merged.add(best)
            groups[best].atoms = []
    return [g for g in groups if g.atoms]


def cached_site_groups(model: WorkingModel) -> list[SiteGroup]:
    """`site_groups`, computed once and reused while the atoms (and their ADP types and
    riding flags) stay the same, so that the grouping cannot flicker during a stage."""
    signature = (model.n, tuple(model.aniso.tolist()), tuple((model.riding >= 0).tolist()), tuple(model.user_sites or ()), model.user_sites is not None)
    if model.group_cache is None or model.group_cache[0] != signature:
        model.group_cache = (signature, site_groups(model))
    return [SiteGroup(atoms=list(g.atoms), share_xyz=g.share_xyz) for g in model.group_cache[1]]


def share_site_values(model: WorkingModel, groups: list[SiteGroup]) -> None:
    """Make members of each group share the lead atom's position and ADP exactly."""
    for g in groups:
        lead = g.atoms[0]
        for a in g.atoms[1:]:
            if g.share_xyz:
                model.xyz[a] = model.xyz[lead]
            model.u_iso[a] = model.u_iso[lead]
            model.u_star[a] = model.u_star[lead]
            model.aniso[a] = model.aniso[lead]


def origin_weight(model: WorkingModel, i: int) -> float:
    """Atom i's weight in the floating-origin centroid: its scattering power per
    asymmetric unit (atomic number × occupancy / site-symmetry order)."""
    from refractor_core.crystal.formula import atomic_number

    return atomic_number(model.elements[i]) * float(model.occupancy[i]) / max(int(model.order[i]), 1)


def free_origin_directions(symmetry) -> np.ndarray:
    """(3, k) orthonormal fractional directions along which the origin is not fixed by
    symmetry (k = 0 for non-polar groups, 1 for P21, 2 for Cc, 3 for P1)."""
    return _free_origin_directions(symmetry.hall or repr(symmetry.rotations.tolist()), symmetry).copy()


_ORIGIN_CACHE: dict[str, np.ndarray] = {}


def _free_origin_directions(key: str, symmetry) -> np.ndarray:
    if key in _ORIGIN_CACHE:
        return _ORIGIN_CACHE[key]
    _ORIGIN_CACHE[key] = out = _origin_directions(symmetry)
    return out


def _origin_directions(symmetry) -> np.ndarray:
    rots = symmetry.point_group_rotations().astype(np.float64)
    if np.any(np.all(np.isclose(rots, -np.eye(3)), axis=(1, 2))):
        return np.zeros((3, 0))
    proj = rots.mean(axis=0)
    u, s, _ = np.linalg.svd(proj)
    return u[:, s > 1e-6]


def ueq_gradient(cell) -> np.ndarray:
    """∂U_eq/∂U* (6,): U_eq = trace(M U* Mᵀ)/3 is linear in U*."""
    m = orthogonalization_matrix(cell)
    return np.array([m[:, 0] @ m[:, 0], m[:, 1] @ m[:, 1], m[:, 2] @ m[:, 2],
                     2 * m[:, 0] @ m[:, 1], 2 * m[:, 0] @ m[:, 2], 2 * m[:, 1] @ m[:, 2]]) / 3.0


def _is_metal(element: str) -> bool:
    import gemmi

    return bool(gemmi.Element(element).is_metal)
