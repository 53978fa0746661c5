"""ASE calculators for what the suite learns: an energy model (SPEC §3b) and a recovered pair
potential (a recovery record's `f(r)`, as `tables.export` writes it for LAMMPS).

The systems are 2D: atoms in a plane of constant z, periodic in x and y, in a square cell
`[[B, 0, 0], [0, B, 0], [0, 0, Lz]]` (any `Lz`; z need not be periodic). Each calculator gives
`energy` (= `free_energy`), `forces` (z components 0) and `stress` in ASE's Voigt order
`(xx, yy, zz, yz, xz, xy)`: `sigma_ab = -W_ab / A` with `W` LAMMPS's virial and `A = B^2` the
cell's area (a 2D stress, energy per area; zz, yz, xz are 0). The pressure of a configuration
with velocities is then `P = (sum m v^2 - A (sigma_xx + sigma_yy)) / (2 A)`, as LAMMPS prints
it in 2D.

    from ase import Atoms
    from mdkeras.calculator import EnergyModelCalculator
    atoms = Atoms("Ar2000", positions=xyz, cell=[B, B, 1], pbc=[True, True, False])
    atoms.calc = EnergyModelCalculator("model.keras")
    atoms.get_forces()
"""

from __future__ import annotations

import numpy as np

from mdkeras.errors import MdkerasError

try:  # ASE is optional (`pip install "mdkeras[ase]"`)
    from ase.calculators.calculator import Calculator, all_changes
except ImportError as err:  # pragma: no cover - exercised only without ASE
    raise MdkerasError(
        f'mdkeras.calculator needs ASE ({err}): install it with `pip install "mdkeras[ase]"`.'
    ) from None


# Closer pairs than this are an error for an energy model: it has seen none (at T = 1 the
# closest approach in its LJ training data is about 0.88), so its energy there means nothing.
MIN_DISTANCE = 0.5


def plane(atoms) -> tuple[np.ndarray, float]:
    """`(positions (N, 2), B)` of 2D `atoms`; one error for a cell that is not a square in the
    xy plane, a system not periodic in x and y, or atoms off one plane of z."""
    cell = np.asarray(atoms.cell)
    box = float(cell[0, 0])
    square = (
        box > 0
        and np.allclose(cell[1], [0.0, box, 0.0], rtol=0, atol=1e-12 * box)
        and np.allclose(cell[0, 1:], 0.0)
        and np.allclose(cell[2, :2], 0.0)
    )
    if not square:
        raise MdkerasError(
            f"cell {cell.tolist()} is not allowed: expected a square in the xy plane, "
            "[[B, 0, 0], [0, B, 0], [0, 0, Lz]]."
        )
    if not (atoms.pbc[0] and atoms.pbc[1]):
        raise MdkerasError(
            f"pbc={list(atoms.pbc)} is not allowed: expected periodic x and y (2D periodic box)."
        )
    xyz = atoms.get_positions()
    if len(xyz) and np.ptp(xyz[:, 2]) > 1e-9 * max(box, 1.0):
        raise MdkerasError(
            f"atoms span z from {xyz[:, 2].min():g} to {xyz[:, 2].max():g}: expected them in one "
            "plane of constant z (a 2D system)."
        )
    return xyz[:, :2].copy(), box


class _Plane2D(Calculator):
    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def _evaluate(self, positions: np.ndarray, box: float):  # -> forces, energy, virial 6
        raise NotImplementedError

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        positions, box = plane(self.atoms)
        forces, energy, virial = self._evaluate(positions, box)
        area = box * box
        f3 = np.zeros((len(positions), 3))
        f3[:, :2] = forces
        w = np.asarray(virial, dtype=np.float64)
        self.results = {
            "energy": float(energy),
            "free_energy": float(energy),
            "forces": f3,
            "stress": -np.array([w[0], w[1], 0.0, 0.0, 0.0, w[3]]) / area,
        }


class EnergyModelCalculator(_Plane2D):
    """An energy model file (`.keras`, `python -m benchmarks energy`) as an ASE calculator:
    the model's energy, its exact forces and its virial (`energy.field`, float32 model,
    float64 results)."""

    def __init__(self, model_path, *, min_distance: float = MIN_DISTANCE, **kwargs):
        from mdkeras import energy

        super().__init__(**kwargs)
        model, descriptor, self.meta = energy.load_energy_model(model_path)
        self._field = energy.field(model, descriptor, jit_compile=False)
        self.min_distance = float(min_distance)

    def _evaluate(self, positions, box):
        from mdkeras.energy import check_configuration

        check_configuration(positions, box, closest=self.min_distance)
        return self._field(positions, box)


class RecoveredPotentialCalculator(_Plane2D):
    """A recovery record's pair force (`fit`: `"parametric"` or `"shells"`) as an ASE
    calculator: the force `f(r)` itself and its energy `U(r) = int_r^r_c f` shifted to zero at
    the potential's MD cut-off (`tables.recovered_force`, `tables.recovered_energy`), i.e. what
    `tables.export` tabulates for LAMMPS, without the table's spline."""

    def __init__(self, record, fit: str = "parametric", **kwargs):
        from mdkeras import tables
        from mdkeras.potentials import get
        from mdkeras.records import load_record

        super().__init__(**kwargs)
        if not isinstance(record, dict):
            record = load_record(record, kind="recovery")
        self.potential = record["physics"]["potential"]
        self.cutoff = get(self.potential).md_cutoff
        force = tables.recovered_force(record, fit)
        self._pair = (force, tables.recovered_energy(force, self.cutoff))

    def _evaluate(self, positions, box):
        from mdkeras.pairforces import pair_forces

        return pair_forces(self.potential, positions, box, self.cutoff, pair=self._pair)
