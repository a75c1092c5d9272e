"""Space-group determination benchmark of the classical `absences` classifier.

    python benchmarks/spacegroup.py generate    # simulated data sets -> cache (once)
    python benchmarks/spacegroup.py calibrate   # fit the evidence weights on the calibration split
    python benchmarks/spacegroup.py evaluate    # test split, real cases, speed -> benchmarks/results/
    python benchmarks/spacegroup.py all         # the three in turn

Simulated data (cache: $REFRACTOR_BENCH_CACHE or ~/.cache/refractor/bench/spacegroup):
the 30 most common small-molecule space-group types (by the CSD shares in
`refractor_plugins.classifiers.priors`) plus 13 types that complete the seven crystal
systems; structures are random pyxtal crystals (organic-like, some with a heavy atom) and
AFLOW prototypes (`../shared/data/structures/aflow-prototypes`) of the type; d_min 0.8 Å,
Mo Kα, three noise levels, and three kinds of file:

- `raw`: every reflection of the limiting sphere measured (systematic absences included,
  as a diffractometer records them), unmerged, Friedel mates apart, a blind cone and random
  losses; F² from the kernel (`model_intensities`), counting noise from
  `refractor_core.simulation.noise` calibrated on the present reflections;
- `processed`: `refractor_core.simulation.simulate` (absences removed, unmerged symmetry
  equivalents) -- a file after data reduction;
- `merged`: the same with one row per unique reflection.

Monoclinic and orthorhombic data are re-indexed in a random other setting gemmi knows
(cell choices, unique axes, axis permutations) half of the time; the truth is the setting
whose operators match the re-indexed data. The space group of the data is never given to
the classifier. Splits: `calib` (weights and temperature fitted there) and `test`.

Real data: every case of ../shared/data/real (cell, formula from the files; the space
group in the files is removed before classification).

Counted right: the space-group type (number) up to its enantiomorph (P4₁2₁2 for P4₃2₁2,
P3₁21 for P3₂21 ...): the two give identical intensities, anomalous signal included, until
a model fixes the absolute structure, so no classifier can tell them apart from the data
(SHELXT and XPREP list both). This is the figure compared with the targets. Also reported:
the strict type (the enantiomorph counted wrong, a coin flip for the 11 pairs) and the
exact setting.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
AFLOW_DIR = ROOT.parent / "shared" / "data" / "structures" / "aflow-prototypes"
RESULTS = ROOT / "benchmarks" / "results"
N_COMMON = 30
#: types added so that every crystal system is covered by several groups
EXTRA_TYPES = [86, 122, 161, 166, 169, 173, 176, 194, 198, 205, 220, 225, 227]
NOISE_LEVELS = {
    "low": {"median_i_over_sigma": 25.0, "background": 0.3, "instability": 0.02},
    "medium": {"median_i_over_sigma": 10.0, "background": 0.5, "instability": 0.03},
    "high": {"median_i_over_sigma": 4.0, "background": 1.0, "instability": 0.04},
}
MODES = {"raw": 0.5, "processed": 0.3, "merged": 0.2}
D_MIN = 0.8
WAVELENGTH = 0.71073
#: enantiomorphic pairs of space-group types
ENANTIOMORPHS = {76: 78, 91: 95, 92: 96, 144: 145, 151: 153, 152: 154, 169: 170, 171: 172, 178: 179,
                 180: 181, 212: 213}
ENANTIOMORPHS.update({v: k for k, v in list(ENANTIOMORPHS.items())})


def cache_dir() -> Path:
    d = Path(os.environ.get("REFRACTOR_BENCH_CACHE", Path.home() / ".cache" / "refractor" / "bench" / "spacegroup"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def target_types() -> list[int]:
    from refractor_plugins.classifiers.priors import CSD_PERCENT

    common = sorted(CSD_PERCENT, key=lambda n: -CSD_PERCENT[n])[:N_COMMON]
    return common + [n for n in EXTRA_TYPES if n not in common]


# --------------------------------------------------------------------------------------
# structures
# --------------------------------------------------------------------------------------


def _settings_matching(cell, xyz: np.ndarray, elements: np.ndarray, number: int, tol: float = 0.05):
    """Table settings of type `number` whose operations map the atom set onto itself."""
    from refractor_core.crystal.cell import orthogonalization_matrix
    from refractor_core.crystal.spacegroup_tables import all_settings

    m = orthogonalization_matrix(cell)
    same = elements[:, None] == elements[None, :]
    out = []
    for s in all_settings():
        if s.number != number:
            continue
        ok = True
        for op in s.gemmi_ops():
            r = np.array(op.rot) / 24.0
            t = np.array(op.tran) / 24.0
            d = (xyz @ r.T + t)[:, None, :] - xyz[None, :, :]
            d -= np.round(d)
            dist = np.linalg.norm(d @ m.T, axis=-1)
            if not np.all(np.min(np.where(same, dist, 9e9), axis=1) < tol):
                ok = False
                break
        if ok:
            out.append(s)
    return out


def _actual_type(lattice: np.ndarray, xyz: np.ndarray, elements: np.ndarray, symprec: float = 0.01) -> tuple[int, float]:
    """The space-group type the atoms really have and the volume of its conventional cell (spglib)."""
    import spglib

    kinds = {e: i for i, e in enumerate(sorted(set(elements)))}
    ds = spglib.get_symmetry_dataset((lattice, xyz, [kinds[e] for e in elements]), symprec=symprec)
    return int(ds.number), cell_volume(ds.std_lattice)


def cell_volume(lattice: np.ndarray) -> float:
    return float(abs(np.linalg.det(np.asarray(lattice, dtype=np.float64))))


def _asymmetric_unit(xyz: np.ndarray, elements: np.ndarray, setting, cell) -> list[int]:
    """Indices of atoms forming an asymmetric unit of a P1 atom list under `setting`."""
    from refractor_core.crystal.cell import orthogonalization_matrix

    m = orthogonalization_matrix(cell)
    covered = np.zeros(len(xyz), dtype=bool)
    keep = []
    ops = [(np.array(op.rot) / 24.0, np.array(op.tran) / 24.0) for op in setting.gemmi_ops()]
    for i in range(len(xyz)):
        if covered[i]:
            continue
        keep.append(i)
        for r, t in ops:
            d = (r @ xyz[i] + t)[None, :] - xyz
            d -= np.round(d)
            covered |= (np.linalg.norm(d @ m.T, axis=-1) < 0.05) & (elements == elements[i])
    return keep


def pyxtal_structure(number: int, rng: np.random.Generator, attempts: int = 8):
    """A random atomic crystal of this type (pyxtal), organic-like, sometimes a heavy atom.

    All atoms sit on the general position (pyxtal would otherwise put many on special
    positions, whose extra extinctions no classifier can tell from space-group absences);
    structures whose atoms happen to have a higher symmetry or a smaller true cell
    (spglib) are rejected and another one is drawn.
    """
    last = None
    for _ in range(attempts):
        try:
            return _pyxtal_once(number, rng)
        except RuntimeError as exc:
            last = exc
    raise RuntimeError(str(last))


def _pyxtal_once(number: int, rng: np.random.Generator):
    import gemmi
    from pyxtal import pyxtal
    from pyxtal.symmetry import Group

    from refractor_core.types import Site, SpaceGroupRef, Structure, UnitCell

    mult = len(gemmi.SpaceGroup(number).operations())
    general = Group(number)[0]
    label = f"{general.multiplicity}{general.letter}"
    n_asu = int(rng.integers(6, 22))
    n_asu = max(1, min(n_asu, 320 // mult))
    frac = np.array([0.7, 0.15, 0.15])
    counts = np.maximum(np.round(frac * n_asu).astype(int), [1, 0, 0])
    species = ["C", "N", "O"]
    if rng.random() < 0.3 and n_asu >= 4:
        species.append(str(rng.choice(["S", "Cl", "Br", "Fe", "Cu", "Pd", "I"])))
        counts = np.append(counts, 1)
    species_k = [(sp, int(k)) for sp, k in zip(species, counts) if k > 0]
    species = [sp for sp, _ in species_k]
    numbers = [k * mult for _, k in species_k]
    sites = [[label] * k for _, k in species_k]  # every atom on the general position
    c = pyxtal()
    for attempt in range(6):
        try:
            c.from_random(3, number, species, numbers, sites=sites, factor=1.1 + 0.1 * attempt, random_state=int(rng.integers(1 << 30)))
            if c.valid:
                break
        except Exception:
            continue
    else:
        raise RuntimeError(f"pyxtal could not build a structure in type {number}")
    pm = c.to_pymatgen()
    lat = pm.lattice
    cell = UnitCell(a=lat.a, b=lat.b, c=lat.c, alpha=lat.alpha, beta=lat.beta, gamma=lat.gamma)
    xyz = np.mod(np.array([s.frac_coords for s in pm.sites], dtype=np.float64), 1.0)
    el = np.array([str(s.specie) for s in pm.sites])
    actual, volume = _actual_type(lat.matrix, xyz, el)
    if actual != number:
        raise RuntimeError(f"pyxtal structure of type {number} has the higher symmetry of type {actual}")
    if volume < 0.9 * cell_volume(lat.matrix):
        raise RuntimeError(f"pyxtal structure of type {number} has a smaller true cell (extra translations)")
    matches = _settings_matching(cell, xyz, el, number)
    if not matches:
        raise RuntimeError(f"pyxtal structure of type {number} has no matching gemmi setting")
    setting = matches[0]
    keep = _asymmetric_unit(xyz, el, setting, cell)
    sites = [Site(label=f"{el[i]}{k + 1}", element=str(el[i]), xyz=tuple(xyz[i]), u_iso=0.03) for k, i in enumerate(keep)]
    return Structure(cell=cell, space_group=SpaceGroupRef(symbol=setting.symbol, number=number, hall=setting.hall), sites=sites, name=f"pyxtal-{number}")


def aflow_files() -> dict[int, list[Path]]:
    out: dict[int, list[Path]] = defaultdict(list)
    for p in sorted(AFLOW_DIR.glob("*.cif")):
        parts = p.stem.split("_")
        try:
            out[int(parts[2])].append(p)
        except (IndexError, ValueError):
            continue
    return out


def aflow_structure(path: Path):
    from refractor_core.crystal.spacegroup_tables import setting_for
    from refractor_core.dataio import load_structure

    s = load_structure(path)
    if setting_for(s.space_group) is None:
        raise RuntimeError(f"{path.name}: setting {s.space_group.symbol} not in the table")
    return s.model_copy(update={"name": f"aflow-{path.stem}"})


# --------------------------------------------------------------------------------------
# setting transformations (re-indexing)
# --------------------------------------------------------------------------------------


def _transform_candidates(system: str) -> list[np.ndarray]:
    """Integer basis changes P (new basis = old basis · P, det +1) worth trying."""
    mats = []
    if system == "orthorhombic":
        import itertools

        for perm in itertools.permutations(range(3)):
            p = np.zeros((3, 3), dtype=np.int64)
            for j, i in enumerate(perm):
                p[i, j] = 1
            if round(np.linalg.det(p)) < 0:
                p[:, 2] *= -1
            mats.append(p)
    elif system == "monoclinic":
        import itertools

        for m in itertools.product((-1, 0, 1), repeat=4):
            a = np.array(m).reshape(2, 2)
            if round(np.linalg.det(a)) != 1:
                continue
            p = np.array([[a[0, 0], 0, a[0, 1]], [0, 1, 0], [a[1, 0], 0, a[1, 1]]], dtype=np.int64)
            mats.append(p)
        cyc = np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0]], dtype=np.int64)  # b unique -> a unique
        mats.append(cyc)
    return mats


def random_setting(structure, rng: np.random.Generator):
    """(P, truth setting, new cell): half of monoclinic/orthorhombic data re-indexed."""
    from refractor_core.crystal.lattice import transform_cell
    from refractor_core.crystal.spacegroup_tables import setting_for, transformed_setting

    base = setting_for(structure.space_group)
    system = base.crystal_system
    eye = np.eye(3, dtype=np.int64)
    if system not in ("monoclinic", "orthorhombic") or rng.random() < 0.5:
        return eye, base, structure.cell
    options = []
    seen = {base.symbol}
    for p in _transform_candidates(system):
        s = transformed_setting(structure.space_group, p)
        if s is None or s.symbol in seen:
            continue
        new_cell = transform_cell(structure.cell, p)
        if system == "monoclinic" and max(new_cell.alpha, new_cell.beta, new_cell.gamma) > 150.0:
            continue
        seen.add(s.symbol)
        options.append((p, s, new_cell))
    if not options:
        return eye, base, structure.cell
    return options[int(rng.integers(len(options)))]


# --------------------------------------------------------------------------------------
# simulation
# --------------------------------------------------------------------------------------


def _sphere(cell, d_min: float) -> np.ndarray:
    from refractor_core.crystal.cell import inv_d_squared

    lim = [int(math.floor(x / d_min)) for x in (cell.a, cell.b, cell.c)]
    r = [np.arange(-m, m + 1) for m in lim]
    g = np.stack(np.meshgrid(*r, indexing="ij"), axis=-1).reshape(-1, 3)
    q = inv_d_squared(cell, g)
    return g[(q > 0) & (q <= 1.0 / d_min**2 + 1e-9)]


def simulate_raw(structure, noise: dict, completeness: float, redundancy: float, outliers: float, rng):
    """All reflections of the sphere measured (absences included), unmerged."""
    from refractor_core.crystal.observations import model_intensities
    from refractor_core.simulation.composition import formula_and_z
    from refractor_core.simulation.noise import NoiseModel, add_outliers, calibrate_counts
    from refractor_core.simulation.simulator import with_wilson_b
    from refractor_core.crystal.symmetry import SymmetryOps
    from refractor_core.types import ReflectionData

    b = float(rng.uniform(2.0, 5.0))
    structure = with_wilson_b(structure, b, rng)
    hkl = _sphere(structure.cell, D_MIN)
    f2 = model_intensities(structure, hkl, wavelength=WAVELENGTH)
    # incompleteness: a blind cone around a random axis plus random losses
    r = hkl.astype(np.float64)
    axis = rng.standard_normal(3)
    cosang = np.abs(r @ axis) / np.maximum(np.linalg.norm(r, axis=1) * np.linalg.norm(axis), 1e-12)
    lose = int(round(len(hkl) * (1.0 - completeness)))
    lost = np.zeros(len(hkl), dtype=bool)
    if lose:
        lost[np.argsort(-cosang)[: lose // 2]] = True
        rest = np.nonzero(~lost)[0]
        lost[rng.choice(rest, size=lose - lose // 2, replace=False)] = True
    hkl, f2 = hkl[~lost], f2[~lost]
    counts = 1 + rng.poisson(max(redundancy - 1.0, 0.0), size=len(hkl))
    parent = np.repeat(np.arange(len(hkl)), counts)
    model = NoiseModel(**noise)
    present = f2 > 1e-9 * max(float(f2.max()), 1e-30)
    c, bg, p = calibrate_counts(f2[present], model)
    n = c * np.maximum(f2[parent], 0.0)
    i_obs = n * (1.0 + p * rng.standard_normal(len(n))) + np.sqrt(n + bg) * rng.standard_normal(len(n))
    sigma = model.sigma_scale * np.sqrt(np.maximum(i_obs, 0.0) + bg + (p * np.maximum(i_obs, 0.0)) ** 2)
    i_obs, _ = add_outliers(i_obs, sigma, outliers, rng)
    scale = 100.0 / max(float(np.median(i_obs[present[parent]])), 1e-12)
    order = rng.permutation(len(parent))
    formula, z, _ = formula_and_z(structure, SymmetryOps.from_space_group(structure.space_group))
    return ReflectionData(
        hkl=hkl[parent][order],
        intensity=(i_obs * scale)[order],
        sigma=(sigma * scale)[order],
        cell=structure.cell,
        wavelength=WAVELENGTH,
        formula=formula,
        z=z,
    )


def simulate_processed(structure, noise: dict, completeness: float, redundancy: float, outliers: float, seed: int):
    from refractor_core.simulation import NoiseModel, simulate

    return simulate(
        structure,
        d_min=D_MIN,
        wavelength=WAVELENGTH,
        b_wilson=float(np.random.default_rng(seed).uniform(2.0, 5.0)),
        noise=NoiseModel(**noise),
        completeness=completeness,
        redundancy=redundancy,
        outliers=outliers,
        seed=seed,
    )


@dataclass
class Spec:
    """One simulated data set."""

    id: str
    split: str
    number: int
    source: str
    noise: str
    mode: str
    seed: int


def make_specs(n_test_per_type: int, n_calib_per_type: int, seed: int = 2024) -> list[Spec]:
    rng = np.random.default_rng(seed)
    aflow = aflow_files()
    specs = []
    for number in target_types():
        for split, n in (("calib", n_calib_per_type), ("test", n_test_per_type)):
            for k in range(n):
                use_aflow = bool(aflow.get(number)) and rng.random() < 0.25
                noise = ["low", "medium", "high"][k % 3]
                mode = str(rng.choice(list(MODES), p=list(MODES.values())))
                s = int(rng.integers(1 << 30))
                specs.append(Spec(f"{split}-{number:03d}-{k:02d}", split, number, "aflow" if use_aflow else "pyxtal", noise, mode, s))
    return specs


def generate_one(spec: Spec) -> dict:
    """Build, simulate and re-index one data set; returns the arrays and the truth."""
    rng = np.random.default_rng(spec.seed)
    if spec.source == "aflow":
        files = aflow_files()[spec.number]
        structure = aflow_structure(files[int(rng.integers(len(files)))])
    else:
        structure = pyxtal_structure(spec.number, rng)
    p, truth, new_cell = random_setting(structure, rng)
    completeness = float(rng.uniform(0.85, 1.0))
    outliers = float(rng.uniform(0.0, 0.01))
    noise = NOISE_LEVELS[spec.noise]
    if spec.mode == "raw":
        data = simulate_raw(structure, noise, completeness, float(rng.uniform(1.5, 4.0)), outliers, rng)
    else:
        red = 1.0 if spec.mode == "merged" else float(rng.uniform(2.0, 6.0))
        data = simulate_processed(structure, noise, completeness, red, outliers, spec.seed)
    from refractor_core.crystal.lattice import transform_hkl

    hkl = transform_hkl(data.hkl, p)
    return {
        "hkl": hkl,
        "intensity": data.intensity,
        "sigma": data.sigma,
        "cell": np.array(new_cell.parameters),
        "formula": data.formula or "",
        "z": float(data.z or 0.0),
        "truth_symbol": truth.symbol,
        "truth_hall": truth.hall,
        "truth_number": truth.number,
        "system": truth.crystal_system,
        "structure": structure.name,
        "n_sites": len(structure.sites),
    }


def load_dataset(path: Path):
    from refractor_core.types import ReflectionData, UnitCell

    d = np.load(path, allow_pickle=False)
    a, b, c, al, be, ga = (float(x) for x in d["cell"])
    cell = UnitCell(a=a, b=b, c=c, alpha=al, beta=be, gamma=ga)
    meta = json.loads(str(d["meta"]))
    data = ReflectionData(
        hkl=d["hkl"],
        intensity=d["intensity"],
        sigma=d["sigma"],
        cell=cell,
        wavelength=WAVELENGTH,
        formula=meta["formula"] or None,
        z=meta["z"] or None,
        source=str(path),
    )
    return data, meta


def cmd_generate(args) -> int:
    warnings.filterwarnings("ignore")
    specs = make_specs(args.n_test, args.n_calib)
    out = cache_dir() / "data"
    out.mkdir(parents=True, exist_ok=True)
    todo = [s for s in specs if not (out / f"{s.id}.npz").exists()]
    print(f"{len(specs)} data sets ({len(todo)} to generate) in {out}", flush=True)
    failed = []
    t0 = time.time()
    for i, spec in enumerate(todo):
        try:
            r = generate_one(spec)
        except Exception as exc:  # an unusable random structure: recorded, skipped
            failed.append((spec.id, str(exc)[:200]))
            continue
        meta = {k: r[k] for k in ("formula", "z", "truth_symbol", "truth_hall", "truth_number", "system", "structure", "n_sites")}
        meta.update(spec.__dict__)
        tmp = out / f"{spec.id}.tmp.npz"
        np.savez_compressed(tmp, hkl=r["hkl"], intensity=r["intensity"], sigma=r["sigma"], cell=r["cell"], meta=json.dumps(meta))
        tmp.rename(out / f"{spec.id}.npz")
        if (i + 1) % 25 == 0:
            print(f"  {i + 1}/{len(todo)} ({time.time() - t0:.0f} s, {len(failed)} failed)", flush=True)
    (cache_dir() / "generate_failures.json").write_text(json.dumps(failed, indent=1))
    print(f"done: {len(todo) - len(failed)} generated, {len(failed)} failed", flush=True)
    return 0


# --------------------------------------------------------------------------------------
# classification runs
# --------------------------------------------------------------------------------------


def _classify(data, config):
    from refractor_plugins.classifiers.analysis import analyse

    t = time.perf_counter()
    res = analyse(data, config)
    return res, time.perf_counter() - t


def collect_features(split: str, config=None) -> list[dict]:
    """Run the classifier on every cached data set of a split; keep candidate terms."""
    from refractor_plugins.classifiers.configs import AbsencesConfig

    cfg = config or AbsencesConfig(laue_window=1e9, max_hypotheses=10_000, min_probability=0.0, zones_always=True)
    rows = []
    files = sorted((cache_dir() / "data").glob(f"{split}-*.npz"))
    for i, path in enumerate(files):
        data, meta = load_dataset(path)
        try:
            res, dt = _classify(data, cfg)
        except Exception as exc:
            rows.append({"meta": meta, "error": str(exc)[:300]})
            continue
        rows.append(
            {
                "meta": meta,
                "seconds": dt,
                "n_rows": res.n_rows,
                "candidates": [
                    {
                        "symbol": c["symbol"],
                        "number": c["number"],
                        "laue_index": c["laue_index"],
                        "terms": c["terms"],
                        "probability": c["probability"],
                    }
                    for c in res.candidates
                ],
                "ambiguous": res.ambiguous,
            }
        )
        if (i + 1) % 50 == 0:
            print(f"  {split}: {i + 1}/{len(files)}", flush=True)
    return rows


def _feature_cache(split: str) -> Path:
    return cache_dir() / f"features-{split}.json"


def features(split: str, refresh: bool = False) -> list[dict]:
    path = _feature_cache(split)
    if path.exists() and not refresh:
        return json.loads(path.read_text())
    rows = collect_features(split)
    path.write_text(json.dumps(rows))
    return rows


#: bounds of (w_laue, w_absences, w_centro, robust, w_merged, w_bijvoet, w_zones) in the
#: fit: the Laue and "merged" weights are kept moderate (no single rotation should decide by
#: hundreds of nats). w_laue is held at W_LAUE: with the type prior off the likelihood of
#: the calibration split is flat in it (the Laue group is nearly always decided by a wide
#: margin), and the fit then drifts to small values (0.5) at which the deployed type prior
#: overturns clear Laue evidence (R-3 data ranked P-1); the upper end of the flat range
#: keeps the Laue group decided by the data
W_LAUE = 5.0
BOUNDS = [(W_LAUE, W_LAUE), (0.0, 20.0), (0.0, 20.0), (1e-4, 0.5), (0.0, 10.0), (0.0, 5.0), (0.0, 20.0)]
#: temper of the robust mixture (q ∝ p^TEMPER), chosen on the calibration split
TEMPER = 0.05


def fit_weights(rows: list[dict]) -> tuple[np.ndarray, dict]:
    """Maximum-likelihood weights of the four evidence terms under the classifier's own
    probability model (`analysis.hypothesis_probabilities`): the truth setting's probability
    is maximised over the calibration data sets."""
    from scipy.optimize import minimize

    from refractor_plugins.classifiers.analysis import hypothesis_probabilities

    sets = []
    skipped = 0
    for r in rows:
        if "error" in r or not r["candidates"]:
            skipped += 1
            continue
        t = np.array([c["terms"] for c in r["candidates"]], dtype=np.float64)
        idx = np.array([c["laue_index"] for c in r["candidates"]], dtype=np.int64)
        truth = np.array([c["symbol"] == r["meta"]["truth_symbol"] for c in r["candidates"]])
        if not truth.any():
            skipped += 1
            continue
        sets.append((t, idx, truth))

    def nll(x, w_prior=0.0):
        total = 0.0
        for t, idx, truth in sets:
            p = hypothesis_probabilities(t, idx, (x[0], x[1], x[2], w_prior, x[4], x[5], x[6]), robust=x[3], temper=TEMPER)
            total -= math.log(max(float(p[truth].sum()), 1e-300))
        return total / len(sets)

    best = None
    from refractor_plugins.classifiers.configs import AbsencesConfig

    c = AbsencesConfig()
    current = [W_LAUE, c.w_absences, c.w_centro, max(c.robust, 1e-4), c.w_merged, c.w_bijvoet, c.w_zones]  # the deployed weights as a start too
    for x0 in ([W_LAUE, 1.0, 2.0, 0.02, 1.0, 0.5, 0.5], [W_LAUE, 0.2, 2.0, 0.05, 0.3, 0.1, 1.0], [W_LAUE, 0.5, 4.0, 0.01, 3.0, 1.0, 2.0], current):
        res = minimize(nll, np.array(x0), method="L-BFGS-B", bounds=BOUNDS)
        if best is None or res.fun < best.fun:
            best = res
    w = np.array([best.x[0], best.x[1], best.x[2], 1.0, best.x[3], best.x[4], best.x[5], best.x[6]])
    return w, {
        "nll_type_prior_off": float(best.fun),
        "nll_deployed": float(nll(best.x, 1.0)),
        "n_sets": len(sets),
        "skipped": skipped,
        "converged": bool(best.success),
        "note": "w_absences, w_centro, w_merged, w_bijvoet, w_zones and robust fitted with the type prior off (types are drawn uniformly here); w_laue held at the upper end of its flat range (W_LAUE); w_prior = 1 deployed",
    }


def calibration_accuracy(rows: list[dict], weights, robust: float, temper: float = TEMPER) -> tuple[dict, list[dict]]:
    """Top-1/top-3 on the calibration split with these weights and the type prior on (as
    deployed), and the data sets whose top-1 type is wrong."""
    from refractor_plugins.classifiers.analysis import hypothesis_probabilities

    scored = []
    misses = []
    for r in rows:
        if "error" in r or not r["candidates"]:
            continue
        t = np.array([c["terms"] for c in r["candidates"]], dtype=np.float64)
        idx = np.array([c["laue_index"] for c in r["candidates"]], dtype=np.int64)
        p = hypothesis_probabilities(t, idx, weights, robust=robust, temper=temper)
        order = np.argsort(-p, kind="stable")
        cands = [{**r["candidates"][i], "probability": float(p[i])} for i in order]
        row = _score_row(cands, r["meta"])
        scored.append(row)
        if not row["top1"]:
            m = r["meta"]
            misses.append(
                {
                    "id": m["id"],
                    "truth": m["truth_symbol"],
                    "top": cands[0]["symbol"],
                    "p_top": round(cands[0]["probability"], 3),
                    "rank": row["rank"],
                    "source": m["source"],
                    "mode": m["mode"],
                    "noise": m["noise"],
                    "n_sites": m["n_sites"],
                }
            )
    return _summ(scored), misses


def cmd_calibrate(args) -> int:
    warnings.filterwarnings("ignore")
    rows = features("calib", refresh=args.refresh)
    w, info = fit_weights(rows)
    deployed = (w[0], w[1], w[2], w[3], w[5], w[6], w[7])
    info["calibration_split_deployed"], misses = calibration_accuracy(rows, deployed, robust=w[4])
    if args.misses:
        for m in misses:
            print(json.dumps(m))
    out = {
        "weights": {"w_laue": w[0], "w_absences": w[1], "w_centro": w[2], "w_prior": w[3], "robust": w[4], "w_merged": w[5], "w_bijvoet": w[6], "w_zones": w[7]},
        **info,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/spacegroup.py calibrate",
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "spacegroup_calibration.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
    return 0


# --------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------


def _rank_of(candidates: list[dict], number: int, symbol: str | None = None) -> int | None:
    for i, c in enumerate(candidates):
        if (symbol is not None and c["symbol"] == symbol) or (symbol is None and c["number"] == number):
            return i + 1
    return None


def _score_row(candidates: list[dict], meta: dict) -> dict:
    n = meta["truth_number"]
    nums = [c["number"] for c in candidates]
    rank = _rank_of(candidates, n)
    enantio = ENANTIOMORPHS.get(n)
    rank_e = min([x for x in (rank, _rank_of(candidates, enantio) if enantio else None) if x is not None], default=None)
    rank_s = _rank_of(candidates, n, meta["truth_symbol"])
    return {
        "top1": rank == 1,
        "top3": rank is not None and rank <= 3,
        "top1_enantio": rank_e == 1,
        "top3_enantio": rank_e is not None and rank_e <= 3,
        "top1_setting": rank_s == 1,
        "rank": rank,
        "top_probability": candidates[0]["probability"] if candidates else 0.0,
        "top_symbol": candidates[0]["symbol"] if candidates else None,
        "predicted_numbers": nums[:3],
    }


def _summ(rows: list[dict]) -> dict:
    n = len(rows)
    if not n:
        return {"n": 0}
    f = lambda k: round(sum(r[k] for r in rows) / n, 4)  # noqa: E731
    return {
        "n": n,
        "top1": f("top1"),
        "top3": f("top3"),
        "top1_enantio": f("top1_enantio"),
        "top3_enantio": f("top3_enantio"),
        "top1_setting": f("top1_setting"),
    }


def reliability(rows: list[dict], n_bins: int = 10) -> dict:
    """Top-1 probability against the frequency of the top-1 setting being right."""
    p = np.array([r["top_probability"] for r in rows])
    ok = np.array([r["top1_setting"] for r in rows], dtype=float)
    edges = np.linspace(0, 1, n_bins + 1)
    bins = []
    ece = 0.0
    for a, b in zip(edges[:-1], edges[1:]):
        sel = (p > a) & (p <= b) if a > 0 else (p >= a) & (p <= b)
        if not sel.any():
            continue
        bins.append({"range": [round(a, 2), round(b, 2)], "n": int(sel.sum()), "mean_probability": round(float(p[sel].mean()), 4), "accuracy": round(float(ok[sel].mean()), 4)})
        ece += sel.sum() / len(p) * abs(p[sel].mean() - ok[sel].mean())
    return {"bins": bins, "expected_calibration_error": round(float(ece), 4), "mean_log_loss_top1": None}


def evaluate_simulated(config) -> dict:
    files = sorted((cache_dir() / "data").glob("test-*.npz"))
    rows = []
    times = []
    for i, path in enumerate(files):
        data, meta = load_dataset(path)
        try:
            res, dt = _classify(data, config)
        except Exception as exc:
            rows.append({**meta, "error": str(exc)[:200], "top1": False, "top3": False, "top1_enantio": False, "top3_enantio": False, "top1_setting": False, "rank": None, "top_probability": 0.0})
            continue
        times.append(dt)
        cands = [{"symbol": h.space_group.symbol, "number": h.space_group.number, "probability": h.probability} for h in res.hypotheses]
        r = _score_row(cands, meta)
        r.update({k: meta[k] for k in ("id", "truth_symbol", "truth_number", "system", "noise", "mode", "source", "structure")})
        r["ambiguous"] = res.ambiguous
        r["seconds"] = round(dt, 3)
        r["n_rows"] = res.n_rows
        rows.append(r)
        if (i + 1) % 100 == 0:
            print(f"  test: {i + 1}/{len(files)}", flush=True)
    by = lambda key: {k: _summ([r for r in rows if r.get(key) == k]) for k in sorted({r.get(key) for r in rows if r.get(key) is not None})}  # noqa: E731
    per_type = {str(k): v for k, v in by("truth_number").items()}
    return {
        "overall": _summ(rows),
        "by_crystal_system": by("system"),
        "by_noise": by("noise"),
        "by_mode": by("mode"),
        "by_source": by("source"),
        "by_type": per_type,
        "reliability": reliability(rows),
        "errors": sum("error" in r for r in rows),
        "median_seconds": round(float(np.median(times)), 3) if times else None,
        "failures": [
            {k: r.get(k) for k in ("id", "truth_symbol", "top_symbol", "top_probability", "rank", "noise", "mode", "source")}
            for r in rows
            if not r["top1"]
        ],
    }


def evaluate_real(config) -> list[dict]:
    from refractor_core.dataio import load_reflections
    from refractor_core.testing.real_cases import load_cases

    out = []
    for case in load_cases():
        data = load_reflections(case.reflections).model_copy(update={"space_group_hint": None})
        res, dt = _classify(data, config)
        cands = [{"symbol": h.space_group.symbol, "number": h.space_group.number, "probability": h.probability} for h in res.hypotheses]
        from refractor_core.crystal.spacegroup_tables import setting_for
        from refractor_core.types import SpaceGroupRef

        pub = setting_for(SpaceGroupRef.from_symbol(case.space_group))
        meta = {"truth_number": case.sg_number, "truth_symbol": pub.symbol if pub else case.space_group}
        r = _score_row(cands, meta)
        r.update(
            {
                "case": case.name,
                "published": case.space_group,
                "top3_symbols": [c["symbol"] for c in cands[:3]],
                "top3_probabilities": [round(c["probability"], 4) for c in cands[:3]],
                "ambiguous": res.ambiguous,
                "warnings": res.warnings,
                "seconds": round(dt, 3),
                "n_rows": res.n_rows,
            }
        )
        out.append(r)
        print(f"  {case.name:30s} {case.space_group:12s} rank {r['rank']}  {' | '.join(f'{s} {p:.2f}' for s, p in zip(r['top3_symbols'], r['top3_probabilities']))}  ({dt:.2f} s)", flush=True)
    return out


def speed(config, n_reflections: int = 20_000, repeats: int = 5, number: int = 14) -> dict:
    """Time the classifier on a simulated data set of `n_reflections` rows of type `number`."""
    rng = np.random.default_rng(7)
    structure = pyxtal_structure(number, rng)
    data = simulate_raw(structure, NOISE_LEVELS["medium"], 0.95, 1.0, 0.0, rng)
    while data.n < n_reflections:
        extra = simulate_raw(structure, NOISE_LEVELS["medium"], 0.95, 1.0, 0.0, rng)
        data = data.model_copy(update={"hkl": np.concatenate([data.hkl, extra.hkl]), "intensity": np.concatenate([data.intensity, extra.intensity]), "sigma": np.concatenate([data.sigma, extra.sigma])})
    data = data.subset(np.arange(n_reflections))
    _classify(data, config)  # warm-up: table construction, imports
    times = [_classify(data, config)[1] for _ in range(repeats)]
    return {
        "type": number,
        "symbol": structure.space_group.symbol,
        "n_reflections": data.n,
        "cell": list(data.cell.parameters),
        "seconds_median": round(float(np.median(times)), 3),
        "seconds_all": [round(t, 3) for t in times],
    }


def cmd_evaluate(args) -> int:
    warnings.filterwarnings("ignore")
    sys.path.insert(0, str(ROOT))
    from refractor_plugins.classifiers.configs import AbsencesConfig

    config = AbsencesConfig()
    result = {
        "command": "python benchmarks/spacegroup.py evaluate",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "note": "2 cores shared with other jobs: times are noisy"},
        "config": config.model_dump(),
    }
    if not args.skip_real:
        print("real cases:", flush=True)
        real = evaluate_real(config)
        result["real"] = {
            "cases": real,
            "top1": sum(r["top1"] for r in real) / len(real),
            "top3": sum(r["top3"] for r in real) / len(real),
            "top1_setting": sum(r["top1_setting"] for r in real) / len(real),
            "n": len(real),
        }
    if not args.skip_speed:
        result["speed"] = [speed(config, number=n) for n in (14, 61, 205)]
        print("speed:", result["speed"], flush=True)
    if not args.skip_simulated:
        print("simulated test split:", flush=True)
        result["simulated"] = evaluate_simulated(config)
        print(json.dumps(result["simulated"]["overall"]), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "spacegroup.json").write_text(json.dumps(result, indent=2, default=str))
    (RESULTS / "spacegroup.md").write_text(markdown(result))
    print(f"wrote {RESULTS / 'spacegroup.md'}")
    return 0


#: what was tried on the calibration split for issue 5 (strict top-1 below 90 %), measured there
METHOD_NOTES = [
    "Measured on the calibration split (382 sets, `calibrate --misses`; strict top-1 with the type prior on, as",
    "deployed): before these changes 89.3 % (NLL 0.357 with the type prior off); with zone centricity, the",
    "few-atom separation and the general-position share, weights refitted, 89.5 % (NLL 0.335): fixed P1 with",
    "eight atoms (2) and Pna2₁ (2), lost three AFLOW prototypes of three atoms (Bbcm, two LiNbO3-type R-3c) whose",
    "zones and E statistics follow special positions, not random atoms. Zones alone (old E-statistics rules)",
    "give the same 89.5 % at NLL 0.338. The general-position share was added after a first evaluation run",
    "with the separation alone ranked the real NaCl case F-43m (two atoms per primitive cell look acentric",
    "to the random-atom test); it is parameter-free and left the calibration figures unchanged (NLL 0.3356 ->",
    "0.3354). That first run (zones and separation only) gave on the test split strict top-1 89.9 % (1040/1157),",
    "top-3 99.3 %, real cases 21/23 top-1 (NaCl rank 2), 23/23 top-3; the run below is the second and last.",
    "Before all these changes: test strict top-1 89.4 % (1034/1157), top-3 99.3 %, real 22/23 and 23/23.",
    "Tried and dropped: (1) a phase check as SHELXT's: P1 charge",
    "flipping on the data merged in the centric candidate's Patterson group (up to four trials of 600 cycles,",
    "|F| and |E| in turn), origin search for the centric candidate and its acentric subgroup, evidence from the",
    "agreement of the operations only the centric group has against the shared ones (P-1/P1: the inversion",
    "alone). It ran on 278 of 382 sets (a centric/acentric pair within a factor 1000), median 0.25 s, 90th",
    "percentile 0.8 s, up to 4.6 s on 13,000 reflections; fitted as one more weight it improved the NLL",
    "(0.357 -> 0.345) but not top-1 (unchanged): the acentric misses are pseudo-centric structures whose P1",
    "maps obey the extra operations as well as the shared ones (gap 0.01-0.07, as for centric truths), while",
    "sets with a clear gap (< -0.3: 89 % acentric) are already decided by the E statistics. (2) Few-atom",
    "expectations moving the midpoint of <|E²-1|> (and measurement errors in the same Monte Carlo): better NLL",
    "(0.344) but top-1 87.4 %: the few-atom shift is not seen in the simulated data, whose errors raise the",
    "statistic by as much. (3) Fitting w_laue freely: it drifts to 0.5 with robust -> 0 at equal NLL, and the",
    "deployed type prior then overturns clear Laue evidence (R-3 data ranked P-1): top-1 86.7 %; it is held",
    "at 5. The enantiomorph pairs (P4₁2₁2/P4₃2₁2, P3₁21/P3₂21) stay a coin flip the prior breaks the same way",
    "every time; no intensity statistic can decide them. (4) SHELXT-style flipping with each candidate's",
    "symmetry imposed: for the closest centric/acentric pair of one Laue group and centring (within a factor",
    "1000: 276 of 382 sets), four P1 trials in the Patterson group, then origin search and 60 cycles of flipping",
    "with the centric and with the acentric group imposed (the generator's symmetric polish), evidence",
    "log(R_c/R_a) of the two polished flips (variants: R_c - R_a; a centric subgroup of the acentric candidate's",
    "order instead of the centric group; the inversion agreement of the acentric-polished map; only converged",
    "or low-R trials). log(R_c/R_a) does separate the truths (AUC 0.86, medians 0.13 centric, 0.27 acentric), but",
    "imposing the inversion raises R for centric truths too, and fitted as one more weight it improved the NLL",
    "(0.335 -> 0.319) while top-1 fell by one set (89.3 %: fixed Bbcm, R-3m, R-3c; lost C2, Pna2₁, two P6₃); no",
    "variant raised top-1. Cost: median 0.54 s, 90th percentile 1.8 s, up to 4 s per gated set. The acentric",
    "misses are pseudo-centrosymmetric: in 11 of the 12 (centric/acentric pairs) the true structure puts",
    "92-99.7 % of Σ|F|² into its part centrosymmetric about one point (Bb11 with 36 atoms: 84 %; 20 correctly",
    "ranked acentric sets: 60-92 %), so the acentric signal is a few per cent of the intensity and the",
    "misses are confidently wrong (0.95-0.98): a refinement of the model in both groups (Hamilton's test) could",
    "weigh it, phase or E statistics cannot. Not deployed.",
]


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def markdown(r: dict) -> str:
    lines = ["# Space-group determination: `absences` classifier", ""]
    lines.append(f"Command: `{r['command']}`; date {r['date']}; {r['machine']['platform']}, {r['machine']['cpus']} CPUs ({r['machine']['note']}).")
    lines.append("")
    cal = RESULTS / "spacegroup_calibration.json"
    if cal.exists():
        c = json.loads(cal.read_text())
        lines.append(
            "Evidence weights fitted on the calibration split (`python benchmarks/spacegroup.py calibrate`, "
            f"{c['n_sets']} data sets): " + ", ".join(f"{k} {v:.3f}" for k, v in c["weights"].items()) + "."
        )
        lines.append("")
    lines += [
        "Notes: the probabilities are P(Laue) x P(setting | Laue) with weights fitted on the calibration split",
        "(types drawn uniformly, type prior off); the classifier as deployed (and evaluated here) adds the",
        "CSD/ICSD type prior, which is right for published structures but penalises rare types in this",
        "uniform test set (e.g. P1 against P-1). Enantiomorphic pairs (P41212/P43212, P3121/P3221) give",
        "identical intensities until a model fixes the absolute structure: the headline figures count them",
        "as right (the columns \"enantiomorph ok\"); the strict columns count them wrong. `raw` files are simulated here",
        "with every reflection measured (absences included), `processed`/`merged` with",
        "`refractor_core.simulation.simulate` (absences removed by the processing).",
        "",
        "Centrosymmetry is judged from E statistics and, where Friedel mates are measured apart and the",
        "formula and wavelength are known, from Bijvoet differences against the anomalous signal the formula",
        "predicts (`plugins/classifiers/bijvoet.py`). The simulator gives Friedel mates no systematic",
        "difference beyond counting noise; real data do (1.0-1.3 times the repeat scatter on the real cases),",
        "so the test averages over such errors and counts only a predicted signal well above them: its gain",
        "on these simulated sets is an upper bound of what it gives on measured data.",
        "",
        "Reflections made systematically weak by atoms on special positions or pseudo-symmetry are modelled:",
        "a class of reflections no candidate tells apart may be present at one common fraction of the local",
        "mean intensity (prior share `weak_class_share`), so a weak but measured class does not count as",
        "absent; and the E-statistics evidence is weighted by the probability that <|E²-1|> comes from",
        "random-atom statistics at all (hypercentric or sub-acentric values say little about the centre).",
        "",
        "Zone-wise centricity (`plugins/classifiers/zones.py`): each family of zone and row reflections is",
        "centric or acentric as each candidate's point group predicts (h0l centric in C2, acentric in Cm;",
        "all centric with a centre); the <|E²-1|> of each family, normalised over the family itself and",
        "using only reflections no candidate of the Laue group and centring requires absent, is one more",
        "fitted term (w_zones). The E-statistics evidence of the general reflections is scaled by how far",
        "apart the centric and acentric expectations lie for the atoms of one primitive cell of the formula",
        "(a Monte Carlo of few random-phase terms: ~1 down to eight atoms, ~0 for two atoms or one dominating",
        "heavy atom), and by min(1, atoms per primitive cell / order of the Laue group) (fewer atoms than a",
        "general position has images must sit on special positions), instead of being cut by four below ten",
        "atoms. The zone terms cost time: median per data set 0.068 s -> 0.11 s, 20,000 rows 0.07-0.21 s.",
        "",
        *METHOD_NOTES,
        "",
    ]
    if "real" in r:
        rr = r["real"]
        lines += [
            f"## Real cases ({rr['n']}, space group in the files not given)",
            "",
            f"Top-1 {_pct(rr['top1'])} ({sum(c['top1'] for c in rr['cases'])}/{rr['n']}; setting exact {_pct(rr['top1_setting'])}), "
            f"top-3 {_pct(rr['top3'])} ({sum(c['top3'] for c in rr['cases'])}/{rr['n']}); no real case has an enantiomorphic type.",
            "",
            "| case | published | rank | top 3 (probability) | ambiguous | s |",
            "|---|---|---|---|---|---|",
        ]
        for c in rr["cases"]:
            top = "; ".join(f"{s} ({p:.2f})" for s, p in zip(c["top3_symbols"], c["top3_probabilities"]))
            lines.append(f"| {c['case']} | {c['published']} | {c['rank']} | {top} | {'yes' if c['ambiguous'] else ''} | {c['seconds']:.2f} |")
        lines.append("")
    if "speed" in r:
        lines += ["## Speed", "", "Simulated unmerged data sets of 20,000 rows, classification time (median of 5 runs after a warm-up):", ""]
        for s in r["speed"]:
            lines.append(f"- {s['symbol']} (cell {', '.join(f'{x:.2f}' for x in s['cell'])}): {s['seconds_median']} s")
        lines.append("")
    if "simulated" in r:
        sim = r["simulated"]
        o = sim["overall"]
        lines += [
            f"## Simulated test split ({o['n']} data sets)",
            "",
            f"Space-group type up to the enantiomorph (the figure compared with the targets, top-1 >= 90 %, top-3 >= 98 %): "
            f"top-1 {_pct(o['top1_enantio'])}, top-3 {_pct(o['top3_enantio'])}. Strict type (enantiomorph counted wrong): "
            f"top-1 {100 * o['top1']:.2f} % ({round(o['top1'] * o['n'])}/{o['n']}), top-3 {_pct(o['top3'])}; exact setting top-1 {100 * o['top1_setting']:.2f} %. Median time {sim['median_seconds']} s.",
            "",
        ]
        for title, key in (("crystal system", "by_crystal_system"), ("noise level", "by_noise"), ("kind of file", "by_mode"), ("structure source", "by_source")):
            lines += [f"### By {title}", "", "| | n | top-1 | top-3 | top-1 (enantiomorph ok) | top-3 (enantiomorph ok) | top-1 setting |", "|---|---|---|---|---|---|---|"]
            for k, v in sim[key].items():
                lines.append(f"| {k} | {v['n']} | {_pct(v['top1'])} | {_pct(v['top3'])} | {_pct(v['top1_enantio'])} | {_pct(v['top3_enantio'])} | {_pct(v['top1_setting'])} |")
            lines.append("")
        lines += ["### By space-group type", "", "| type | n | top-1 | top-3 | top-1 (enantiomorph ok) |", "|---|---|---|---|---|"]
        for k, v in sorted(sim["by_type"].items(), key=lambda kv: int(kv[0])):
            lines.append(f"| {k} | {v['n']} | {_pct(v['top1'])} | {_pct(v['top3'])} | {_pct(v['top1_enantio'])} |")
        lines.append("")
        rel = sim["reliability"]
        lines += [
            "### Calibration (reliability of the top-1 probability, exact setting)",
            "",
            f"Expected calibration error {rel['expected_calibration_error']:.4f}.",
            "",
            "| probability bin | n | mean probability | observed accuracy |",
            "|---|---|---|---|",
        ]
        for b in rel["bins"]:
            lines.append(f"| {b['range'][0]:.1f}-{b['range'][1]:.1f} | {b['n']} | {b['mean_probability']:.3f} | {b['accuracy']:.3f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="simulate the data sets into the cache")
    g.add_argument("--n-test", type=int, default=27, help="test data sets per space-group type")
    g.add_argument("--n-calib", type=int, default=9, help="calibration data sets per space-group type")
    c = sub.add_parser("calibrate", help="fit the evidence weights on the calibration split")
    c.add_argument("--refresh", action="store_true", help="recompute the calibration features")
    c.add_argument("--misses", action="store_true", help="print the calibration data sets whose top-1 type is wrong")
    e = sub.add_parser("evaluate", help="test split, real cases and speed -> benchmarks/results")
    e.add_argument("--skip-real", action="store_true")
    e.add_argument("--skip-speed", action="store_true")
    e.add_argument("--skip-simulated", action="store_true")
    sub.add_parser("report", help="rewrite spacegroup.md from spacegroup.json")
    a = sub.add_parser("all", help="generate, calibrate, evaluate")
    a.add_argument("--n-test", type=int, default=27)
    a.add_argument("--n-calib", type=int, default=9)
    args = ap.parse_args(argv)
    if args.cmd == "generate":
        return cmd_generate(args)
    if args.cmd == "calibrate":
        return cmd_calibrate(args)
    if args.cmd == "evaluate":
        return cmd_evaluate(args)
    if args.cmd == "report":
        result = json.loads((RESULTS / "spacegroup.json").read_text())
        (RESULTS / "spacegroup.md").write_text(markdown(result))
        return 0
    args.refresh = True
    args.misses = False
    args.skip_real = args.skip_speed = args.skip_simulated = False
    return cmd_generate(args) or cmd_calibrate(args) or cmd_evaluate(args)


if __name__ == "__main__":
    raise SystemExit(main())
