"""Structure readers: CIF, NCrystal ``.ncmat`` and VASP POSCAR -> :class:`~xtalhpc.crystal.Crystal`.

Entry points
------------
:func:`read_structures`
    Every crystal in a file (a CIF may hold several data blocks).
:func:`read_blocks`
    The same, but a bad block comes back as its :class:`StructureError` in
    place, so a batch job keeps the good blocks of a file and lists the rest.
:func:`load_structure`
    Exactly one crystal; a file with several is an error.
:func:`iter_structure_files`
    Expand files, directories (recursively) and glob patterns into the files
    the readers understand (:data:`STRUCTURE_SUFFIXES` and POSCAR/CONTCAR names).

The format is chosen by file name first (``.cif``/``.mcif``, ``.ncmat``,
``.vasp``/``.poscar`` or a name containing POSCAR or CONTCAR), then by content
(``NCMAT`` header, a ``data_`` line, or the POSCAR layout). Conventions (units,
defaults, merging tolerance, ADP reduction) are described in docs/structures.md.

Symmetry finding: a structure that comes without operations (a P1 CIF, a POSCAR, a CIF
whose atoms do not fit its operators) goes through :func:`xtalhpc.crystal.detect_symmetry`
unless ``find_symmetry=False``: its found space group is recorded, and the operations that
hold for the atoms as written are attached so that it simulates as fast as its symmetric
form, with the same pattern. Positions are never moved.
"""
from __future__ import annotations

import glob
import os
import re
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..crystal import Crystal
from ..errors import InputError, StructureError

#: File suffixes (lower case) recognised as structure files when a directory is scanned.
STRUCTURE_SUFFIXES: tuple[str, ...] = (".cif", ".mcif", ".ncmat", ".vasp", ".poscar")

_POSCAR_NAME = re.compile(r"(POSCAR|CONTCAR)", re.IGNORECASE)
_GLOB_CHARS = re.compile(r"[*?\[]")
_FORMATS = "CIF (.cif, .mcif), NCrystal (.ncmat), VASP POSCAR (.vasp, .poscar, POSCAR*/CONTCAR* names)"

__all__ = ["STRUCTURE_SUFFIXES", "detect_format", "is_structure_name", "iter_structure_files", "load_structure",
           "read_blocks", "read_structures"]


def is_structure_name(path: str | os.PathLike) -> bool:
    """True if the file name alone marks a structure file (suffix or POSCAR/CONTCAR name)."""
    p = Path(path)
    return p.suffix.lower() in STRUCTURE_SUFFIXES or bool(_POSCAR_NAME.search(p.name))


def detect_format(path: str | os.PathLike) -> str:
    """``"cif"``, ``"ncmat"`` or ``"poscar"`` for a file, by name, else by content.

    Raises
    ------
    StructureError
        The path is not a regular file, is empty, or matches no format.
    """
    p = Path(path)
    src = str(p)
    try:
        st = os.stat(p)  # one system call for the four checks
    except (FileNotFoundError, NotADirectoryError):
        raise StructureError("no such file", src, "path") from None
    except OSError:
        st = None
    if st is None or not stat.S_ISREG(st.st_mode):  # the checks as they were, in their order
        if p.is_dir():
            raise StructureError("is a directory, not a structure file", src, "path")
        if not p.exists():
            raise StructureError("no such file", src, "path")
        raise StructureError("not a regular file", src, "path")
    if st.st_size == 0:
        raise StructureError("file is empty", src, "path")
    suffix = p.suffix.lower()
    if suffix in (".cif", ".mcif"):
        return "cif"
    if suffix == ".ncmat":
        return "ncmat"
    if suffix in (".vasp", ".poscar") or _POSCAR_NAME.search(p.name):
        return "poscar"
    with open(p, "rb") as fh:
        head = fh.read(65536).decode("utf-8", errors="replace")
    if head.lstrip().startswith("NCMAT"):
        return "ncmat"
    if re.search(r"^\s*data_\S*", head, re.MULTILINE):
        return "cif"
    from .poscar import looks_like_poscar

    if looks_like_poscar(head):
        return "poscar"
    raise StructureError(f"unrecognised structure format; allowed: {_FORMATS}", src, "format")


def read_blocks(path: str | os.PathLike, find_symmetry: bool = True) -> list[Crystal | StructureError]:
    """Every structure in a file, a bad CIF block as its error in place.

    ``find_symmetry``: run :func:`xtalhpc.crystal.detect_symmetry` on every structure that
    comes without symmetry operations (see the module docstring).

    Raises
    ------
    StructureError
        The whole file is unreadable (not a file, empty, unknown format, CIF
        syntax error, no structural block).
    """
    items = _read_format(path)
    if not find_symmetry:
        return items
    from ..crystal import detect_symmetry

    out: list[Crystal | StructureError] = []
    for c in items:
        if isinstance(c, Crystal) and c.symmetry is None:
            try:
                c = detect_symmetry(c)
            except InputError as exc:
                c = StructureError(f"symmetry finding: {exc.message}", exc.source or c.source, exc.field)
        out.append(c)
    return out


