"""The project's own exception classes.

Every error raised for bad user input names *where* the bad value came from
(file, line or field) and *what is allowed*, so a batch job can record it in a
rejects table and a person can fix the input without reading the code.
"""
from __future__ import annotations


class XtalhpcError(Exception):
    """Base class of every error this package raises on purpose."""


class InputError(XtalhpcError):
    """Bad user input: a file, a field or a value outside what is allowed.

    Parameters
    ----------
    message : str
        What is wrong and what is allowed.
    source : str, optional
        The file (or other origin, such as ``"instrument 'bt1'"``) the value came from.
    field : str, optional
        The field, CIF tag, TOML key or column that holds the bad value.
    """

    def __init__(self, message: str, source: str | None = None, field: str | None = None):
        self.message = message
        self.source = source
        self.field = field
        parts = []
        if source:
            parts.append(str(source))
        if field:
            parts.append(f"field {field!r}")
        prefix = ": ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class StructureError(InputError):
    """A structure file that cannot be read or describes no valid crystal."""


class InstrumentError(InputError):
    """An instrument definition outside what the simulator can handle."""


class ScatteringError(InputError):
    """A species with no scattering length or form factor."""


class DeviceError(XtalhpcError):
    """A compute backend that was asked for but is not available."""
