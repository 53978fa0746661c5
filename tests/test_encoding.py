"""Force classes (SPEC §5): the paper's equal-width bins and our equal-population bins."""

from __future__ import annotations

import numpy as np
import pytest

import mdkeras
from mdkeras.encoding import PaperEncoder, QuantileEncoder, encode, make_encoder
from mdkeras.errors import MdkerasError

F_MAX = 2.5
K = 10


def edges(f_max=F_MAX, classes=K):
    """The paper's inner bin edges `k * 2 f_max / K - f_max`, k = 1 .. K-1."""
    return np.array([k * 2 * f_max / classes - f_max for k in range(1, classes)])


# --- the paper encoding ---------------------------------------------------------------------


@pytest.mark.parametrize(("f_max", "classes"), [(F_MAX, K), (0.37, 10), (1000.0, 7), (1.0, 2)])
def test_paper_bins_around_each_edge(f_max, classes):
    e = edges(f_max, classes)
    eps = 1e-9 * f_max
    below = np.stack([e - eps, e - eps], axis=1)
    above = np.stack([e + eps, -(e + eps)], axis=1)
    k = np.arange(1, classes)
    np.testing.assert_array_equal(
        encode(below, f_max=f_max, classes=classes), np.stack([k - 1, k - 1], axis=1)
    )
    # just above edge k is class k; the y column mirrors: -(edge k) - eps = edge (K-k) - eps
    # is class K-1-k
    np.testing.assert_array_equal(
        encode(above, f_max=f_max, classes=classes), np.stack([k, classes - 1 - k], axis=1)
    )


def test_paper_bin_interiors():
    centres = -F_MAX + (np.arange(K) + 0.5) * 2 * F_MAX / K
    forces = np.stack([centres, centres[::-1]], axis=1)
    np.testing.assert_array_equal(
        encode(forces, f_max=F_MAX, classes=K), np.stack([np.arange(K), np.arange(K)[::-1]], axis=1)
    )


def test_paper_range_ends_and_clipping():
    f = np.array(
        [
            [-F_MAX, F_MAX],  # exactly the ends: class 0 and K-1
            [-F_MAX * (1 + 1e-12), F_MAX * (1 - 1e-12)],
            [-1e30, 1e30],  # far outside: clipped
            [-1.7e308, 1.7e308],  # the float64 limit: the rule overflows, still clipped
            [0.0, -0.0],  # zero sits on the middle edge: class K/2
        ]
    )
    got = encode(f, f_max=F_MAX, classes=K)
    assert got.dtype == np.int64 and got.shape == (5, 2)
    np.testing.assert_array_equal(got, [[0, 9], [0, 9], [0, 9], [0, 9], [5, 5]])
    huge = encode(np.array([[1e308, -1e308]]), f_max=1e308, classes=K)  # inf / inf inside
    np.testing.assert_array_equal(huge, [[9, 0]])


def nonfinite_forces():
    f = np.random.default_rng(3).normal(size=(6, 2))
    f[2, 1] = np.nan
    f[4, 0] = np.inf
    f[5, 1] = -np.inf
    return f


ENCODERS = {
    "encode": lambda f: encode(f, f_max=F_MAX, classes=K),
    "paper": lambda f: PaperEncoder(F_MAX, K).encode(f),
    "quantile": lambda f: QuantileEncoder(2).fit(np.array([[0.0, 0.0], [1.0, 1.0]])).encode(f),
}


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_nonfinite_forces_are_an_error_naming_count_and_place(name):
    """NaN used to become class 0 and inf the edge class, silently."""
    with pytest.raises(MdkerasError) as info:
        ENCODERS[name](nonfinite_forces())
    message = str(info.value)
    assert "forces contain 3 non-finite value(s) (NaN or inf)" in message
    assert "first at index (2, 1)" in message and "\n" not in message


@pytest.mark.parametrize("encoder", [PaperEncoder(F_MAX, K), QuantileEncoder(2)])
def test_fit_rejects_nonfinite_training_forces(encoder):
    with pytest.raises(MdkerasError, match="training forces contain 3 non-finite"):
        encoder.fit(nonfinite_forces())


def test_paper_classes_are_monotone_and_in_range():
    f = np.sort(np.random.default_rng(0).standard_cauchy(5000)) * F_MAX
    k = encode(np.stack([f, f], axis=1), f_max=F_MAX, classes=K)
    assert k.min() == 0 and k.max() == K - 1
    assert np.all(np.diff(k[:, 0]) >= 0)
    # and matches the rule written out
    expected = np.clip(np.floor((f + F_MAX) / (2 * F_MAX) * K), 0, K - 1)
    np.testing.assert_array_equal(k[:, 0], expected)


