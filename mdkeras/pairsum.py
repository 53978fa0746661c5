"""A `smoothmap` energy model evaluated as a sum over pairs, compiled, for MD (SPEC §3b).

`smoothmap`'s first layer is linear in the smooth grid, `h_c(i) = sum_(a,b) W[a, b, c] D[a, b]`
with `D[a, b] = sum_j m_a(d_y) m_b(d_x)` (`mdkeras.smooth`), so each neighbour adds only the
block of cells its Gaussian reaches: `block(sigma)` cells a side (6 at sigma = 0.5) hold all of
it within `SUPPORT` standard deviations of its centre, the cut the descriptor already makes at
the window's edge (a cell beyond it holds below `Phi(-SUPPORT) ~ 2.9e-7` of a count). A
neighbour's weights in its block depend only on where its centre falls inside a cell, so they
come from one table (`phase_table`: cubic Hermite interpolation of the exact values and slopes,
error ~1e-12 of a count). One evaluation is, in numba loops over the particles in parallel (no
BLAS threads beside them on a small CPU):

1. every pair's block weights in x and y and their derivatives, the block's `m_a m_b` added
   to its particle's grid, and `h = D W`;
2. the dense layers and their backward pass (products compiled, the softplus in NumPy),
   giving `dE/dh` and `V = (dE/dh) W^T = dE/dD`;
3. every pair's `g = dE/dd = sum_(a,b) V[a, b] (m_a m_b', m_a' m_b)` over its block, the forces
   `F_i = sum_j g_ij - sum_(k: j = i) g_ki` and the virial `-sum d g` as `energy.make_evaluator`
   takes them.

It is the model's own function in the model's float type, its forces the exact gradient of its
energy; it agrees with the TensorFlow evaluation through the grids to the Gaussians' cut
(float64: 3e-7 of the energy, 2e-6 of the largest force, below float32's round-off;
`tests/test_pairsum.py`). Only models whose layers after the grid are `Flatten`, a linear
bias-free `Dense`, `Dense` layers with `softplus` or no activation and the energy's
`Rescaling` take this path (`supports`). `neighbours` is the Verlet list's cell-list builder.
"""

from __future__ import annotations

import math

import numpy as np

from mdkeras import smooth
from mdkeras.errors import MdkerasError

ACTIVATIONS = ("softplus", "linear")
STEPS = 512  # table steps per cell side of the weights' cubic Hermite interpolation


def available() -> bool:
    """Whether numba (the `md` extra) is installed."""
    import importlib.util

    return importlib.util.find_spec("numba") is not None


def block(sigma: float) -> int:
    """Cells a side of a neighbour's block at width `sigma` (cell sides)."""
    return int(math.ceil(2.0 * smooth.SUPPORT * sigma)) + 1


def phase_table(sigma: float, size: int, steps: int = STEPS):
    """A neighbour's weights in the `size` cells of its block, and their derivatives, as
    functions of its centre's offset `r` (cell sides) from the block's first edge, tabulated
    at `r = (size - 1) / 2 + k / steps`, `k = 0..steps`: `(values, slopes)`, each
    `(steps + 1, size)`, slopes `d/dr`.

    The block starts `floor(c - (size - 1) / 2)` cells from the window's edge for a centre `c`
    cells from it, so `r` stays in `[(size - 1) / 2, (size + 1) / 2)`. Cubic Hermite
    interpolation of the table is exact to `~(1 / steps)^4 / (384 sigma^4)` of a count."""
    from scipy.special import erf

    r = (size - 1) / 2 + np.arange(steps + 1)[:, None] / steps
    scale = 1.0 / (math.sqrt(2.0) * sigma)
    z = (np.arange(size + 1)[None, :] - r) * scale  # the block's edges in erf units
    values = 0.5 * np.diff(erf(z), axis=1)
    slopes = -scale / math.sqrt(math.pi) * np.diff(np.exp(-z * z), axis=1)
    return values, slopes


