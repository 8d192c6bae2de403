"""Atomic writes and output-directory rules shared by every command that writes files.

A reader (or a killed run) never sees a half-written file: everything is written to a temporary
name in the same directory, fsynced, then renamed over the target (rename is atomic on POSIX).
Directories (exports, checkpoints) are built under a temporary name and renamed as a whole.

Temporary names carry this host and process: `.NAME.ds<host>-<pid>-<random>.tmp` (and
`.NAME.ds<host>-<pid>-old.tmp` for an output being replaced). A run killed with SIGKILL cannot
clean up after itself, so the next write into the same folder (by any command, for any NAME)
removes the temporaries of earlier runs that are provably ours and dead: our name pattern, this
host, a process id that no longer runs. One is kept: an `-old` one whose NAME is missing (killed
between moving the old output aside and moving the new one in) is the only copy of the previous
output; a warning names it and how to restore it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dynasearch_runtime.schema import HOST_TAG

from .errors import DataError, DynasearchError, OutputExistsError


def _umask_mode(base: int = 0o666) -> int:
    umask = os.umask(0)
    os.umask(umask)
    return base & ~umask


def make_readable(path: str | Path, is_dir: bool = False) -> None:
    """mkstemp/mkdtemp create 0600/0700 entries; give the final file the usual umask permissions."""
    with contextlib.suppress(OSError):
        os.chmod(path, _umask_mode(0o777 if is_dir else 0o666))


_HOST = HOST_TAG  # one home: the device runtime's records writer names its temporaries the same way
# tempfile's random part is 8 of [a-z0-9_]; "old" marks an output being replaced.
_TEMP = re.compile(r"\.ds(?P<host>[0-9a-f]{6})-(?P<pid>\d+)-(?P<tag>[a-z0-9_]{8}|old)\.tmp")
_TEMP_NAME = re.compile(r"\.(?P<name>.+)" + _TEMP.pattern)  # a whole temporary's name: `.NAME` + the above


def _temp_prefix(path: Path) -> str:
    """Prefix of the temporaries this process makes for `path`: `.NAME.ds<host>-<pid>-`."""
    return f".{path.name}.ds{_HOST}-{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this host (a zombie counts as dead)."""
    if pid <= 0:
        return True  # not a real process id: never treat it as dead
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, another user's
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def process_tag() -> str:
    """This process as `<host>-<pid>` (the host hashed as in temporary names): who made a thing."""
    return f"{_HOST}-{os.getpid()}"


def process_dead(tag: object) -> bool:
    """True only when `tag` (a `process_tag()`) names a process of THIS host that no longer runs;
    another host's process, or a tag that does not parse, may be alive: False."""
    host, _, pid = str(tag).partition("-")
    return host == _HOST and pid.isdigit() and not _pid_alive(int(pid))


def _dead_temporaries(folder: Path) -> list[tuple[Path, Path, bool]]:
    """(temporary, the output it was made for, whether it is an `-old` one) for each temporary in
    `folder` named by our pattern, made on this host by a process that no longer runs."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    out = []
    for name in names:
        m = _TEMP_NAME.fullmatch(name)
        if m is None or m["host"] != _HOST or int(m["pid"]) == os.getpid() or _pid_alive(int(m["pid"])):
            continue
        out.append((folder / name, folder / m["name"], m["tag"] == "old"))
    return out


def stale_temporaries(path: str | Path) -> list[Path]:
    """Temporaries beside `path` (of any output in its folder) left by earlier runs that were
    killed: named by our pattern, made on this host, by a process that is no longer alive. An
    `-old` one (an output moved aside while being replaced) counts only once its output exists
    again: before that it is the only copy of the previous output, kept (remove_stale_temporaries
    names it in a warning)."""
    return sorted(t for t, output, old in _dead_temporaries(Path(path).parent) if not old or output.exists())


_WARNED: set[Path] = set()  # kept -old temporaries this process has named already (one warning each)


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Remove what `stale_temporaries(path)` finds; returns what was removed. A kept `-old` one is
    named in a warning (once per process), unless this write is about to put its output back."""
    path = Path(path)
    removed = []
    for p, output, old in _dead_temporaries(path.parent):
        if old and not output.exists():
            if output.name != path.name and p not in _WARNED:
                _WARNED.add(p)
                warnings.warn(
                    f"{p} holds the previous {output.name} (a run replacing it was killed before the new one was "
                    f"in place); it is kept as the only copy: rename it to {output} to restore it, or delete it",
                    stacklevel=3,
                )
            continue
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
        except FileNotFoundError:
            pass  # another run cleaned it first
        except OSError:
            continue
        removed.append(p)
    return sorted(removed)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[Any]:
    """Open a temporary file beside `path`; on success it replaces `path`, on error it vanishes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        make_readable(tmp)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: str | Path, text: str) -> None:
    with atomic_file(path) as f:
        f.write(text)


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield the path of an empty temporary file beside `path` for a writer that takes a file name
    (safetensors, the ONNX exporter); on success it replaces `path`, on error it vanishes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        make_readable(tmp)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def save_tensors(path: str | Path, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """safetensors file, written atomically (tensors made contiguous first)."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)