def test_encode_keeps_leading_shape():
    f = np.random.default_rng(1).normal(size=(3, 4, 2))
    k = encode(f, f_max=1.0, classes=K)
    assert k.shape == (3, 4, 2)
    np.testing.assert_array_equal(k.reshape(-1, 2), encode(f.reshape(-1, 2), f_max=1.0, classes=K))


def test_public_encode_equals_paper_encoder():
    f = np.random.default_rng(2).normal(scale=3.0, size=(1000, 2))
    enc = PaperEncoder(F_MAX, K)
    np.testing.assert_array_equal(mdkeras.encode(f, f_max=F_MAX, classes=K), enc.encode(f))
    np.testing.assert_array_equal(enc.fit(f).encode(f), enc.encode(f))  # fit changes no edges
    np.testing.assert_array_equal(
        make_encoder("paper", classes=K, f_max=F_MAX).encode(f), enc.encode(f)
    )


def test_paper_decoding_centres_and_edge_medians():
    enc = PaperEncoder(F_MAX, K)
    width = 2 * F_MAX / K
    centres = -F_MAX + width * (np.arange(K) + 0.5)
    k = np.stack([np.arange(K), np.arange(K)], axis=1)
    np.testing.assert_allclose(enc.decode(k), np.stack([centres, centres], axis=1), rtol=1e-14)
    train = np.array(
        [
            [-100.0, 7.0],
            [-50.0, 3.0],
            [-3.0, 2.6],  # x class 0: -100, -50, -3 -> median -50; y class 9: 7, 3, 2.6 -> 3
            [0.1, -2.6],  # y class 0: -2.6 alone
            [4.0, 0.2],  # x class 9: 4 and 2.51 -> median 3.255
            [2.51, 0.3],
        ]
    )
    enc.fit(train)
    decoded = enc.decode(k)
    assert decoded[0, 0] == pytest.approx(-50.0) and decoded[K - 1, 0] == pytest.approx(3.255)
    assert decoded[0, 1] == pytest.approx(-2.6) and decoded[K - 1, 1] == pytest.approx(3.0)
    np.testing.assert_allclose(
        decoded[1:-1], np.stack([centres, centres], axis=1)[1:-1], rtol=1e-14
    )
    # decoding then encoding the inner classes is the identity
    np.testing.assert_array_equal(enc.encode(decoded)[1:-1], k[1:-1])


def test_numpy_scalars_are_accepted():
    f = np.random.default_rng(4).normal(size=(50, 2))
    np.testing.assert_array_equal(
        encode(f, f_max=np.float32(1.5), classes=np.int64(7)), encode(f, f_max=1.5, classes=7)
    )


@pytest.mark.parametrize(
    ("classes", "needle"),
    [
        (np.array([[0, 4]]), r"class 4 at index \(0, 1\) is out of range: expected 0 <= class < 4"),
        (np.array([[-1, 0]]), "class -1 at index"),
        (np.array([[0.0, 1.0]]), "float64 shape"),
        (np.array([0, 1, 2]), r"shape \(3,\)"),
    ],
)
def test_decode_rejects_bad_classes(classes, needle):
    with pytest.raises(MdkerasError, match=needle):
        PaperEncoder(1.0, 4).decode(classes)


def test_quantile_decode_before_fit():
    with pytest.raises(MdkerasError, match="before fit"):
        QuantileEncoder(K).decode(np.zeros((3, 2), dtype=np.int64))


def test_paper_decoding_mixed_classes_shape():
    enc = PaperEncoder(1.0, 4)  # centres -0.75, -0.25, 0.25, 0.75
    np.testing.assert_allclose(
        enc.decode(np.array([[0, 3], [2, 1]])), [[-0.75, 0.75], [0.25, -0.25]]
    )


@pytest.mark.parametrize("f_max", [0.0, -1.0, float("nan"), float("inf"), "a", None])
def test_bad_f_max(f_max):
    with pytest.raises(MdkerasError, match="f_max="):
        encode(np.zeros((3, 2)), f_max=f_max, classes=K)
    with pytest.raises(MdkerasError, match="f_max="):
        PaperEncoder(f_max, K).encode(np.zeros((3, 2)))


@pytest.mark.parametrize("classes", [1, 0, -3, 2.5, True, None, "10", float("nan")])
def test_bad_classes(classes):
    with pytest.raises(MdkerasError, match=f"classes={classes!r}"):
        encode(np.zeros((3, 2)), f_max=1.0, classes=classes)
    with pytest.raises(MdkerasError, match=f"classes={classes!r}"):
        PaperEncoder(1.0, classes)
    with pytest.raises(MdkerasError, match=f"classes={classes!r}"):
        QuantileEncoder(classes)


