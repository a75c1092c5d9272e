"""Configuration models of the built-in generators (light: pydantic and refractor_core only)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from refractor_core.interfaces import ComponentConfig


class ChargeFlipConfig(ComponentConfig):
    """Options of the `charge-flip` generator.

    max_trials: flipping trials from random phases (each with its own seed) at most;
    min_converged, min_agreement: trials stop early once this many have reached the same
    solution and it obeys the symmetry of the hypothesis that asked (agreement ≥
    min_agreement);
    max_cycles: flipping cycles per |F| trial, and 10/3 times as many per |E| trial (|E|
    trials reach a large structure late, cod1979688's after 1154-2294 cycles);
    delta: "auto" (Superflip-style: adapted to keep the total/flipped charge ratio in
    [0.8, 1]) or a fixed multiple of the map's sigma;
    normalization: flip |E| ("E"), |F| ("F") or alternate trials between the two
    ("auto": F first; both find the same solutions, each more reliably on some structures); sharpening: B (Å²) applied as
    exp(+B s²) to the flipped amplitudes (negative damps); weak_fraction: weakest fraction
    of reflections whose phase is shifted by π/2 instead of being given |A|; grid_sampling:
    flipping grid spacing as a fraction of d_min; peak_sampling: the same for the
    interpretation map; work_budget: total flipping work for all trials of one data set, in
    grid points × cycles (a deterministic cap: the same data and seed always run the same
    trials, whatever the machine); time_limit_s: an optional wall-clock cap on top (off by
    default; when it stops the trials, results depend on the machine's speed);
    symmetry_cycles: flipping cycles run after the origin search with the hypothesis'
    symmetry imposed on every cycle (0: none); extra_fraction: peaks beyond the formula
    kept as the lightest element, as a fraction of the expected atom count (sites for the
    refiner to keep or reject); u_iso: U (Å²) given to the atoms of a candidate; device: accepted for the
    pipeline's --device, but this version runs its FFTs on the CPU (scipy/numpy) always.
    """

    max_trials: int = Field(default=16, ge=1)
    min_converged: int = Field(default=3, ge=1)
    min_agreement: float = Field(default=0.5, ge=-1.0, le=1.0)
    max_cycles: int = Field(default=600, ge=20)
    delta: Literal["auto"] | float = "auto"
    normalization: Literal["auto", "E", "F"] = "auto"
    sharpening: float = 0.0
    weak_fraction: float = Field(default=0.2, ge=0.0, lt=1.0)
    grid_sampling: float = Field(default=0.5, gt=0.1, le=0.6)
    peak_sampling: float = Field(default=0.33, gt=0.1, le=0.6)
    work_budget: float = Field(default=2.0e9, gt=0.0)
    time_limit_s: float | None = Field(default=None, gt=0.0)
    symmetry_cycles: int = Field(default=60, ge=0)
    extra_fraction: float = Field(default=0.1, ge=0.0, le=1.0)
    u_iso: float = Field(default=0.04, gt=0.0, lt=0.5)
    resolution_limit: float | None = Field(
        default=0.7, gt=0.0,
        description="Phase with reflections of d ≥ this (Å) only: data beyond atomic resolution "
        "slow the FFTs down (grid ∝ 1/d³) and add little to the solution; None: all data.",
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
