"""Test helper: reference models read through gemmi (an independent route to our readers)."""

from __future__ import annotations

import gemmi

from refractor_core.types import Site, SpaceGroupRef, Structure, UnitCell


def gemmi_small_structure(case) -> gemmi.SmallStructure:
    """The reference model of a real case with a CIF reference, via gemmi."""
    doc = gemmi.cif.read(str(case.reference))
    blocks = [b for b in doc if b.find_value("_cell_length_a")]
    block = doc.find_block(case.data_block) if case.data_block else blocks[0]
    return gemmi.make_small_structure_from_block(block)


def structure_from_gemmi(st: gemmi.SmallStructure, block_orders: dict[str, int] | None = None) -> Structure:
    """Convert a gemmi SmallStructure (CIF occupancies are chemical) to a refractor Structure."""
    c = st.cell
    cell = UnitCell(a=c.a, b=c.b, c=c.c, alpha=c.alpha, beta=c.beta, gamma=c.gamma)
    sites = []
    for s in st.sites:
        u_aniso = None
        if s.aniso.nonzero():
            a = s.aniso
            u_aniso = (a.u11, a.u22, a.u33, a.u12, a.u13, a.u23)
        sites.append(
            Site(
                label=s.label,
                element=s.element.name,
                xyz=tuple(s.fract.tolist()),
                occupancy=s.occ,
                u_iso=s.u_iso if s.u_iso > 0 else 0.05,
                u_aniso=u_aniso,
                site_symmetry_order=(block_orders or {}).get(s.label),
            )
        )
    return Structure(cell=cell, space_group=SpaceGroupRef.from_gemmi(st.spacegroup), sites=sites)


def cif_site_symmetry_orders(case) -> dict[str, int]:
    """`_atom_site_site_symmetry_order` per label, where the CIF states it."""
    doc = gemmi.cif.read(str(case.reference))
    blocks = [b for b in doc if b.find_value("_cell_length_a")]
    block = doc.find_block(case.data_block) if case.data_block else blocks[0]
    table = block.find("_atom_site_", ["label", "?site_symmetry_order"])
    out = {}
    if table.has_column(1):
        for row in table:
            if row.has(1) and row[1] not in ("?", "."):
                out[row[0]] = int(row[1])
    return out
