"""One minimum or two: where a refinement of a perturbed start ends with atoms away from
their published positions, is the published model a better least-squares minimum that the
refinement missed, or an equally good (or worse) one?

For each case: the perturbed start of `refine_real.py` (seed +0, anisotropic non-H, riding
H) is refined as that benchmark does, which ends at model P with weights (a, b). Two
refinements then follow, both with (a, b) held and run to max shift/su < 0.001 (at most
100 cycles), so that they minimise the same sum of squares:

- from P itself;
- from P with every non-H atom moved back to its published position (ADPs, occupancies,
  riding H and everything else as in P), so the same model, parameters and restraints,
  started at the published positions.

Reported: where each ends (largest distance of a non-H atom from its published position),
the sum it minimises S = Σw(Fo² - kFc²)² + the restraints' terms (weighted as in the
refinement, one restraint weight scale for both), and how far apart the two end models are.
Ends within 0.02 Å of each other: one minimum, and the distance from the published model is
a difference between our model and the published one, not a matter of the start. Ends apart:
two minima, and ΔS says which the data prefer. Values of ΔS below 1 (one su's worth of
χ²) do not tell them apart.

    OMP_NUM_THREADS=1 python benchmarks/minima.py [--cases a,b]

Writes benchmarks/results/minima.json and .md. Default cases: those where the perturbed
benchmark ends with an atom more than 0.05 Å from its published position.
"""

from __future__ import annotations

import argparse
import sys
import time
import zlib
from pathlib import Path

import numpy as np
from _results import write_results

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CASES = ("alga_fluoroalkoxide_p21c", "fe_perchlorate_hydrate", "pd_complex_malbac")
TIGHT = 0.001
SAME_MINIMUM = 0.02  # Å


def _refine(data, structure, instructions, **settings):
    """(the finished Refinement, its RefinedCandidate), refined as a user's model."""
    from refractor_core.types import Candidate
    from refractor_plugins.refiners.configs import LsqConfig
    from refractor_plugins.refiners.lsq.refiner import USER_MODEL, Refinement

    meta = {"instructions": instructions.model_dump()} if instructions is not None else {}
    refinement = Refinement(LsqConfig(**settings), data, Candidate(structure=structure, generator=USER_MODEL, meta=meta))
    return refinement, refinement.run()


def objective(refinement, restraint_scale: float | None = None) -> tuple[float, float, float]:
    """(Σw(Fo² - kFc²)², the restraints' sum, the restraint weight scale used) at the
    refinement's final model, with its weights."""
    from refractor_plugins.refiners.lsq import restraints
    from refractor_plugins.refiners.lsq.driver import restraint_weight_scale
    from refractor_plugins.refiners.lsq.least_squares import objective as data_objective

    driver, model = refinement.driver, refinement.final_model
    chi2, _ = data_objective(driver.calc, model, driver.obs.fo2, driver.weights(model))
    scale = restraint_scale if restraint_scale is not None else restraint_weight_scale(chi2, len(driver.obs.fo2))
    return chi2, restraints.sum_of_squares(model, driver.restraints, scale), scale


def _with_published_positions(structure, published):
    """`structure` with each non-H atom at the published position of its label."""
    ref = {s.label: s.xyz for s in published.sites if s.element.upper() not in ("H", "D")}
    sites = [s.model_copy(update={"xyz": ref[s.label]}) if s.label in ref and s.element.upper() not in ("H", "D") else s
             for s in structure.sites]
    return structure.model_copy(update={"sites": sites})


def _largest_distance(a, b, labels: set[str] | None = None) -> float:
    """Largest distance (Å) between same-label non-H atoms (of `labels`, if given) of two
    models of one cell."""
    from refractor_core.crystal.cell import orthogonalization_matrix

    m = orthogonalization_matrix(a.cell)
    other = {s.label: np.asarray(s.xyz) for s in b.sites}
    worst = 0.0
    for s in a.sites:
        if s.element.upper() in ("H", "D") or s.label not in other or (labels is not None and s.label not in labels):
            continue
        d = np.asarray(s.xyz) - other[s.label]
        worst = max(worst, float(np.linalg.norm(m @ (d - np.round(d)))))
    return worst


