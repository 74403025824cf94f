"""What every batch job shares: exit statuses, typed TOML configs, the output directory, progress.

The three jobs (``generate``, ``train``, ``evaluate``) have one shape:

* a typed, self-validating dataclass config (:func:`config_from_dict`, :func:`load_config`:
  an unknown key is an error listing the valid ones; each dataclass checks its own values
  in ``__post_init__`` and raises :class:`~xtalhpc.errors.InputError` naming the key);
* a launcher apart from the work (``mpiexec``/``srun`` for generate, submitit for train and
  evaluate) that only builds processes and calls the job's entry function;
* an output directory prepared by :class:`OutputDir`: the resolved config written beside
  the outputs, a rerun with another config refused with the keys that differ, an exclusive
  lock while the job writes;
* one log convention: ``[job] message`` lines, one ``write`` per line (ranks share stderr),
  progress lines from :class:`Progress` with counts, rate and ETA.

Exit statuses (the convention ``sbatch --dependency=afterok`` chains rely on; the full table,
with each command's rule, is docs/exit-status.md; ``--help`` shows :data:`EXIT_STATUS_HELP`):

======  ==================  =============================================================
status  name                meaning
======  ==================  =============================================================
0       EXIT_OK             the job finished; its output is complete and verified (rejected
                            inputs, if any, are listed and within the allowed fraction)
1       EXIT_FAILED         the job itself failed: environment, code or resource error
                            (missing dependency, compile error, out of memory, lost rank)
2       EXIT_USAGE          refused before any work: bad flag, config key or value, missing
                            input path (argparse's own status for a bad command line)
3       EXIT_REJECTS        the job finished, but more inputs were rejected than allowed
                            (``--max-reject-fraction``; for simulate and predict: any input)
130     EXIT_INTERRUPTED    stopped by Ctrl-C (or SIGTERM/SIGHUP to a launcher waiting for the
                            processes it started: local tasks cancelled, MPI ranks stopped)
======  ==================  =============================================================
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import sys
import time
import types
import typing
from pathlib import Path

from .errors import InputError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_REJECTS = 3
EXIT_INTERRUPTED = 130

#: ``generate --max-reject-fraction`` default: a real ICSD or Materials Project export with a few
#: percent of bad entries passes (and one with a tenth, such as 5 bad CIFs among 45); a run where
#: every item, or most, fails does not.
DEFAULT_MAX_REJECT_FRACTION = 0.20

#: The exit-status table every command's ``--help`` ends with (one text, added by ``xtalhpc.cli``).
EXIT_STATUS_HELP = f"""\
exit status (the same for every xtalhpc command; docs/exit-status.md):
  {EXIT_OK:<4} ok: the output is complete; rejected inputs, if any, are listed and
       within the allowed share
  {EXIT_FAILED:<4} the job failed: environment, code or resource error (missing
       dependency, compile error, out of memory, CUDA driver, lost MPI rank),
       said in one message with the likely cause and the fix; a dataset left
       behind reads as incomplete in `xtalhpc verify` and a rerun resumes.
       verify, info: the dataset is incomplete or damaged
  {EXIT_USAGE:<4} refused before any work: bad flag, config value or input path
  {EXIT_REJECTS:<4} finished, but too many inputs were rejected: generate, more than
       --max-reject-fraction (default {DEFAULT_MAX_REJECT_FRACTION:.2f}); simulate, synthesize: any
  {EXIT_INTERRUPTED:<4} interrupted (Ctrl-C)
"""


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP received inside :func:`interrupt_on_termination` (``args[0]``: the signal's name)."""


