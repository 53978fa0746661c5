"""mdkeras: can a plain image CNN recover interatomic forces from a grid of neighbour counts?

The stable public API (SPEC §9): `featurize`, `encode`, `f_max`, `pair_force`.
"""

from mdkeras.descriptors import featurize
from mdkeras.encoding import encode
from mdkeras.errors import MdkerasError
from mdkeras.potentials import f_max, pair_force

__version__ = "0.1.0"
__all__ = ["MdkerasError", "encode", "f_max", "featurize", "pair_force", "__version__"]
