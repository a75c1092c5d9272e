"""Twin laws the lattice allows and the refinement was not given: a check after refinement.

A crystal whose lattice has more symmetry than its structure (merohedry: a trigonal
structure on a hexagonal lattice; pseudo-merohedry: a monoclinic cell with β within a few
tenths of a degree of 90°) can grow as twin domains related by a rotation of the lattice
that is not in the point group. Their reflections overlap exactly or nearly, so the data are
Fo²(h) ≈ k [(1 - α) Fc²(h) + α Fc²(M h)] with M the law acting on the indices. A model
refined without the twin fits such data well enough to look finished; only the twin
fraction tells.

`twin_law_candidates` lists one rotation per coset of the lattice's metric symmetry modulo
the Laue group; `twin_check` fits α for each with the refined model held (as for the Flack
parameter, `absolute.flack_estimate`) and reports the laws whose fraction is significant,
with the SHELXL TWIN line that refines it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from refractor_core.crystal.lattice import metric_symmetry
from refractor_core.crystal.symmetry import SymmetryOps

from .model import WorkingModel

#: metric tolerance for a twin law (max normalised change of the metric tensor): a cell
#: angle within about half a degree of the higher lattice's (sin 0.6° ≈ 0.01, the change of
#: an off-diagonal term being twice that)
TWIN_METRIC_TOLERANCE = 0.02
#: a twin fraction reported must exceed this and this many su
MIN_FRACTION = 0.02
SIGNIFICANCE = 5.0


@dataclass(frozen=True)
class TwinLawFit:
    """A twin law (acting on the indices, h' = M h), its fraction fitted with the model held,
    the su of that fraction, and the weighted R (wR2 with the weights of the refinement)
    without and with it."""

    matrix: np.ndarray
    fraction: float
    fraction_su: float
    wr2_without: float
    wr2_with: float

    def shelxl(self) -> str:
        """The SHELXL instructions that refine this twin (quoted, as a pair)."""
        m = " ".join(str(int(v)) for v in np.rint(self.matrix).reshape(-1))
        return f"TWIN {m}' and 'BASF {self.fraction:.2f}"


def twin_law_candidates(cell, symmetry: SymmetryOps, tol: float = TWIN_METRIC_TOLERANCE) -> list[np.ndarray]:
    """Index transformations M (h' = M h) of the lattice rotations not in the Laue group,
    one per coset (a two-fold one where the coset has one)."""
    laue = {r.tobytes() for p in symmetry.point_group_rotations().astype(np.int64) for r in (p, -p)}
    laue_ops = [np.frombuffer(k, dtype=np.int64).reshape(3, 3) for k in laue]
    seen: set[bytes] = set()
    out = []
    lattice = [np.asarray(r, dtype=np.int64) for r in metric_symmetry(cell, tol)]
    lattice.sort(key=lambda r: not np.array_equal(r @ r, np.eye(3, dtype=np.int64)))  # two-folds first
    for r in lattice:
        if r.tobytes() in laue or r.tobytes() in seen:
            continue
        seen.update((r @ p).tobytes() for p in laue_ops)
        # a rotation x' = R x of the lattice maps the indices by (R⁻¹)ᵀ
        out.append(np.rint(np.linalg.inv(r.astype(np.float64)).T).astype(np.int64))
    return out


def twin_fraction(refinement, model: WorkingModel, a: np.ndarray, b: np.ndarray,
                  w: np.ndarray | None = None) -> tuple[float, float, float, float] | None:
    """(α, its su, Σw(Fo² - M)² with it, the same without it) of Fo² ≈ k y [(1 - α) a + α b],
    the model held: `a` the Fc² of each reflection, `b` of its partner in the other domain;
    `w` the refinement's weights at `model` (computed if not given)."""
    calc = refinement.calc
    k = model.scale
    y = calc.extinction(model, a)
    d = k * y * (b - a)
    r0 = refinement.fo2 - k * y * a
    w = refinement.driver.weights(model) if w is None else w
    den = float(np.sum(w * d * d))
    if den <= 0:
        return None
    x = float(np.sum(w * d * r0) / den)
    resid = r0 - x * d
    chi2 = float(np.sum(w * resid**2))
    s2 = chi2 / max(len(r0) - 1, 1)
    return x, math.sqrt(s2 / den), chi2, float(np.sum(w * r0**2))


def twin_check(refinement, model: WorkingModel) -> list[TwinLawFit]:
    """The twin laws the lattice allows whose fraction, fitted with `model` held, is
    significant (above MIN_FRACTION and SIGNIFICANCE su), largest first."""
    calc = refinement.calc
    w = refinement.driver.weights(model)
    total = float(np.sum(w * refinement.fo2**2))
    found = []
    for law in twin_law_candidates(calc.cell, calc.symmetry):
        pair = calc.with_twin_ops([np.eye(3), law])
        fc2 = pair.fc2_components(model)
        a = fc2[0]
        b = np.where(pair.twin_indices.ok[1], fc2[1], a)  # a partner off the lattice: no overlap
        fit = twin_fraction(refinement, model, a, b, w)
        if fit is None:
            continue
        x, su, chi2, without = fit
        if x > MIN_FRACTION and x > SIGNIFICANCE * su:
            found.append(TwinLawFit(law, x, su, math.sqrt(without / total), math.sqrt(chi2 / total)))
    return sorted(found, key=lambda f: -f.fraction)
