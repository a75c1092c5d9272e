"""Refine perturbed published models of every real case with the `lsq` refiner.

For each case in ../shared/data/real: the published model (CIF or .res with its SHELXL
instructions) has its non-H coordinates displaced by 0.2 Å RMS (fixed seed per case,
displacements confined to each atom's site-symmetry subspace so special positions stay
special; atoms sharing a site move together), every ADP reset to U_iso = 0.05 Å² and all H
atoms removed. The `lsq` refiner then refines it (anisotropic non-H, riding H) against the
measured data merged as SHELXL does, with the published file's instructions: its restraints
and constraints (a model that brings none gets none, as in SHELXL), and its riding H groups (the AFIX codes by parent atom: the H atoms are
removed, their instructions are not, as in a SHELXL .ins with HFIX lines). Reported per case: final R1, wR2, GooF, cycles,
seconds, the published R1, and the largest distance of a non-H atom from its published
position.

    python benchmarks/refine_real.py                       # the main benchmark
    python benchmarks/refine_real.py --variants            # also iso/aniso x with/without riding H
    python benchmarks/refine_real.py --cases urea,sucrose  # a subset (written to *_subset.*; --update merges it into the full results)
    python benchmarks/refine_real.py --as-published        # from the published models as given
    python benchmarks/refine_real.py --cases fe_perchlorate_hydrate --seeds 8  # other starts

--as-published starts from each published model exactly as given (positions, ADPs, its H
atoms with their riding or free treatment), as `refractor refine --model` refines a user's
model: how far our minimum lies from SHELXL's when both start at SHELXL's (written to
refine_real_published.*, with the published number of parameters beside ours).

--seeds N refines each case from N further perturbations (seed + 1 ... N) besides the
main one, to tell a miss that depends on the start (two minima the data do not tell apart)
from one that does not (written to refine_real_seeds.*, one row per case and start).

Writes benchmarks/results/refine_real.json and .md; with --variants the same starting models
are also refined without riding H and/or with isotropic ADPs, written to
refine_real_variants.json and .md (R1, wR2, GooF per case and variant).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import zlib
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RMS = 0.2
U_START = 0.05
SEED = 20261122

VARIANTS = {
    "aniso+H": {"anisotropic": True, "riding_h": True},
    "aniso": {"anisotropic": True, "riding_h": False},
    "iso+H": {"anisotropic": False, "riding_h": True},
    "iso": {"anisotropic": False, "riding_h": False},
}


def load_case(case):
    """(ReflectionData, published Structure, instructions) as the rfactor benchmark loads them."""
    from refractor_core.dataio import load_bundle, load_reflections

    data = load_reflections(case.reflections)
    bundle = load_bundle(case.reference, block=case.data_block)
    return data, bundle.structure, bundle.instructions


def perturbed_start(structure, rms: float = RMS, seed: int = 0):
    """Non-H atoms displaced by `rms` Å RMS (site symmetry kept), U_iso 0.05, no H."""
    from refractor_core.crystal.cell import fractionalization_matrix
    from refractor_core.crystal.symmetry import SymmetryOps

    rng = np.random.default_rng(seed)
    sym = SymmetryOps.from_space_group(structure.space_group)
    f_m = fractionalization_matrix(structure.cell)
    sites = [s for s in structure.sites if s.element.upper() not in ("H", "D")]
    from refractor_core.crystal.cell import orthogonalization_matrix

    o_m = orthogonalization_matrix(structure.cell)
    done: list[tuple[np.ndarray, np.ndarray]] = []  # (Cartesian position, displacement)
    out = []
    sigma = rms / np.sqrt(3.0)
    for s in sites:
        x = np.asarray(s.xyz, dtype=np.float64)
        c = o_m @ x
        same = [d for p, d in done if np.linalg.norm(p - c) < 0.05]  # one site shared by several atoms
        if same:
            d_frac = same[0]
        else:
            # a negative PART is never on a special position (SHELXL, and the refiner)
            con = sym.site_constraint(structure.cell, x, 0.05, part=s.part)
            d_frac = f_m @ rng.normal(0.0, sigma, size=3)
            b = con.position_basis
            d_frac = b @ (b.T @ d_frac) if b.shape[1] else np.zeros(3)
            done.append((c, d_frac))
        new = x + d_frac
        out.append(s.model_copy(update={"xyz": tuple(float(v) for v in new), "u_iso": U_START, "u_aniso": None,
                                        "site_symmetry_order": None, "calc": False, "riding_on": None}))
    return structure.model_copy(update={"sites": out})


def deviations(refined, published) -> list[tuple[str, float]]:
    """(label, distance Å) of every refined non-H atom from the published atom of that label.

    In polar space groups the origin is free along the polar directions: the refined
    model is first moved along them by the mean offset (the origin choice is arbitrary).
    An atom may come back as a symmetry image of its published position (disorder across
    a symmetry element): the nearest image counts.
    """
    from refractor_core.crystal.symmetry import SymmetryOps
    from refractor_plugins.refiners.lsq.parameters import free_origin_directions

    ref = {s.label: np.asarray(s.xyz) for s in published.sites if s.element.upper() not in ("H", "D")}
    pairs = []
    for s in refined.sites:
        if s.label not in ref or s.element.upper() in ("H", "D"):
            continue
        d = np.asarray(s.xyz) - ref[s.label]
        pairs.append((s.label, d - np.round(d)))
    sym = SymmetryOps.from_space_group(published.space_group)
    dirs = free_origin_directions(sym)  # polar axes
    if dirs.shape[1] and pairs:
        mean = np.mean([d for _, d in pairs], axis=0)
        shift = dirs @ (dirs.T @ mean)
        pairs = [(label, d - shift) for label, d in pairs]
    out = []
    for label, d in pairs:
        out.append((label, sym.nearest_image_distance(published.cell, ref[label] + d, ref[label])))
    return out


def max_deviation(refined, published) -> tuple[float, str]:
    """Largest distance (Å) of a refined non-H atom from its published position (see
    `deviations`), and that atom's label."""
    worst, who = 0.0, "-"
    for label, dist in deviations(refined, published):
        if dist > worst:
            worst, who = dist, label
    return worst, who


