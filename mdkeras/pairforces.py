"""Pair forces, energy and virial of a periodic 2D configuration, in NumPy: the true force field
computed in Python (what `fix external` is checked against, and the true energy of any frame).

SPEC §2b's MD interaction: the pair force of §1 unchanged inside the cut-off `r_c`, the energy
`U(r) - U(r_c)` shifted to zero there, minimum image in a square periodic box of side `B > 2 r_c`
(so each pair within `r_c` is counted once). Pairs are found with a cell list (cells of side
`>= r_c`, the 9 around each particle's) and evaluated in small chunks, so memory stays bounded
whatever `N`.
"""

from __future__ import annotations

import numpy as np

from mdkeras.checks import check_finite, check_number
from mdkeras.errors import MdkerasError
from mdkeras.potentials import force_over_r, get

# Candidate pairs evaluated at once: small temporaries (128 kB each) stay in cache and in the
# allocator's pool; chunks of 2^19 were 5x slower at N = 2,000 (page faults on fresh memory).
CHUNK = 1 << 14


def _candidates(x: np.ndarray, box: float, cutoff: float) -> tuple[np.ndarray, np.ndarray]:
    """A cell list: `(cell (N,), members (C, K))`, each particle's cell and, for every cell, the
    ids of the particles in it and its 8 neighbours (padded with -1). With fewer than 3 cells a
    side, one cell holds everyone (the 9 neighbours would repeat cells)."""
    side = int(box // cutoff)
    side = side if side >= 3 else 1
    ij = np.minimum((x * (side / box)).astype(np.int64), side - 1)
    cell = ij[:, 0] * side + ij[:, 1]
    count = np.bincount(cell, minlength=side * side)
    order = np.argsort(cell, kind="stable")
    slot = np.arange(len(x)) - (np.cumsum(count) - count)[cell[order]]
    table = np.full((side * side, int(count.max())), -1, dtype=np.int64)
    table[cell[order], slot] = order
    if side == 1:
        return cell, table
    cx, cy = np.divmod(np.arange(side * side), side)
    off = np.array([(a, b) for a in (-1, 0, 1) for b in (-1, 0, 1)])
    around = ((cx[:, None] + off[:, 0]) % side) * side + (cy[:, None] + off[:, 1]) % side
    return cell, table[around].reshape(side * side, -1)


def pair_forces(
    potential: str, positions, box: float, cutoff: float, *, pair=None
) -> tuple[np.ndarray, float, np.ndarray]:
    """Forces, energy and virial of the periodic configuration under `potential` cut at `cutoff`.

    `pair`: `(f, U)`, vectorised `f(r)` and `U(r)` of float64 `r`, in place of the potential's
    own (a recovered one, `tables.recovered_force` and `tables.recovered_energy`).

    Args:
        potential: a name in `mdkeras.potentials.POTENTIALS`.
        positions: `(N, 2)` float64 positions (any real values; wrapped into `[0, B)`).
        box: side `B` of the periodic square box, `B > 2 cutoff` (reduced units).
        cutoff: pair cut-off `r_c > 0`.
    Returns:
        `forces (N, 2)` float64 (on each particle, the sum of `-f(r) d / r` over neighbours at
        minimum-image displacement `d = r_j - r_i`, `r < r_c`); the total energy
        `sum_{i<j} U(r) - U(r_c)` (float, not per particle); the virial as LAMMPS's 6-vector
        `(xx, yy, zz, xy, xz, yz)`, `W_ab = sum_{i<j} d_a d_b f(r) / r` (energy units; `zz`, `xz`,
        `yz` are 0 in 2D), so the pressure is `(sum m v^2 + W_xx + W_yy) / (2 B^2)`.
    """
    entry = get(potential)
    box = check_number("box", box, positive=True, noun="a box side")
    cutoff = check_number("cutoff", cutoff, positive=True, noun="a cut-off")
    if box <= 2 * cutoff:
        raise MdkerasError(
            f"box={box:g} is too small for cutoff={cutoff:g}: expected box > 2 cutoff (one "
            "minimum image per pair)."
        )
    x = np.asarray(positions, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 2:
        raise MdkerasError(f"positions of shape {x.shape} are not allowed: expected (N, 2).")
    x = np.mod(check_finite("positions", x), box)
    n = len(x)
    forces = np.zeros((n, 2))
    virial = np.zeros(6)
    energy = 0.0
    if n < 2:
        return forces, energy, virial
    cell, members = _candidates(x, box, cutoff)
    px, py = np.ascontiguousarray(x[:, 0]), np.ascontiguousarray(x[:, 1])
    if pair is None:
        force_r2 = lambda r2: force_over_r(potential, r2)  # noqa: E731
        energy_r = entry.energy
    else:
        force_r2 = lambda r2: pair[0](np.sqrt(r2)) / np.sqrt(r2)  # noqa: E731
        energy_r = pair[1]
    u_cut = float(energy_r(cutoff))
    rows = max(1, CHUNK // members.shape[1])
    for start in range(0, n, rows):
        i = np.arange(start, min(n, start + rows))
        j = members[cell[i]]  # (rows, K) candidate neighbours of each i, -1 = padding
        dx, dy = px[j] - px[i, None], py[j] - py[i, None]
        dx -= box * np.round(dx * (1.0 / box))
        dy -= box * np.round(dy * (1.0 / box))
        r2 = dx * dx + dy * dy
        near = np.flatnonzero((j >= 0) & (r2 < cutoff * cutoff) & (j != i[:, None]))
        row = near // j.shape[1]
        dx, dy, r2 = dx.ravel()[near], dy.ravel()[near], r2.ravel()[near]
        g = force_r2(r2)  # f(r) / r
        gx, gy = g * dx, g * dy
        forces[i, 0] = -np.bincount(row, weights=gx, minlength=len(i))
        forces[i, 1] = -np.bincount(row, weights=gy, minlength=len(i))
        # each pair is seen from both ends: halve the pair sums
        energy += 0.5 * float(np.sum(energy_r(np.sqrt(r2)) - u_cut))
        virial[0] += 0.5 * float(gx @ dx)
        virial[1] += 0.5 * float(gy @ dy)
        virial[3] += 0.5 * float(gx @ dy)
    return forces, energy, virial


def closest_distance(positions, box: float, *, within: float = 2.0) -> float:
    """The smallest minimum-image pair distance of `(N, 2)` positions in a periodic box of side
    `box`, or `within` if no pair is closer (reduced lengths)."""
    x = np.mod(check_finite("positions", positions), box)
    cell, members = _candidates(x, float(box), float(within))
    best = float(within)
    for lo in range(0, len(x), CHUNK):
        i = np.arange(lo, min(lo + CHUNK, len(x)))
        j = members[cell[i]]
        d = x[np.clip(j, 0, None)] - x[i, None, :]
        d -= box * np.round(d / box)
        r = np.hypot(d[..., 0], d[..., 1])
        r[(j < 0) | (j == i[:, None])] = np.inf
        best = min(best, float(r.min()))
    return best
