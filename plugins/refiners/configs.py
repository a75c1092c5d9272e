"""Configuration of the built-in refiners (light: pydantic and refractor_core only).

Imported by the registration module, so it must not import torch, numpy-heavy code or
the refiner implementation.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from refractor_core.interfaces import ComponentConfig

Auto = Literal["auto"]


class LsqConfig(ComponentConfig):
    """Options of the `lsq` least-squares refiner (SHELXL-style refinement on F²)."""

    max_cycles: int = Field(
        150,
        ge=0,
        le=1000,
        description="Largest total number of least-squares cycles, all stages together (the "
        "last 12 are kept for the SHELXL weights and 6 for the extinction trial when it runs, "
        "each at most a quarter).",
    )
    anisotropic: bool | Auto = Field(
        "auto",
        description="Anisotropic ADPs for non-H atoms; 'auto': when there are at least "
        "8 reflections per parameter of the anisotropic model, and with 4-8 when they fit "
        "significantly better than isotropic ones (F-test at 0.1 %, no ADP at its limit); "
        "a starting model with anisotropic atoms of its own keeps its isotropic ones so, as "
        "SHELXL does (True makes them anisotropic too).",
    )
    riding_h: bool | Auto = Field(
        "auto", description="Place riding H atoms geometrically; 'auto': when the formula contains H."
    )
    keep_h: bool = Field(
        False,
        description="Keep the starting model's H atoms as given (refined as riding on the atom "
        "their AFIX group names, else the nearest atom of their own disorder component) instead "
        "of re-placing them.",
    )
    refine_occupancies: bool | Auto = Field(
        "auto",
        description="Refine occupancies: 'auto' refines the fractions of mixed sites (two "
        "elements sharing one position, their sum kept; in a user's model only those its own "
        "refinement refined: on a free variable, or given with an su) and the SHELXL free variables a "
        "model's occupancies are coded on (21.0/-21.0: one parameter each, as SHELXL refines "
        "them; not those a SUMP names); True also frees isolated partially occupied atoms; "
        "False keeps every occupancy as given.",
    )
    extinction: bool | Auto = Field(
        "auto",
        description="Refine SHELXL's extinction parameter; 'auto': when the starting model's "
        "instructions refine EXTI, or, without instructions, when it is significant.",
    )
    flack: bool | Auto = Field(
        "auto",
        description="Absolute structure: 'auto' refines the inversion-twin fraction when the "
        "instructions hold an inversion TWIN and otherwise estimates the Flack parameter "
        "after refinement (non-centrosymmetric groups only); True always refines it as an "
        "inversion-twin fraction; False skips it.",
    )
    twin_check: bool = Field(
        True,
        description="After refinement, fit the twin laws the lattice allows and the model does not "
        "refine (merohedry, pseudo-merohedry) with the model held, and warn of a significant one.",
    )
    invert_wrong_hand: bool = Field(
        True,
        description="When the Flack parameter says the model is the mirror image of the "
        "structure (x - 2 s.u. > 0.5), refine the inverted model (in the enantiomorphic space "
        "group where there is one) and keep it if its Flack parameter agrees.",
    )
    restraints: bool | Auto = Field(
        "auto",
        description="Automatic restraints for disorder components (similar 1,2/1,3 distances "
        "between components, rigid-bond ADPs) where the model has PARTs; 'auto': for generated "
        "models only (a user's model keeps exactly the restraints its file gives, as in SHELXL); "
        "True: also for a user's model without restraints of its own.",
    )
    complete: bool | Auto = Field(
        "auto",
        description="Difference-Fourier model completion (add missing atoms, drop spurious "
        "ones, reassign elements); 'auto': when the model has fewer non-H atoms than the "
        "formula asks for or holds elements the formula does not. A generated model's sites "
        "of a mixed pair in the formula (Ag0.6 ... Na0.4) become mixed sites unless False.",
    )
    completion_rounds: int = Field(6, ge=0, le=50, description="Largest number of completion rounds.")
    relocate_atoms: bool = Field(
        True,
        description="After completion, try an atom that scatters far less than its element "
        "at a difference peak of the same site order, and keep it there when the fit improves "
        "(a generated model's atom at a ghost of its real site); not in screening, never for a "
        "user's model.",
    )
    swap_elements: bool | Auto = Field(
        "auto",
        description="After the anisotropic refinement, test count-preserving swaps of "
        "elements 1-3 electrons apart (C/N/O, P/S/Cl) against the data and keep those that "
        "fit better; 'auto': for generated models.",
    )
    split_disorder: bool | Auto = Field(
        "auto",
        description="Model disorder seen in the difference map after the anisotropic "
        "refinement: peaks next to atoms become minor components (PART 1/2 with a refined "
        "free occupancy), kept only when the fit improves significantly; 'auto': for "
        "generated models (a user's model is refined as given).",
    )
    screen_cycles: int = Field(
        12, ge=1, le=200,
        description="Screening (the quick refinement that ranks candidates before the best are "
        "refined fully): largest number of cycles; isotropic, no H, σ weights.",
    )
    screen_resolution: float | None = Field(
        0.8, gt=0.0,
        description="Screening: refine against reflections with d ≥ this (Å) only (enough to "
        "rank candidates, and fast on high-resolution data); None: all data.",
    )
    screen_completion_rounds: int = Field(
        2, ge=0, le=50, description="Screening: largest number of difference-Fourier completion rounds."
    )
    weighting: Literal["shelxl", "sigma"] = Field(
        "shelxl", description="'shelxl': w = 1/[σ² + (aP)² + bP] with a, b optimised; 'sigma': w = 1/σ²."
    )
    weights: tuple[float, float] | None = Field(
        None, description="Fixed SHELXL weighting (a, b) instead of optimising them (by default the weights "
        "start from the model's own WGHT, else from a = 0.1, b = 0, and are optimised once the model has converged)."
    )
    damping: float = Field(1e-3, ge=0.0, le=1e6, description="Initial Levenberg-Marquardt damping (relative).")
    matrix: Literal["auto", "full", "blocked"] = Field(
        "auto", description="Normal matrix: full, or blocked by atom groups; 'auto': blocked above full_matrix_limit parameters."
    )
    full_matrix_limit: int = Field(1500, ge=10, description="Largest parameter count refined full-matrix with matrix='auto'.")
    block_size: int = Field(240, ge=20, description="Approximate parameters per block in blocked refinement.")
    convergence: float = Field(0.05, gt=0.0, description="Stop when the largest |shift|/su is below this.")
    special_tolerance: float = Field(
        0.2, gt=0.0, le=0.6, description="Distance (Å) within which an atom is moved onto a special position."
    )
    riding_derivatives: Literal["shelxl", "chain"] = Field(
        "shelxl",
        description="'shelxl': a riding H's derivatives go to its parent atom's position only and "
        "its U (a multiple of the parent's U_eq) adds nothing to the parent's ADP, as in SHELXL's "
        "riding model, so a SHELXL model stays where SHELXL converged it; 'chain': the exact chain "
        "rule through every atom that defines the H and through U_eq.",
    )
    h_distances: Literal["low-temperature", "room-temperature"] = Field(
        "low-temperature", description="SHELXL AFIX X-H distances for data at low or room temperature."
    )
    ignore_instructions: bool = Field(
        False, description="Ignore the published refinement's OMIT/SHEL/TWIN/BASF/EXTI/WGHT records."
    )
    anomalous: bool = Field(True, description="Include anomalous dispersion (f′, f″) for the data's wavelength.")
    threads: int | None = Field(
        None, ge=1, le=256,
        description="torch threads while refining; None: one thread unless the problem is very "
        "large (unique reflections × atoms above 2e7), where torch's default is used.",
    )
    fit_rotating_groups: bool = Field(
        True, description="Fit CH3/NH3/OH torsions to the difference density (else staggered)."
    )
    refine_torsions: bool = Field(
        True, description="Refine CH3/NH3/OH torsions by least squares (SHELXL AFIX 137/147); "
        "else they stay where the difference density puts them.",
    )
    newton_torsions: bool = Field(
        True, description="After each cycle, move each refined torsion by an exact 1-D Newton "
        "step on the sum of squares (only the group's H atoms are recomputed); the Gauss-Newton "
        "steps alone converge slowly on them.",
    )
