"""Downloading the real CLEVR v1.0, CLEVR-CoGenT and CLEVR-Humans.

::

    python -m filmlib download clevr --to data/      # -> data/CLEVR_v1.0/          (about 18 GB)
    python -m filmlib download cogent --to data/     # -> data/CLEVR_CoGenT_v1.0/   (about 24 GB)
    python -m filmlib download humans --to data/     # -> data/CLEVR-Humans/        (a few MB)

What it guarantees, for archives of tens of gigabytes on flaky links:

* **Resumes.** The archive is fetched into ``<archive>.part``; a transfer cut off (the network,
  Ctrl-C, a killed process) continues from the bytes already there with an HTTP ``Range``
  request, both within a run (a few tries) and in the next run.
* **Checks.** The received size against the server's; the MD5 published for the CLEVR archives;
  on the first complete download a SHA-256 and size are written beside the archive
  (``<archive>.sha256.json``) and every later copy is checked against them; every zip entry's
  CRC-32 while it is extracted. A corrupted archive is refused and removed, with a one-line
  error that says so.
* **Room first.** Free disk space for the rest of the transfer plus the extracted files is
  checked before a byte is fetched.
* **Extracts safely.** Absolute paths, ``..`` and links that point outside the target are
  refused before anything is written; entries go to a hidden staging folder that is moved
  into place only once every file has been written and checked, so an interrupted extraction
  leaves nothing half-extracted.
* **Idempotent.** A complete dataset (every file the loaders need is there, however it got
  there) is detected and kept: a second run downloads nothing.

Why urllib3 and not pooch: pooch fetches a file in one request and starts again from zero when
a transfer fails, and it has no way to resume from a partial file, which is what an 18 GB
archive needs; urllib3 (the library under requests) gives connection pooling, timeouts and
retries with back-off on connection errors and 5xx answers, and lets us send ``Range`` headers.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import posixpath
import shutil
import stat
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from filmlib.io import DiskFullError, atomic_write_text, disk_full_error, output_lock

GB = 1_000_000_000


@dataclass(frozen=True)
class Source:
    """One downloadable dataset: where it lives and what a complete copy holds."""
    name: str
    url: str
    folder: str                 #: the zip's top folder, and the dataset's folder under --to
    approx_bytes: int           #: archive size, for the disk check until the server says
    md5: str | None             #: the checksum published for the archive, where there is one
    expect: tuple[str, ...]     #: files and folders (under ``folder``) a complete copy has
    licence: str
    page: str

    @property
    def archive(self) -> str:
        return posixpath.basename(self.url)


_CLEVR_PAGE = "https://cs.stanford.edu/people/jcjohns/clevr/"

SOURCES: dict[str, Source] = {
    "clevr": Source(
        "clevr", "https://dl.fbaipublicfiles.com/clevr/CLEVR_v1.0.zip", "CLEVR_v1.0",
        approx_bytes=18 * GB, md5="b11922020e72d0cd9154779b2d3d07d2",
        expect=tuple(f"questions/CLEVR_{s}_questions.json" for s in ("train", "val", "test"))
        + tuple(f"scenes/CLEVR_{s}_scenes.json" for s in ("train", "val"))
        + tuple(f"images/{s}" for s in ("train", "val", "test")),
        licence="CC BY 4.0 (LICENSE.txt in the archive)", page=_CLEVR_PAGE),
    "cogent": Source(
        "cogent", "https://dl.fbaipublicfiles.com/clevr/CLEVR_CoGenT_v1.0.zip", "CLEVR_CoGenT_v1.0",
        approx_bytes=24 * GB, md5="9e4a361ab939a4899e6d2ac14a5ee434",
        expect=tuple(f"questions/CLEVR_{s}_questions.json" for s in ("trainA", "valA", "valB", "testA", "testB"))
        + tuple(f"scenes/CLEVR_{s}_scenes.json" for s in ("trainA", "valA", "valB"))
        + tuple(f"images/{s}" for s in ("trainA", "valA", "valB", "testA", "testB")),
        licence="CC BY 4.0 (LICENSE.txt in the archive)", page=_CLEVR_PAGE),
    "humans": Source(
        "humans", "https://cs.stanford.edu/people/jcjohns/iep/CLEVR-Humans.zip", "CLEVR-Humans",
        approx_bytes=10_000_000, md5=None,
        expect=tuple(f"CLEVR-Humans-{s}.json" for s in ("train", "val", "test")),
        licence="the CLEVR-Humans release's terms (see its page); the images are CLEVR v1.0's",
        page="https://cs.stanford.edu/people/jcjohns/iep/"),
}

#: extracted files / archive (CLEVR's PNGs are stored, hardly compressed): room kept for both
UNPACKED_FACTOR = 1.1


class DownloadError(ConnectionError):
    """A transfer that failed: the address and what went wrong, in one line."""


class CorruptArchiveError(ValueError):
    """An archive whose size, checksum or zip CRCs are wrong (it has been removed)."""


class UnsafeArchiveError(ValueError):
    """An archive with an entry that would be written outside the target folder."""


class NotEnoughSpaceError(OSError):
    """Less free disk space than the transfer and extraction need."""

    def __init__(self, where: Path, free: int, need: int, name: str):
        super().__init__(errno.ENOSPC, f"{free / GB:.1f} GB free, and downloading and extracting "
                         f"{name} needs about {need / GB:.1f} GB; free some space or pass --to "
                         f"another disk", str(where))


# --- what is there ------------------------------------------------------------------------

def missing_files(source: Source | str, root) -> list[str]:
    """What a copy of ``source`` at ``root`` (the dataset's own folder) lacks ([] if complete)."""
    source = SOURCES[source] if isinstance(source, str) else source
    root = Path(root)
    return [rel for rel in source.expect if not (root / rel).exists()]


def is_complete(source: Source | str, root) -> bool:
    return Path(root).is_dir() and not missing_files(source, root)


# --- fetching -----------------------------------------------------------------------------

def _pool(timeout: float, retries: int):
    import urllib3
    # total=None: each kind counts on its own, and redirects (download hosts use them) never use
    # up the tries meant for failures
    retry = urllib3.Retry(total=None, connect=retries, read=retries, status=retries, other=retries, redirect=10,
                          backoff_factor=0.5, status_forcelist=(429, 500, 502, 503, 504),
                          allowed_methods=None, raise_on_status=True, respect_retry_after_header=False)
    return urllib3.PoolManager(retries=retry, timeout=urllib3.Timeout(connect=timeout, read=timeout))


def _describe_http_error(url: str, error: Exception, retries: int, timeout: float) -> str:
    """One line for a request that failed before any answer (urllib3 gave up)."""
    import urllib3.exceptions as ex
    reason = getattr(error, "reason", None) or error
    tries = f"{retries + 1} tries"
    if isinstance(reason, ex.ResponseError):            # retried 5xx/429 answers
        return f"{url}: the server kept failing ({reason}; {tries})"
    if isinstance(reason, (ex.ReadTimeoutError, ex.ConnectTimeoutError, TimeoutError)):
        return f"{url}: no answer within {timeout:g} s ({tries})"
    if isinstance(reason, ex.NameResolutionError):
        return f"{url}: unknown host (no internet, or a wrong address?)"
    if isinstance(reason, ex.NewConnectionError):
        return f"{url}: cannot connect (refused or unreachable; {tries})"
    text = str(reason).splitlines()[0] if str(reason) else type(reason).__name__
    return f"{url}: {text}"


def _total_from(response) -> int | None:
    """The whole file's size from a 206's Content-Range or a 200's Content-Length."""
    if response.status == 206:
        value = response.headers.get("Content-Range", "")
        total = value.rsplit("/", 1)[-1]
        return int(total) if total.isdigit() else None
    length = response.headers.get("Content-Length")
    return int(length) if length and length.isdigit() else None


def fetch(url: str, part: Path, *, timeout: float = 60.0, retries: int = 5, progress: bool = True,
          chunk_size: int = 1 << 20, before_write=None) -> dict:
    """Fetch ``url`` into ``part``, continuing from the bytes already in it.

    A transfer cut off mid-way is continued with a ``Range`` request, up to ``retries`` times in
    a row without the file growing past its largest size so far (a server that ignores
    ``Range`` restarts from zero, which is not progress). ``before_write(total, have)`` is called
    once the size is known and before anything is written (the disk check). Returns ``{"bytes":
    the file's size, "received": bytes received by this call}``. Raises :class:`DownloadError`
    with one line naming the address."""
    import urllib3
    from tqdm.auto import tqdm

    pool = _pool(timeout, retries)
    part = Path(part)
    failures, checked, bar, total, received = 0, False, None, None, 0
    best = part.stat().st_size if part.exists() else 0
    try:
        while True:
            have = part.stat().st_size if part.exists() else 0
            headers = {"Range": f"bytes={have}-"} if have else {}
            try:
                response = pool.request("GET", url, headers=headers, preload_content=False, redirect=True)
            except urllib3.exceptions.HTTPError as e:
                raise DownloadError(_describe_http_error(url, e, retries, timeout)) from None
            try:
                if response.status == 416 and have:          # nothing to send after what we have
                    response.drain_conn()                     # (a short body) so the connection can be reused
                    announced = response.headers.get("Content-Range", "").rsplit("/", 1)[-1]
                    total = int(announced) if announced.isdigit() else total
                    if total is not None and have == total:
                        return {"bytes": have, "received": received}
                    part.unlink()                             # not the file's size: start again
                    best = 0
                    continue
                if response.status not in (200, 206):
                    response.close()
                    raise DownloadError(f"{url}: HTTP {response.status} {response.reason or ''}".rstrip())
                if response.status == 206:
                    start = response.headers.get("Content-Range", "").removeprefix("bytes ").split("-")[0]
                    if not start.isdigit() or int(start) != have:     # not the part we asked for
                        response.close()                      # never read the rest
                        part.unlink()
                        best = 0
                        raise _CutOff(f"the server sent bytes from {start or '?'} when asked from {have}")
                elif have:                                     # 200: the server ignored Range
                    have = 0
                total = _total_from(response) or total
                if not checked:
                    if before_write is not None:
                        before_write(total, have)
                    checked = True
                if bar is None:
                    bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                               desc=part.name.removesuffix(".part"), disable=not progress, leave=False)
                else:
                    bar.n = have
                    bar.refresh()
                size = have
                with open(part, "ab" if have else "wb") as f:
                    while True:
                        try:
                            data = response.read1(chunk_size)
                        except (urllib3.exceptions.ProtocolError, urllib3.exceptions.ReadTimeoutError,
                                urllib3.exceptions.IncompleteRead, OSError) as e:
                            raise _CutOff(str(e)) from None
                        if not data:
                            break
                        try:
                            f.write(data)
                        except OSError as e:
                            full = disk_full_error(e, part)
                            raise (full or e) from None
                        received += len(data)
                        size += len(data)
                        bar.update(len(data))
                        if size > best:                        # real progress
                            best, failures = size, 0
                size = part.stat().st_size
                if total is None or size == total:
                    return {"bytes": size, "received": received}
                if size > total:
                    part.unlink()
                    raise DownloadError(f"{url}: received {size:,} bytes, more than the {total:,} the "
                                        f"server announced; the partial file was removed, run again")
                raise _CutOff(f"the connection closed after {size:,} of {total:,} bytes")
            except _CutOff as e:
                failures += 1
                if failures > retries:
                    raise DownloadError(f"{url}: the transfer keeps breaking off ({e}); what was "
                                        f"received is kept in {part}, run the same command again "
                                        f"to continue") from None
                time.sleep(min(0.5 * 2 ** (failures - 1), 10.0))
            finally:
                response.release_conn()
    finally:
        if bar is not None:
            bar.close()
        pool.clear()