def check_case(case) -> dict:
    from refine_real import RMS, SEED, VARIANTS, deviations, load_case, max_deviation, perturbed_start

    t0 = time.perf_counter()
    data, published, instructions = load_case(case)
    start = perturbed_start(published, RMS, SEED + zlib.crc32(case.name.encode()))
    _, first = _refine(data, start, instructions, **VARIANTS["aniso+H"])
    held = {"anisotropic": True, "riding_h": True, "weights": (first.weight_a, first.weight_b),
            "convergence": TIGHT, "max_cycles": 100}
    ends = {}
    for tag, model in (("own", first.structure), ("published", _with_published_positions(first.structure, published))):
        refinement, result = _refine(data, model, instructions, **held)
        ends[tag] = (refinement, result)
    scale = objective(ends["own"][0])[2]
    off = {label for label, d in deviations(first.structure, published) if d > 0.05}
    row = {"case": case.name, "weights": list(held["weights"]), "first_deviation": max_deviation(first.structure, published),
           "first_R1": first.r1, "atoms_off": sorted(off)}
    for tag, (refinement, result) in ends.items():
        chi2, restrained, _ = objective(refinement, scale)
        row[tag] = {"deviation": max_deviation(result.structure, published), "R1": result.r1, "wR2": result.wr2,
                    "cycles": result.cycles, "max_shift_su": result.max_shift_su, "converged": result.max_shift_su < TIGHT,
                    "chi2_data": chi2, "chi2_restraints": restrained, "S": chi2 + restrained}
    row["delta_S"] = row["published"]["S"] - row["own"]["S"]
    row["distance_between_ends"] = _largest_distance(ends["own"][1].structure, ends["published"][1].structure)
    row["atoms_off_apart"] = _largest_distance(ends["own"][1].structure, ends["published"][1].structure, off)
    row["one_minimum"] = row["atoms_off_apart"] < SAME_MINIMUM
    row["seconds"] = time.perf_counter() - t0
    return row


def _verdict(row: dict) -> str:
    caveat = "" if row["own"]["converged"] and row["published"]["converged"] else " (a run stopped at the 100-cycle cap)"
    if row["one_minimum"]:
        return "one minimum: the atoms off return to our end" + caveat
    if abs(row["delta_S"]) < 1.0:
        return "two minima, not told apart (|ΔS| < 1)" + caveat
    return "two minima; the data prefer " + ("ours" if row["delta_S"] > 0 else "the published positions") + caveat


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default=",".join(DEFAULT_CASES), help="comma-separated case names")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from refractor_core.testing.real_cases import get_case

    rows = []
    for name in args.cases.split(","):
        row = check_case(get_case(name))
        rows.append(row)
        print(f"{name}: {_verdict(row)}; ΔS {row['delta_S']:.2f}, atoms off {row['atoms_off_apart']:.3f} Å apart, "
              f"{row['seconds']:.0f} s", flush=True)
    body = [
        "Each case's perturbed start (refine_real.py, seed +0) refined as that benchmark does, then refined on "
        f"with its final weights held to max shift/su < {TIGHT:g} from its own end and from the same model with "
        "every non-H atom put back at its published position. S: the sum both minimise (data + restraints, one "
        "restraint weight scale); ΔS = S(from published positions) - S(from our end): positive, the data prefer "
        "our end.", "",
        "Atoms off: those more than 0.05 Å from their published position at the end of the perturbed run; "
        "apart: the largest distance between the two ends, for those atoms and for all non-H atoms. Converged: "
        f"max shift/su < {TIGHT:g} within 100 cycles.", "",
        "| case | perturbed run: max dev. (Å), atoms off | from our end: max dev. (Å), R1, S, cycles | from the published "
        "positions: max dev. (Å), R1, S, cycles | apart (Å): atoms off, all | ΔS | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = []
        for tag in ("own", "published"):
            e = r[tag]
            cells.append(f"{e['deviation'][0]:.3f} ({e['deviation'][1]}), {e['R1']:.4f}, {e['S']:.2f}, {e['cycles']}"
                         + ("" if e["converged"] else " (cap)"))
        body.append(f"| {r['case']} | {r['first_deviation'][0]:.3f} ({r['first_deviation'][1]}), {' '.join(r['atoms_off'])} | "
                    f"{cells[0]} | {cells[1]} | {r['atoms_off_apart']:.3f}, {r['distance_between_ends']:.3f} | "
                    f"{r['delta_S']:.2f} | {_verdict(r)} |")
    command = "OMP_NUM_THREADS=1 python benchmarks/minima.py" + (
        f" --cases {args.cases}" if args.cases != ",".join(DEFAULT_CASES) else "")
    write_results("minima", command, "One minimum or two: perturbed ends against the published positions", body,
                  {"tight_convergence": TIGHT, "cases": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