@contextlib.contextmanager
def interrupt_on_termination():
    """Within the block (main thread only), SIGTERM and SIGHUP raise :class:`Terminated`, a
    KeyboardInterrupt: a launcher waiting for its job (submitit tasks, mpiexec ranks) treats
    ``kill``, a closed terminal or a batch system ending it like Ctrl-C and stops the job it
    owns (status :data:`EXIT_INTERRUPTED`) instead of dying and leaving it running."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated(signal.Signals(signum).name)

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def interruption(exc: BaseException) -> str:
    """``"SIGTERM received"`` for a :class:`Terminated`, ``"interrupted"`` for Ctrl-C: how a log says it."""
    return f"{exc.args[0]} received" if isinstance(exc, Terminated) and exc.args else "interrupted"


def reject_status(n_rejected: int, n_total: int, max_fraction: float) -> int:
    """:data:`EXIT_OK` if ``n_rejected / n_total <= max_fraction``, else :data:`EXIT_REJECTS`
    (``max_fraction`` 0: any reject fails, as simulate and predict do)."""
    if n_rejected == 0:
        return EXIT_OK
    return EXIT_OK if n_total > 0 and n_rejected / n_total <= max_fraction else EXIT_REJECTS


# ---------------------------------------------------------------------------- logging and progress
def fmt_seconds(s: float) -> str:
    """``"4m05s"``, ``"1h02m"``, or ``"?"`` for an unknown (non-finite) time."""
    if not math.isfinite(s):
        return "?"
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Log:
    """``[tag] message`` lines on a stream, one ``write`` per line (MPI ranks and DDP workers
    share stderr); silent where ``enabled`` is false (ranks other than 0, ``--quiet``)."""

    def __init__(self, tag: str, stream=None, enabled: bool = True):
        self.tag = tag
        self.stream = stream
        self.enabled = enabled

    def __call__(self, msg: str) -> None:
        if not self.enabled:
            return
        stream = self.stream or sys.stderr
        stream.write(f"[{self.tag}] {msg}\n")
        stream.flush()


class Progress:
    """Counts work done against a total and formats rate and ETA.

    ``update(n)`` adds n units and returns the progress text
    (``"12/40 shards, 3,072 patterns, 2,541.3 patterns/s, ETA 1m05s"``-style pieces are
    assembled by the caller from :meth:`text`). The ETA assumes the remaining units cost
    what the finished ones did.
    """

    def __init__(self, total: int | None, unit: str, clock=time.perf_counter):
        self.total = total
        self.unit = unit
        self.done = 0
        self.clock = clock
        self.t0 = clock()

    def update(self, n: int = 1) -> str:
        self.done += n
        return self.text()

    @property
    def elapsed(self) -> float:
        return self.clock() - self.t0

    def rate(self) -> float:
        el = self.elapsed
        return self.done / el if el > 0 else 0.0

    def eta(self) -> float:
        if self.total is None or not self.done:
            return float("nan")
        return (self.total - self.done) * self.elapsed / self.done

    def text(self) -> str:
        of = f"/{self.total}" if self.total is not None else ""
        return f"{self.done}{of} {self.unit} done, ETA {fmt_seconds(self.eta())}"


# ---------------------------------------------------------------------------- configs
def _field_types(cls) -> dict[str, object]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def _unwrap_optional(tp):
    """``X | None`` -> (X, True); anything else -> (tp, False)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _coerce(value, tp, where: str, source: str | None):
    """Check ``value`` (from TOML or a flag) against the annotation ``tp``; returns the typed value."""
    tp, optional = _unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        raise InputError("a value is required", source, where)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise InputError(f"expected a table of {', '.join(_field_types(tp))}; got {value!r}", source, where)
        return config_from_dict(tp, value, source=source, prefix=where + ".")
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise InputError(f"{value!r} is not allowed; allowed: {', '.join(map(repr, allowed))}", source, where)
        return value
    if origin in (tuple, list):
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise InputError(f"expected a list; got {value!r}", source, where)
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            items = [_coerce(v, args[0], f"{where}[{i}]", source) for i, v in enumerate(value)]
        elif origin is tuple and args:
            if len(value) != len(args):
                raise InputError(f"expected {len(args)} values; got {len(value)}", source, where)
            items = [_coerce(v, a, f"{where}[{i}]", source) for i, (v, a) in enumerate(zip(value, args))]
        else:
            sub = args[0] if args else object
            items = [_coerce(v, sub, f"{where}[{i}]", source) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is bool:
        if not isinstance(value, bool):
            raise InputError(f"expected true or false; got {value!r}", source, where)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"expected an integer; got {value!r}", source, where)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"expected a number; got {value!r}", source, where)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise InputError(f"expected a string; got {value!r}", source, where)
        return value
    if tp is dict or typing.get_origin(tp) is dict:
        if not isinstance(value, dict):
            raise InputError(f"expected a table; got {value!r}", source, where)
        return dict(value)
    return value


def config_from_dict(cls, data: dict, *, source: str | None = None, prefix: str = ""):
    """Build the dataclass ``cls`` from a (TOML) dict, checking every key and type.

    Unknown keys are an error that lists the valid ones; nested dataclass fields take
    TOML tables; values are checked against the annotations here and against their
    allowed ranges by the dataclass's own ``__post_init__``.
    """
    fields = _field_types(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise InputError(f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(prefix + k for k in unknown)}; "
                         f"valid keys: {', '.join(prefix + k for k in fields)}", source,
                         prefix + unknown[0])
    kwargs = {k: _coerce(v, fields[k], prefix + k, source) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field missing
        raise InputError(f"{exc}; valid keys: {', '.join(prefix + k for k in fields)}", source) from None
    except InputError as exc:
        if source and not exc.source:
            raise InputError(exc.message, source, exc.field) from None
        raise


def load_config(cls, path: str | Path):
    """Read a TOML file into the dataclass ``cls`` (see :func:`config_from_dict`)."""
    import tomllib

    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except OSError as exc:
        raise InputError(f"cannot read the config: {exc.strerror}", str(p)) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"not valid TOML: {exc}", str(p)) from None
    return config_from_dict(cls, data, source=str(p))


def config_to_dict(cfg) -> dict:
    """A config dataclass as plain TOML/JSON-able values (tuples as lists)."""
    def plain(v):
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        return v
    return plain(cfg)