class _CutOff(Exception):
    pass


# --- checking -----------------------------------------------------------------------------

def file_digests(path: Path, *, progress: bool = False) -> dict:
    """SHA-256 and MD5 of a file, read once."""
    from tqdm.auto import tqdm
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    size = path.stat().st_size
    with open(path, "rb") as f, tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024,
                                      desc=f"checking {path.name}", disable=not progress, leave=False) as bar:
        while data := f.read(1 << 22):
            sha.update(data)
            md5.update(data)
            bar.update(len(data))
    return {"bytes": size, "sha256": sha.hexdigest(), "md5": md5.hexdigest()}


def checksum_file(archive: Path) -> Path:
    return archive.with_name(archive.name + ".sha256.json")


def _refuse(archive: Path, why: str) -> CorruptArchiveError:
    with contextlib.suppress(FileNotFoundError):
        archive.unlink()
    return CorruptArchiveError(f"{archive}: {why}; the archive was removed, run the same command "
                               f"again to download it afresh")


def verify_archive(archive: Path, source: Source, *, progress: bool = False) -> dict:
    """Check ``archive`` against the published MD5 and a recorded SHA-256 (if any); a mismatch
    removes it and raises :class:`CorruptArchiveError`. Returns the digests."""
    digests = file_digests(archive, progress=progress)
    recorded_file = checksum_file(archive)
    if source.md5 and digests["md5"] != source.md5:
        raise _refuse(archive, f"MD5 {digests['md5']} is not the published {source.md5}")
    if recorded_file.is_file():
        try:
            recorded = json.loads(recorded_file.read_text())
            want_sha, want_size = recorded["sha256"], int(recorded["bytes"])
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"{recorded_file}: not a checksum record this tool wrote; delete it "
                             f"to record the archive's checksum afresh") from None
        if digests["bytes"] != want_size:
            raise _refuse(archive, f"{digests['bytes']:,} bytes, and the first complete download "
                                   f"(recorded in {recorded_file.name}) had {want_size:,}")
        if digests["sha256"] != want_sha:
            raise _refuse(archive, f"SHA-256 {digests['sha256']} is not the one recorded in "
                                   f"{recorded_file.name} on the first complete download")
    return digests


