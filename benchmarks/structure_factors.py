"""Throughput of the torch structure-factor engine against gemmi, on the real reference models.

For each CIF reference model: all symmetry-unique reflections to the case's d_min; gemmi's
StructureFactorCalculatorX called from Python per reflection (the way a Python program
uses it), then our engine forward (float64, float32), forward + autograd gradient with
respect to coordinates, ADPs and occupancies, the analytic complex derivatives
(`with_derivatives`) and the analytic derivatives of |F|² that least squares uses
(`intensity_derivatives`). Throughput is reported in (asymmetric-unit atoms × reflections) per second; the
ratio to gemmi does not depend on that choice.

    python benchmarks/structure_factors.py [--threads 2] [--cases a,b] [--repeat 3]

Writes benchmarks/results/structure_factors.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from refractor_core.crystal.structure_factors import AtomTensors, StructureFactorEngine  # noqa: E402
from refractor_core.testing.real_cases import load_cases  # noqa: E402
from tests._gemmi_models import (  # noqa: E402
    cif_site_symmetry_orders,
    gemmi_small_structure,
    structure_from_gemmi,
)


def best_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_case(case, repeat: int) -> dict:
    import gemmi

    st = gemmi_small_structure(case)
    structure = structure_from_gemmi(st, cif_site_symmetry_orders(case))
    hkl = np.array(gemmi.make_miller_array(st.cell, st.spacegroup, max(case.d_min, 0.7), unique=True), dtype=np.int64)
    n_atoms, n_refl = len(structure.sites), len(hkl)
    work = n_atoms * n_refl

    calc = gemmi.StructureFactorCalculatorX(st.cell)
    st.change_occupancies_to_crystallographic()
    hkl_list = [tuple(h) for h in hkl.tolist()]
    t_gemmi = best_time(lambda: [calc.calculate_sf_from_small_structure(st, h) for h in hkl_list], max(1, repeat - 1))

    out = {
        "case": case.name,
        "space_group": structure.space_group.symbol,
        "n_ops": int(len(structure.space_group.gemmi().operations())),
        "atoms": n_atoms,
        "reflections": n_refl,
        "gemmi_s": t_gemmi,
    }
    for dtype, tag in ((torch.float64, "f64"), (torch.float32, "f32")):
        eng = StructureFactorEngine(hkl, structure.cell, structure.space_group, wavelength=case.wavelength, dtype=dtype)
        atoms = AtomTensors.from_structure(structure, symmetry=eng.symmetry, dtype=dtype)

        def forward():
            with torch.no_grad():
                eng.fc(atoms)

        def forward_backward():
            xyz = atoms.xyz.clone().requires_grad_(True)
            ustar = atoms.u_star.clone().requires_grad_(True)
            occ = atoms.occupancy.clone().requires_grad_(True)
            loss = eng.fc_squared(atoms, xyz=xyz, u_star=ustar, occupancy=occ).sum()
            loss.backward()

        def analytic():
            eng.with_derivatives(atoms)

        def intensity():
            eng.intensity_derivatives(atoms)

        forward()  # warm-up (form-factor cache)
        out[f"ours_forward_{tag}_s"] = best_time(forward, repeat)
        out[f"ours_forward_backward_{tag}_s"] = best_time(forward_backward, repeat)
        out[f"ours_analytic_derivatives_{tag}_s"] = best_time(analytic, repeat)
        out[f"ours_intensity_derivatives_{tag}_s"] = best_time(intensity, repeat)
        out["reduced_operators"] = eng.n_operators
    out["throughput"] = {
        k.replace("_s", ""): work / v for k, v in out.items() if k.endswith("_s") and isinstance(v, float) and v > 0
    }
    out["speedup_vs_gemmi"] = {
        k: out["gemmi_s"] / v for k, v in out.items() if k.startswith("ours_") and k.endswith("_s")
    }
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cases", default="")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "structure_factors"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    wanted = {c for c in args.cases.split(",") if c}
    cases = [c for c in load_cases() if c.reference.suffix == ".cif" and (not wanted or c.name in wanted)]
    rows = []
    for case in cases:
        r = bench_case(case, args.repeat)
        rows.append(r)
        sp = r["speedup_vs_gemmi"]
        print(
            f"{r['case']:30s} atoms={r['atoms']:4d} refl={r['reflections']:6d} gemmi={r['gemmi_s']:.3f}s "
            f"fwd64 x{sp['ours_forward_f64_s']:.1f} fwd32 x{sp['ours_forward_f32_s']:.1f} "
            f"fwd+grad64 x{sp['ours_forward_backward_f64_s']:.1f} fwd+grad32 x{sp['ours_forward_backward_f32_s']:.1f} "
            f"analytic64 x{sp['ours_analytic_derivatives_f64_s']:.1f} intensity64 x{sp['ours_intensity_derivatives_f64_s']:.1f}",
            flush=True,
        )
    total_gemmi = sum(r["gemmi_s"] for r in rows)
    agg = {}
    for key in rows[0]["speedup_vs_gemmi"]:
        agg[key] = total_gemmi / sum(r[key] for r in rows)
    work = sum(r["atoms"] * r["reflections"] for r in rows)
    summary = {
        "command": "python benchmarks/structure_factors.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch_threads": args.threads,
            "torch": torch.__version__,
            "load_average_at_end": os.getloadavg(),
        },
        "aggregate_speedup_vs_gemmi": agg,
        "aggregate_throughput_atom_reflections_per_s": {
            "gemmi": work / total_gemmi,
            **{k.replace("_s", ""): work / sum(r[k] for r in rows) for k in rows[0]["speedup_vs_gemmi"]},
        },
        "cases": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2))
    lines = [
        "# Structure-factor throughput vs gemmi",
        "",
        f"Command: `{summary['command']}`  ",
        f"Date: {summary['date']}; machine: {summary['machine']['platform']}, {summary['machine']['cpus']} CPUs, "
        f"torch {summary['machine']['torch']} with {args.threads} threads; load average at end "
        f"{summary['machine']['load_average_at_end']}",
        "",
        "Aggregate speed-up over all cases (total gemmi time / total our time):",
        "",
        "| measure | speed-up | atom·reflections/s |",
        "|---|---|---|",
        f"| gemmi (Python loop) | 1 | {summary['aggregate_throughput_atom_reflections_per_s']['gemmi']:.3g} |",
    ]
    for k, v in agg.items():
        lines.append(f"| {k.replace('_s', '')} | {v:.1f} | {summary['aggregate_throughput_atom_reflections_per_s'][k.replace('_s', '')]:.3g} |")
    lines += ["", "| case | SG | atoms | reflections | gemmi s | fwd f64 × | fwd f32 × | fwd+grad f64 × | fwd+grad f32 × | analytic f64 × | intensity f64 × |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        sp = r["speedup_vs_gemmi"]
        lines.append(
            f"| {r['case']} | {r['space_group']} | {r['atoms']} | {r['reflections']} | {r['gemmi_s']:.3f} | "
            f"{sp['ours_forward_f64_s']:.1f} | {sp['ours_forward_f32_s']:.1f} | {sp['ours_forward_backward_f64_s']:.1f} | "
            f"{sp['ours_forward_backward_f32_s']:.1f} | {sp['ours_analytic_derivatives_f64_s']:.1f} | "
            f"{sp['ours_intensity_derivatives_f64_s']:.1f} |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(json.dumps(summary["aggregate_speedup_vs_gemmi"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