def hermite_cubics(values, slopes):
    """The cubic Hermite interpolant of a table on each of its steps, `(steps, 4, size)`:
    `w(t) = c0 + c1 t + c2 t^2 + c3 t^3` for `t` in `[0, 1)` through the step (values and
    slopes from `phase_table`, slopes per unit of `r`, steps of `1 / steps`)."""
    steps = len(values) - 1
    v0, v1 = values[:-1], values[1:]
    s0, s1 = slopes[:-1] / steps, slopes[1:] / steps  # slopes per step
    return np.stack([v0, s0, 3 * (v1 - v0) - 2 * s0 - s1, 2 * (v0 - v1) + s0 + s1], axis=1)


def _layers(model, dtype=np.float64):
    """`(map kernel (n*n, C), [(kernel, bias, activation)], scale)` of a model this module can
    evaluate, arrays in `dtype`, or None."""
    from keras import layers

    body = [layer for layer in model.layers if not isinstance(layer, layers.InputLayer)]
    if len(body) < 4 or not isinstance(body[0], layers.Flatten):
        return None
    first, *dense, rescale = body[1:]
    if not isinstance(rescale, layers.Rescaling) or not isinstance(first, layers.Dense):
        return None
    if first.use_bias or first.activation.__name__ != "linear":
        return None
    stack = []
    for layer in dense:
        name = layer.activation.__name__ if isinstance(layer, layers.Dense) else None
        if name not in ACTIVATIONS:
            return None
        kernel = np.asarray(layer.kernel.numpy(), dtype=dtype)
        bias = (
            np.asarray(layer.bias.numpy(), dtype=dtype)
            if layer.use_bias
            else np.zeros(kernel.shape[1], dtype=dtype)
        )
        stack.append((kernel, bias, name))
    if not stack or stack[-1][0].shape[1] != 1:
        return None
    scale = float(np.asarray(rescale.scale))
    offset = float(np.asarray(getattr(rescale, "offset", 0.0)))
    if offset != 0.0:
        return None
    return np.ascontiguousarray(first.kernel.numpy(), dtype=dtype), stack, scale


def supports(model) -> bool:
    """Whether `model` (an energy model) is a linear map of the grid followed by dense layers
    this module evaluates (`smoothmap` is)."""
    return _layers(model) is not None


