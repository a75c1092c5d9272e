"""Our restraints against SHELXL's, at each published model (no refinement).

A published SHELXL refinement states how many restraints it used and, through its GooF and
restrained GooF, how far its converged model is from them:

    χ²_restraints = S_r² (n + n_r - p) - S² (n - p)

(n reflections, p parameters, n_r restraints). For every real case whose model carries
SHELXL restraints, this builds our restraints from the same instructions on the published
model (its H atoms included, as SHELXL refined them) and compares

- their number with the published n_r;
- their sum Σ(Δ/σ)², times the mean w(Fo² - Fc²)² = S² (n - p)/n by which SHELXL (and the
  `lsq` refiner) multiply restraint weights, with the published χ²_restraints; the error
  bar comes from the three decimals S and S_r are given with.

Both agree when our restraints are SHELXL's (same sets, same σ, same definitions); the
per-kind sums show which kind disagrees. Seconds per case.

    python benchmarks/restraint_fidelity.py

Writes benchmarks/results/restraint_fidelity.json and .md.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CIF_ITEMS = {
    "n": "_refine_ls_number_reflns",
    "p": "_refine_ls_number_parameters",
    "n_r": "_refine_ls_number_restraints",
    "S": "_refine_ls_goodness_of_fit_ref",
    "S_r": "_refine_ls_restrained_S_all",
}


def published_statistics(case) -> dict | None:
    """n, p, n_r, S and S_r from the case's CIF (None when it is not a CIF or lacks one)."""
    import gemmi

    if case.reference.suffix.lower() != ".cif":
        return None
    doc = gemmi.cif.read(str(case.reference))
    block = doc.find_block(case.data_block) if case.data_block else doc.sole_block()
    out = {}
    for key, tag in CIF_ITEMS.items():
        value = block.find_value(tag)
        if value is None or gemmi.cif.is_null(value):
            return None
        out[key] = float(gemmi.cif.as_number(value))
    return out


def shelxl_restraint_chi2(st: dict) -> tuple[float, float]:
    """SHELXL's restraint χ² implied by its GooF and restrained GooF, and its rounding error."""
    n, p, n_r, s, s_r = st["n"], st["p"], st["n_r"], st["S"], st["S_r"]
    chi2 = s_r**2 * (n + n_r - p) - s**2 * (n - p)
    # S and S_r are printed to three decimals
    error = 2 * s * 0.0005 * (n - p) + 2 * s_r * 0.0005 * (n + n_r - p)
    return chi2, error


def our_restraints(case) -> tuple[int, dict[str, float], list[str]]:
    """(number of restraints, Σ(Δ/σ)² by kind, instructions not honoured) at the published model."""
    import numpy as np

    from refractor_core.dataio import load_bundle
    from refractor_plugins.refiners.lsq import restraints, user_restraints
    from refractor_plugins.refiners.lsq.model import WorkingModel

    bundle = load_bundle(case.reference, block=case.data_block)
    model = WorkingModel.from_structure(bundle.structure)
    model.bind = tuple(bundle.instructions.bind)
    model.free = tuple(bundle.instructions.free)
    built = user_restraints.build(model, bundle.instructions)
    values, sigmas = restraints.residuals(model, built.restraints)
    z2 = (np.asarray(values) / np.asarray(sigmas)) ** 2
    by_kind: dict[str, float] = {}
    for r, term in zip(built.restraints, z2):
        kind = r.kind if r.kind != "rigu" else ("rigu/delu along" if r.component == 0 else "rigu across")
        by_kind[kind] = by_kind.get(kind, 0.0) + float(term)
    return len(built.restraints), by_kind, built.skipped


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from refractor_core.dataio import load_bundle
    from refractor_core.testing.real_cases import load_cases

    rows = []
    for case in load_cases():
        instructions = load_bundle(case.reference, block=case.data_block).instructions
        kinds = sorted({r.kind for r in instructions.restraints} - {"EADP", "EXYZ"}) if instructions else []
        if not kinds:
            continue
        st = published_statistics(case)
        n_ours, by_kind, skipped = our_restraints(case)
        row = {"case": case.name, "instructions": kinds, "n_restraints": n_ours, "chi2_by_kind": by_kind,
               "skipped": skipped, "published": st}
        if st is not None:
            multiplier = st["S"] ** 2 * (st["n"] - st["p"]) / st["n"]
            chi2, error = shelxl_restraint_chi2(st)
            row.update(multiplier=multiplier, chi2_ours=multiplier * sum(by_kind.values()),
                       chi2_shelxl=chi2, chi2_shelxl_error=error)
        rows.append(row)
        pub = "-" if st is None else f"{st['n_r']:.0f}"
        chi = "" if st is None else f"; χ² {row['chi2_ours']:.1f}, SHELXL {row['chi2_shelxl']:.1f} ± {row['chi2_shelxl_error']:.1f}"
        print(f"{case.name:28s} restraints {n_ours} (published {pub}){chi}", flush=True)

    compared = [r for r in rows if r["published"] is not None]
    same_count = sum(r["n_restraints"] == round(r["published"]["n_r"]) for r in compared)
    chi2_agrees = sum(abs(r["chi2_ours"] - r["chi2_shelxl"]) <= 2 * r["chi2_shelxl_error"] for r in compared)
    summary = {
        "command": "python benchmarks/restraint_fidelity.py",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "cases_compared": len(compared),
        "same_number_of_restraints": same_count,
        "chi2_within_2_errors": chi2_agrees,
        "cases": rows,
    }
    out = ROOT / "benchmarks" / "results" / "restraint_fidelity"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2, default=str))
    lines = [
        "# Our restraints against SHELXL's, at the published models",
        "",
        f"Command: `{summary['command']}`; date {summary['date']}; {summary['machine']['platform']}",
        "",
        "Restraints built from each case's own SHELXL instructions on its published model (H atoms "
        "included). χ² ours: Σ(Δ/σ)² times SHELXL's weight multiplier S²(n - p)/n; χ² SHELXL: "
        "S_r²(n + n_r - p) - S²(n - p) from the CIF, ± its rounding error.",
        "",
        f"Same number of restraints as published: {same_count}/{len(compared)}; χ² within 2 errors of "
        f"SHELXL's: {chi2_agrees}/{len(compared)}.",
        "",
        "| case | instructions | restraints | published | χ² ours | χ² SHELXL | Σ(Δ/σ)² by kind |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        st = r["published"]
        kinds = ", ".join(f"{k} {v:.1f}" for k, v in sorted(r["chi2_by_kind"].items()))
        if st is None:
            lines.append(f"| {r['case']} | {' '.join(r['instructions'])} | {r['n_restraints']} | - | - | - | {kinds} |")
            continue
        lines.append(
            f"| {r['case']} | {' '.join(r['instructions'])} | {r['n_restraints']} | {st['n_r']:.0f} | "
            f"{r['chi2_ours']:.1f} | {r['chi2_shelxl']:.1f} ± {r['chi2_shelxl_error']:.1f} | {kinds} |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"same number of restraints: {same_count}/{len(compared)}; χ² within 2 errors: {chi2_agrees}/{len(compared)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