def deviation_su(refined, published) -> dict[str, tuple[float, float | None]]:
    """label -> (distance Å, distance / su) with su the length of the refined positional
    su vector (Å; None without an su): how significant the distance is."""
    cell = refined.cell
    abc = np.array([cell.a, cell.b, cell.c])
    su = {s.label: float(np.linalg.norm(np.asarray(s.xyz_su) * abc)) for s in refined.sites if s.xyz_su is not None}
    out = {}
    for label, dist in deviations(refined, published):
        sigma = su.get(label)
        out[label] = (dist, dist / sigma if sigma else None)
    return out


def atoms_off(refined, published, tolerance: float = 0.05, n_su: float = 3.0,
              undetermined: Iterable[str] = ()) -> list[str]:
    """Atoms farther than `tolerance` Å from their published position and more than
    `n_su` su from it (or without an su, or with a position the refinement reported as
    not determined by the data: the su of a singular direction means nothing)."""
    unknown = {label.upper() for label in undetermined}
    return [
        label for label, (dist, ratio) in deviation_su(refined, published).items()
        if dist > tolerance and (ratio is None or ratio > n_su or label.upper() in unknown)
    ]


def published_parameters(case) -> int | None:
    """The number of parameters the published refinement states: the CIF's, or a SHELXL
    .res/.ins's "REM  N parameters refined" line."""
    import re

    from restraint_fidelity import published_statistics

    if case.reference.suffix.lower() in (".res", ".ins"):
        text = case.reference.read_text(errors="replace")
        found = re.search(r"^REM\s+(\d+)\s+parameters refined", text, flags=re.MULTILINE | re.IGNORECASE)
        return int(found.group(1)) if found else None
    st = published_statistics(case)
    return None if st is None else int(st["p"])


