"""The symmetry layer: space-group operators from gemmi, vectorised over reflections and sites.

Operators act on fractional coordinates as x' = R x + t. Reflections transform as row
vectors: the reflection equivalent to h under R is h R, with F(h R) = F(h) exp(-2πi h·t).
All tables come from gemmi; nothing here is written by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..types import SpaceGroupRef, UnitCell
from .cell import orthogonalization_matrix


def _gemmi_group(space_group):
    import gemmi

    if isinstance(space_group, SpaceGroupRef):
        return space_group.gemmi()
    if isinstance(space_group, str):
        return SpaceGroupRef.from_symbol(space_group).gemmi()
    if isinstance(space_group, gemmi.SpaceGroup):
        return space_group
    raise TypeError(f"cannot interpret {space_group!r} as a space group")


@dataclass(frozen=True)
class SymmetryOps:
    """All symmetry operations of a space group (centring included), as numpy arrays.

    rotations: (n, 3, 3) int; translations: (n, 3) float, in [0, 1).
    """

    rotations: np.ndarray
    translations: np.ndarray
    n_centring: int
    centrosymmetric: bool
    hall: str
    _gemmi_ops: object

    # -- construction ------------------------------------------------------------------
    @classmethod
    def from_space_group(cls, space_group) -> "SymmetryOps":
        """From a SpaceGroupRef, a symbol or a gemmi.SpaceGroup (cached per setting)."""
        sg = _gemmi_group(space_group)
        return _ops_for_hall(sg.hall)

    @classmethod
    def from_triplets(cls, triplets: list[str]) -> "SymmetryOps":
        """From operator triplets ('x,y,z', '-x,y+1/2,-z', ...), closed into a group."""
        import gemmi

        ops = gemmi.GroupOps([gemmi.Op(t) for t in triplets])
        ops.add_missing_elements()
        return cls._from_gemmi_ops(ops, hall="")

    @classmethod
    def _from_gemmi_ops(cls, ops, hall: str) -> "SymmetryOps":
        den = 24.0
        rots, trans = [], []
        for op in ops:  # iterates all operations, centring included
            rots.append(np.array(op.rot, dtype=np.int64) // 24)
            trans.append(np.mod(np.array(op.tran, dtype=np.float64) / den, 1.0))
        return cls(
            rotations=np.array(rots, dtype=np.int64),
            translations=np.array(trans, dtype=np.float64),
            n_centring=len(ops.cen_ops),
            centrosymmetric=bool(ops.is_centrosymmetric()),
            hall=hall,
            _gemmi_ops=ops,
        )

    @property
    def n(self) -> int:
        return int(self.rotations.shape[0])

    @property
    def gemmi_ops(self):
        return self._gemmi_ops

    # -- point group -------------------------------------------------------------------
    def point_group_rotations(self) -> np.ndarray:
        """Distinct rotation parts (the point group), (m, 3, 3) int."""
        return _unique_rotations(self.rotations)

    def is_proper_subgroup_of(self, other: "SymmetryOps") -> bool:
        """True when this group's point group lies in `other`'s and `other` has more
        operations per cell (origin-independent: translations are not compared), e.g.
        Cc in C2/c, P1 in P-1, F432 in Fm-3m."""
        if self.n >= other.n or self.n_centring > other.n_centring:
            return False
        mine = {r.tobytes() for r in self.point_group_rotations()}
        theirs = {r.tobytes() for r in other.point_group_rotations()}
        return mine <= theirs

    def laue_rotations(self) -> np.ndarray:
        """The Laue group: point group plus inversion, (m, 3, 3) int."""
        pg = self.point_group_rotations()
        return _unique_rotations(np.concatenate([pg, -pg]))

    # -- reflections -------------------------------------------------------------------
    def is_absent(self, hkl: np.ndarray) -> np.ndarray:
        """Systematically absent reflections (bool, (N,))."""
        h = np.ascontiguousarray(np.asarray(hkl, dtype=np.int32).reshape(-1, 3))
        return np.asarray(self._gemmi_ops.systematic_absences(h), dtype=bool)

    def epsilon(self, hkl: np.ndarray) -> np.ndarray:
        """Epsilon factor (centring included), the multiplicity of h's expected intensity."""
        h = np.ascontiguousarray(np.asarray(hkl, dtype=np.int32).reshape(-1, 3))
        return np.asarray(self._gemmi_ops.epsilon_factor_array(h), dtype=np.int64)

    def is_centric(self, hkl: np.ndarray) -> np.ndarray:
        """Centric reflections (some operation maps h onto -h)."""
        h = np.ascontiguousarray(np.asarray(hkl, dtype=np.int32).reshape(-1, 3))
        return np.asarray(self._gemmi_ops.centric_flag_array(h), dtype=bool)

    def equivalents(self, hkl: np.ndarray, friedel: bool = True) -> np.ndarray:
        """All symmetry equivalents of each reflection, (N, m, 3) (with duplicates)."""
        rots = self.laue_rotations() if friedel else self.point_group_rotations()
        return np.einsum("ni,mij->nmj", np.asarray(hkl, dtype=np.int64), rots)

    def phase_shifts(self, hkl: np.ndarray) -> np.ndarray:
        """h·t for every operation: (N, n) in cycles, for mapping phases of equivalents."""
        return np.asarray(hkl, dtype=np.float64) @ self.translations.T

    def find_operation(self, rotation: np.ndarray, translation: np.ndarray) -> tuple[int, tuple[int, int, int]] | None:
        """(index k, lattice shift) with rotation = R[k] and translation = t[k] + shift, or
        None when (rotation, translation) is not an operation of the group."""
        r = np.rint(np.asarray(rotation, dtype=np.float64)).astype(np.int64)
        t = np.asarray(translation, dtype=np.float64)
        for k in range(self.n):
            if np.array_equal(self.rotations[k], r):
                d = t - self.translations[k]
                if np.allclose(d, np.round(d), atol=1e-6):
                    return k, tuple(int(v) for v in np.round(d))
        return None

    # -- sites -------------------------------------------------------------------------
    def images(self, xyz: np.ndarray) -> np.ndarray:
        """Images of fractional positions under every operation: (..., n, 3)."""
        x = np.asarray(xyz, dtype=np.float64)
        return np.einsum("nij,...j->...ni", self.rotations, x) + self.translations

    def image_distances(self, cell: UnitCell, xyz, target) -> np.ndarray:
        """Distance (Å) from fractional `xyz` to the nearest lattice translate of each
        operation's image of `target`: (n_ops,) for one target, (k, n_ops) for (k, 3)."""
        d = self.images(np.asarray(target, dtype=np.float64)) - np.asarray(xyz, dtype=np.float64).reshape(3)
        d -= np.round(d)
        return np.linalg.norm(d @ orthogonalization_matrix(cell).T, axis=-1)

    def nearest_image_distance(self, cell: UnitCell, xyz, target) -> float:
        """Shortest distance (Å) from fractional `xyz` to any symmetry image of `target`
        (one position, or the nearest of several, (k, 3))."""
        return float(np.min(self.image_distances(cell, xyz, target)))

    def site_stabilizer(self, cell: UnitCell, xyz, tol: float = 0.05) -> np.ndarray:
        """Indices of operations mapping the site onto itself within `tol` Å (lattice shifts allowed)."""
        return np.nonzero(self.image_distances(cell, xyz, xyz) < tol)[0]

    def site_symmetry_order(self, cell: UnitCell, xyz, tol: float = 0.05) -> np.ndarray:
        """Order of the site-symmetry group: operations (centring included) fixing each site.

        1 for a general position. `xyz` is (3,) or
        (N, 3); returns an int or an (N,) int array.
        """
        x = np.asarray(xyz, dtype=np.float64)
        single = x.ndim == 1
        x = x.reshape(-1, 3)
        d = self.images(x) - x[:, None, :]
        d -= np.round(d)
        dist = np.linalg.norm(d @ orthogonalization_matrix(cell).T, axis=-1)
        order = np.maximum((dist < tol).sum(axis=1), 1)
        return int(order[0]) if single else order

    def site_orders(self, cell: UnitCell, xyz, parts, tol: float = 0.05) -> np.ndarray:
        """`site_symmetry_order` of (N, 3) sites, except that an atom of a negative PART has
        order 1 wherever it lies (SHELXL: its symmetry copies are the disorder, each at its
        full sof). (N,) int."""
        x = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
        if not len(x):
            return np.zeros(0, dtype=np.int64)
        order = np.atleast_1d(self.site_symmetry_order(cell, x, tol)).astype(np.int64)
        return np.where(np.asarray(parts, dtype=np.int64).reshape(-1) < 0, 1, order)

    def structure_site_orders(self, structure, tol: float = 0.05) -> np.ndarray:
        """Site-symmetry order of each site of a Structure: the order the site states
        (`Site.site_symmetry_order`, read from `_atom_site_site_symmetry_order` or written by
        the refiner), else `site_orders` detected within `tol` Å. (N,) int. The one rule the
        structure factors, the cell contents and the written files all follow."""
        sites = structure.sites
        xyz = np.array([s.xyz for s in sites], dtype=np.float64).reshape(-1, 3)
        detected = self.site_orders(structure.cell, xyz, [s.part for s in sites], tol)
        return np.array([s.site_symmetry_order or int(d) for s, d in zip(sites, detected)], dtype=np.int64)

    def site_constraint(self, cell: UnitCell, xyz, tol: float = 0.05, part: int = 0) -> "SiteConstraint":
        """`special_position`, except for an atom of a negative PART, which is a general
        position wherever it lies (SHELXL switches special-position constraints off for
        PART -n: its symmetry copies are the disorder)."""
        if part < 0:
            return SiteConstraint.general(xyz)
        return self.special_position(cell, xyz, tol)

    def special_position(self, cell: UnitCell, xyz, tol: float = 0.05) -> "SiteConstraint":
        """Constraints a site on a special position imposes on xyz and on anisotropic U."""
        x = np.asarray(xyz, dtype=np.float64).reshape(3)
        stab = self.site_stabilizer(cell, x, tol)
        rots = self.rotations[stab].astype(np.float64)
        images = self.images(x)[stab]
        images -= np.round(images - x)  # the lattice image closest to x
        snapped = images.mean(axis=0)
        proj = rots.mean(axis=0)  # projector onto the invariant subspace
        pos_basis = _column_basis(proj)
        # U* -> R U* R^T averaged over the stabilizer, acting on the 6 components
        u_proj = np.zeros((6, 6))
        for r in rots:
            u_proj += u_transform_matrix(r)
        u_proj /= len(rots)
        u_basis = _column_basis(u_proj)
        return SiteConstraint(
            order=max(len(stab), 1),
            xyz=snapped,
            position_basis=pos_basis,
            ustar_basis=u_basis,
        )


