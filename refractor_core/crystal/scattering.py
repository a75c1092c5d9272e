"""X-ray scattering factors: IT92 Gaussian form factors and anomalous dispersion (gemmi).

f0(s) = Σ_i a_i exp(-b_i s²) + c with s = sin θ/λ (International Tables Vol. C, 1992
coefficients as shipped by gemmi). Anomalous terms f′ and f″ come from gemmi's
Cromer-Liberman implementation for the data's wavelength.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .formula import normalize_element

HC_KEV_A = 12.398419843320026  # h·c in keV·Å


@lru_cache(maxsize=256)
def _it92(element: str) -> tuple[float, ...]:
    import gemmi

    el = gemmi.Element("H" if element == "D" else element)
    coef = el.it92
    if coef is None:
        raise ValueError(f"no IT92 form factor for {element}")
    return tuple(float(x) for x in coef.get_coefs())


def form_factor_table(elements: list[str]) -> np.ndarray:
    """(n, 9) IT92 coefficients [a1..a4, b1..b4, c] per element symbol."""
    return np.array([_it92(normalize_element(e)) for e in elements], dtype=np.float64).reshape(-1, 9)


def form_factors(elements: list[str], stol: np.ndarray) -> np.ndarray:
    """f0 of each element at each sin θ/λ: (n_elements, N)."""
    t = form_factor_table(elements)
    s2 = np.asarray(stol, dtype=np.float64) ** 2
    a, b, c = t[:, :4], t[:, 4:8], t[:, 8]
    return np.einsum("ek,ekn->en", a, np.exp(-b[:, :, None] * s2[None, None, :])) + c[:, None]


@lru_cache(maxsize=1024)
def _anomalous(element: str, wavelength: float) -> tuple[float, float]:
    import gemmi

    z = gemmi.Element("H" if element == "D" else element).atomic_number
    if wavelength is None or z < 3:  # negligible for H, He
        return 0.0, 0.0
    energy_ev = HC_KEV_A / wavelength * 1000.0
    fp, fpp = gemmi.cromer_liberman(z=z, energy=energy_ev)
    return float(fp), float(fpp)


def anomalous_terms(elements: list[str], wavelength: float | None) -> tuple[np.ndarray, np.ndarray]:
    """(f′, f″) per element for the wavelength in Å; zeros when the wavelength is unknown."""
    if wavelength is None:
        z = np.zeros(len(elements))
        return z, z.copy()
    pairs = [_anomalous(normalize_element(e), round(float(wavelength), 6)) for e in elements]
    arr = np.array(pairs, dtype=np.float64).reshape(-1, 2)
    return arr[:, 0], arr[:, 1]


def scattering_power(element: str) -> float:
    """f0 at sin θ/λ = 0 (≈ number of electrons)."""
    return float(form_factors([element], np.zeros(1))[0, 0])