def run_case(case, options: dict, rms: float = RMS, as_published: bool = False, seed_offset: int = 0) -> dict:
    from refractor_core.types import Candidate
    from refractor_plugins.refiners.configs import LsqConfig
    from refractor_plugins.refiners.lsq.refiner import LsqRefiner

    data, published, instructions = load_case(case)
    seed = SEED + zlib.crc32(case.name.encode()) + seed_offset
    start = published if as_published else perturbed_start(published, rms, seed)
    meta = {"instructions": instructions.model_dump()} if instructions is not None else {}
    # a published model, refined as a user's model would be (`refractor refine --model`)
    candidate = Candidate(structure=start, generator="user-model", seed=seed, meta=meta)
    t0 = time.perf_counter()
    refiner = LsqRefiner(LsqConfig(**options))
    r = refiner.refine(data, candidate)
    seconds = time.perf_counter() - t0
    dev, who = max_deviation(r.structure, published)
    per_atom = deviation_su(r.structure, published)
    off = atoms_off(r.structure, published, undetermined=r.meta.get("undetermined_positions", ()))
    worst_su = max(((ratio, label) for label, (_, ratio) in per_atom.items() if ratio is not None), default=(None, "-"))
    return {
        "case": case.name,
        "R1": r.r1,
        "wR2": r.wr2,
        "GooF": r.goof,
        "cycles": r.cycles,
        "converged": r.converged,
        "max_shift_su": r.max_shift_su,
        "seconds": seconds,
        "published_R1": case.published_r1,
        "n_reflections": r.n_reflections,
        "n_parameters": r.n_parameters,
        "published_parameters": published_parameters(case) if as_published else None,
        "max_deviation_A": dev,
        "worst_atom": who,
        "max_deviation_su": worst_su[0],
        "worst_atom_su": worst_su[1],
        "atoms_beyond_0.05A_and_3su": off,
        "n_h_placed": sum(1 for s in r.structure.sites if s.calc),
        "flack": r.flack,
        "flack_su": r.flack_su,
        "weights": [r.weight_a, r.weight_b],
        "diff_peak": r.diff_peak,
        "diff_hole": r.diff_hole,
        "matrix": r.meta.get("matrix"),
        "warnings": r.meta.get("warnings", []),
        "load_average_1min": os.getloadavg()[0],
    }


def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def summarise(rows: list[dict]) -> dict:
    with_pub = [r for r in rows if r.get("published_R1") is not None and "error" not in r]
    ok_r1 = [r for r in with_pub if r["R1"] <= r["published_R1"] + 0.01]
    good = [r for r in rows if "error" not in r]
    return {
        "cases": len(rows),
        "failed": [r["case"] for r in rows if "error" in r],
        "with_published_R1": len(with_pub),
        "R1_within_0.01_of_published": len(ok_r1),
        "fraction_R1_ok": len(ok_r1) / max(len(with_pub), 1),
        "goof_in_0.8_1.5": sum(0.8 <= r["GooF"] <= 1.5 for r in good),
        "all_atoms_within_0.05A": sum(r["max_deviation_A"] <= 0.05 for r in good),
        "all_atoms_within_0.05A_or_3su": sum(not r.get("atoms_beyond_0.05A_and_3su", [None]) for r in good),
        "total_seconds": sum(r.get("seconds", 0.0) for r in rows),
    }


def run_reported(case, options: dict, tag: str, rms: float = RMS, **kwargs) -> dict:
    """`run_case`, its row printed under `tag`; a failure becomes a row with its error (a
    benchmark reports failures and goes on)."""
    try:
        row = run_case(case, options, rms, **kwargs)
    except Exception as exc:
        row = {"case": case.name, "error": f"{type(exc).__name__}: {exc}", "published_R1": case.published_r1}
    if "error" in row:
        print(f"{case.name:30s} {tag} ERROR {row['error']}", flush=True)
    else:
        print(
            f"{case.name:30s} {tag} R1 {row['R1']:.4f} (pub {_fmt(case.published_r1, '.4f')}) "
            f"wR2 {row['wR2']:.4f} GooF {row['GooF']:.3f} cycles {row['cycles']} "
            f"dev {row['max_deviation_A']:.3f} Å ({row['worst_atom']}) {row['seconds']:.1f} s",
            flush=True,
        )
    return row


def _merged_rows(previous: list[dict], rows: list[dict]) -> list[dict]:
    """`rows` and the rows of `previous` for other cases, in the cases' order (--update)."""
    from refractor_core.testing.real_cases import load_cases

    order = [c.name for c in load_cases()]
    mine = {r["case"] for r in rows}
    kept = [r for r in previous if r["case"] not in mine]
    return sorted(kept + rows, key=lambda r: (order.index(r["case"]) if r["case"] in order else len(order),
                                              r.get("seed_offset", 0)))


