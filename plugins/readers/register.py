"""Registration of the built-in readers (light module: pydantic and refractor_core only).

The Config classes here mirror those of the implementations (the implementation modules
import numpy and gemmi, so they are named by import path and loaded when a reader is built).
"""

from __future__ import annotations

from typing import Literal

from refractor_core.hookspecs import hookimpl
from refractor_core.interfaces import ComponentConfig, ComponentSpec

_PKG = "refractor_plugins.readers"
VERSION = "0.1.0"


class ShelxHklConfig(ComponentConfig):
    """hklf: 3 (F), 4 (F²) or 5 (twin components); default from the file."""

    hklf: Literal[3, 4, 5] | None = None


class ShelxInsConfig(ComponentConfig):
    """No options."""


class P4pConfig(ComponentConfig):
    """No options."""


class CifConfig(ComponentConfig):
    """block: data block name; want: 'reflections' or 'model' (which block to prefer)."""

    block: str | None = None
    want: Literal["reflections", "model"] = "reflections"


class MtzConfig(ComponentConfig):
    """value/sigma: MTZ column labels (default: the first I or F column with its sigma)."""

    value: str | None = None
    sigma: str | None = None


SPECS = [
    ComponentSpec(
        kind="reader",
        name="shelx-hkl",
        target=f"{_PKG}.shelx_hkl:ShelxHklReader",
        config=ShelxHklConfig,
        version=VERSION,
        summary="SHELX HKLF 4/5 (and 3) reflection files: fixed columns, batch/twin column, 0 0 0 terminator",
    ),
    ComponentSpec(
        kind="reader",
        name="shelx-ins",
        target=f"{_PKG}.shelx_ins:ShelxInsReader",
        config=ShelxInsConfig,
        version=VERSION,
        summary="SHELX .ins/.res: cell, symmetry, formula, refinement instructions and the model",
    ),
    ComponentSpec(
        kind="reader",
        name="p4p",
        target=f"{_PKG}.p4p:P4pReader",
        config=P4pConfig,
        version=VERSION,
        summary="Bruker .p4p: cell with s.u.s, wavelength and formula",
    ),
    ComponentSpec(
        kind="reader",
        name="cif",
        target=f"{_PKG}.cif_reader:CifReader",
        config=CifConfig,
        version=VERSION,
        summary="CIF 1.1/DDLm: embedded SHELX hkl/res, _refln loops (fcf), atom sites, mmCIF",
    ),
    ComponentSpec(
        kind="reader",
        name="mtz",
        target=f"{_PKG}.mtz:MtzReader",
        config=MtzConfig,
        version=VERSION,
        summary="CCP4 MTZ reflection files (intensities or amplitudes) through gemmi",
    ),
]


@hookimpl
def refractor_register(register):
    """Register the built-in readers."""
    for spec in SPECS:
        register(spec)
