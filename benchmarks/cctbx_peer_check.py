"""Peer check of the `lsq` refiner against cctbx (cctbx-base from PyPI) on five real cases.

For each case the same inputs go to both programs: our SHELXL-style merged observations
(Fo², σ, unique hkl), the published model, and the perturbed start model of
`benchmarks/refine_real.py` (non-H atoms displaced 0.2 Å RMS, U_iso 0.05, H removed).
Compared:

1. Fc of the published model at every observed reflection (same IT92 form factors, same
   f′/f″): our torch engine vs cctbx's direct summation;
2. R1 of the published model: our kernel's `agreement` vs smtbx's `r1_factor`;
3. refinement of the perturbed start (anisotropic non-H, no H, SHELXL weights fixed to
   the same a, b): our `lsq` vs smtbx's Levenberg-Marquardt least squares; final R1 and
   the largest distance between the two refined models' atoms, and each one's largest
   distance from the published positions. The model's EADP constraints hold on both sides
   (smtbx's shared_u); cctbx holds the occupancies at the values ours refined to.

pd_complex_malbac and fe_perchlorate_hydrate are two of the three cases where
`refine_real.py` leaves an atom more than 0.05 Å from its published position: whether an
independent refiner, given the same data and model, lands where ours does.

cctbx is never imported by refractor. Importing gemmi or scipy.linalg before cctbx crashes
it, so the cctbx side runs in its own interpreter (`--worker`) that imports cctbx first
and reads/writes JSON only.

    pip install cctbx-base          # once, into the project's .venv (about 360 MB)
    python benchmarks/cctbx_peer_check.py [--cases a,b,c] [--max-cycles 100 --convergence 0.001]

Writes benchmarks/results/cctbx_peer_check.json and .md. With --sigma-weights both sides
refine with w = 1/σ² (a = b = 0) instead of the SHELXL weights ours optimises, which
depend on Fc² and the scale (written to cctbx_peer_check_sigma_weights.*).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CASES = ("pr_sulfate_hydroxide", "urea", "ntd51a_si", "pd_complex_malbac", "fe_perchlorate_hydrate")


# ======================================================================================
# the cctbx side (own process: cctbx imported first, nothing of refractor)
# ======================================================================================


def worker(job_path: str, out_path: str) -> None:
    import cctbx  # noqa: F401  (first import: see module docstring)
    from cctbx import adptbx, crystal, miller, sgtbx, uctbx, xray
    from cctbx.array_family import flex
    from scitbx.lstbx import normal_eqns_solving
    import smtbx.utils
    from smtbx.refinement import constraints, least_squares
    from smtbx.refinement.constraints import adp as adp_constraints

    job = json.loads(Path(job_path).read_text())
    cs = crystal.symmetry(
        unit_cell=uctbx.unit_cell(job["cell"]),
        space_group_info=sgtbx.space_group_info(f"Hall: {job['hall']}"),
    )
    anomalous = not job["friedel_merged"]
    indices = flex.miller_index([tuple(h) for h in job["hkl"]])
    mset = miller.set(cs, indices, anomalous_flag=anomalous)

    def structure(sites, refine: bool):
        xs = xray.structure(crystal.special_position_settings(cs, min_distance_sym_equiv=0.3))
        for s in sites:
            sc = xray.scatterer(label=s["label"], site=tuple(s["xyz"]), occupancy=s["occupancy"], scattering_type=s["element"])
            fp, fdp = job["anomalous"][s["element"]]
            sc.fp, sc.fdp = fp, fdp
            if s["u_aniso"] is not None:
                sc.u_star = adptbx.u_cif_as_u_star(cs.unit_cell(), tuple(s["u_aniso"]))
                sc.flags.set_use_u_iso(False).set_use_u_aniso(True)
            else:
                sc.u_iso = s["u_iso"]
                sc.flags.set_use_u_iso(True).set_use_u_aniso(False)
            xs.add_scatterer(sc)
        xs.scattering_type_registry(table="it1992")
        if refine:
            for sc in xs.scatterers():
                if not sc.flags.use_u_aniso():
                    sc.u_star = adptbx.u_iso_as_u_star(cs.unit_cell(), sc.u_iso)
                    sc.flags.set_use_u_iso(False).set_use_u_aniso(True)
                sc.flags.set_grad_site(True).set_grad_u_aniso(True)
        return xs

    out = {}
    published = structure(job["published"], refine=False)
    fc = mset.structure_factors_from_scatterers(published, algorithm="direct").f_calc()
    out["fc_re"] = list(flex.real(fc.data()))
    out["fc_im"] = list(flex.imag(fc.data()))

    fo_sq = miller.array(mset, data=flex.double(job["fo2"]), sigmas=flex.double(job["sigma"]))
    fo_sq.set_observation_type_xray_intensity()
    a, b = job["weights"]

    def ls_for(xs):
        shared = [adp_constraints.shared_u(group) for group in job.get("shared_u", [])]
        rep = constraints.reparametrisation(structure=xs, constraints=shared,
                                            connectivity_table=smtbx.utils.connectivity_table(xs))
        return least_squares.crystallographic_ls(
            fo_sq.as_xray_observations(), rep,
            weighting_scheme=least_squares.mainstream_shelx_weighting(a=a, b=b))

    ls = ls_for(published)
    ls.build_up()
    out["published_r1"] = float(ls.r1_factor(cutoff_factor=2)[0])

    start = structure(job["start"], refine=True)
    for sc, occupancy in zip(start.scatterers(), job.get("start_occupancies") or []):
        sc.occupancy = occupancy  # held at our refined values (cctbx refines none here)
    ls = ls_for(start)
    t0 = time.perf_counter()
    cycles = normal_eqns_solving.levenberg_marquardt_iterations(
        ls, n_max_iterations=job["max_cycles"], gradient_threshold=1e-10, step_threshold=1e-9)
    out["refine_seconds"] = time.perf_counter() - t0
    out["refine_cycles"] = int(cycles.n_iterations)
    ls.build_up()
    out["refined_r1"] = float(ls.r1_factor(cutoff_factor=2)[0])
    out["refined_wr2"] = float(ls.wR2())
    out["refined_goof"] = float(ls.goof())
    out["refined_sites"] = {sc.label: list(sc.site) for sc in start.scatterers()}
    out["refined_u_cif"] = {sc.label: list(adptbx.u_star_as_u_cif(cs.unit_cell(), sc.u_star)) for sc in start.scatterers()}
    Path(out_path).write_text(json.dumps(out))


# ======================================================================================
# our side
# ======================================================================================


def _site_dict(s) -> dict:
    return {"label": s.label, "element": s.element, "xyz": list(s.xyz), "occupancy": s.occupancy,
            "u_iso": s.u_iso, "u_aniso": list(s.u_aniso) if s.u_aniso is not None else None}


def _shared_u_groups(instructions, structure) -> list[list[int]]:
    """The model's EADP constraints as groups of site indices (for smtbx's shared_u)."""
    index = {s.label.upper(): k for k, s in enumerate(structure.sites)}
    groups = []
    for r in instructions.restraints if instructions is not None else []:
        if r.kind.upper() == "EADP":
            group = [index[a.label.upper()] for a in r.atoms if a.label.upper() in index]
            if len(group) > 1:
                groups.append(group)
    return groups


def check_case(name: str, max_cycles: int, convergence: float = 0.05, sigma_weights: bool = False) -> dict:
    import zlib

    import numpy as np

    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from refine_real import RMS, SEED, load_case, max_deviation, perturbed_start
    from refractor_core.crystal.observations import prepare_observations
    from refractor_core.crystal.rfactors import agreement
    from refractor_core.crystal.scattering import anomalous_terms
    from refractor_core.crystal.structure_factors import calculate_fc
    from refractor_core.testing.real_cases import get_case
    from refractor_core.types import Candidate
    from refractor_plugins.refiners.configs import LsqConfig
    from refractor_plugins.refiners.lsq.refiner import LsqRefiner

    case = get_case(name)
    data, published, instructions = load_case(case)
    sg = published.space_group
    obs = prepare_observations(data, sg, instructions)
    wavelength = data.wavelength or published.wavelength
    elements = sorted({s.element for s in published.sites})
    fp, fdp = anomalous_terms(elements, wavelength)
    seed = SEED + zlib.crc32(case.name.encode())
    start = perturbed_start(published, RMS, seed)

    # ours: Fc and R1 of the published model
    fc_ours = calculate_fc(published, obs.hkl, wavelength=wavelength)
    # ours: refinement of the perturbed start (anisotropic, no H), weights optimised
    # the SHELXL weights depend on Fc² and the scale; w = 1/σ² (a = b = 0) does not
    cfg = LsqConfig(anisotropic=True, riding_h=False, extinction=False, flack=False, max_cycles=max_cycles,
                    weights=(0.0, 0.0) if sigma_weights else None,
                    convergence=convergence,
                    ignore_instructions=False)
    meta = {"instructions": instructions.model_dump()} if instructions is not None else {}
    t0 = time.perf_counter()
    ours = LsqRefiner(cfg).refine(data, Candidate(structure=start, meta=meta))
    our_seconds = time.perf_counter() - t0
    a, b = ours.weight_a, ours.weight_b
    refined_occupancy = {s.label.upper(): s.occupancy for s in ours.structure.sites}
    ag_pub = agreement(obs.fo2, obs.sigma, np.abs(fc_ours) ** 2, weight_a=a, weight_b=b)

    job = {
        "cell": list(published.cell.parameters),
        "hall": sg.hall,
        "friedel_merged": obs.friedel_merged,
        "hkl": obs.hkl.tolist(),
        "fo2": obs.fo2.tolist(),
        "sigma": obs.sigma.tolist(),
        "weights": [a, b],
        "anomalous": {e: [float(x), float(y)] for e, x, y in zip(elements, fp, fdp)},
        "published": [_site_dict(s) for s in published.sites],
        "start": [_site_dict(s) for s in start.sites],
        "shared_u": _shared_u_groups(instructions, start),
        "start_occupancies": [refined_occupancy.get(s.label.upper(), s.occupancy) for s in start.sites],
        "max_cycles": max_cycles,
    }
    with tempfile.TemporaryDirectory() as tmp:
        jp, op = Path(tmp) / "job.json", Path(tmp) / "out.json"
        jp.write_text(json.dumps(job))
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.run([sys.executable, __file__, "--worker", str(jp), str(op)],
                              capture_output=True, text=True, env=env, timeout=3600)
        if proc.returncode != 0:
            raise RuntimeError(f"cctbx worker failed ({proc.returncode}): {proc.stderr[-2000:]}")
        cc = json.loads(op.read_text())

    fc_cc = np.array(cc["fc_re"]) + 1j * np.array(cc["fc_im"])
    amp_o, amp_c = np.abs(fc_ours), np.abs(fc_cc)
    strong = amp_c > 0.05 * amp_c.max()
    phase_diff = np.degrees(np.abs(np.angle(fc_ours[strong] / fc_cc[strong])))
    # cctbx's refined model, evaluated by our engine with the same weights as ours: which of
    # the two ends lies lower on the one sum of squares both minimise
    start_sites = {s.label: (s, occ) for s, occ in zip(start.sites, job["start_occupancies"])}
    cc_structure = published.model_copy(update={"sites": [
        start_sites[lab][0].model_copy(update={"xyz": tuple(x), "u_aniso": tuple(cc["refined_u_cif"][lab]),
                                                "u_iso": None, "occupancy": start_sites[lab][1]})
        for lab, x in cc["refined_sites"].items()
    ]})

    def wr2_by_our_engine(structure) -> float:
        fc2 = np.abs(calculate_fc(structure, obs.hkl, wavelength=wavelength)) ** 2
        return agreement(obs.fo2, obs.sigma, fc2, weight_a=a, weight_b=b).wR2

    dev_ours, dev_cc = max_deviation(ours.structure, published), max_deviation(cc_structure, published)
    worst, who = max_deviation(ours.structure, cc_structure)  # the two refined models apart
    return {
        "case": name,
        "space_group": sg.symbol,
        "n_reflections": int(len(obs.hkl)),
        "fc_max_relative_difference": float(np.max(np.abs(amp_o - amp_c)) / amp_c.max()),
        "fc_rms_relative_difference": float(np.sqrt(np.mean((amp_o - amp_c) ** 2)) / np.sqrt(np.mean(amp_c**2))),
        "fc_max_phase_difference_deg_strong": float(phase_diff.max()) if len(phase_diff) else 0.0,
        "published_R1_ours": ag_pub.R1,
        "published_R1_cctbx": cc["published_r1"],
        "published_R1_paper": case.published_r1,
        "refined_R1_ours": ours.r1,
        "refined_R1_cctbx": cc["refined_r1"],
        "refined_wR2_ours": ours.wr2,
        "refined_wR2_cctbx": cc["refined_wr2"],
        "refined_wR2_our_engine_ours": wr2_by_our_engine(ours.structure),
        "refined_wR2_our_engine_cctbx": wr2_by_our_engine(cc_structure),
        "cycles_ours": ours.cycles,
        "cycles_cctbx": cc["refine_cycles"],
        "seconds_ours": our_seconds,
        "seconds_cctbx": cc["refine_seconds"],
        "max_distance_ours_vs_cctbx_A": worst,
        "worst_atom": who,
        "max_deviation_from_published_ours_A": dev_ours[0],
        "max_deviation_from_published_ours_atom": dev_ours[1],
        "max_deviation_from_published_cctbx_A": dev_cc[0],
        "max_deviation_from_published_cctbx_atom": dev_cc[1],
        "weights": [a, b],
    }


def main() -> int:
    if len(sys.argv) >= 2 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default=",".join(DEFAULT_CASES))
    parser.add_argument("--max-cycles", type=int, default=40)
    parser.add_argument("--convergence", type=float, default=0.05,
                        help="our refinement stops when max shift/su is below this (cctbx: its own step and gradient thresholds)")
    parser.add_argument("--sigma-weights", action="store_true",
                        help="both sides refine with w = 1/σ² instead of the SHELXL weights ours optimises")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    rows = []
    for name in args.cases.split(","):
        try:
            row = check_case(name, args.max_cycles, args.convergence, args.sigma_weights)
        except Exception as exc:  # report and go on
            row = {"case": name, "error": f"{type(exc).__name__}: {exc}"}
        rows.append(row)
        print(json.dumps(row, indent=1), flush=True)
    summary = {
        "command": "python benchmarks/cctbx_peer_check.py" + (f" --cases {args.cases}" if args.cases != ",".join(DEFAULT_CASES) else "")
        + (f" --max-cycles {args.max_cycles}" if args.max_cycles != 40 else "")
        + (f" --convergence {args.convergence:g}" if args.convergence != 0.05 else "")
        + (" --sigma-weights" if args.sigma_weights else ""),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "note": "2 shared cores; timings noisy"},
        "cctbx": _cctbx_version(),
        "cases": rows,
    }
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    stem = "cctbx_peer_check_sigma_weights" if args.sigma_weights else "cctbx_peer_check"
    (out / f"{stem}.json").write_text(json.dumps(summary, indent=2))
    (out / f"{stem}.md").write_text(_markdown(summary))
    return 0


def _cctbx_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("cctbx-base")
    except Exception:  # noqa: BLE001
        return None


def _markdown(summary: dict) -> str:
    lines = [
        "# Peer check against cctbx (smtbx)",
        "",
        f"Command: `{summary['command']}`; date {summary['date']}; cctbx-base {summary['cctbx']}; "
        f"{summary['machine']['platform']} ({summary['machine']['note']}).",
        "",
        "Same merged observations, same published and perturbed start models, same f′/f″ and "
        + ("w = 1/σ² on both sides" if "--sigma-weights" in summary["command"]
           else "the same SHELXL weights (a, b from our refinement) on both sides") + "; EADP constraints on both sides, "
        "occupancies refined by ours and held there by cctbx. No H atoms, no extinction.",
        "",
        "| case | refl. | max Δ|Fc| / max|Fc| | rms Δ|Fc| | max Δφ strong (°) | R1 published ours / cctbx (paper) | "
        "refined R1 ours / cctbx | refined wR2 ours / cctbx | wR2 by our engine: our model / cctbx's | max Δxyz ours-cctbx (Å) | dev. from published ours / cctbx (Å) | cycles ours / cctbx |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["cases"]:
        if "error" in r:
            lines.append(f"| {r['case']} | error: {r['error']} ||||||||||")
            continue
        pub = "?" if r["published_R1_paper"] is None else f"{r['published_R1_paper']:.4f}"
        lines.append(
            f"| {r['case']} | {r['n_reflections']} | {r['fc_max_relative_difference']:.1e} | "
            f"{r['fc_rms_relative_difference']:.1e} | {r['fc_max_phase_difference_deg_strong']:.2e} | "
            f"{r['published_R1_ours']:.4f} / {r['published_R1_cctbx']:.4f} ({pub}) | "
            f"{r['refined_R1_ours']:.4f} / {r['refined_R1_cctbx']:.4f} | {r['refined_wR2_ours']:.4f} / {r['refined_wR2_cctbx']:.4f} | "
            f"{r['refined_wR2_our_engine_ours']:.5f} / {r['refined_wR2_our_engine_cctbx']:.5f} | "
            f"{r['max_distance_ours_vs_cctbx_A']:.4f} ({r['worst_atom']}) | "
            f"{r['max_deviation_from_published_ours_A']:.3f} ({r['max_deviation_from_published_ours_atom']}) / "
            f"{r['max_deviation_from_published_cctbx_A']:.3f} ({r['max_deviation_from_published_cctbx_atom']}) | "
            f"{r['cycles_ours']} / {r['cycles_cctbx']} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
