"""Bond lengths and angles of a refined model with their standard uncertainties.

What SHELXL's CIF gives under ACTA: every bond (covalent radii, all symmetry images) and
every angle at an atom between two of its bonds. An su is propagated through the full
covariance matrix of the refined position parameters (special-position constraints and
shared EXYZ positions included, through each atom's position basis), and the cell's su
are added, each on its own, as SHELXL adds them. A distance or angle that involves an
atom whose position is not refined on its own (a riding H, a rigid-group member) is
constrained and given without su, as SHELXL gives it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from refractor_core.crystal.cell import orthogonalization_matrix
from refractor_core.types import UnitCell

from .completion import closest_image, nearest_atom
from .hydrogens import Neighbour, neighbours
from .model import WorkingModel
from .parameters import Parameterisation

#: an H not riding is bonded to the nearest non-H atom within this distance (Å)
FREE_H_BOND = 1.3
#: finite-difference steps of the cell's share of an su: lengths (Å) and angles (°)
STEP_CELL = (1e-5, 1e-4)
#: an angle above this (°) is straight, given without su
LINEAR = 179.99


@dataclass(frozen=True)
class GeometryItem:
    """A distance (two atom images) or angle (three, the middle one at the vertex): atom
    indices, each image's operation (rotation (3, 3), translation with its lattice shift),
    the value (Å or °) and its su (None when constrained)."""

    atoms: tuple[int, ...]
    images: tuple[tuple[np.ndarray, np.ndarray], ...]
    value: float
    su: float | None


def _image(model: WorkingModel, nb: Neighbour) -> tuple[np.ndarray, np.ndarray]:
    sym = model.symmetry
    rot = sym.rotations[nb.op].astype(np.float64)
    return rot, sym.translations[nb.op] + np.asarray(nb.shift, dtype=np.float64)


_IDENTITY = (np.eye(3), np.zeros(3))


def _measure(frac: np.ndarray, cart_m: np.ndarray) -> tuple[float, np.ndarray]:
    """Distance (two points) or angle at the middle point (three, °) of fractional points
    under orthogonalisation matrix `cart_m`, and its gradient with respect to each point's
    Cartesian coordinates, (k, 3)."""
    cart = frac @ cart_m.T
    if len(cart) == 2:
        v = cart[1] - cart[0]
        d = float(np.linalg.norm(v))
        u = v / d
        return d, np.array([-u, u])
    a, b = cart[0] - cart[1], cart[2] - cart[1]
    la, lb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    ua, ub = a / la, b / lb
    cos = min(max(float(ua @ ub), -1.0), 1.0)
    theta = math.acos(cos)
    sin = max(math.sin(theta), 1e-12)
    ga = (cos * ua - ub) / (la * sin)
    gb = (cos * ub - ua) / (lb * sin)
    return math.degrees(theta), np.degrees(np.array([ga, -ga - gb, gb]))


def _points(model: WorkingModel, atoms, images) -> np.ndarray:
    return np.array([rot @ model.xyz[a] + t for a, (rot, t) in zip(atoms, images)])


def _position_columns(params: Parameterisation) -> dict[int, tuple[list[int], np.ndarray]]:
    """Each atom whose position is refined on its own: (parameter columns, basis mapping
    them to fractional coordinates)."""
    out = {}
    for seg in params.segments():
        if seg.kind == "xyz":
            for a in seg.atoms:
                out[a] = (list(seg.columns), seg.basis)
    return out


def _cell_matrices(cell: UnitCell) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """For each cell parameter with an su: (su, step, orthogonalisation matrices a step
    above and below), for the su's share of a distance or angle by central differences."""
    if cell.su is None:
        return []
    values = list(cell.parameters)
    out = []
    for k, su in enumerate(cell.su):
        if not su:
            continue
        h = STEP_CELL[0] if k < 3 else STEP_CELL[1]
        up, down = list(values), list(values)
        up[k] += h
        down[k] -= h
        out.append((float(su) / (2 * h), orthogonalization_matrix(_cell(up)), orthogonalization_matrix(_cell(down))))
    return out