@dataclass(frozen=True)
class SiteConstraint:
    """Site-symmetry constraints of one site.

    `xyz` is the position moved exactly onto the special position; free coordinate shifts
    are `position_basis @ p` ((3, k) basis, k = 0..3); free U* components (CIF order
    11, 22, 33, 12, 13, 23, in U* i.e. reciprocal-axis-scaled units) are `ustar_basis @ q`
    ((6, m) basis). For a general position both bases are the identity.
    """

    order: int
    xyz: np.ndarray
    position_basis: np.ndarray
    ustar_basis: np.ndarray

    @classmethod
    def general(cls, xyz) -> "SiteConstraint":
        """No constraint: the site is treated as a general position wherever it lies."""
        return cls(order=1, xyz=np.asarray(xyz, dtype=np.float64).reshape(3).copy(),
                   position_basis=np.eye(3), ustar_basis=np.eye(6))


def _column_basis(proj: np.ndarray, tol: float = 1e-6) -> np.ndarray:
    """An orthonormal basis of the range of a (projector-like) matrix."""
    u, s, _ = np.linalg.svd(proj)
    return u[:, s > tol]


def u_transform_matrix(r: np.ndarray) -> np.ndarray:
    """6x6 matrix of U -> R U R^T on (11, 22, 33, 12, 13, 23) components (any 3x3 R: a
    rotation, or the orthogonalisation matrix times one to go to Cartesian U)."""
    idx = [(0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2)]
    t = np.zeros((6, 6))
    for a, (i, j) in enumerate(idx):
        for b, (k, l) in enumerate(idx):
            v = r[i, k] * r[j, l]
            if k != l:
                v += r[i, l] * r[j, k]
            t[a, b] = v
    return t