def _command(args) -> str:
    """The command line that reproduces this run."""
    return (
        "python benchmarks/refine_real.py" + (" --variants" if args.variants else "")
        + (f" --seeds {args.seeds}" if args.seeds else "")
        + (f" --cases {args.cases}" if args.cases else "") + (f" --exclude {args.exclude}" if args.exclude else "")
        + (" --update" if args.update else "") + (f" --rms {args.rms:g}" if args.rms != RMS else "")
        + (" --as-published" if args.as_published else "")
        + (f" --convergence {args.convergence:g}" if args.convergence is not None else "")
    )


def run_seeds(cases, args) -> int:
    """Each case refined from its main perturbation and `args.seeds` further ones: whether
    a miss depends on the start. Writes refine_real_seeds.json and .md (with --update,
    the rows of other cases already there are kept)."""
    from refractor_core.testing.real_cases import load_cases

    rows = []
    for case in cases:
        for offset in range(args.seeds + 1):
            row = run_reported(case, VARIANTS["aniso+H"], f"seed +{offset}", args.rms, seed_offset=offset)
            row["seed_offset"] = offset
            rows.append(row)
    command = _command(args)
    out = Path(args.output)
    if args.update and (out / "refine_real_seeds.json").exists():
        previous = json.loads((out / "refine_real_seeds.json").read_text())
        rows = _merged_rows(previous.get("cases", []), rows)
        command = previous.get("command", "") + "; then " + command
        cases = [c for c in load_cases() if any(r["case"] == c.name for r in rows)]
    lines = [
        "# Refinement of perturbed published models from several starts", "",
        f"Command: `{command}`; date {datetime.now(timezone.utc).isoformat(timespec='seconds')}; {platform.platform()}", "",
        f"Each case refined (lsq, anisotropic non-H, riding H) from its main perturbation (seed +0, as in refine_real.md) "
        f"and further ones, seed +1, +2, ... ({args.rms:g} Å RMS, U_iso {U_START}, H removed).", "",
        "| case | starts with every non-H atom within 0.05 Å | max deviation (Å) per start | R1 per start |",
        "|---|---|---|---|",
    ]
    for case in cases:
        mine = [r for r in rows if r["case"] == case.name and "error" not in r]
        within = sum(r["max_deviation_A"] <= 0.05 for r in mine)
        devs = ", ".join(f"{r['max_deviation_A']:.3f} ({r['worst_atom']})" for r in mine)
        r1s = ", ".join(f"{r['R1']:.4f}" for r in mine)
        lines.append(f"| {case.name} | {within}/{len(mine)} | {devs} | {r1s} |")
    out.mkdir(parents=True, exist_ok=True)
    (out / "refine_real_seeds.json").write_text(json.dumps({"command": command, "cases": rows}, indent=2, default=str))
    (out / "refine_real_seeds.md").write_text("\n".join(lines) + "\n")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default=None, help="comma-separated case names (default: all)")
    parser.add_argument("--exclude", default=None, help="comma-separated case names to leave out")
    parser.add_argument(
        "--update", action="store_true",
        help="merge the rows of this run into the existing refine_real.json/.md (rows of the same "
        "case replaced), e.g. to run a slow case separately",
    )
    parser.add_argument(
        "--variants", "--ablation", dest="variants", action="store_true",
        help="also refine the same starts isotropic/anisotropic, with/without riding H",
    )
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument(
        "--rms", type=float, default=RMS,
        help=f"coordinate perturbation (Å RMS, default {RMS}); another value writes refine_real_rms<value>.*: "
        "--rms 0 refines from the published positions, to tell perturbation effects from model differences",
    )
    parser.add_argument(
        "--as-published", action="store_true",
        help="start from the published models as given (no perturbation, ADPs and H kept); writes refine_real_published.*",
    )
    parser.add_argument(
        "--seeds", type=int, default=0,
        help="also refine each case from this many further perturbations (seed + 1 ... N); writes refine_real_seeds.* only",
    )
    parser.add_argument(
        "--convergence", type=float, default=None,
        help="stop at this max shift/su instead of the refiner's default (0.05); another value adds "
        "_conv<value> to the output name: with --as-published, whether each published model is the "
        "least-squares minimum or a point in a flat valley its refinement stopped in",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="print the refinement logs (with times) to stderr")
    args = parser.parse_args()
    if args.verbose:
        import logging

        logging.basicConfig(format="%(asctime)s %(message)s", datefmt="%H:%M:%S", level=logging.WARNING)
        logging.getLogger("refractor.lsq").setLevel(logging.INFO)

    from refractor_core.testing.real_cases import load_cases

    cases = load_cases()
    if args.cases:
        wanted = set(args.cases.split(","))
        cases = [c for c in cases if c.name in wanted]
    if args.exclude:
        unwanted = set(args.exclude.split(","))
        cases = [c for c in cases if c.name not in unwanted]
    if args.seeds > 0:
        return run_seeds(cases, args)
    variants = VARIANTS if args.variants else {"aniso+H": VARIANTS["aniso+H"]}
    if args.convergence is not None:
        variants = {v: {**opts, "convergence": args.convergence, "max_cycles": 300} for v, opts in variants.items()}
    results: dict[str, list[dict]] = {v: [] for v in variants}
    for case in cases:
        for vname, opts in variants.items():
            # as published: the atoms' ADP types as the model gives them, as `refractor
            # refine --model` keeps them by default
            row = run_reported(case, {**opts, "anisotropic": "auto"} if args.as_published else opts,
                               f"[{vname}]", args.rms, as_published=args.as_published)
            row["variant"] = vname
            results[vname].append(row)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    command = _command(args)
    header = {
        "command": command,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "note": "2 shared cores; timings noisy"},
        "start": f"published model, non-H xyz perturbed {args.rms:g} Å RMS (seed {SEED}+crc32(case)), U_iso {U_START}, H removed",
    }
    if args.as_published:
        header["title"] = "Refinement from the published models as given (lsq, anisotropic non-H, the model's H)"
        header["start"] = ("the published model as given: positions, ADPs, H atoms (riding or free, as the model "
                           "refines them); parameters: ours / the published refinement's")
    if args.convergence is not None:
        header["start"] += f"; refined until max shift/su < {args.convergence:g} (default 0.05), at most 300 cycles"
    main_rows = results["aniso+H"]
    stem = "refine_real"
    if args.rms != RMS:
        stem = f"refine_real_rms{args.rms:g}"
    if args.as_published:
        stem = "refine_real_published"
    if args.convergence is not None:
        stem += f"_conv{args.convergence:g}"
    # a subset never replaces the full results, unless merged into them (--update)
    subset = "_subset" if args.cases and not args.update else ""
    stem += subset
    if args.update and (out / f"{stem}.json").exists():
        previous = json.loads((out / f"{stem}.json").read_text())
        main_rows = _merged_rows(previous.get("cases", []), main_rows)
        header["command"] = previous.get("command", "") + "; then " + command
    summary = {**header, "summary": summarise(main_rows), "cases": main_rows}
    (out / f"{stem}.json").write_text(json.dumps(summary, indent=2, default=str))
    (out / f"{stem}.md").write_text(_markdown(summary))
    if args.variants:
        vstem = "refine_real_variants" + subset
        if args.update and (out / f"{vstem}.json").exists():
            previous = json.loads((out / f"{vstem}.json").read_text())
            for v, rows in results.items():
                results[v] = _merged_rows(previous.get("variants", {}).get(v, {}).get("cases", []), rows)
        abl = {**header, "variants": {v: {"summary": summarise(rows), "cases": rows} for v, rows in results.items()}}
        (out / f"{vstem}.json").write_text(json.dumps(abl, indent=2, default=str))
        (out / f"{vstem}.md").write_text(_variants_markdown(abl))
    print(json.dumps(summary["summary"], indent=2))
    return 0


