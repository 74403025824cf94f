"""xtalhpc: batch simulation of powder-diffraction patterns and space-group classifiers."""
from __future__ import annotations

__version__ = "0.1.0"

from .crystal import Crystal  # noqa: E402
from .errors import InputError, XtalhpcError  # noqa: E402
from .instruments import Instrument, get_instrument  # noqa: E402
from . import simulate  # noqa: E402  (a callable module: xtalhpc.simulate(crystal, instrument))
from .simulate import simulate_batch  # noqa: E402

__all__ = ["Crystal", "Instrument", "InputError", "XtalhpcError", "get_instrument", "simulate", "simulate_batch",
           "__version__"]
