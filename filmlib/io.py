"""Writing files safely: nothing half-written is ever left (a temporary name in the same
folder, then an atomic rename), a full disk is reported with the path being written, and a
lock file keeps two processes from writing the same output at once."""
from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

try:
    import fcntl
except ImportError:         # not POSIX: no locking (the rest works the same)
    fcntl = None


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path next to ``path``; on success it replaces ``path``, on any
    failure (interrupts included) it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        full = disk_full_error(e, path)
        if full is None:
            raise
        raise full from e
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


# --- a full disk ---------------------------------------------------------------------------

class DiskFullError(OSError):
    """No space left on the device while writing ``filename``."""

    def __init__(self, path):
        super().__init__(errno.ENOSPC, f"no space left on the device while writing {path}; free "
                         f"some space there (or write somewhere else) and run again", str(path))

    def __str__(self):
        return self.strerror


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` says the disk is full (plain OSError, or h5py's text)."""
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return True
    text = str(error)
    return "No space left on device" in text or "errno = 28" in text


def disk_full_error(error: BaseException, path) -> DiskFullError | None:
    """A :class:`DiskFullError` naming ``path`` (what was being written), or None if
    ``error`` is not about a full disk (or already names its path)."""
    if isinstance(error, DiskFullError) or not is_disk_full(error):
        return None
    return DiskFullError(path)


@contextlib.contextmanager
def naming_disk_full(path):
    """Re-raise a full-disk error inside the block as a :class:`DiskFullError` naming ``path``."""
    try:
        yield
    except (OSError, RuntimeError) as e:
        full = disk_full_error(e, path)
        if full is None:
            raise
        raise full from e


# --- one writer at a time ------------------------------------------------------------------

class FolderBusyError(RuntimeError):
    """Another process holds the lock of an output."""


@contextlib.contextmanager
def output_lock(lock_file, what: str):
    """Hold an exclusive lock on ``lock_file`` (created, and removed on exit) while writing
    ``what``. If another process holds it, raise :class:`FolderBusyError` at once, touching
    nothing of the other process's."""
    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        yield lock_file
        return
    while True:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            pid = f" (pid {holder})" if holder.isdigit() else ""
            raise FolderBusyError(f"{what} is being written by another process{pid} (lock file "
                                  f"{lock_file}); wait until it finishes, or write somewhere else") from None
        # the previous holder removes the file when done: make sure we locked the one in place
        try:
            current = os.stat(lock_file).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield lock_file
    finally:
        with contextlib.suppress(FileNotFoundError):
            lock_file.unlink()          # while still holding the lock
        os.close(fd)


def ignore_sigint() -> None:
    """For worker processes (a ProcessPoolExecutor's initializer): leave Ctrl-C to the main
    process, which cleans up."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)
