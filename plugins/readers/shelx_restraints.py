"""SHELXL restraints and ADP constraints of a .ins/.res, resolved to atom labels.

Read: DFIX, DANG, SADI, SAME, FLAT, CHIV, DELU, RIGU, SIMU, ISOR (restraints) and EADP,
EXYZ (constraints), with SHELXL's defaults for omitted numbers, and the EQIV operators
their atoms may name (`O1_$1`). Atom names are resolved the way SHELXL resolves them:

- a plain name is looked up in the residue the instruction stands in (RESI), then in
  residue 0; `name_n` names residue n; `name_*` every residue holding that name; `$C`
  (and `$C_*`) every atom of element C, `$C_n` those of residue n;
- `A > B` (`A < B`) is every non-H atom from A to B in the order of the atom list;
- a residue suffix on the keyword (`SADI_CCF3`, `DFIX_3`, `SIMU_*`) applies the
  instruction to every residue of that class (or to residue 3, or to all residues), and
  `HFIX_class` places H on each such residue's own atoms;
- SAME pairs its atoms with the same number of non-H atoms that follow the instruction in
  the atom list; `SAME_class` makes every residue of the class like the first one, on the
  named atoms both residues have (one a residue lacks is left out there, with a note).

Each resolved instruction becomes a `RestraintInstruction`; what cannot be resolved (an
unknown atom, a range that runs backwards) is skipped with a note, as the refiner cannot
honour it, rather than failing the whole file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from refractor_core.types import AtomRef, RestraintInstruction

#: keyword -> default numbers (SHELXL-2018); None marks a number without default (DFIX d)
DEFAULTS: dict[str, tuple[float | None, ...]] = {
    "DFIX": (None, 0.02),
    "DANG": (None, 0.04),
    "SADI": (0.02,),
    "SAME": (0.02, 0.04),
    "FLAT": (0.1,),
    "CHIV": (0.0, 0.1),
    "DELU": (0.01, 0.01),
    "RIGU": (0.004, 0.004),
    "SIMU": (0.04, 0.08, 2.0),
    "ISOR": (0.1, 0.2),
    "EADP": (),
    "EXYZ": (),
}
#: instructions whose second number defaults to twice the first when only the first is given
DOUBLED_SECOND = frozenset({"SAME", "SIMU", "ISOR"})
#: instructions whose second number (the 1,3 esd) equals the first when only the first is
#: given (DELU 0.005: 0.005 for 1,2 and 1,3 pairs)
EQUAL_SECOND = frozenset({"DELU", "RIGU"})
#: instructions that, with no atoms named, apply to every non-H atom
ALL_WHEN_EMPTY = frozenset({"DELU", "RIGU", "SIMU", "ISOR"})
#: instructions whose atoms come in pairs
PAIRWISE = frozenset({"DFIX", "DANG", "SADI"})

_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_PART_MARK = re.compile(r"\^[A-Za-z]$")


@dataclass
class ResidueAtom:
    """An atom of the list as the resolver needs it."""

    label: str  # the label given to the model's site
    name: str  # the name as written (without residue suffix)
    element: str
    residue: int
    residue_class: str | None
    index: int  # position in the atom list
    isotropic: bool = True  # given with one U (ANIS n counts isotropic atoms)


@dataclass
class RawRestraint:
    """A restraint instruction as read, before its atoms are resolved."""

    keyword: str  # e.g. SADI
    suffix: str | None  # text after '_' on the keyword: a class, a number or '*'
    tokens: list[str]
    line: int
    text: str
    residue: int  # residue (RESI) the instruction stands in
    atoms_before: int  # atoms read before it (SAME pairs with the atoms that follow)


@dataclass
class RestraintReader:
    """Collects restraint instructions and EQIV operators while a .ins is parsed."""

    raw: list[RawRestraint] = field(default_factory=list)
    eqiv: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: HFIX lines: (AFIX code, the line as a RawRestraint: its residue suffix, tokens after the code ...)
    hfix: list[tuple[int, "RawRestraint"]] = field(default_factory=list)
    #: ANIS lines: (tokens after it, line, residue it stands in, atoms read before it)
    anis: list[tuple[list[str], int, int, int]] = field(default_factory=list)

    @staticmethod
    def keyword_of(token: str) -> tuple[str, str | None] | None:
        """(keyword, residue suffix) when `token` is a restraint instruction, else None."""
        word, _, suffix = token.upper().partition("_")
        if word not in DEFAULTS:
            return None
        return word, (suffix or None)

    def add(self, keyword: str, suffix: str | None, tokens: list[str], line: int, text: str,
            residue: int, atoms_before: int) -> None:
        self.raw.append(RawRestraint(keyword, suffix, tokens, line, text, residue, atoms_before))

    def add_eqiv(self, tokens: list[str], line: int) -> None:
        """EQIV $n operator."""
        if len(tokens) < 2 or not tokens[0].startswith("$"):
            self.notes.append(f"line {line}: EQIV needs $n and an operator; ignored")
            return
        self.eqiv[tokens[0].upper()] = " ".join(tokens[1:]).replace(" ", "")

    def add_anis(self, tokens: list[str], line: int, residue: int, atoms_before: int) -> None:
        """ANIS [n | atoms]: atoms to refine anisotropically."""
        self.anis.append((tokens, line, residue, atoms_before))

    def resolve_anis(self, atoms: list[ResidueAtom]) -> list[str]:
        """Labels of the non-H atoms ANIS makes anisotropic: with no argument every atom
        after it, with a number n the next n isotropic atoms, else the named atoms."""
        out: list[str] = []
        for tokens, line, residue, atoms_before in self.anis:
            following = [a for a in atoms if a.index >= atoms_before and a.element not in ("H", "D")]
            if not tokens:
                out.extend(a.label for a in following)
            elif len(tokens) == 1 and re.fullmatch(r"\d+", tokens[0]):
                out.extend(a.label for a in [a for a in following if a.isotropic][: int(tokens[0])])
            else:
                try:
                    refs = self._expand(tokens, residue, atoms, pairwise=False)
                except _Unresolved as exc:
                    self.notes.append(f"line {line}: ANIS ignored: {exc}")
                    continue
                heavy = {a.label for a in atoms if a.element not in ("H", "D")}
                out.extend(r.label for r in refs if r.label in heavy)
        return list(dict.fromkeys(out))

    def add_hfix(self, code: int, tokens: list[str], line: int, residue: int, suffix: str | None = None) -> None:
        """HFIX[_residues] code [U d] atoms: riding H to generate on the named atoms (with a
        residue suffix, on each such residue's own atoms of those names)."""
        self.hfix.append((code, RawRestraint("HFIX", suffix, list(tokens), line, "", residue, 0)))

    def resolve_hfix(self, atoms: list[ResidueAtom]) -> dict[str, int]:
        """{upper-case label: AFIX code} of the atoms HFIX names (unresolvable lines noted)."""
        out: dict[str, int] = {}
        for code, raw in self.hfix:
            names = list(raw.tokens)
            while names and _NUMBER.match(names[0]):  # the optional U and d
                names.pop(0)
            try:
                refs = []
                for residue in _residues_for(raw, atoms):
                    found = self._expand(names, residue, atoms, pairwise=False,
                                         missing=[] if raw.suffix is not None else None)
                    refs.extend(r for r in found if r is not None)
            except _Unresolved as exc:
                self.notes.append(f"line {raw.line}: HFIX ignored: {exc}")
                continue
            for ref in refs:
                out.setdefault(ref.label.upper(), code)
        return out

    def resolve(self, atoms: list[ResidueAtom]) -> list[RestraintInstruction]:
        """Every collected instruction with its atoms resolved (unresolvable ones noted)."""
        out: list[RestraintInstruction] = []
        for raw in self.raw:
            try:
                out.extend(self._resolve_one(raw, atoms))
            except _Unresolved as exc:
                self.notes.append(f"line {raw.line}: {raw.keyword} ignored: {exc}")
        return out

    # -- one instruction -----------------------------------------------------------
    def _resolve_one(self, raw: RawRestraint, atoms: list[ResidueAtom]) -> list[RestraintInstruction]:
        numbers: list[float] = []
        names = list(raw.tokens)
        while names and _NUMBER.match(names[0]):
            numbers.append(float(names.pop(0)))
        values = _with_defaults(raw.keyword, numbers)
        if raw.keyword == "SAME":
            return self._same(raw, values, names, atoms)
        residues = _residues_for(raw, atoms)
        pairwise = raw.keyword in PAIRWISE
        # applied residue by residue (a keyword suffix), the names are that residue's atoms:
        # one the residue lacks is not sought elsewhere; what names it is left out there
        strict = raw.suffix is not None
        out = []
        for residue in residues:
            missing: list[str] = []
            try:
                refs = self._expand(names, residue, atoms, pairwise=pairwise, missing=missing if strict else None)
            except _Unresolved as exc:
                if not strict:
                    raise
                self.notes.append(f"line {raw.line}: {raw.keyword}_{raw.suffix} left out for residue {residue}: {exc}")
                continue
            if missing:
                if pairwise:
                    refs = [r for pair in zip(refs[::2], refs[1::2]) if None not in pair for r in pair]
                else:
                    refs = [r for r in refs if r is not None]
                self.notes.append(f"line {raw.line}: {raw.keyword}_{raw.suffix}: residue {residue} has no "
                                  f"{', '.join(dict.fromkeys(missing))}; the atoms or pairs naming them are left out there")
            if not refs:
                if missing:
                    continue
                if raw.keyword in ALL_WHEN_EMPTY and not names:
                    refs = [AtomRef(label=a.label) for a in atoms
                            if a.element not in ("H", "D") and (raw.suffix is None or a.residue == residue)]
                else:
                    continue
            if raw.keyword in PAIRWISE and len(refs) % 2:
                raise _Unresolved(f"an odd number of atoms ({len(refs)}) where pairs are needed")
            out.append(RestraintInstruction(kind=raw.keyword, values=values, atoms=refs, text=raw.text, line=raw.line))
        if not out and residues:
            raise _Unresolved("no atom of it is in the model")
        return out

    def _same(self, raw: RawRestraint, values: list[float], names: list[str], atoms: list[ResidueAtom]):
        heavy = [a for a in atoms if a.element not in ("H", "D")]
        if raw.suffix is not None and not raw.suffix.isdigit() and raw.suffix != "*":
            members = [r for r in _residue_numbers(atoms) if _class_of(r, atoms) == raw.suffix]
            if len(members) < 2:
                raise _Unresolved(f"fewer than two residues of class {raw.suffix}")
            # each residue's own atoms of those names; a name one of the two residues lacks
            # is left out of that residue's comparison (SHELXL would stop), with a note
            missing: list[list[str]] = [[] for _ in members]
            lists = [self._expand(names, r, atoms, pairwise=False, missing=gone) for r, gone in zip(members, missing)]
            out = []
            for residue, lst, gone in zip(members[1:], lists[1:], missing[1:]):
                if len(lst) != len(lists[0]):
                    raise _Unresolved("residues of the class hold different atoms")
                kept = [(a, b) for a, b in zip(lists[0], lst) if a is not None and b is not None]
                if len(kept) < len(lst):
                    lacking = ", ".join(dict.fromkeys(missing[0] + gone))
                    self.notes.append(f"line {raw.line}: SAME_{raw.suffix}: residue {members[0]} or {residue} has no "
                                      f"{lacking}; compared on the atoms both have")
                if len(kept) < 2:
                    continue
                out.append(RestraintInstruction(kind="SAME", values=values, atoms=[b for _, b in kept],
                                                reference=[a for a, _ in kept], text=raw.text, line=raw.line))
            if not out:
                raise _Unresolved("no two residues of the class share two of its atoms")
            return out
        named = self._expand(names, raw.residue, atoms, pairwise=False)
        following = [a for a in heavy if a.index >= raw.atoms_before][: len(named)]
        if len(following) < len(named) or not named:
            raise _Unresolved("fewer atoms follow it than it names")
        return [RestraintInstruction(kind="SAME", values=values, atoms=[AtomRef(label=a.label) for a in following],
                                     reference=named, text=raw.text, line=raw.line)]

    def _expand(self, names: list[str], residue: int, atoms: list[ResidueAtom], *, pairwise: bool,
                missing: list[str] | None = None) -> list[AtomRef | None]:
        """Atom tokens -> AtomRefs in `residue` context (ranges, $element, _*, _$n). With
        `missing` (a list), plain names are sought in that residue only, and one it lacks
        is appended to `missing` and stands as None in the result."""
        out: list[AtomRef | None] = []
        i = 0
        while i < len(names):
            tok = _PART_MARK.sub("", names[i])  # `N4A^a`: the atom itself (SHELXL's part mark)
            if tok in (">", "<"):
                if not out or i + 1 >= len(names):
                    raise _Unresolved(f"'{tok}' needs an atom on each side")
                if out[-1] is None:
                    raise _Unresolved(f"the range starts at an atom the residue lacks ({missing[-1] if missing else '?'})")
                first = _find(out[-1].label, atoms)
                last = self._lookup(names[i + 1], residue, atoms, own_residue_only=missing is not None)[0]
                lo, hi = (first.index, last.index) if tok == ">" else (last.index, first.index)
                if hi < lo:
                    raise _Unresolved(f"the range {first.name} {tok} {last.name} runs backwards")
                span = [a for a in atoms[lo:hi + 1] if a.element not in ("H", "D")]
                if tok == "<":
                    span = span[::-1]
                out.extend(AtomRef(label=a.label) for a in span[1:])
                i += 2
                continue
            if tok.startswith("$") and not pairwise:
                out.extend(AtomRef(label=a.label) for a in _element_atoms(tok, residue, atoms))
                i += 1
                continue
            name, symop = tok, None
            if "_$" in tok.upper():
                name, _, code = tok.partition("_$")
                symop = self.eqiv.get("$" + code.upper())
                if symop is None:
                    raise _Unresolved(f"{tok}: no EQIV ${code}")
            if name.endswith("_*"):
                found = [a for a in atoms if a.name.upper() == name[:-2].upper()]
                if not found:
                    raise _Unresolved(f"no atom {name[:-2]} in any residue")
                if pairwise:
                    # the pair is repeated for every residue: partner first, then each residue's atom
                    partner = out.pop() if len(out) % 2 else None
                    for a in found:
                        if partner is not None:
                            out.append(partner)
                        out.append(AtomRef(label=a.label, symop=symop))
                else:
                    out.extend(AtomRef(label=a.label, symop=symop) for a in found)
                i += 1
                continue
            try:
                found = self._lookup(name, residue, atoms, own_residue_only=missing is not None)
            except _Unresolved:
                if missing is None:
                    raise
                missing.append(name)
                out.append(None)
                i += 1
                continue
            for a in found:
                out.append(AtomRef(label=a.label, symop=symop))
            i += 1
        return out

    @staticmethod
    def _lookup(name: str, residue: int, atoms: list[ResidueAtom], *, own_residue_only: bool = False) -> list[ResidueAtom]:
        """The atom `name` stands for in `residue` context: that residue's, else residue 0's,
        else any atom so named (only the residue's with `own_residue_only`)."""
        base, _, suffix = name.partition("_")
        if suffix in ("+", "-"):  # the next or previous residue
            residue = residue + (1 if suffix == "+" else -1)
        elif suffix.isdigit():
            residue = int(suffix)
        elif suffix:
            base = name  # an underscore that is part of the label
        pools = [[a for a in atoms if a.residue == residue]]
        if not own_residue_only:
            pools += [[a for a in atoms if a.residue == 0], atoms]
        for pool in pools:
            hit = [a for a in pool if a.name.upper() == base.upper() or a.label.upper() == name.upper()]
            if hit:
                return hit[:1]
        raise _Unresolved(f"no atom {name}")


class _Unresolved(Exception):
    pass


def _element_atoms(token: str, residue: int, atoms: list[ResidueAtom]) -> list[ResidueAtom]:
    """The atoms `$E` names: every atom of element E (`$E`, `$E_*`), or those of residue n
    (`$E_n`), of the next or previous residue (`$E_+`, `$E_-`)."""
    element, _, suffix = token[1:].partition("_")
    element = element.capitalize()
    if not suffix or suffix == "*":
        return [a for a in atoms if a.element == element]
    if suffix in ("+", "-"):
        wanted = residue + (1 if suffix == "+" else -1)
    elif suffix.isdigit():
        wanted = int(suffix)
    else:
        raise _Unresolved(f"{token}: an element takes _n, _+, _- or _* as residue suffix")
    return [a for a in atoms if a.element == element and a.residue == wanted]


def _with_defaults(keyword: str, numbers: list[float]) -> list[float]:
    defaults = DEFAULTS[keyword]
    values = list(numbers[: len(defaults)]) if defaults else []
    if keyword in DOUBLED_SECOND and len(numbers) == 1:
        values.append(2.0 * numbers[0])
    elif keyword in EQUAL_SECOND and len(numbers) == 1:
        values.append(float(numbers[0]))
    for k in range(len(values), len(defaults)):
        if defaults[k] is None:
            raise _Unresolved("a required number is missing")
        values.append(float(defaults[k]))
    return values


def _residue_numbers(atoms: list[ResidueAtom]) -> list[int]:
    return sorted({a.residue for a in atoms})


def _class_of(residue: int, atoms: list[ResidueAtom]) -> str | None:
    for a in atoms:
        if a.residue == residue:
            return (a.residue_class or "").upper() or None
    return None


def _residues_for(raw: RawRestraint, atoms: list[ResidueAtom]) -> list[int]:
    """Residues an instruction applies to (its keyword suffix, else where it stands)."""
    if raw.suffix is None:
        return [raw.residue]
    if raw.suffix == "*":
        return _residue_numbers(atoms)
    if raw.suffix.isdigit():
        return [int(raw.suffix)]
    members = [r for r in _residue_numbers(atoms) if _class_of(r, atoms) == raw.suffix]
    if not members:
        raise _Unresolved(f"no residue of class {raw.suffix}")
    return members


def _find(label: str, atoms: list[ResidueAtom]) -> ResidueAtom:
    for a in atoms:
        if a.label == label:
            return a
    raise _Unresolved(f"no atom {label}")
