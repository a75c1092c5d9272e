"""Our restraints against SHELXL's, at each published model (no refinement).

A published SHELXL refinement states how many restraints it used and, through its GooF and
restrained GooF, how far its converged model is from them:

    χ²_restraints = S_r² (n + n_r - p) - S² (n - p)

(n reflections, p parameters, n_r restraints). For every real case whose model carries
SHELXL restraints, this builds our restraints from the same instructions on the published
model (its H atoms included, as SHELXL refined them) and compares

- their number with the published n_r (the floating-origin restraints of a polar space
  group included, one per polar direction, as SHELXL counts them);
- their sum Σ(Δ/σ)², times the mean w(Fo² - Fc²)² = S² (n - p)/n by which SHELXL (and the
  `lsq` refiner) multiply restraint weights, with the published χ²_restraints; the error
  bar comes from the three decimals S and S_r are given with.

Both agree when our restraints are SHELXL's (same sets, same σ, same definitions); the
per-kind sums show which kind disagrees. Seconds per case.

    python benchmarks/restraint_fidelity.py

Writes benchmarks/results/restraint_fidelity.json and .md.
"""

from __future__ import annotations

import sys
from pathlib import Path

from _results import write_results

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


def shelxl_sadi_list(case) -> list[tuple[float, frozenset]] | None:
    """The SADI list SHELXL writes at the end of its .res ("REM SADI restraints, including
    those derived from SAME"): every set of distances it made equal, with its σ, as
    (σ, frozenset of (label, label) pairs, upper case, PART marks dropped); None when the
    reference does not carry one."""
    import re

    text = case.reference.read_text(errors="replace")
    start = text.find("REM SADI restraints")
    if start < 0:
        return None
    lines: list[str] = []
    for line in text[start:].splitlines()[1:]:
        if not line.strip():
            break
        if line[0].isspace() and lines:  # continuation of the line before ("=")
            lines[-1] += " " + line
        else:
            lines.append(line)
    out = []
    for line in lines:
        words = line.replace("=", " ").split()
        if not words or words[0].upper() != "SADI":
            continue
        atoms = [re.sub(r"\^\w+$", "", w).upper() for w in words[2:]]
        out.append((float(words[1]), frozenset(tuple(sorted(p)) for p in zip(atoms[0::2], atoms[1::2]))))
    return out


def our_same_sets(model, restraints_built) -> list[tuple[float, frozenset]]:
    """Our SADI/SAME restraints as sets of distances made equal (σ, label pairs), in the
    form of `shelxl_sadi_list`: the pairwise restraints of one set link all its distances."""
    from refractor_core.union_find import UnionFind

    def key(pair):
        return tuple(sorted(model.labels[im.atom].upper() for im in pair))

    links = UnionFind()
    sigma = {}
    for r in restraints_built:
        if r.kind == "same":
            links.union(key(r.pair1), key(r.pair2))
            sigma[key(r.pair1)] = sigma[key(r.pair2)] = r.sigma
    return [(sigma[g[0]], frozenset(g)) for g in links.groups()]


def our_restraints(case) -> tuple[int, dict[str, float], list[str], dict | None]:
    """(number of restraints, Σ(Δ/σ)² by kind, instructions not honoured, comparison with
    SHELXL's own SADI list or None) at the published model."""
    import numpy as np

    from refractor_core.dataio import load_bundle
    from refractor_plugins.refiners.lsq import restraints, user_restraints
    from refractor_plugins.refiners.lsq.model import WorkingModel
    from refractor_plugins.refiners.lsq.parameters import Parameterisation

    bundle = load_bundle(case.reference, block=case.data_block)
    model = WorkingModel.from_structure(bundle.structure)
    model.bind = tuple(bundle.instructions.bind)
    model.free = tuple(bundle.instructions.free)
    built = user_restraints.build(model, bundle.instructions)
    # SHELXL counts the floating-origin restraints of a polar space group among them
    # (P31c: 1, Cc: 2), as `lsq` now does in its count
    n_origin = len(Parameterisation.build(model).origin_restraints())
    values, sigmas = restraints.residuals(model, built.restraints)
    z2 = (np.asarray(values) / np.asarray(sigmas)) ** 2
    by_kind: dict[str, float] = {}
    for r, term in zip(built.restraints, z2):
        kind = r.kind if r.kind != "rigu" else ("rigu/delu along" if r.component == 0 else "rigu across")
        by_kind[kind] = by_kind.get(kind, 0.0) + float(term)
    return len(built.restraints) + n_origin, by_kind, built.skipped, _compare_sadi_lists(case, model, built.restraints)


