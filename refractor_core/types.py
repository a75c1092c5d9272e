"""Typed models passed between pipeline stages.

Every arrow in the pipeline carries one of these pydantic models. Arrays are numpy arrays
validated for shape and dtype on construction; in JSON they serialise as nested lists.
This module imports pydantic and numpy only (no torch, no gemmi at import time) so that
plugin registration modules and `refractor --help` stay fast.

Conventions
-----------
- Fractional coordinates; ADPs as U (Å²). Anisotropic U is stored in the CIF/gemmi order
  (U11, U22, U33, U12, U13, U23); SHELX files use (U11, U22, U33, U23, U13, U12) and the
  readers/writers convert.
- `Site.occupancy` is the chemical occupancy (CIF convention: 1.0 for a fully occupied atom
  on a special position). SHELX site-occupation factors that include the site-symmetry
  multiplicity are converted by the SHELX reader/writer.
- Intensities are always stored as F² with σ(F²); data read as F are converted.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
    model_validator,
)

# --------------------------------------------------------------------------------------
# validated numpy arrays
# --------------------------------------------------------------------------------------


def _as_array(dtype: type, ndim: int, last: int | None = None):
    def validate(value: Any) -> np.ndarray:
        try:
            arr = np.asarray(value, dtype=dtype)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"cannot convert to a {np.dtype(dtype).name} array: {exc}") from exc
        if arr.ndim != ndim:
            raise ValueError(f"expected a {ndim}-d array, got shape {arr.shape}")
        if last is not None and arr.shape[-1] != last:
            raise ValueError(f"expected last dimension {last}, got shape {arr.shape}")
        return arr

    return validate


def _to_list(arr: np.ndarray) -> list:
    return arr.tolist()


_ser = PlainSerializer(_to_list, when_used="json")

IntArrayN3 = Annotated[np.ndarray, BeforeValidator(_as_array(np.int32, 2, 3)), _ser]
FloatArrayN = Annotated[np.ndarray, BeforeValidator(_as_array(np.float64, 1)), _ser]
IntArrayN = Annotated[np.ndarray, BeforeValidator(_as_array(np.int32, 1)), _ser]
Float32ArrayN = Annotated[np.ndarray, BeforeValidator(_as_array(np.float32, 1)), _ser]

Vec3 = tuple[float, float, float]
Sym6 = tuple[float, float, float, float, float, float]


class _Model(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid", validate_assignment=False)


# --------------------------------------------------------------------------------------
# cell and symmetry references
# --------------------------------------------------------------------------------------


#: smallest plausible unit-cell volume (Å³); the smallest elemental cells are about 10 Å³
MIN_CELL_VOLUME = 5.0
#: fewest atoms of a rigid group (`Site.rigid_group`) refined as one body: fewer cannot
#: define its rotations, and are refined as free atoms
MIN_RIGID_GROUP_ATOMS = 3


class UnitCell(_Model):
    """Unit cell: lengths in Å, angles in degrees, optional standard uncertainties."""

    a: float
    b: float
    c: float
    alpha: float = 90.0
    beta: float = 90.0
    gamma: float = 90.0
    su: Sym6 | None = None

    @model_validator(mode="after")
    def _check_geometry(self) -> "UnitCell":
        for name in ("a", "b", "c"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0.0):
                raise ValueError(f"cell length {name} must be a positive number, got {v}")
            if v > 1000.0:
                raise ValueError(f"cell length {name} = {v} Å is not a small-molecule cell")
        for name in ("alpha", "beta", "gamma"):
            v = getattr(self, name)
            if not (math.isfinite(v) and 0.0 < v < 180.0):
                raise ValueError(f"cell angle {name} must lie strictly between 0 and 180°, got {v}")
        if self.volume_squared_factor() <= 1e-8:
            raise ValueError(
                "impossible cell: these angles do not describe a parallelepiped "
                f"(alpha={self.alpha}, beta={self.beta}, gamma={self.gamma})"
            )
        if self.volume < MIN_CELL_VOLUME:
            raise ValueError(
                f"impossible cell: volume {self.volume:.3g} Å³ is below {MIN_CELL_VOLUME} Å³ "
                "(no crystal has a smaller cell)"
            )
        return self

    def volume_squared_factor(self) -> float:
        ca, cb, cg = (math.cos(math.radians(x)) for x in (self.alpha, self.beta, self.gamma))
        return 1.0 - ca * ca - cb * cb - cg * cg + 2.0 * ca * cb * cg

    @property
    def volume(self) -> float:
        """Cell volume in Å³."""
        return self.a * self.b * self.c * math.sqrt(self.volume_squared_factor())

    @property
    def parameters(self) -> tuple[float, float, float, float, float, float]:
        return (self.a, self.b, self.c, self.alpha, self.beta, self.gamma)

    def gemmi(self):
        """This cell as a `gemmi.UnitCell` (imports gemmi lazily)."""
        import gemmi

        return gemmi.UnitCell(*self.parameters)


class SpaceGroupRef(_Model):
    """A space group in a definite setting, identified through gemmi.

    `symbol` is the Hermann-Mauguin symbol as gemmi writes it (e.g. "P 1 21/c 1"); `hall`
    fixes the setting unambiguously.
    """

    symbol: str
    number: int = Field(ge=1, le=230)
    hall: str

    @classmethod
    def from_symbol(cls, symbol: str) -> "SpaceGroupRef":
        """Look up a space group by Hermann-Mauguin symbol, Hall symbol or number."""
        import gemmi

        text = str(symbol).strip()
        sg = None
        try:
            sg = gemmi.SpaceGroup(text)
        except (ValueError, RuntimeError):
            try:
                sg = gemmi.find_spacegroup_by_ops(gemmi.symops_from_hall(text))
            except (ValueError, RuntimeError):
                sg = None
        if sg is None:
            raise ValueError(f"unknown space group {symbol!r}")
        return cls.from_gemmi(sg)

    @classmethod
    def from_gemmi(cls, sg) -> "SpaceGroupRef":
        return cls(symbol=sg.xhm(), number=sg.number, hall=sg.hall)

    @classmethod
    def from_operations(cls, triplets: list[str]) -> "SpaceGroupRef":
        """Identify the space group generated by symmetry operator triplets ('x,y,z', ...)."""
        import gemmi

        ops = gemmi.GroupOps([gemmi.Op(t) for t in triplets])
        sg = gemmi.find_spacegroup_by_ops(ops)
        if sg is None:
            raise ValueError("these symmetry operators do not form a known space-group setting")
        return cls.from_gemmi(sg)

    def gemmi(self):
        """The `gemmi.SpaceGroup` for this setting."""
        import gemmi

        return gemmi.find_spacegroup_by_ops(gemmi.symops_from_hall(self.hall))

    @property
    def is_centrosymmetric(self) -> bool:
        return bool(self.gemmi().operations().is_centrosymmetric())

    @property
    def crystal_system(self) -> str:
        return self.gemmi().crystal_system_str()


# --------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------


class AtomRef(_Model):
    """An atom named by a restraint: its label in the model and, for a symmetry
    equivalent (SHELX EQIV), the operator as an x,y,z triplet."""

    label: str
    symop: str | None = None


class RestraintInstruction(_Model):
    """One geometric or ADP restraint (or an EADP/EXYZ constraint) of a user's model, with
    SHELXL's meaning (SHELX names and numbers, defaults filled in).

    `kind` is the SHELXL keyword (DFIX, DANG, SADI, SAME, FLAT, CHIV, DELU, RIGU, SIMU,
    ISOR, SUMP, EADP, EXYZ); `values` its numbers (DFIX/DANG: d, s; SADI: s; SAME: s1, s2;
    FLAT: s; CHIV: V, s; DELU/RIGU: s1, s2; SIMU: s, st, dmax; ISOR: s, st; SUMP: c, s,
    then pairs of a factor and a free-variable number, no atoms); `atoms` the
    atoms it names, residues and ranges resolved; for SAME, `reference` holds the atoms
    the named ones correspond to, in order. `text` is the instruction as written (for the
    .res writer) and `line` where it was read.
    """

    kind: str
    values: list[float] = Field(default_factory=list)
    atoms: list[AtomRef] = Field(default_factory=list)
    reference: list[AtomRef] = Field(default_factory=list)
    text: str = ""
    line: int | None = None


class RefinementInstructions(_Model):
    """Instructions of a published refinement that change which data count (SHELX names),
    and the restraints and constraints it put on the model.

    Read from a .res/.ins (or a CIF's embedded `_shelx_res_file`); honoured when computing
    R factors of a published model and by the refiner.
    """

    omit_hkl: list[tuple[int, int, int]] = Field(default_factory=list)
    omit_2theta_max: float | None = None  # OMIT s 2theta: reflections beyond this 2θ dropped
    omit_sigma: float | None = None  # OMIT s: reflections with I < s·σ(I) treated as unobserved
    shel: tuple[float, float] | None = None  # (d_max, d_min) in Å
    twin_matrix: tuple[float, ...] | None = None  # 9 numbers, row major
    twin_n: int | None = None
    basf: list[float] = Field(default_factory=list)
    exti: float | None = None
    wght: tuple[float, ...] | None = None  # (a, b, ...) SHELXL weighting
    fvar: list[float] = Field(default_factory=list)
    hklf: int = 4
    hklf_scale: float = 1.0  # HKLF s: intensities and sigmas multiplied by s on reading
    hklf_matrix: tuple[float, ...] | None = None  # HKLF matrix: 9 numbers, indices transformed on reading
    merg: int | None = None
    acta: bool = False
    restraints: list[RestraintInstruction] = Field(default_factory=list)
    #: the model's H atoms by parent atom (label): the SHELXL AFIX code of its riding H
    #: group (43 aromatic CH, 23 CH2, 137 rotating CH3 ...), 0 when its H were refined freely;
    #: atoms not listed carry no H. Empty: the model says nothing about its H atoms.
    hfix: dict[str, int] = Field(default_factory=dict)
    #: BIND: pairs of atom labels, or of PART numbers ("1", "2"), bonded across disorder
    #: components (atoms of different PARTs are otherwise never bonded)
    bind: list[tuple[str, str]] = Field(default_factory=list)
    #: FREE: pairs of atom labels never bonded, whatever their distance (SHELXL's way to
    #: take a bond out of the connectivity)
    free: list[tuple[str, str]] = Field(default_factory=list)
    #: ANIS: labels of the atoms the model asks to refine anisotropically
    anis: list[str] = Field(default_factory=list)
    #: the probe the data were measured with: "x-ray" unless a .ins says NEUT or a CIF's
    #: _diffrn_radiation_probe says otherwise (only X-ray data can be evaluated here)
    radiation: str = "x-ray"


class ReflectionData(_Model):
    """Measured reflections (F² with σ) and what is known about the crystal.

    `hkl` is (N, 3) int32; `intensity` and `sigma` are (N,) float64 (F² and σ(F²)).
    `batch` holds the HKLF 4 batch number or the HKLF 5 twin component (negative for all
    but the last member of an overlap group), else None.
    """

    hkl: IntArrayN3
    intensity: FloatArrayN
    sigma: FloatArrayN
    batch: IntArrayN | None = None
    cell: UnitCell | None = None
    wavelength: float | None = None
    formula: str | None = None
    z: float | None = None
    space_group_hint: SpaceGroupRef | None = None
    instructions: RefinementInstructions | None = None
    hklf: Literal[4, 5] = 4
    source: str | None = None
    source_kind: Literal["F2", "F"] = "F2"
    n_skipped: int = 0
    notes: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> "ReflectionData":
        n = self.hkl.shape[0]
        if self.intensity.shape != (n,) or self.sigma.shape != (n,):
            raise ValueError(
                f"hkl, intensity and sigma lengths differ: {n}, {self.intensity.shape[0]}, "
                f"{self.sigma.shape[0]}"
            )
        if self.batch is not None and self.batch.shape != (n,):
            raise ValueError("batch length differs from the number of reflections")
        if not np.all(np.isfinite(self.intensity)):
            raise ValueError("intensities contain NaN or infinite values")
        if not np.all(np.isfinite(self.sigma)) or np.any(self.sigma <= 0):
            raise ValueError("sigmas must be finite and positive")
        if self.wavelength is not None and not (0.05 < self.wavelength < 5.0):
            raise ValueError(f"wavelength {self.wavelength} Å is outside 0.05-5 Å")
        if self.z is not None and not (0 < self.z <= 1000):
            raise ValueError(f"Z = {self.z} is not a plausible number of formula units")
        return self

    @property
    def n(self) -> int:
        return int(self.hkl.shape[0])

    def subset(self, mask: np.ndarray) -> "ReflectionData":
        """A copy holding only the reflections selected by a boolean mask or index array."""
        return self.model_copy(
            update={
                "hkl": self.hkl[mask],
                "intensity": self.intensity[mask],
                "sigma": self.sigma[mask],
                "batch": None if self.batch is None else self.batch[mask],
            }
        )


# --------------------------------------------------------------------------------------
# structures
# --------------------------------------------------------------------------------------


class Site(_Model):
    """One atom of the asymmetric unit."""

    label: str
    element: str
    xyz: Vec3
    occupancy: float = 1.0
    u_iso: float | None = 0.05
    u_aniso: Sym6 | None = None  # U11, U22, U33, U12, U13, U23
    calc: bool = False  # riding / geometrically placed (CIF _atom_site_calc_flag calc)
    riding_on: str | None = None  # parent atom label for riding H
    #: a riding H whose U_iso is refined on its own (SHELXL AFIX m with a positive U), not
    #: a multiple of its parent's U_eq
    own_u: bool = False
    part: int = 0
    site_symmetry_order: int | None = None  # from CIF; None = detect with a tolerance
    afix: int = 0
    #: SHELXL free variable the site occupation factor refers to, as (k, p) from its code
    #: 10k + p (k >= 2): sof = p·fv_k for p > 0, p·(fv_k - 1) for p < 0 (the partner
    #: component); the refiner refines fv_k as SHELXL does. None: a fixed occupancy.
    occupancy_variable: tuple[int, float] | None = None
    #: SHELXL free variable an isotropic U refers to, as (k, p) from its code 10k + p
    #: (k >= 2): U_iso = p·fv_k (p·(fv_k - 1) for p < 0). Riding H with one (k, p) share one
    #: refined U_iso, as in SHELXL; the .res writer keeps the code. None: no such code.
    u_variable: tuple[int, float] | None = None
    #: coordinates held fixed (not refined): SHELXL's x + 10 coding, per x, y, z
    fixed_xyz: tuple[bool, bool, bool] = (False, False, False)
    #: U held fixed (not refined): SHELXL's U + 10 coding; one flag for u_iso, or six in
    #: u_aniso's order for the components of an anisotropic U; () when nothing is fixed
    fixed_u: tuple[bool, ...] = ()
    #: a rigid group (SHELXL AFIX n = 6) the site belongs to, refined as one body (three
    #: translations, three rotations) in the geometry given when it has at least
    #: MIN_RIGID_GROUP_ATOMS sites; None for a free site
    rigid_group: int | None = None
    xyz_su: Vec3 | None = None
    occupancy_su: float | None = None
    #: su of U_iso, or of U_eq for an anisotropic site (from the full covariance of its U_ij)
    u_iso_su: float | None = None
    u_aniso_su: Sym6 | None = None

    @field_validator("xyz")
    @classmethod
    def _finite_xyz(cls, v: Vec3) -> Vec3:
        if not all(math.isfinite(x) and abs(x) <= 1000.0 for x in v):
            raise ValueError(f"fractional coordinates {v} are not finite numbers of plausible size")
        return v

    @model_validator(mode="after")
    def _check_adp(self) -> "Site":
        if not math.isfinite(self.occupancy) or self.occupancy < 0:
            raise ValueError(f"site {self.label}: occupancy must be >= 0, got {self.occupancy}")
        if self.u_iso is None and self.u_aniso is None:
            raise ValueError(f"site {self.label}: needs u_iso or u_aniso")
        if len(self.fixed_u) not in (0, 1, 6):
            raise ValueError(f"site {self.label}: fixed_u takes 1 flag (U_iso) or 6 (U_aniso), got {len(self.fixed_u)}")
        return self

    @property
    def fixed_u_components(self) -> tuple[bool, ...]:
        """`fixed_u` as six flags in u_aniso's order (a fixed U_iso fixes all six)."""
        if len(self.fixed_u) == 1:
            return self.fixed_u * 6
        return self.fixed_u or (False,) * 6

    @property
    def adp_type(self) -> Literal["Uiso", "Uani"]:
        return "Uani" if self.u_aniso is not None else "Uiso"


def per_site_unrounded(per_site: float, order: int, decimals: int, digits: int) -> float:
    """per_site·order, the rounding of a SHELXL sof written to `decimals` decimals on a site
    of that symmetry order undone: to `digits` decimals where it lies within that rounding
    (1/48 written 0.02083 on a site of order 48 gives 1, not 0.99984)."""
    value = per_site * order
    nice = round(value, digits)
    return nice if abs(value - nice) <= order * 0.5 * 10.0 ** (-decimals) + 1e-12 else value


def free_variable_from_share(share: float, p: float) -> float:
    """The SHELXL free variable fv a share coded on it implies (`Site.occupancy_variable`):
    share = p·fv for p > 0, p·(fv - 1) for p < 0 (the partner component)."""
    return share / p if p > 0 else 1.0 + share / p


class Structure(_Model):
    """A crystal structure: cell, space group and the asymmetric-unit sites."""

    cell: UnitCell
    space_group: SpaceGroupRef
    sites: list[Site]
    name: str = "refractor"
    wavelength: float | None = None
    meta: dict[str, Any] = Field(default_factory=dict)

    @property
    def n_sites(self) -> int:
        return len(self.sites)

    def non_hydrogen(self) -> list[Site]:
        return [s for s in self.sites if s.element.upper() not in ("H", "D")]


# --------------------------------------------------------------------------------------
# pipeline stage outputs
# --------------------------------------------------------------------------------------


class Embedding(_Model):
    """An encoder's output: a fixed-length vector plus auxiliary predictions."""

    vector: Float32ArrayN
    aux: dict[str, Any] = Field(default_factory=dict)
    encoder: str = ""


class SpaceGroupHypothesis(_Model):
    """One proposed space group with its probability and the evidence behind it."""

    space_group: SpaceGroupRef
    probability: float = Field(ge=0.0, le=1.0)
    evidence: dict[str, Any] = Field(default_factory=dict)
    source: str = ""


#: Candidate.generator of a model a user supplied (`refractor refine --model`): not generated
USER_MODEL = "user-model"


class Candidate(_Model):
    """A structure proposed by a generator for one space-group hypothesis."""

    structure: Structure
    generator: str = ""
    hypothesis: SpaceGroupHypothesis | None = None
    seed: int | None = None
    score: float | None = None  # the generator's own figure of merit, if any
    meta: dict[str, Any] = Field(default_factory=dict)


class RefinedCandidate(_Model):
    """A candidate after refinement against the measured data, with its figures of merit."""

    structure: Structure
    candidate: Candidate | None = None
    r1: float
    wr2: float
    goof: float
    n_reflections: int
    n_gt: int
    n_parameters: int
    cycles: int = 0
    max_shift_su: float | None = None
    converged: bool = False
    scale: float = 1.0
    extinction: float | None = None
    flack: float | None = None
    flack_su: float | None = None
    weight_a: float = 0.0
    weight_b: float = 0.0
    diff_peak: float | None = None
    diff_hole: float | None = None
    log: list[str] = Field(default_factory=list)
    score: float | None = None
    score_details: dict[str, Any] = Field(default_factory=dict)
    meta: dict[str, Any] = Field(default_factory=dict)


# --------------------------------------------------------------------------------------
# run configuration and provenance
# --------------------------------------------------------------------------------------

STAGES = ("reader", "encoder", "classifier", "generator", "refiner", "ranker")
Stage = Literal["reader", "encoder", "classifier", "generator", "refiner", "ranker"]


class RunConfig(_Model):
    """Everything that determines a run: components by stage, their options, seed, device."""

    components: dict[str, str | None] = Field(
        default_factory=lambda: {
            "reader": None,  # None: sniffed from the file
            "encoder": None,  # None: no encoder
            "classifier": "absences",
            "generator": "charge-flip",
            "refiner": "lsq",
            "ranker": "composite",
        }
    )
    options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    seed: int | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    offline: bool = False
    max_hypotheses: int = Field(default=3, ge=1)
    candidates_per_hypothesis: int = Field(default=4, ge=1)
    #: screen every candidate first (the refiner's quick refinement) and refine fully only
    #: the best `refine_top` (one per space group first, none far worse than the best);
    #: False: refine every candidate fully
    screen: bool = True
    refine_top: int = Field(default=3, ge=1)
    keep: int = Field(default=1, ge=1)

    @field_validator("components")
    @classmethod
    def _known_stages(cls, v: dict[str, str | None]) -> dict[str, str | None]:
        unknown = set(v) - set(STAGES)
        if unknown:
            raise ValueError(f"unknown stage(s) {sorted(unknown)}; stages are {list(STAGES)}")
        return v


class ComponentRecord(_Model):
    kind: str
    name: str
    distribution: str
    version: str
    config: dict[str, Any] = Field(default_factory=dict)


class WeightsRecord(_Model):
    component: str
    repo_id: str | None = None
    revision: str | None = None
    filename: str
    sha256: str
    source: Literal["local-path", "hf-cache", "hub", "bundled"]
    path: str


class InputRecord(_Model):
    path: str
    sha256: str


class RunManifest(_Model):
    """Provenance of one run, written as manifest.json beside its outputs."""

    refractor_version: str
    command: list[str] = Field(default_factory=list)
    config: RunConfig
    seed: int
    device: str
    components: list[ComponentRecord] = Field(default_factory=list)
    weights: list[WeightsRecord] = Field(default_factory=list)
    inputs: list[InputRecord] = Field(default_factory=list)
    versions: dict[str, str] = Field(default_factory=dict)
    started: str
    finished: str | None = None
    status: Literal["running", "ok", "failed"] = "running"
    error: str | None = None