def _markdown(summary: dict) -> str:
    s = summary["summary"]
    lines = [
        "# " + summary.get("title", "Refinement of perturbed published models (lsq, anisotropic non-H, riding H)"),
        "",
        f"Command: `{summary['command']}`; date {summary['date']}; {summary['machine']['platform']}, "
        f"{summary['machine']['cpus']} CPUs ({summary['machine']['note']}).",
        "",
        f"Start: {summary['start']}.",
        "",
        f"R1 ≤ published + 0.01: {s['R1_within_0.01_of_published']}/{s['with_published_R1']} cases with a published R1; "
        f"GooF in 0.8-1.5: {s['goof_in_0.8_1.5']}/{s['cases']}; every non-H atom within 0.05 Å of the published "
        f"position: {s['all_atoms_within_0.05A']}/{s['cases']} (within 0.05 Å or 3 su: "
        f"{s.get('all_atoms_within_0.05A_or_3su', '-')}/{s['cases']}); failed: {', '.join(s['failed']) or 'none'}; "
        f"total {s['total_seconds']:.0f} s.",
        "",
        "| case | R1 | published R1 | wR2 | GooF | cycles | max shift/su | max dev. (Å) | max dev./su | H placed | parameters | matrix | s | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["cases"]:
        if "error" in r:
            lines.append(f"| {r['case']} | error: {r['error']} |||||||||||")
            continue
        lines.append(
            f"| {r['case']} | {r['R1']:.4f} | {_fmt(r['published_R1'], '.4f')} | {r['wR2']:.4f} | {r['GooF']:.3f} | "
            f"{r['cycles']} | {_fmt(r['max_shift_su'], '.3f')} | {r['max_deviation_A']:.3f} ({r['worst_atom']}) | "
            f"{_fmt(r.get('max_deviation_su'), '.1f')} ({r.get('worst_atom_su', '-')}) | "
            f"{r['n_h_placed']} | {r['n_parameters']}"
            + (f" / {_fmt(r['published_parameters'], 'd')}" if r.get("published_parameters") is not None else "")
            + f" | {r['matrix']} | {r['seconds']:.1f} | "
            f"{_fmt(r.get('load_average_1min'), '.1f')} |"
        )
    return "\n".join(lines) + "\n"


def _variants_markdown(abl: dict) -> str:
    names = list(abl["variants"])
    descr = {
        "aniso+H": "anisotropic non-H, riding H",
        "aniso": "anisotropic non-H, no H",
        "iso+H": "isotropic non-H, riding H",
        "iso": "isotropic non-H, no H",
    }
    lines = [
        "# What anisotropic ADPs and riding H contribute (same perturbed starts)",
        "",
        f"Command: `{abl['command']}`; date {abl['date']}; {abl['machine']['platform']}, "
        f"{abl['machine']['cpus']} CPUs ({abl['machine']['note']}).",
        "",
        f"Start: {abl['start']}. Variants: " + "; ".join(f"{v} = {descr.get(v, v)}" for v in names) + ".",
        "",
        "R1 / wR2 / GooF per variant:",
        "",
        "| case | published R1 | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    by_case: dict[str, dict[str, dict]] = {}
    for v, block in abl["variants"].items():
        for r in block["cases"]:
            by_case.setdefault(r["case"], {})[v] = r
    for case, per in by_case.items():
        cells = []
        pub = next((r.get("published_R1") for r in per.values() if r.get("published_R1") is not None), None)
        for v in names:
            r = per.get(v)
            cells.append("error" if r is None or "error" in r else f"{r['R1']:.4f} / {r['wR2']:.4f} / {r['GooF']:.2f}")
        lines.append(f"| {case} | {_fmt(pub, '.4f')} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| variant | R1 ≤ pub + 0.01 | GooF 0.8-1.5 | atoms within 0.05 Å | mean R1 | mean wR2 | mean parameters | total s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for v in names:
        s = abl["variants"][v]["summary"]
        good = [r for r in abl["variants"][v]["cases"] if "error" not in r]
        n = max(len(good), 1)
        lines.append(
            f"| {v} | {s['R1_within_0.01_of_published']}/{s['with_published_R1']} | {s['goof_in_0.8_1.5']}/{s['cases']} | "
            f"{s['all_atoms_within_0.05A']}/{s['cases']} | {sum(r['R1'] for r in good) / n:.4f} | "
            f"{sum(r['wR2'] for r in good) / n:.4f} | {sum(r['n_parameters'] for r in good) / n:.0f} | {s['total_seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
