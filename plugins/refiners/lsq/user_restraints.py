"""A user's SHELXL restraints and EADP constraints, as the refiner's pseudo-observations.

The reader (`refractor_plugins.readers.shelx_restraints`) resolves each instruction to atom
labels; here the labels are found in the model being refined (case-insensitively, as SHELX
names are) and each instruction becomes restraints of the kinds `restraints.py` evaluates,
with SHELXL's meaning:

- DFIX d s / DANG d s: each named pair at distance d (a negative d: only closer than |d|);
- SADI s: the named distances equal;
- SAME s1 s2: the 1,2 and 1,3 distances among the named atoms (bonds from the model's
  connectivity) equal to those of the corresponding reference atoms;
- SADI and SAME together, as SHELXL sets them up: distances made equal with one σ, by
  any of these instructions, form one set (a SAME linking residues 2 and 4 to residue 1
  and a SADI inside residue 1 make one set of all of them), and a set of n distances
  gives the n(n-1)/2 restraints d_i - d_j = 0, each with that σ -- redundant
  instructions add nothing; a residue-class SADI (`SADI_CCF3`) is one set over all its
  residues. So SHELXL counts them, and so it reports their Σ(Δ/σ)² in its restrained
  GooF (cpna's sets of three, ni_cubic's of six: our sums equal its figures to 0.1 %).
  But the model it converges to is stationary for the weight 2/n on each of them, i.e.
  for 2·Σ(d_i - d̄)²/σ²: one Gauss-Newton step at its published models moves them by
  0.019 su r.m.s. (ni_cubic's disordered atoms; 0.43 at weight 1) and 0.04 (cpna; 0.33),
  `benchmarks/stationarity.py`. Each carries that weight (`Restraint.weight`) in the
  least squares; the restrained GooF is computed as SHELXL reports it;
- no SADI/SAME distance, and no 1,2 or 1,3 pair of SAME, DELU or RIGU, joins two atoms of
  two different non-zero PARTs (never present together), BIND or not -- as in the SADI
  list SHELXL writes into its .res;
- FLAT s: the tetrahedra of the first three named atoms and each further one flat
  (chiral volume 0, σ in Å³), as SHELXL defines it;
- DELU s1 s2: U along 1,2 (s1) and 1,3 (s2) pairs of the named atoms equal;
- RIGU s1 s2: for 1,2 (s1) and 1,3 (s2) pairs, U along the pair and its two cross terms
  with the pair direction equal, with the esd scaled by the distance and the U_eq of the
  two atoms as Thorn, Dittrich & Sheldrick (2012) describe. The cross terms' esd is
  RIGU_CROSS_FACTOR (3) times the along-bond one. That factor is measured, not taken from
  SHELXL's documentation (we have no copy of its exact weighting): with equal esds our
  cross terms alone give Σ(Δ/σ)² 298 at si4's published model and 521 at
  alga_fluoroalkoxide's, where SHELXL's own restrained GooF leaves 4 ± 23 and 37 ± 21 for
  them (`benchmarks/restraint_fidelity.py`); and one Gauss-Newton step at the published
  models (`benchmarks/stationarity.py`) moves the disordered parameters by 0.42 (si4),
  0.59 (alga) and 0.15 su r.m.s. (cod1979688) with equal esds, 0.11, 0.08 and 0.05 with
  the factor 3 (2.5 to 6 give much the same; phosphazene, 0.015, goes to 0.07);
- SIMU s st dmax: all U components of named atoms closer than dmax equal (st when one
  of them is terminal), atoms of two PARTs included (overlapping components are what
  SIMU is for; the published restraint counts agree);
- ISOR s st: the named atoms' U close to isotropic (st for terminal atoms);
- EADP: one ADP shared by the named atoms; EXYZ: one position (and here one ADP too, as
  for a mixed site) -- constraints, through the site groups.

Atoms that are not in the model (H atoms removed before refinement, atoms dropped by
completion) and riding H atoms (their geometry is already fixed) take their restraints
with them; each such loss is reported once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from refractor_core.types import AtomRef, RefinementInstructions, RestraintInstruction
from refractor_core.union_find import UnionFind

from .completion import closest_image
from .model import WorkingModel, is_hydrogen
from .restraints import Image, Restraint, pair_distance

#: RIGU's distance scale p (Å) in its esd σ·d·√(p² + U_eq,a + U_eq,b)/p
RIGU_P = 0.5
#: RIGU's two cross terms: their esd is this many times the along-bond one (see the
#: module docstring: an estimate from SHELXL's converged models, not a documented value)
RIGU_CROSS_FACTOR = 3.0
#: atoms closer than this (Å) are at one place: no RIGU/DELU between them (no bond direction)
COINCIDENT_DISTANCE = 0.1
#: instructions this module turns into restraints or constraints
SUPPORTED = frozenset({"DFIX", "DANG", "SADI", "SAME", "FLAT", "DELU", "RIGU", "SIMU", "ISOR", "SUMP"})


@dataclass
class UserRestraints:
    """The restraints built for one model, and what could not be honoured."""

    restraints: list[Restraint] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.restraints:
            out[r.kind] = out.get(r.kind, 0) + 1
        return out


def has_restraints(instructions: RefinementInstructions | None) -> bool:
    """Whether the instructions carry restraints (EADP/EXYZ constraints alone do not count)."""
    return bool(instructions and any(r.kind not in ("EADP", "EXYZ") for r in instructions.restraints))


def user_site_sets(model: WorkingModel, instructions: RefinementInstructions | None) -> list[tuple[tuple[str, ...], bool]] | None:
    """(labels, shared position?) of the EADP and EXYZ constraints whose atoms are in the
    model (EXYZ atoms share their ADP too: one site, as for a mixed site); None when the
    instructions carry no restraints or constraints (sharing is then automatic)."""
    if instructions is None or not instructions.restraints:
        return None
    index = model.label_index()

    def present(r: RestraintInstruction) -> tuple[str, ...]:
        return tuple(model.labels[index[a.label.upper()]] for a in r.atoms if a.label.upper() in index and a.symop is None)

    xyz_sets = [set(present(r)) for r in instructions.restraints if r.kind == "EXYZ"]
    out = [(tuple(sorted(x)), True) for x in xyz_sets if len(x) >= 2]
    for r in instructions.restraints:
        labels = present(r)
        if r.kind == "EADP" and len(labels) >= 2 and not any(set(labels) <= x for x in xyz_sets):
            out.append((labels, False))
    return out


def build(model: WorkingModel, instructions: RefinementInstructions) -> UserRestraints:
    """Restraints for every supported instruction whose atoms are in `model`."""
    out = UserRestraints()
    builder = _Builder(model)
    equal_sets: list[tuple[float, list[tuple[Image, Image]], str]] = []
    for r in instructions.restraints:
        if r.kind in ("EADP", "EXYZ"):
            continue
        where = f"{r.kind} (line {r.line})" if r.line else r.kind
        if r.kind not in SUPPORTED:
            out.skipped.append(f"{where}: not supported, ignored")
            continue
        try:
            if r.kind in ("SADI", "SAME"):
                equal_sets.extend((sigma, pairs, where) for sigma, pairs in builder.equal_distances(r))
                if r.kind == "SADI" and r.line and len(equal_sets) > 1 and equal_sets[-2][2] == where:
                    # one SADI_class instruction read for each residue of the class: its
                    # distances, in all of them, form one set (as SHELXL counts them)
                    sigma, pairs, _ = equal_sets.pop()
                    equal_sets[-1] = (sigma, equal_sets[-1][1] + pairs, where)
            else:
                out.restraints.extend(builder.build(r))
        except _Missing as exc:
            out.skipped.append(f"{where}: {exc}, ignored")
    restraints, alone = _merged_equal_distances(model, equal_sets)
    out.restraints.extend(restraints)
    unweighable = [r for r in out.restraints if not (np.isfinite(r.sigma) and r.sigma > 0)]
    if unweighable:  # a σ of 0 would give 0/0 in the sums of squares
        out.restraints = [r for r in out.restraints if np.isfinite(r.sigma) and r.sigma > 0]
        out.skipped.append(f"{len(unweighable)} restraints with a σ that is zero or not finite, ignored")
    # (a SAME distance corresponding to itself, under a local mirror, is rightly alone)
    out.skipped.extend(f"{where}: a single distance, made equal to no other, ignored"
                       for where in alone if where.startswith("SADI"))
    return out


def _distance_key(model: WorkingModel, pair: tuple[Image, Image]) -> tuple[int, int, float]:
    """The same distance, however its pair of images is written: the two atoms and its length."""
    a, b = sorted((pair[0].atom, pair[1].atom))
    return a, b, round(pair_distance(model, pair), 4)


def _merged_equal_distances(model: WorkingModel, sets: list[tuple[float, list[tuple[Image, Image]], str]]):
    """SADI/SAME sets of equal distances merged where they share a distance and a σ;
    n(n-1)/2 difference restraints per merged set, and the instructions left alone with
    one distance."""
    sets_of_keys = UnionFind()
    pair_of: dict[tuple, tuple[Image, Image]] = {}
    origin: dict[tuple, str] = {}
    for sigma, pairs, where in sets:
        keys = [(sigma, *_distance_key(model, pair)) for pair in pairs]
        for k, pair in zip(keys, pairs):
            pair_of.setdefault(k, pair)
            origin.setdefault(k, where)
            sets_of_keys.union(keys[0], k)
    out, alone = [], []
    for keys in sets_of_keys.groups():
        if len(keys) == 1:
            alone.append(origin[keys[0]])
            continue
        sigma = keys[0][0]  # the σ is part of every key of a set
        weight = 2.0 / len(keys)  # SHELXL's minimum (see the module docstring)
        out.extend(Restraint("same", pair_of[ki], pair_of[kj], sigma, weight=weight)
                   for i, ki in enumerate(keys) for kj in keys[i + 1:])
    return out, sorted(set(alone))


class _Missing(Exception):
    pass


class _Builder:
    def __init__(self, model: WorkingModel):
        from .hydrogens import neighbours

        self.model = model
        self.index = model.label_index()
        heavy = np.array([i for i in range(model.n) if not is_hydrogen(model.elements[i])], dtype=np.int64)
        nb = neighbours(model, heavy)
        #: bonded non-H atoms in the asymmetric unit (any image), for 1,2/1,3 pairs and terminal atoms
        self.bonded: dict[int, set[int]] = {int(i): {n.atom for n, _, _ in lst} for i, lst in nb.items()}

    # -- atoms -----------------------------------------------------------------------
    def image(self, ref: AtomRef) -> Image:
        i = self.index.get(ref.label.upper())
        if i is None:
            raise _Missing(f"atom {ref.label} is not in the model")
        if self.model.riding[i] >= 0:
            raise _Missing(f"atom {ref.label} rides on its parent atom")
        if ref.symop is None:
            return Image(i)
        return Image(i, *self._operator(ref.symop))

    def _operator(self, triplet: str) -> tuple[int, tuple[int, int, int]]:
        import gemmi

        try:
            op = gemmi.Op(triplet)
        except (RuntimeError, ValueError):
            raise _Missing(f"EQIV operator {triplet!r} is not readable") from None
        found = self.model.symmetry.find_operation(np.array(op.rot, dtype=np.float64) / op.DEN,
                                                   np.array(op.tran, dtype=np.float64) / op.DEN)
        if found is None:
            raise _Missing(f"EQIV operator {triplet} is not an operation of the space group")
        return found

    def _closest(self, a: int, b: int) -> tuple[float, Image]:
        """Shortest distance from atom a to an image of atom b, and that image (atoms of
        one negative PART, disorder across a symmetry element, see only each other as given,
        not each other's symmetry copies)."""
        part_a, part_b = self.model.part[a], self.model.part[b]
        d, op, shift = closest_image(self.model, self.model.xyz[a], self.model.xyz[b],
                                     identity_only=bool(part_a < 0 and part_a == part_b), exclude_itself=a == b)
        return d, Image(b, op, tuple(int(v) for v in shift))

    def _pairs_12_13(self, atoms: list[int]) -> list[tuple[int, int, int]]:
        """(a, b, 2 or 3): bonded pairs and pairs sharing a bonded neighbour, within `atoms`;
        not two atoms of two different disorder components (a BIND bond between them, or
        an angle through a common neighbour, never exists in one structure)."""
        inside = set(atoms)
        out, seen = [], set()
        two_parts = self.model.in_two_parts
        for a in atoms:
            for b in sorted(self.bonded.get(a, ())):
                if b in inside and (b, a) not in seen and a != b and not two_parts(a, b):
                    seen.add((a, b))
                    out.append((a, b, 2))
        for a in atoms:
            for j in self.bonded.get(a, ()):
                for b in self.bonded.get(j, ()):
                    if b in inside and b != a and (a, b) not in seen and (b, a) not in seen and not two_parts(a, b):
                        seen.add((a, b))
                        out.append((a, b, 3))
        return out

    def _terminal(self, a: int) -> bool:
        return len(self.bonded.get(a, ())) <= 1

    # -- instructions ----------------------------------------------------------------
    def build(self, r: RestraintInstruction) -> list[Restraint]:
        method = getattr(self, "_" + r.kind.lower())
        return method(r)

    def _named(self, r: RestraintInstruction) -> list[Image]:
        """The named atoms present in the model (missing and riding ones dropped)."""
        out = []
        for ref in r.atoms:
            try:
                out.append(self.image(ref))
            except _Missing:
                continue
        return out

    def _pairs(self, r: RestraintInstruction) -> list[tuple[Image, Image]]:
        """The named pairs whose two atoms are both in the model (riding ones dropped)."""
        pairs = []
        for k in range(0, len(r.atoms) - 1, 2):
            try:
                pairs.append((self.image(r.atoms[k]), self.image(r.atoms[k + 1])))
            except _Missing:
                continue
        return pairs

    def _dfix(self, r: RestraintInstruction) -> list[Restraint]:
        d, s = r.values[0], r.values[1]
        pairs = self._pairs(r)
        if not pairs:
            raise _Missing("none of its pairs is in the model")
        return [Restraint("distances", pair, None, s, target=abs(d), one_sided=d < 0) for pair in pairs]

    _dang = _dfix

    def equal_distances(self, r: RestraintInstruction) -> list[tuple[float, list[tuple[Image, Image]]]]:
        """(σ, distances to be equal) sets of a SADI or SAME instruction."""
        if r.kind == "SADI":
            pairs = [p for p in self._pairs(r) if not self.model.in_two_parts(p[0].atom, p[1].atom)]
            if not pairs:
                raise _Missing("none of its distances is in the model within one disorder component")
            return [(r.values[0], pairs)]
        s12, s13 = r.values[0], r.values[1]
        corresponding: dict[int, Image] = {}
        for ref_a, ref_b in zip(r.atoms, r.reference):
            try:
                a, b = self.image(ref_a), self.image(ref_b)
            except _Missing:
                continue
            if a.op == 0 and a.shift == (0, 0, 0):
                corresponding[a.atom] = b
        out = []
        for a, b, kind in self._pairs_12_13(list(corresponding)):
            ra, rb = corresponding[a], corresponding[b]
            if ra.atom == rb.atom:
                continue
            if self.model.in_two_parts(ra.atom, rb.atom):
                continue
            if ra.op == 0 and ra.shift == (0, 0, 0):
                ref_pair = (ra, self._closest(ra.atom, rb.atom)[1])
            else:
                ref_pair = (ra, rb)
            out.append((s12 if kind == 2 else s13, [(Image(a), self._closest(a, b)[1]), ref_pair]))
        if not out:
            raise _Missing("no bonded pair among its atoms is in the model")
        return out

    def _flat(self, r: RestraintInstruction) -> list[Restraint]:
        atoms = tuple(self._named(r))
        if len(atoms) < 4:
            raise _Missing("fewer than four of its atoms are in the model")
        # SHELXL: the first three atoms and each further one in turn span a tetrahedron
        # whose volume is restrained to zero (σ in Å³)
        return [Restraint("flat", None, None, r.values[0], atoms=atoms[:3] + (atoms[k],)) for k in range(3, len(atoms))]

    def _adp_atoms(self, r: RestraintInstruction) -> list[int]:
        return sorted({im.atom for im in self._named(r) if not is_hydrogen(self.model.elements[im.atom])})

    def _delu(self, r: RestraintInstruction, components=(0,)) -> list[Restraint]:
        s12, s13 = r.values[0], r.values[1]
        out = []
        for a, b, kind in self._pairs_12_13(self._adp_atoms(r)):
            d, image = self._closest(a, b)
            if d < COINCIDENT_DISTANCE:
                continue  # two atoms at one place: no bond direction to restrain along
            sigma = s12 if kind == 2 else s13
            if r.kind == "RIGU":
                # Thorn, Dittrich & Sheldrick (2012): the esd grows with the distance and the
                # atoms' U_eq, σ·d·√(p² + U_eq,a + U_eq,b)/p with p = 0.5 Å
                u_sum = float(self.model.u_iso[a] + self.model.u_iso[b])
                sigma *= d * np.sqrt(RIGU_P**2 + u_sum) / RIGU_P
            out.extend(Restraint("rigu", (Image(a), image), None, sigma * (RIGU_CROSS_FACTOR if c else 1.0), component=c)
                       for c in components)
        return out

    def _rigu(self, r: RestraintInstruction) -> list[Restraint]:
        return self._delu(r, components=(0, 1, 2))

    def _simu(self, r: RestraintInstruction) -> list[Restraint]:
        s, st, dmax = r.values[0], r.values[1], r.values[2]
        atoms = self._adp_atoms(r)
        out = []
        for k, a in enumerate(atoms):
            for b in atoms[k + 1:]:
                d, img = self._closest(a, b)
                if d >= dmax:
                    continue
                sigma = st if (self._terminal(a) or self._terminal(b)) else s
                out.extend(Restraint("simu", (Image(a), img), None, sigma, component=c) for c in range(6))
        return out

    def _sump(self, r: RestraintInstruction) -> list[Restraint]:
        """Σ cᵢ·fv(mᵢ) = c as a linear restraint on the occupancies of each free variable's
        lead atom (the atom whose occupancy `free_variable_value` reads it from)."""
        from .parameters import free_variable_groups

        leads = {g.free_variable: (g.atoms[0], g.occupancy_signs[0]) for g in free_variable_groups(self.model)}
        target, atoms, factors = r.values[0], [], []
        for c, m in zip(r.values[2::2], r.values[3::2]):
            k = int(round(m))
            if k not in leads:
                raise _Missing(f"free variable {k} refines no occupancy of the model")
            atom, coefficient = leads[k]
            # c·fv = (c/coefficient)·occupancy, plus c for a partner (1 - fv) lead
            atoms.append(Image(atom))
            factors.append(c / coefficient)
            if coefficient < 0:
                target -= c
        return [Restraint("sump", None, None, r.values[1], target=target, atoms=tuple(atoms), coefficients=tuple(factors))]

    def _isor(self, r: RestraintInstruction) -> list[Restraint]:
        s, st = r.values[0], r.values[1]
        out = []
        for a in self._adp_atoms(r):
            sigma = st if self._terminal(a) else s
            out.extend(Restraint("isor", (Image(a), Image(a)), None, sigma, component=c) for c in range(6))
        return out
