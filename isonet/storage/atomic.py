"""Atomic writes: an interrupted run leaves the previous output or nothing under the final name."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from isonet.errors import InputError
from isonet.storage.voxels import _one_line


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _temporary(kind: str, path: Path) -> Path:
    """A hidden sibling of ``path`` whose name says which process on which host wrote it."""
    return path.parent / f".{kind}-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}-{path.name}"


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def _remove_abandoned(path: Path) -> None:
    """Delete temporaries of ``path`` left by killed writers: same host, process no longer running.

    A writer on another host (a shared file system) or still running is left alone, so two
    writers never delete each other's work.
    """
    pattern = re.compile(
        rf"\.(?:tmp|old)-{re.escape(socket.gethostname())}-(\d+)-[0-9a-f]{{8}}-{re.escape(path.name)}"
    )
    with contextlib.suppress(OSError):
        for sibling in path.parent.iterdir():
            match = pattern.fullmatch(sibling.name)
            if match and _process_gone(int(match.group(1))):
                _remove(sibling)


def naming_path(err: OSError, path: str | os.PathLike) -> OSError:
    """``err``, or a copy naming ``path`` when it names no file (a full disk's write names none).

    Examples
    --------
    >>> import errno
    >>> naming_path(OSError(errno.ENOSPC, "No space left on device"), "out.zarr").filename
    'out.zarr'
    """
    if err.filename is not None or err.errno is None:
        return err
    named = OSError(err.errno, err.strerror, str(path))
    named.__cause__ = err
    return named


def _check_writable_directory(directory: Path, target: Path) -> None:
    if directory.exists() and not directory.is_dir():
        raise InputError(
            f"{target}: cannot write here because {directory} is a file, not a directory; "
            "choose an output path inside a directory"
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(
            f"{target}: cannot create the output directory {directory} ({_one_line(err.strerror or err)}); "
            "choose an output path inside a writable directory"
        ) from err
    if not os.access(directory, os.W_OK | os.X_OK):
        raise InputError(
            f"{target}: the output directory {directory} is not writable; "
            "fix its permissions or choose another output location"
        )


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Write a file or directory (e.g. a zarr store) under a temporary name, then move it into place.

    The temporary path is a hidden sibling of ``path`` (same directory, so the final rename is
    atomic on one file system) whose name ends with the name of ``path``, so extension-sniffing
    writers behave the same, and names this host and process: temporaries that a killed writer
    on this host left behind are deleted when ``path`` is next written. On clean exit the temporary replaces ``path``; an existing directory
    at ``path`` is first moved aside and deleted only after the new one is in place. On an
    exception (KeyboardInterrupt included) the temporary is removed and ``path`` is untouched; an
    ``OSError`` that names no file (a full disk) is raised again naming ``path``.

    Parameters
    ----------
    path : str or path
        Final location. Missing parent directories are created.

    Yields
    ------
    tmp : Path
        Where to write. Nothing exists there yet.

    Raises
    ------
    InputError
        Before any work, when the parent of ``path`` cannot be created or is not writable.
    FileNotFoundError
        On exit, when nothing was written at ``tmp``.

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> with atomic_path(d / "a.txt") as tmp:
    ...     _ = tmp.write_text("done")
    >>> (d / "a.txt").read_text(), sorted(p.name for p in d.iterdir())
    ('done', ['a.txt'])
    """
    path = Path(path)
    _check_writable_directory(path.parent, path)
    _remove_abandoned(path)
    tmp = _temporary("tmp", path)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"{tmp}: nothing was written for {path}")
        if path.is_dir() and not path.is_symlink():
            old = _temporary("old", path)
            os.replace(path, old)
            try:
                os.replace(tmp, path)
            except BaseException:
                os.replace(old, path)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except OSError as err:
        _remove(tmp)
        raise naming_path(err, path) from err
    except BaseException:
        _remove(tmp)
        raise


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 text atomically.

    Parameters
    ----------
    path : str or path
        Destination file.
    text : str
        Content.

    Returns
    -------
    path : Path

    Examples
    --------
    >>> import tempfile
    >>> p = write_text(Path(tempfile.mkdtemp()) / "log.txt", "ok\\n")
    >>> p.read_text()
    'ok\\n'
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically (numpy scalars/arrays and paths are converted).

    Parameters
    ----------
    path : str or path
        Destination file.
    obj : JSON-serializable object

    Returns
    -------
    path : Path

    Examples
    --------
    >>> import tempfile
    >>> p = write_json(Path(tempfile.mkdtemp()) / "s.json", {"shape": (2, 3), "mean": np.float32(1.5)})
    >>> json.loads(p.read_text())
    {'shape': [2, 3], 'mean': 1.5}
    """
    return write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")
