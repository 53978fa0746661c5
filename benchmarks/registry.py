"""The benchmark case registry (SPEC §8), in the manner of timm's model registry.

Cases are registered once by name; `list_cases` selects them with fnmatch globs and `get_case`
returns one. The default registry is a small product over the module-level axes below and the
architecture table (`mdkeras.architectures.ARCHITECTURES`): a new table entry adds its cases.
"""

from __future__ import annotations

import difflib
import fnmatch
import itertools
from collections.abc import Iterable
from dataclasses import dataclass

from mdkeras.architectures import ARCHITECTURES
from mdkeras.config import Case
from mdkeras.errors import MdkerasError

# (potential, density, window): the physics settings of SPEC §8.
PHYSICS = (
    ("lj", 0.05, 8.0),
    ("lj", 0.2, 8.0),
    ("lj", 0.5, 8.0),
    ("coulomb", 0.05, 5.0),
    ("coulomb", 0.5, 5.0),
    ("coulomb", 2.0, 5.0),
)
GRIDS = (16, 28, 56)
ENCODINGS = ("paper", "quantile")

# (potential, density, window, temperature): the `md` sampler's settings (SPEC §2b), each at
# n = 28 with every architecture and encoding. The six physics settings at T = 1, plus the
# dense LJ liquid (a structured fluid).
MD_PHYSICS = (
    *((potential, density, window, 1.0) for potential, density, window in PHYSICS),
    ("lj", 0.7, 8.0, 1.0),
)
MD_GRID = 28

# (potential, density, window, temperature): `md` settings with a force-regression head
# (`head="force"`, cases named `...-<architecture>-force`: no encoding, no classes), with every
# architecture at `MD_GRID`: the learned force fields that `python -m benchmarks md` can drive.
FORCE_PHYSICS = (("lj", 0.5, 8.0, 1.0),)


@dataclass(frozen=True)
class MDState:
    """A thermodynamic state that `python -m benchmarks md` simulates: one per `MD_PHYSICS`
    setting, named like `lj-rho0.50-t1.00`."""

    potential: str
    density: float
    temperature: float

    @property
    def name(self) -> str:
        return f"{self.potential}-rho{self.density:.2f}-t{self.temperature:.2f}"

    def describe(self) -> dict:
        return {
            "name": self.name,
            "potential": self.potential,
            "density": self.density,
            "temperature": self.temperature,
        }


MD_STATES = {
    s.name: s for s in (MDState(p, rho, t) for p, rho, _window, t in MD_PHYSICS)
}  # name -> MDState

# The CI accuracy gate: both potentials, both encodings, a non-28 grid, LeNet only.
CI_CASES = (
    "lj-rho0.50-w8-n28-lenet-paper",
    "coulomb-rho0.50-w5-n28-lenet-paper",
    "lj-rho0.50-w8-n16-lenet-quantile",
    "coulomb-rho2.00-w5-n28-lenet-quantile",
    "lj-rho0.20-w8-n56-lenet-paper",
)

_GLOB_CHARS = "*?["
_registry: dict[str, Case] = {}


def register_case(case: Case) -> Case:
    """Add `case` under its name; a second case with the same name is an error."""
    if case.name in _registry:
        raise MdkerasError(
            f"case {case.name!r} is already registered: expected unique case names; "
            "change one of the cases' axes."
        )
    _registry[case.name] = case
    return case


def _register_defaults() -> None:
    """Register the products of the axes: physics × grid × architecture × encoding (the
    `uniform` sampler), then md physics × architecture × encoding at `MD_GRID`, then the force
    head's md physics × network architecture at `MD_GRID` (a model that is not a network has
    class heads only)."""
    for (potential, density, window), grid, arch, enc in itertools.product(
        PHYSICS, GRIDS, ARCHITECTURES, ENCODINGS
    ):
        register_case(Case(potential, density, window, grid, architecture=arch, encoding=enc))

    def md_case(physics, architecture, **axes) -> Case:
        potential, density, window, temperature = physics
        return Case(
            potential,
            density,
            window,
            MD_GRID,
            architecture=architecture,
            sampler="md",
            temperature=temperature,
            **axes,
        )

    for physics, arch, enc in itertools.product(MD_PHYSICS, ARCHITECTURES, ENCODINGS):
        register_case(md_case(physics, arch, encoding=enc))
    networks = [name for name, a in ARCHITECTURES.items() if a.network]
    for physics, arch in itertools.product(FORCE_PHYSICS, networks):
        register_case(md_case(physics, arch, head="force"))