def _kernels():
    """The compiled loops (numba is imported on first use)."""
    import numba

    @numba.njit(inline="always", fastmath=True)
    def weigh(u, inv_h, edge0, half, cubic, w, dw, p):
        # a neighbour at u along one axis: its block's first cell, its weights w[p] and their
        # derivatives dw[p] in u, from the cubic of the phase table's step it falls in
        steps = cubic.shape[0]
        c = (u - edge0) * inv_h  # the centre in cell units from the window's edge
        lo = int(math.floor(c - half))
        q = (c - lo - half) * steps  # the phase in table steps, 0 <= q < steps
        k = min(max(int(q), 0), steps - 1)
        t = w.dtype.type(q - k)
        scale = w.dtype.type(steps * inv_h)
        c0, c1, c2, c3 = cubic[k, 0], cubic[k, 1], cubic[k, 2], cubic[k, 3]
        for a in range(c0.shape[0]):
            w[p, a] = c0[a] + t * (c1[a] + t * (c2[a] + t * c3[a]))
            dw[p, a] = (c1[a] + t * (2 * c2[a] + t * 3 * c3[a])) * scale
        return lo

    @numba.njit(parallel=True, cache=True, fastmath=True)
    def forward(x, box, start, neighbour, edge0, h, n, cubic, kernel_t, wx, wy, dx, dy,
                corner, disp, grids, features):  # fmt: skip
        # Every pair's block weights (wx, wy: (P, size)), their derivatives (dx, dy), its
        # block's first cell (corner: (P, 2), (n, n) if the block misses the window) and
        # displacement (disp: (P, 2)); every particle's grid (grids: (N, n * n), rows y) and
        # its first-layer features = grid @ kernel_t.T (features: (N, C)).
        size = cubic.shape[2]
        half = (size - 1) * 0.5
        inv_h = 1.0 / h
        inv_box = 1.0 / box
        channels = kernel_t.shape[0]
        for i in numba.prange(len(start) - 1):
            g = grids[i]
            g[:] = 0.0
            xi = x[i, 0]
            yi = x[i, 1]
            for p in range(start[i], start[i + 1]):
                j = neighbour[p]
                ux = x[j, 0] - xi
                ux -= box * math.floor(ux * inv_box + 0.5)
                uy = x[j, 1] - yi
                uy -= box * math.floor(uy * inv_box + 0.5)
                disp[p, 0] = ux
                disp[p, 1] = uy
                cx = (ux - edge0) * inv_h - half  # the blocks' first cells, before rounding down
                cy = (uy - edge0) * inv_h - half
                if cx <= -size or cx >= n or cy <= -size or cy >= n:
                    corner[p, 0] = n  # the block misses the window
                    corner[p, 1] = n
                    continue
                lx = weigh(ux, inv_h, edge0, half, cubic, wx, dx, p)
                ly = weigh(uy, inv_h, edge0, half, cubic, wy, dy, p)
                corner[p, 0] = lx
                corner[p, 1] = ly
                b0 = max(0, -lx)
                b1 = min(size, n - lx)
                for a in range(max(0, -ly), min(size, n - ly)):
                    wa = wy[p, a]
                    row = (ly + a) * n + lx
                    for b in range(b0, b1):
                        g[row + b] += wa * wx[p, b]
            for c in range(channels):
                w = kernel_t[c]
                s = w.dtype.type(0)
                for k in range(n * n):
                    s += g[k] * w[k]
                features[i, c] = s
        return features

    @numba.njit(parallel=True, cache=True, fastmath=True)
    def backward(start, n, kernel_t, dfeatures, wx, wy, dx, dy, corner, disp, dgrids, gpair,
                 forces, virials):  # fmt: skip
        # dfeatures: (N, C) dE/dfeatures; dgrids: (N, n * n) scratch for dE/dgrid; gpair: (P, 2)
        # each pair's dE/dd; forces[i]: the sum of i's; virials[i]: -sum of i's d_a g_b
        size = wx.shape[1]
        for i in numba.prange(len(start) - 1):
            v = dgrids[i]
            v[:] = 0.0
            for c in range(kernel_t.shape[0]):
                qc = dfeatures[i, c]
                w = kernel_t[c]
                for k in range(n * n):
                    v[k] += qc * w[k]
            fx = 0.0
            fy = 0.0
            wxx = 0.0
            wxy = 0.0
            wyx = 0.0
            wyy = 0.0
            for p in range(start[i], start[i + 1]):
                ly, lx = corner[p, 1], corner[p, 0]
                gx = v.dtype.type(0)
                gy = v.dtype.type(0)
                b0 = max(0, -lx)
                b1 = min(size, n - lx)
                for a in range(max(0, -ly), min(size, n - ly)):
                    row = (ly + a) * n + lx
                    sx = v.dtype.type(0)
                    sdx = v.dtype.type(0)
                    for b in range(b0, b1):
                        sx += v[row + b] * wx[p, b]
                        sdx += v[row + b] * dx[p, b]
                    gx += wy[p, a] * sdx
                    gy += dy[p, a] * sx
                gpair[p, 0] = gx
                gpair[p, 1] = gy
                fx += gx
                fy += gy
                wxx -= disp[p, 0] * gx
                wxy -= disp[p, 0] * gy
                wyx -= disp[p, 1] * gx
                wyy -= disp[p, 1] * gy
            forces[i, 0] = fx
            forces[i, 1] = fy
            virials[i, 0] = wxx
            virials[i, 1] = wxy
            virials[i, 2] = wyx
            virials[i, 3] = wyy
        return gpair

    @numba.njit(parallel=True, cache=True, fastmath=True)
    def dense(a, kernel, bias, out):
        # one Dense layer's pre-activation on every row: out = a @ kernel + bias
        for i in numba.prange(a.shape[0]):
            s = out[i]
            s[:] = bias
            for k in range(a.shape[1]):
                aik = a[i, k]
                for o in range(kernel.shape[1]):
                    s[o] += aik * kernel[k, o]
        return out

    @numba.njit(parallel=True, cache=True, fastmath=True)
    def dense_backward(grad, kernel, slope, out):
        # out = (grad * slope) @ kernel.T
        for i in numba.prange(grad.shape[0]):
            g = grad[i] * slope[i]
            for k in range(kernel.shape[0]):
                s = g.dtype.type(0)
                for o in range(kernel.shape[1]):
                    s += g[o] * kernel[k, o]
                out[i, k] = s
        return out

    @numba.njit(cache=True)
    def react(neighbour, gpair, forces):
        for p in range(len(neighbour)):
            j = neighbour[p]
            forces[j, 0] -= gpair[p, 0]
            forces[j, 1] -= gpair[p, 1]
        return forces

    @numba.njit(parallel=True, cache=True)
    def cell_pairs(x, box, reach, cells, members, first, counts, neighbour, start, fill):
        # the neighbours within Chebyshev distance `reach` of every particle through a cell
        # list (cells a side, at least 3, each at least `reach` wide; cell c holds particles
        # members[first[c]:first[c + 1]]): counted when `fill` is False, written into
        # neighbour[start[i]:start[i + 1]] when it is True
        side = box / cells
        inv_box = 1.0 / box
        for i in numba.prange(x.shape[0]):
            cx = min(int(x[i, 0] / side), cells - 1)
            cy = min(int(x[i, 1] / side), cells - 1)
            found = 0
            for oy in range(-1, 2):
                for ox in range(-1, 2):
                    c = ((cy + oy) % cells) * cells + (cx + ox) % cells
                    for m in range(first[c], first[c + 1]):
                        j = members[m]
                        if j != i:
                            ux = x[j, 0] - x[i, 0]
                            ux -= box * math.floor(ux * inv_box + 0.5)
                            uy = x[j, 1] - x[i, 1]
                            uy -= box * math.floor(uy * inv_box + 0.5)
                            if abs(ux) < reach and abs(uy) < reach:
                                if fill:
                                    neighbour[start[i] + found] = j
                                found += 1
            counts[i] = found
        return counts

    return forward, backward, react, dense, dense_backward, cell_pairs