def _compare_sadi_lists(case, model, built) -> dict | None:
    """Our SAME/SADI sets against the list SHELXL wrote: how many of its sets we have
    exactly (same distances, same σ), and Σ(Δ/σ)² of its sets evaluated here (pairwise, as
    ours), to compare with our "same" sum."""
    import itertools

    from refractor_plugins.refiners.lsq.completion import closest_image

    theirs = shelxl_sadi_list(case)
    if theirs is None:
        return None
    ours = set(our_same_sets(model, built))
    index = model.label_index()
    z2 = 0.0
    for sigma, pairs in theirs:
        d = [closest_image(model, model.xyz[index[a]], model.xyz[index[b]])[0] for a, b in pairs]
        z2 += sum((x - y) ** 2 for x, y in itertools.combinations(d, 2)) / sigma**2
    return {"shelxl_sets": len(theirs), "our_sets": len(ours), "sets_identical": sum(t in ours for t in theirs),
            "shelxl_pairwise_restraints": sum(len(p) * (len(p) - 1) // 2 for _, p in theirs),
            "z2_of_shelxl_sets": z2}


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
        n_ours, by_kind, skipped, sadi_list = our_restraints(case)
        row = {"case": case.name, "instructions": kinds, "n_restraints": n_ours, "chi2_by_kind": by_kind,
               "skipped": skipped, "published": st, "shelxl_sadi_list": sadi_list}
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
    lines = [
        "Restraints built from each case's own SHELXL instructions on its published model (H atoms "
        "included), plus the floating-origin restraints of a polar space group (one per polar direction: "
        "SHELXL counts them). χ² ours: Σ(Δ/σ)² times SHELXL's weight multiplier S²(n - p)/n; χ² SHELXL: "
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
    listed = [r for r in rows if r["shelxl_sadi_list"] is not None]
    if listed:
        lines += [
            "",
            "## Our SAME/SADI sets against the SADI list SHELXL wrote into its .res",
            "",
            "SHELXL ends its .res with every set of distances it restrained to be equal (\"REM SADI "
            "restraints, including those derived from SAME\"). Sets identical: same distances and σ. "
            "Σ(Δ/σ)² of SHELXL's sets is evaluated here on the published model (pairwise, as ours). The "
            "last two columns are the χ² of all other restraints (RIGU, DELU, SIMU, FLAT, ...): SHELXL's, "
            "from its total less its SADI sets, and ours.",
            "",
            "| case | SHELXL sets | ours | identical | pairwise restraints | Σ(Δ/σ)² SHELXL's sets | ours (same) | "
            "χ² other kinds, SHELXL | ours |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in listed:
            c = r["shelxl_sadi_list"]
            ours_same = r["chi2_by_kind"].get("same", 0.0)
            other = ("- | -" if r["published"] is None else
                     f"{r['chi2_shelxl'] - r['multiplier'] * c['z2_of_shelxl_sets']:.1f} ± {r['chi2_shelxl_error']:.1f} | "
                     f"{r['chi2_ours'] - r['multiplier'] * ours_same:.1f}")
            lines.append(f"| {r['case']} | {c['shelxl_sets']} | {c['our_sets']} | {c['sets_identical']} | "
                         f"{c['shelxl_pairwise_restraints']} | {c['z2_of_shelxl_sets']:.1f} | {ours_same:.1f} | {other} |")
    write_results("restraint_fidelity", "python benchmarks/restraint_fidelity.py",
                  "Our restraints against SHELXL's, at the published models", lines,
                  {"cases_compared": len(compared), "same_number_of_restraints": same_count,
                   "chi2_within_2_errors": chi2_agrees, "cases": rows})
    print(f"same number of restraints: {same_count}/{len(compared)}; χ² within 2 errors: {chi2_agrees}/{len(compared)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
