"""Simulated diffraction data: `simulate(structure, ...)` and the files a user would hold.

    from refractor_core.simulation import simulate, write_hklf4, write_ins

See `simulator.py` (the pipeline of the simulation), `noise.py` (counting statistics),
`reflections.py` (limiting sphere and equivalents) and `files.py` (HKLF 4 and .ins).
"""

from .composition import cell_contents_of, formula_and_z
from .files import write_dataset_files, write_hklf4, write_ins
from .noise import NoiseModel
from .simulator import WAVELENGTHS, SimulationParams, SimulationResult, simulate, simulate_detailed, simulated_structure

__all__ = [
    "NoiseModel",
    "SimulationParams",
    "SimulationResult",
    "WAVELENGTHS",
    "cell_contents_of",
    "formula_and_z",
    "simulate",
    "simulate_detailed",
    "simulated_structure",
    "write_dataset_files",
    "write_hklf4",
    "write_ins",
]