def case_names() -> list[str]:
    """All registered names, in registration order."""
    return list(_registry)


def get_case(name: str) -> Case:
    """The case called `name`, or one error suggesting close names."""
    try:
        return _registry[name]
    except KeyError:
        raise MdkerasError(
            f"unknown case {name!r}{_suggest(name)}; run `python -m benchmarks list` to see all."
        ) from None


def ci_cases() -> list[Case]:
    """The cases of the CI accuracy gate (`CI_CASES`)."""
    return [get_case(name) for name in CI_CASES]


def list_cases(
    pattern: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
) -> list[Case]:
    """Registered cases matching any `pattern` and no `exclude` glob, in registration order.

    A pattern without glob characters matches as a substring (`n16` means `*n16*`). Every pattern
    must match at least one registered case; otherwise a `MdkerasError` names it and suggests
    up to three close names.
    """
    names = case_names()
    include = _as_list(pattern)
    if include:
        selected = set()
        for pat in include:
            selected.update(_match(pat, names))
        names = [n for n in names if n in selected]
    for pat in _as_list(exclude):
        dropped = set(_match(pat, case_names()))
        names = [n for n in names if n not in dropped]
    return [_registry[n] for n in names]


def _as_list(patterns) -> list[str]:
    if patterns is None:
        return []
    if isinstance(patterns, str):
        return [patterns]
    return list(patterns)


def case_glob(pattern: str) -> str:
    """The one case-selection rule (`list`, `run`, `recover`, `plot`): a case-insensitive fnmatch
    glob over case names, a pattern without glob characters matching as a substring."""
    glob = pattern.strip().lower()
    if not glob:
        raise MdkerasError("empty case pattern: expected a glob like 'lj-*-n28-*' or a word.")
    return glob if any(c in glob for c in _GLOB_CHARS) else f"*{glob}*"


def _match(pattern: str, names: list[str]) -> list[str]:
    glob = case_glob(pattern)
    found = [n for n in names if fnmatch.fnmatchcase(n, glob)]
    if not found:
        raise MdkerasError(
            f"pattern {pattern!r} matches no case{_suggest(pattern)}; "
            "run `python -m benchmarks list` to see all."
        )
    return found


def _suggest(text: str) -> str:
    """`' (did you mean 'a', 'b'?)'` with up to three close names or name pieces, or ''."""
    word = text.strip().lower().strip(_GLOB_CHARS + "]")
    pieces = set()
    for name in case_names():
        parts = name.split("-")
        for i, j in itertools.combinations(range(len(parts) + 1), 2):
            pieces.add("-".join(parts[i:j]))
    close = difflib.get_close_matches(word, sorted(pieces), n=3, cutoff=0.6)
    return f" (did you mean {', '.join(map(repr, close))}?)" if close else ""


_register_defaults()


def md_states(patterns: list[str] | None) -> list[MDState]:
    """The MD states whose names match any of `patterns` (by `case_glob`, the rule of case
    selection: case-insensitive globs, a bare word as a substring, an empty pattern an error),
    in registry order, each once; `None`: every state. One error for a pattern that matches
    none."""
    states = list(MD_STATES.values())
    if patterns is None:
        return states
    chosen = []
    for pattern in patterns:
        glob = case_glob(pattern)
        hits = [s for s in states if fnmatch.fnmatchcase(s.name, glob)]
        if not hits:
            names = ", ".join(s.name for s in states)
            raise MdkerasError(f"-k {pattern!r} matches no MD state: expected one of {names}.")
        chosen += [s for s in hits if s not in chosen]
    return chosen