def _read_format(path) -> list[Crystal | StructureError]:
    fmt = detect_format(path)
    try:
        if fmt == "cif":
            from .cif import read_cif

            return read_cif(path)
        if fmt == "ncmat":
            from .ncmat import read_ncmat

            return [read_ncmat(path)]
        from .poscar import read_poscar

        return [read_poscar(path)]
    except StructureError:
        raise
    except InputError as exc:  # e.g. ScatteringError from the Crystal: report as a structure problem
        raise StructureError(exc.message, exc.source or str(path), exc.field) from None
    except UnicodeDecodeError as exc:
        raise StructureError(f"not a text file ({exc.reason} at byte {exc.start})", str(path), "encoding") from None


def read_structures(path: str | os.PathLike, find_symmetry: bool = True) -> list[Crystal]:
    """Every crystal in a structure file.

    Parameters
    ----------
    path : str or PathLike
        A CIF (all data blocks with structure data), ``.ncmat`` or POSCAR file.
    find_symmetry : bool
        Find the symmetry of structures given without operations (:func:`read_blocks`).

    Returns
    -------
    list of Crystal
        In file order. ``Crystal.source`` is the path, with ``#block`` appended
        when a CIF has several structural blocks; ``Crystal.name`` is the data
        block name (CIF) or the file stem.

    Raises
    ------
    StructureError
        The file or any of its structural blocks cannot be read; use
        :func:`read_blocks` to keep the good blocks of such a file.
    """
    out = []
    for item in read_blocks(path, find_symmetry):
        if isinstance(item, StructureError):
            raise item
        out.append(item)
    return out


def load_structure(path: str | os.PathLike, find_symmetry: bool = True) -> Crystal:
    """The one crystal in a structure file (``find_symmetry`` as in :func:`read_blocks`).

    Raises
    ------
    StructureError
        The file cannot be read, or holds several structures (use
        :func:`read_structures` for those).
    """
    items = read_blocks(path, find_symmetry)
    if len(items) > 1:
        names = ", ".join(str(getattr(i, "name", None) or getattr(i, "source", "?")).rsplit("#", 1)[-1]
                          for i in items)
        raise StructureError(f"the file holds {len(items)} structures (blocks {names}); "
                             "use read_structures() to read them all", str(path), "data_")
    item = items[0]
    if isinstance(item, StructureError):
        raise item
    return item


def iter_structure_files(sources: str | os.PathLike | Iterable[str | os.PathLike]) -> Iterator[Path]:
    """Expand files, directories and glob patterns into structure files.

    Parameters
    ----------
    sources : path, glob pattern, or an iterable of them
        A file is yielded as given (whatever its name). A directory is scanned
        recursively for names :func:`is_structure_name` accepts; a *directory*
        with such a name (``x.cif/``) is yielded too, so that reading it reports
        an error instead of it vanishing silently. A pattern (``*``, ``?``,
        ``[``; ``**`` recursive) is expanded and each match treated the same way.

    Yields
    ------
    Path
        Each path once, sorted within each source.

    Raises
    ------
    InputError
        A source that does not exist or a pattern that matches nothing.
    """
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    seen: set[Path] = set()
    for source in sources:
        s = os.fspath(source)
        if _GLOB_CHARS.search(s) and not os.path.exists(s):
            matches = sorted(glob.glob(s, recursive=True))
            if not matches:
                raise InputError("glob pattern matched no files", s, "sources")
            candidates = []
            for m in matches:
                mp = Path(m)
                if mp.is_dir() and not _suffix_named(mp):
                    candidates.extend(_scan_dir(mp))
                else:
                    candidates.append(mp)
        else:
            p = Path(s)
            if p.is_dir() and not _suffix_named(p):
                candidates = _scan_dir(p)
            elif p.exists():
                candidates = [p]
            else:
                raise InputError("no such file or directory", s, "sources")
        for c in candidates:
            if c not in seen:
                seen.add(c)
                yield c


def _suffix_named(p: Path) -> bool:
    # Only a structure *suffix* marks a directory as a misnamed file: folders
    # called POSCARS/ or vasp_runs/ are ordinary folders to scan.
    return p.suffix.lower() in STRUCTURE_SUFFIXES


def _scan_dir(root: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        base = Path(dirpath)
        for name in dirnames:
            if _suffix_named(Path(name)):
                out.append(base / name)
        for name in filenames:
            if is_structure_name(name):
                out.append(base / name)
    return sorted(out)