_COMPILED: list = []


def _compiled():
    if not _COMPILED:
        _COMPILED.extend(_kernels())
    return _COMPILED


def neighbours(positions, box: float, reach: float):
    """`(start (N + 1,), neighbour (P,))`: the particles `j != i` within Chebyshev distance
    `reach` of each particle `i` (minimum image), `neighbour[start[i]:start[i + 1]]`, through a
    compiled cell list (`smooth.pairs`' periodic tree where the box holds fewer than 3 cells
    a side)."""
    x = np.mod(np.asarray(positions, dtype=np.float64), box)
    x[x >= box] = 0.0
    cells = int(box // reach)
    count = len(x)
    if cells < 3:
        i, j, _ = smooth._pairs(x, box, np.arange(count), reach)
        return np.concatenate([[0], np.cumsum(np.bincount(i, minlength=count))]), j
    cell_pairs = _compiled()[5]
    side = box / cells
    index = np.minimum((x // side).astype(np.int64), cells - 1)
    flat = index[:, 1] * cells + index[:, 0]
    members = np.argsort(flat, kind="stable")
    first = np.concatenate([[0], np.cumsum(np.bincount(flat, minlength=cells * cells))])
    counts = np.empty(count, dtype=np.int64)
    empty = np.empty(0, dtype=np.int64)
    cell_pairs(x, float(box), float(reach), cells, members, first, counts, empty, empty, False)
    start = np.concatenate([[0], np.cumsum(counts)])
    neighbour = np.empty(start[-1], dtype=np.int64)
    cell_pairs(x, float(box), float(reach), cells, members, first, counts, neighbour, start, True)
    return start, neighbour


def _softplus(x):
    """`(softplus(x), its derivative sigmoid(x))`, in `x`'s float type."""
    e = np.exp(-np.abs(x))
    value = np.maximum(x, 0) + np.log1p(e)
    slope = np.where(x >= 0, 1, e) / (1 + e)
    return value, slope.astype(x.dtype, copy=False)


class PairSum:
    """`evaluate(positions (N, 2), box, start (N + 1,), neighbour (P,))` -> `(forces (N, 2),
    E, virial (2, 2))` of a `smoothmap`-like energy model on a neighbour list in CSR form (the
    neighbours of particle `i` are `neighbour[start[i]:start[i + 1]]`, every candidate within
    the descriptor's reach, more allowed)."""

    def __init__(self, model, descriptor):
        self.dtype = np.dtype(model.inputs[0].dtype)  # float32, or float64 (for tests)
        parts = _layers(model, self.dtype)
        if parts is None:
            raise MdkerasError(
                "the model is not a linear map of the grid followed by dense layers: expected "
                'a smoothmap energy model (evaluator="tensorflow" takes any).'
            )
        kernel, self.stack, self.scale = parts
        n = descriptor.grid
        if kernel.shape[0] != n * n:
            raise MdkerasError(
                f"the model's first layer takes {kernel.shape[0]} cells, not {n * n}."
            )
        self.descriptor = descriptor
        self.n = n
        self.size = block(descriptor.sigma)
        h = descriptor.window / n
        self.h = h
        self.edge0 = -0.5 * descriptor.window
        cubic = hermite_cubics(*phase_table(descriptor.sigma, self.size))
        self.cubic = np.ascontiguousarray(cubic, dtype=self.dtype)
        self.kernel_t = np.ascontiguousarray(kernel.T)  # (C, n*n)
        self._work: dict = {}

    def _buffers(self, count: int, pairs: int) -> dict:
        """Work arrays, kept between calls (fresh ones would cost page faults every step)."""
        have = self._work
        if have.get("count") != count or have.get("capacity", -1) < pairs:
            capacity = int(pairs * 1.25) + 64
            size, dtype = self.size, self.dtype
            have.clear()
            have.update(
                count=count,
                capacity=capacity,
                weights=np.empty((4, capacity, size), dtype=dtype),
                corner=np.empty((capacity, 2), dtype=np.int64),
                disp=np.empty((capacity, 2)),
                gpair=np.empty((capacity, 2)),
                grids=np.empty((count, self.n * self.n), dtype=dtype),
                features=np.empty((count, self.kernel_t.shape[0]), dtype=dtype),
                forces=np.empty((count, 2)),
                virials=np.empty((count, 4)),
            )
        return {
            key: (value[..., :pairs, :] if key in ("weights", "corner", "disp", "gpair") else value)
            for key, value in have.items()
            if key not in ("count", "capacity")
        }

    def evaluate(self, positions, box, start, neighbour):
        forward, backward, react, dense, dense_backward, _ = _compiled()
        x = np.ascontiguousarray(positions, dtype=np.float64)
        start = np.ascontiguousarray(start, dtype=np.int64)
        neighbour = np.ascontiguousarray(neighbour, dtype=np.int64)
        count, n, pairs = len(x), self.n, len(neighbour)
        work = self._buffers(count, pairs)
        wx, wy, dx, dy = work["weights"]
        corner, disp, grids, a = work["corner"], work["disp"], work["grids"], work["features"]
        forward(
            x, float(box), start, neighbour, self.edge0, self.h, n, self.cubic, self.kernel_t,
            wx, wy, dx, dy, corner, disp, grids, a,
        )  # fmt: skip
        # the dense layers and their backward pass: products compiled (no BLAS threads beside
        # them), the softplus in NumPy (its exp and log1p are vectorised)
        slopes = []
        for kernel, bias, activation in self.stack:
            pre = dense(a, kernel, bias, np.empty((count, kernel.shape[1]), dtype=self.dtype))
            if activation == "softplus":
                a, slope = _softplus(pre)
            else:
                a, slope = pre, np.ones_like(pre)
            slopes.append(slope)
        energy = self.scale * float(a.sum(dtype=np.float64))
        grad = np.full((count, 1), self.scale, dtype=self.dtype)
        for (kernel, _, _), slope in zip(reversed(self.stack), reversed(slopes), strict=True):
            out = np.empty((count, kernel.shape[0]), dtype=self.dtype)
            grad = dense_backward(grad, kernel, slope, out)
        forces, virials, gpair = work["forces"], work["virials"], work["gpair"]
        backward(
            start, n, self.kernel_t, grad, wx, wy, dx, dy,
            corner, disp, grids, gpair, forces, virials,
        )  # fmt: skip
        react(neighbour, gpair, forces)
        return forces.copy(), energy, virials.sum(axis=0).reshape(2, 2)