def record_checksum(archive: Path, source: Source, url: str, digests: dict) -> Path:
    """Write ``<archive>.sha256.json`` (once: an existing record is never replaced)."""
    path = checksum_file(archive)
    if not path.exists():
        record = {"archive": archive.name, "url": url, "bytes": digests["bytes"],
                  "sha256": digests["sha256"], "md5": digests["md5"],
                  "recorded": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        atomic_write_text(path, json.dumps(record, indent=1) + "\n")
    return path


# --- extracting ---------------------------------------------------------------------------

def _is_link(info: zipfile.ZipInfo) -> bool:
    return info.create_system == 3 and stat.S_ISLNK(info.external_attr >> 16)


def _unsafe_name(name: str) -> str | None:
    """Why an entry name would escape the target folder (None if it would not)."""
    clean = name.replace("\\", "/")
    if clean.startswith("/") or (len(clean) > 1 and clean[1] == ":"):
        return "is an absolute path"
    if ".." in clean.split("/"):
        return "climbs out with '..'"
    return None


def check_members(zf: zipfile.ZipFile, archive: Path) -> list[zipfile.ZipInfo]:
    """Every entry, after refusing the whole archive if one would land outside the target.

    Links are refused outright: the releases have none, and a chain of links that each look
    harmless (``x -> .``, then ``x/y -> ..``) can still lead a later entry out of the target."""
    infos = zf.infolist()
    for info in infos:
        why = _unsafe_name(info.filename)
        if why:
            raise UnsafeArchiveError(f"{archive}: entry {info.filename!r} {why}; refused (nothing "
                                     f"was extracted, and the archive was removed)")
        if _is_link(info):
            target = zf.read(info).decode("utf-8", "replace")
            raise UnsafeArchiveError(f"{archive}: entry {info.filename!r} is a link (to {target!r}); the "
                                     f"datasets have none and links can lead outside the target folder; "
                                     f"refused (nothing was extracted, and the archive was removed)")
    return infos


def extract(archive: Path, dest: Path, *, progress: bool = True) -> None:
    """Extract every entry of ``archive`` under ``dest`` (which should be empty), checking each
    entry's CRC-32 (:func:`check_members` first refuses unsafe names and links)."""
    from tqdm.auto import tqdm
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as e:
        raise _refuse(archive, f"not a readable zip archive ({e})") from None
    with zf:
        try:
            infos = check_members(zf, archive)
        except UnsafeArchiveError:
            archive.unlink()
            raise
        base = dest.resolve()
        total = sum(i.file_size for i in infos)
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, disable=not progress,
                  desc=f"extracting {archive.name}", leave=False) as bar:
            for info in infos:
                out = dest.joinpath(*info.filename.replace("\\", "/").split("/"))
                if not out.resolve().is_relative_to(base):       # belt and braces
                    raise UnsafeArchiveError(f"{archive}: entry {info.filename!r} would be written "
                                             f"outside {dest}; refused")
                if info.is_dir():
                    out.mkdir(parents=True, exist_ok=True)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with zf.open(info) as src, open(out, "wb") as dst:
                        while data := src.read(1 << 20):
                            dst.write(data)
                            bar.update(len(data))
                except (zipfile.BadZipFile, EOFError, zlib.error) as e:
                    raise _refuse(archive, f"entry {info.filename!r} is damaged ({e})") from None
                except OSError as e:
                    full = disk_full_error(e, out)
                    raise (full or e) from None