def check_writable(folder: str | Path) -> None:
    """Create and remove a probe file (named as our temporaries) in an existing `folder`: OSError
    (read-only, no space, no permission) before any real output is started."""
    fd, probe = tempfile.mkstemp(prefix=_temp_prefix(Path(folder) / "write-probe"), suffix=".tmp", dir=folder)
    try:
        os.write(fd, b"x")
        os.fsync(fd)
    finally:
        os.close(fd)
        os.unlink(probe)


def check_output_dir(path: str | Path, overwrite: bool) -> Path:
    """Refuse an existing non-empty output without overwrite, and an unwritable parent, up front."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputExistsError(f"output '{path}' exists and is not a directory")
    if path.exists() and any(path.iterdir()) and not overwrite:
        raise OutputExistsError(f"output directory '{path}' exists and is not empty; pass --overwrite to replace it")
    parent = path.resolve().parent
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputExistsError(f"output directory '{path}' is not writable (no write permission on '{probe}')")
    try:  # permission bits do not tell everything (root, /proc, read-only mounts): try it
        check_writable(probe)
    except OSError as e:
        raise OutputExistsError(
            f"output directory '{path}' is not writable (cannot create anything in '{probe}': {e.strerror or e})"
        ) from None
    return path


@contextlib.contextmanager
def atomic_dir(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory beside `path`; on success it becomes `path` (replacing an old
    one only if overwrite), on error it is removed and `path` is left as it was."""
    path = check_output_dir(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)  # what killed runs left beside it (up to a whole export each)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        make_readable(tmp, is_dir=True)
        for p in tmp.rglob("*"):
            make_readable(p, is_dir=p.is_dir())
        if path.exists():
            old = path.with_name(_temp_prefix(path) + "old.tmp")
            if old.exists():
                shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_utf8(
    path: str | Path, what: str, *, error: type[DynasearchError] = DataError, expected: str = "a text file"
) -> str:
    """The text of a file dynasearch reads back; unreadable or not UTF-8 raises `error` in ONE line
    naming `what`, the file and (for bad bytes) where."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise error(f"cannot read {what} {path}: {e.strerror or e}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(
            f"{what} {path} is not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}): "
            f"corrupted or not {expected}"
        ) from None


def read_json(path: str | Path, what: str, *, error: type[DynasearchError] = DataError, kind: type = dict) -> Any:
    """The JSON content of a user or run file; every way it can be broken (unreadable, not UTF-8,
    truncated or malformed JSON, a top level that is not `kind`) raises `error` with ONE line naming
    `what` and the file. `kind=object` accepts any JSON value."""
    path = Path(path)
    text = read_utf8(path, what, error=error, expected="a JSON file")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        # The file stops early when the error is at its very end, in a string never closed, or at a
        # last token cut short (a number cut after its point, 'tru', '-'): nothing but that token follows.
        rest = text[e.pos :].strip()
        cut = (
            not rest
            or e.msg.startswith("Unterminated string")
            or (e.msg != "Extra data" and len(rest) <= 5 and not re.search(r"[\s,:\[\]{}\"]", rest))
        )
        raise error(
            f"{what} {path} is not valid JSON ({'truncated' if cut else 'malformed'}: {e.msg}, "
            f"line {e.lineno} column {e.colno})"
        ) from None
    if not isinstance(value, kind):
        raise error(f"{what} {path} must hold a JSON {_JSON_NAMES.get(kind, kind.__name__)}; got {_json_type(value)}")
    return value


_JSON_NAMES = {dict: "object", list: "array", str: "string"}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return _JSON_NAMES.get(
        type(value), {bool: "boolean", int: "number", float: "number"}.get(type(value), type(value).__name__)
    )


def file_sha256(path: str | Path) -> str:
    """The sha256 hex digest of a file, read in 1 MiB chunks (manifests and bundles list them)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