def replace_config(cfg, overrides: dict):
    """A copy of ``cfg`` with dotted-key ``overrides`` (``{"optim.lr": 1e-3}``) applied and re-validated.
    ``None`` values are skipped (a flag that was not given)."""
    data = config_to_dict(cfg)
    for key, value in overrides.items():
        if value is None:
            continue
        node = data
        *parents, last = key.split(".")
        for p in parents:
            node = node[p]
        if last not in node:
            raise InputError(f"no config key {key!r}", field=key)
        node[last] = list(value) if isinstance(value, tuple) else value
    return config_from_dict(type(cfg), data)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string is a JSON string for the characters we write
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} {v!r} as TOML")


def to_toml(data: dict, header: str | None = None) -> str:
    """A dict of scalars, lists and nested dicts (tables) as TOML text; ``None`` values are left out
    (TOML has no null: a missing key reads back as the field's default, which is None)."""
    lines: list[str] = [f"# {h}" for h in (header or "").splitlines()]

    def table(d: dict, name: str) -> None:
        scalars = {k: v for k, v in d.items() if not isinstance(v, dict) and v is not None}
        subs = {k: v for k, v in d.items() if isinstance(v, dict)}
        if name:
            lines.append("")
            lines.append(f"[{name}]")
        for k, v in scalars.items():
            lines.append(f"{k} = {_toml_value(v)}")
        for k, v in subs.items():
            table(v, f"{name}.{k}" if name else k)

    table(data, "")
    return "\n".join(lines).lstrip("\n") + "\n"


# ---------------------------------------------------------------------------- output directories
def write_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary name and a rename (readers never see half a file)."""
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, p)


def config_diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    """``["key old -> new", ...]`` for the (dotted) keys whose values differ."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_diff(a, b, f"{prefix}{k}.")
        elif json.dumps(a, sort_keys=True, default=str) != json.dumps(b, sort_keys=True, default=str):
            out.append(f"{prefix}{k} {a!r} -> {b!r}")
    return out


class OutputDir:
    """A job's output directory: lock, resolved config, refusal of another config.

    Parameters
    ----------
    path : path
        The directory (created if missing).
    job : str
        Job name, for messages and the lock file ``<job>.lock``.
    holds : str, optional
        How :meth:`refuse_other_config` names what the directory holds: ``"{path} holds {holds}
        (changed: ...)"``; default ``"the output of another <job> config"``.
    """

    def __init__(self, path: str | Path, job: str, *, holds: str | None = None):
        self.path = Path(path)
        self.job = job
        self.holds = holds or f"the output of another {job} config"
        self._lock = None

    def check_empty_or_ours(self, marker: str) -> bool:
        """True if ``path/marker`` exists (an earlier run of this job); refuse a non-empty foreign directory."""
        if (self.path / marker).exists():
            return True
        if self.path.exists() and not self.path.is_dir():
            raise InputError(f"{self.path} exists and is not a directory; choose another --output", str(self.path))
        if self.path.exists() and any(self.path.iterdir()):
            raise InputError(f"{self.path} exists, is not empty and holds no {self.job} output ({marker}); "
                             "choose a new --output", str(self.path))
        return False

    def read_json(self, name: str) -> dict:
        """``path/name`` parsed as JSON (the config an earlier run wrote), or a clear error naming it."""
        p = self.path / name
        try:
            return json.loads(p.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read the existing config: {exc}", str(p)) from None

    def refuse_other_config(self, name: str, old: dict, new: dict, *, extra: list[str] | None = None,
                            hint: str = "rerun the same command to resume, or choose a new --output",
                            differ: bool | None = None) -> None:
        """Raise if ``old`` (read from ``name``) differs from ``new``, naming the keys that changed.

        ``differ``, when given, decides instead (e.g. the two configs' digests differ, and a digest
        covers more than the keys): the keys and ``extra`` then only explain the refusal
        (``unknown`` when there are none).
        """
        changed = config_diff(old, new) + list(extra or [])
        if changed if differ is None else differ:
            raise InputError(f"{self.path} holds {self.holds} (changed: {', '.join(changed) or 'unknown'}); {hint}",
                             str(self.path / name))

    def lock(self) -> None:
        """Hold an exclusive lock on ``<path>/<job>.lock`` until :meth:`unlock` or exit, or refuse.

        Two runs writing the same outputs would waste the machine and race on shared files.
        Where the file system has no lock support (some network mounts) the run goes on unguarded.
        """
        import fcntl

        self.path.mkdir(parents=True, exist_ok=True)
        fh = open(self.path / f"{self.job}.lock", "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            who = fh.read().strip()
            fh.close()
            raise InputError(f"another `xtalhpc {self.job}` is writing to {self.path} ({who or 'pid unknown'}); "
                             "wait for it or choose another --output", str(self.path / f"{self.job}.lock")) from None
        except OSError:
            self._lock = fh
            return
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {platform.node()} since {_dt.datetime.now().isoformat(timespec='seconds')}\n")
        fh.flush()
        self._lock = fh

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def write_text(self, name: str, text: str) -> Path:
        """Atomically write ``path/name``."""
        p = self.path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(p, text)
        return p