# --- the whole job ------------------------------------------------------------------------

def _check_space(to: Path, source: Source, total: int | None, have: int, *, extract_only=False) -> None:
    size = total or source.approx_bytes
    need = (0 if extract_only else max(size - have, 0)) + int(size * UNPACKED_FACTOR)
    free = shutil.disk_usage(to).free
    if free < need:
        raise NotEnoughSpaceError(to, free, need, source.name)


def _in_the_way(source: Source, target: Path) -> None:
    if target.exists():
        absent = missing_files(source, target)
        raise FileExistsError(errno.EEXIST, f"exists but is not a complete {source.folder} (no "
                              f"{absent[0]}{' and more' if len(absent) > 1 else ''}); move it away "
                              f"or delete it, then run again", str(target))


def download(name: str, to, *, url: str | None = None, keep_archive: bool = False, progress: bool = True,
             timeout: float = 60.0, retries: int = 5) -> dict:
    """Download and extract ``name`` (``clevr``, ``cogent`` or ``humans``) into ``to``; returns a
    summary. ``url`` overrides the address (a mirror, or a local copy served over HTTP)."""
    if name not in SOURCES:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(SOURCES)}")
    source = SOURCES[name]
    url = url or source.url
    to = Path(to)
    target = to / source.folder
    done = {"dataset": name, "path": str(target), "downloaded_bytes": 0, "status": "already complete"}
    if is_complete(source, target):
        return done
    _in_the_way(source, target)
    to.mkdir(parents=True, exist_ok=True)
    archive = to / source.archive
    part = archive.with_name(archive.name + ".part")
    staging = to / f".{source.folder}.staging"
    fetched = 0
    with output_lock(to / f".{archive.name}.lock", f"{archive}"):
        if is_complete(source, target):                  # another process finished it meanwhile
            return done
        _in_the_way(source, target)
        shutil.rmtree(staging, ignore_errors=True)       # what a killed extraction left (before the disk check)
        if archive.exists():
            _check_space(to, source, archive.stat().st_size, 0, extract_only=True)
        else:
            fetched = fetch(url, part, timeout=timeout, retries=retries, progress=progress,
                            before_write=lambda total, have: _check_space(to, source, total, have))["received"]
            os.replace(part, archive)
        digests = verify_archive(archive, source, progress=progress)
        try:
            staging.mkdir()
            extract(archive, staging, progress=progress)
            unpacked = staging / source.folder
            absent = missing_files(source, unpacked) if unpacked.is_dir() else list(source.expect)
            if absent:
                raise _refuse(archive, f"does not hold a complete {source.folder} (no "
                                       f"{source.folder}/{absent[0]}); is the address right?")
            record_checksum(archive, source, url, digests)
            os.rename(unpacked, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if not keep_archive:
            archive.unlink()
    return {"dataset": name, "path": str(target), "downloaded_bytes": fetched,
            "archive_bytes": digests["bytes"], "sha256": digests["sha256"],
            "archive": str(archive) if keep_archive else None, "status": "downloaded"}


__all__ = ["SOURCES", "Source", "download", "fetch", "extract", "check_members", "verify_archive",
           "is_complete", "missing_files", "DownloadError", "CorruptArchiveError",
           "UnsafeArchiveError", "NotEnoughSpaceError", "DiskFullError"]