def test_make_encoder_names():
    assert isinstance(make_encoder("paper", classes=K, f_max=1.0), PaperEncoder)
    assert isinstance(make_encoder("quantile", classes=K), QuantileEncoder)
    with pytest.raises(MdkerasError, match="f_max"):
        make_encoder("paper", classes=K)
    with pytest.raises(MdkerasError) as info:
        make_encoder("equal-width", classes=K)
    assert str(info.value) == (
        "encoding='equal-width' is not allowed: expected one of 'paper', 'quantile'."
    )
    with pytest.raises(MdkerasError, match="encoding=None"):
        make_encoder(None, classes=K)


# --- the quantile encoding ------------------------------------------------------------------


@pytest.fixture(scope="module")
def train_forces():
    rng = np.random.default_rng(7)
    # heavy-tailed and skewed like real window forces, different per component
    return np.stack([rng.standard_cauchy(4000), rng.lognormal(0.0, 2.0, 4000) - 3.0], axis=1)


@pytest.mark.parametrize("classes", [2, 5, 10, 13])
def test_quantile_equal_population(train_forces, classes):
    enc = QuantileEncoder(classes).fit(train_forces)
    k = enc.encode(train_forces)
    assert k.dtype == np.int64 and k.shape == train_forces.shape
    for c in range(2):
        counts = np.bincount(k[:, c], minlength=classes)
        assert len(counts) == classes
        assert np.all(np.abs(counts - len(train_forces) / classes) <= 1), counts


def test_quantile_edges_come_from_train_only(train_forces):
    enc = QuantileEncoder(K).fit(train_forces)
    fitted = enc.edges.copy()
    shifted = train_forces + 1e6  # a very different "test set"
    k = enc.encode(shifted)
    np.testing.assert_array_equal(enc.edges, fitted)  # encoding does not refit
    assert np.all(k == K - 1)  # judged by the training edges
    np.testing.assert_array_equal(enc.encode(train_forces - 1e6), 0)
    other = QuantileEncoder(K).fit(train_forces[:2000] * 2.0 + 1.0)
    assert not np.allclose(other.edges, fitted)


def test_quantile_edges_monotone_and_classes_monotone(train_forces):
    enc = QuantileEncoder(K).fit(train_forces)
    assert enc.edges.shape == (K - 1, 2)
    assert np.all(np.diff(enc.edges, axis=0) > 0)
    x = np.sort(train_forces[:, 0])
    k = enc.encode(np.stack([x, x], axis=1))[:, 0]
    assert np.all(np.diff(k) >= 0)


def test_quantile_decode_is_bin_median(train_forces):
    enc = QuantileEncoder(K).fit(train_forces)
    k = enc.encode(train_forces)
    grid = np.stack([np.arange(K), np.arange(K)], axis=1)
    decoded = enc.decode(grid)
    for c in range(2):
        for b in range(K):
            assert decoded[b, c] == pytest.approx(np.median(train_forces[k[:, c] == b, c]))
    # each decoded value lies in its own bin
    np.testing.assert_array_equal(enc.encode(decoded), grid)


def test_quantile_small_hand_example():
    train = np.array([[float(i), float(-i)] for i in range(1, 9)])  # 8 samples, 4 classes
    enc = QuantileEncoder(4).fit(train)
    k = enc.encode(train)
    np.testing.assert_array_equal(k[:, 0], [0, 0, 1, 1, 2, 2, 3, 3])
    np.testing.assert_array_equal(k[:, 1], [3, 3, 2, 2, 1, 1, 0, 0])
    np.testing.assert_allclose(enc.decode(np.array([[0, 0], [3, 3]])), [[1.5, -7.5], [7.5, -1.5]])


def test_quantile_value_on_an_edge_goes_up():
    """Bins are half-open `[e_k, e_k+1)`, as in the paper's rule: a force exactly on a fitted edge
    belongs to the upper class."""
    train = np.array([[float(i), float(i)] for i in range(1, 6)])  # median edge exactly 3
    enc = QuantileEncoder(2).fit(train)
    np.testing.assert_array_equal(enc.edges, [[3.0, 3.0]])
    np.testing.assert_array_equal(enc.encode(np.array([[3.0, np.nextafter(3.0, 0)]])), [[1, 0]])


def test_quantile_used_before_fit():
    enc = QuantileEncoder(K)
    with pytest.raises(MdkerasError, match="before fit"):
        enc.encode(np.zeros((3, 2)))


def test_quantile_needs_enough_training_samples():
    with pytest.raises(MdkerasError, match="5 training forces"):
        QuantileEncoder(K).fit(np.zeros((5, 2)))


@pytest.mark.parametrize("f_max", [0.0, -1.0, float("nan"), float("inf")])
def test_paper_encoder_rejects_bad_f_max_at_construction(f_max):
    with pytest.raises(MdkerasError, match="f_max="):
        PaperEncoder(f_max, K)