def _unique_rotations(rots: np.ndarray) -> np.ndarray:
    flat = rots.reshape(len(rots), 9)
    _, idx = np.unique(flat, axis=0, return_index=True)
    return rots[np.sort(idx)]


@lru_cache(maxsize=512)
def _ops_for_hall(hall: str) -> SymmetryOps:
    import gemmi

    ops = gemmi.symops_from_hall(hall)
    return SymmetryOps._from_gemmi_ops(ops, hall=hall)


# --------------------------------------------------------------------------------------
# Miller-index utilities
# --------------------------------------------------------------------------------------

_KEY_OFFSET = 512
_KEY_BASE = 1024


def hkl_keys(hkl: np.ndarray) -> np.ndarray:
    """A unique int64 key per Miller index (|h|, |k|, |l| < 512)."""
    h = np.asarray(hkl, dtype=np.int64) + _KEY_OFFSET
    return (h[..., 0] * _KEY_BASE + h[..., 1]) * _KEY_BASE + h[..., 2]


def keys_to_hkl(keys: np.ndarray) -> np.ndarray:
    """Inverse of `hkl_keys`."""
    k = np.asarray(keys, dtype=np.int64)
    l = k % _KEY_BASE
    k2 = k // _KEY_BASE
    return np.stack([k2 // _KEY_BASE, k2 % _KEY_BASE, l], axis=-1) - _KEY_OFFSET


#: hkl_keys is affine in h: key(h) = h·_KEY_WEIGHTS + _KEY_ORIGIN
_KEY_WEIGHTS = np.array([float(_KEY_BASE * _KEY_BASE), float(_KEY_BASE), 1.0])
_KEY_ORIGIN = (_KEY_OFFSET * _KEY_BASE + _KEY_OFFSET) * _KEY_BASE + _KEY_OFFSET


def canonical_keys(hkl: np.ndarray, rotations: np.ndarray, friedel: bool = True) -> np.ndarray:
    """Key of the canonical representative of each reflection's equivalence class, (N,).

    The class is {h R : R in rotations} (and their Friedel mates when `friedel`); the
    representative is the member with the largest `hkl_keys` value. Because the key is
    affine in h, key(±hR) = ±h·(R w) + c, so one matrix product finds it without
    materialising the equivalents (exact in float64 for |h| < 512).
    """
    h = np.asarray(hkl, dtype=np.float64).reshape(-1, 3)
    if not len(h):
        return np.zeros(0, dtype=np.int64)
    proj = np.asarray(rotations, dtype=np.float64).reshape(-1, 3, 3) @ _KEY_WEIGHTS  # (m, 3)
    values = h @ proj.T
    best = np.abs(values).max(axis=1) if friedel else values.max(axis=1)
    return np.rint(best).astype(np.int64) + _KEY_ORIGIN


def canonical_hkl(hkl: np.ndarray, rotations: np.ndarray, friedel: bool = True) -> np.ndarray:
    """The canonical representative of each reflection's equivalence class, (N, 3)."""
    return keys_to_hkl(canonical_keys(hkl, rotations, friedel))