def _value_and_su(model: WorkingModel, item_atoms, images, cov: np.ndarray, columns: dict, cart_m: np.ndarray,
        cell_terms: list) -> tuple[float, float | None]:
    """Value of one distance or angle and its su: the position parameters' covariance
    propagated, plus each cell parameter's su on its own; None when an atom's position is
    constrained (or the angle straight)."""
    frac = _points(model, item_atoms, images)
    value, grad_cart = _measure(frac, cart_m)
    if any(a not in columns for a in item_atoms) or (len(item_atoms) == 3 and value > LINEAR):
        return value, None
    gradient: dict[int, float] = {}
    for (a, (rot, _)), g in zip(zip(item_atoms, images), grad_cart):
        cols, basis = columns[a]
        for c, gc in zip(cols, g @ cart_m @ rot @ basis):
            gradient[c] = gradient.get(c, 0.0) + float(gc)
    cols = list(gradient)
    g = np.array([gradient[c] for c in cols])
    variance = float(g @ cov[np.ix_(cols, cols)] @ g)
    for scale, m_up, m_down in cell_terms:
        variance += ((_measure(frac, m_up)[0] - _measure(frac, m_down)[0]) * scale) ** 2
    return value, math.sqrt(max(variance, 0.0))


def _cell(parameters) -> UnitCell:
    a, b, c, alpha, beta, gamma = parameters
    return UnitCell(a=a, b=b, c=c, alpha=alpha, beta=beta, gamma=gamma)


def bonds_and_angles(model: WorkingModel, params: Parameterisation, cov: np.ndarray) -> tuple[list[GeometryItem], list[GeometryItem]]:
    """Every bond of the model (each once) and every angle at an atom between two of its
    bonds, with su from the covariance matrix `cov` of `params`."""
    columns = _position_columns(params)
    cart_m = orthogonalization_matrix(model.cell)
    cell_terms = _cell_matrices(model.cell)
    bonded: dict[int, list[tuple[int, tuple[np.ndarray, np.ndarray]]]] = {
        i: [(nb.atom, _image(model, nb)) for nb, _, _ in nbl] for i, nbl in neighbours(model).items()}
    heavy = np.nonzero(~model.hydrogen)[0]
    for h in np.nonzero(model.hydrogen)[0]:
        parent = int(model.riding[h])
        if parent < 0:  # a free H: bonded to its nearest non-H atom
            parent, d = nearest_atom(model, model.xyz[h], heavy)
            if d > FREE_H_BOND:
                continue
        if parent in bonded:
            _, k, shift = closest_image(model, model.xyz[parent], model.xyz[h])
            bonded[parent].append((int(h), (model.symmetry.rotations[k].astype(np.float64),
                                            model.symmetry.translations[k] + shift)))
    bonds, angles = [], []
    for i, partners in bonded.items():
        to_self: list[tuple[np.ndarray, np.ndarray]] = []  # bonds of i to its own images kept
        for j, image in partners:
            if i == j:
                # x to g x is the bond g⁻¹ x to x: one of the pair is kept
                if any(_inverse_of(image, kept) for kept in to_self):
                    continue
                to_self.append(image)
            if i <= j or model.hydrogen[j]:
                atoms, images = (i, j), (_IDENTITY, image)
                bonds.append(GeometryItem(atoms, images, *_value_and_su(model, atoms, images, cov, columns, cart_m, cell_terms)))
        for a in range(len(partners)):
            for b in range(a + 1, len(partners)):
                atoms = (partners[a][0], i, partners[b][0])
                images = (partners[a][1], _IDENTITY, partners[b][1])
                angles.append(GeometryItem(atoms, images, *_value_and_su(model, atoms, images, cov, columns, cart_m, cell_terms)))
    return bonds, angles


def _inverse_of(image, other) -> bool:
    """True when operation `image` (rotation, translation) is the inverse of `other`."""
    rot, t = image
    inv = np.linalg.inv(other[0])
    return bool(np.allclose(rot, inv) and np.allclose(t, -inv @ other[1], atol=1e-6))


def as_records(model: WorkingModel, items: list[GeometryItem]) -> list[dict]:
    """JSON-ready records: atom labels, each image's operation (rotation as 9 integers,
    translation with its lattice shift), value and su."""
    return [{"atoms": [model.labels[a] for a in item.atoms],
             "operations": [[[int(round(v)) for v in rot.reshape(-1)], [float(v) for v in t]] for rot, t in item.images],
             "value": item.value, "su": item.su} for item in items]
