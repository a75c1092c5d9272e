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
  started at the published positions;
- from the published model itself (positions, ADPs and occupancies as published; its H
  removed and riding H placed, as in P), since ADPs and positions of overlapping disorder
  components are coupled and P's ADPs may hold the atoms at P's positions.

Reported: where each ends (largest distance of a non-H atom from its published position),
the sum it minimises S = Σw(Fo² - kFc²)² + the restraints' terms (weighted as in the
refinement, one restraint weight scale for all), and how far the other ends are from P's.
All ends within 0.02 Å of P's: one minimum, and the distance from the published model is a
difference between our model and the published one, not a matter of the start. Ends apart:
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
#: the two other starts: our end's model at the published positions, the published model
ALTERNATIVES = ("published", "published_model")


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
    for tag, model in (("own", first.structure), ("published", _with_published_positions(first.structure, published)),
                       ("published_model", published.model_copy(update={"sites": published.non_hydrogen()}))):
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
    for tag in ALTERNATIVES:
        end = row[tag]
        end["delta_S"] = end["S"] - row["own"]["S"]
        end["distance_from_our_end"] = _largest_distance(ends["own"][1].structure, ends[tag][1].structure)
        end["atoms_off_from_our_end"] = _largest_distance(ends["own"][1].structure, ends[tag][1].structure, off)
    row["one_minimum"] = all(row[tag]["atoms_off_from_our_end"] < SAME_MINIMUM for tag in ALTERNATIVES)
    row["seconds"] = time.perf_counter() - t0
    return row


def _verdict(row: dict) -> str:
    capped = not all(row[tag]["converged"] for tag in ("own", *ALTERNATIVES))
    caveat = " (a run stopped at the 100-cycle cap)" if capped else ""
    if row["one_minimum"]:
        return "one minimum: the atoms off return to our end from both starts" + caveat
    apart = [tag for tag in ALTERNATIVES if row[tag]["atoms_off_from_our_end"] >= SAME_MINIMUM]
    names = {"published": "the published positions", "published_model": "the published model"}
    delta = max((row[tag]["delta_S"] for tag in apart), key=abs)
    told = "not told apart (|ΔS| < 1)" if all(abs(row[tag]["delta_S"]) < 1.0 for tag in apart) else (
        "the data prefer " + ("ours" if delta > 0 else names[apart[0]]))
    return f"two minima: from {' and '.join(names[t] for t in apart)} the atoms off stay away from our end; {told}" + caveat


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
        print(f"{name}: {_verdict(row)}; ΔS {row['published']['delta_S']:.2f} / {row['published_model']['delta_S']:.2f}, "
              f"{row['seconds']:.0f} s", flush=True)
    body = [
        "Each case's perturbed start (refine_real.py, seed +0) refined as that benchmark does, then refined on "
        f"with its final weights held to max shift/su < {TIGHT:g} from three starts: its own end; the same model "
        "with every non-H atom put back at its published position; the published model itself (positions, ADPs, "
        "occupancies; H re-placed riding). S: the sum all minimise (data + restraints, one restraint weight "
        "scale); ΔS = S(from that start) - S(from our end): positive, the data prefer our end.", "",
        "Atoms off: those more than 0.05 Å from their published position at the end of the perturbed run; "
        "from our end: the largest distance of those atoms (and of all non-H atoms) from our end's. Converged: "
        f"max shift/su < {TIGHT:g} within 100 cycles.", "",
        "| case | perturbed run: max dev. (Å), atoms off | from our end: max dev. (Å), R1, S, cycles | from the published "
        "positions: max dev. (Å), R1, ΔS, cycles; atoms off (all) from our end | from the published model: the same "
        "| verdict |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        own = r["own"]
        cells = [f"{own['deviation'][0]:.3f} ({own['deviation'][1]}), {own['R1']:.4f}, {own['S']:.2f}, {own['cycles']}"
                 + ("" if own["converged"] else " (cap)")]
        for tag in ALTERNATIVES:
            e = r[tag]
            cells.append(f"{e['deviation'][0]:.3f} ({e['deviation'][1]}), {e['R1']:.4f}, {e['delta_S']:+.2f}, {e['cycles']}"
                         + ("" if e["converged"] else " (cap)")
                         + f"; {e['atoms_off_from_our_end']:.3f} ({e['distance_from_our_end']:.3f})")
        body.append(f"| {r['case']} | {r['first_deviation'][0]:.3f} ({r['first_deviation'][1]}), {' '.join(r['atoms_off'])} | "
                    f"{' | '.join(cells)} | {_verdict(r)} |")
    command = "OMP_NUM_THREADS=1 python benchmarks/minima.py" + (
        f" --cases {args.cases}" if args.cases != ",".join(DEFAULT_CASES) else "")
    write_results("minima", command, "One minimum or two: perturbed ends against the published positions", body,
                  {"tight_convergence": TIGHT, "cases": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
