"""`python -m filmlib download`: against a real HTTP server on 127.0.0.1 serving small archives
in the releases' exact layout, made from SynthCLEVR. No internet."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import stat
import zipfile
from pathlib import Path

import pytest

from filmlib.cli import main
from filmlib.data import download as dl
from filmlib.data.clevr import load_questions, load_scenes

from clevr_fakes import ArchiveServer, fake_release, zip_tree


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """The fake CLEVR_v1.0 tree and its zip (bytes), built once."""
    tmp = tmp_path_factory.mktemp("release")
    folder = fake_release(tmp / "src", "clevr")
    archive = zip_tree(folder, tmp / "CLEVR_v1.0.zip")
    return folder, archive.read_bytes()


@pytest.fixture
def server():
    with ArchiveServer() as s:
        yield s


def _source(data: bytes | None = None, **kw) -> dl.Source:
    """The CLEVR source with the fake archive's MD5 (or none)."""
    md5 = hashlib.md5(data).hexdigest() if data is not None else None
    return dataclasses.replace(dl.SOURCES["clevr"], md5=md5, **kw)


@pytest.fixture
def fake_sources(monkeypatch, release):
    """The registry's CLEVR entry pointed at the fake archive's checksum."""
    monkeypatch.setitem(dl.SOURCES, "clevr", _source(release[1]))


def test_the_fake_release_has_the_real_layout(release):
    folder, _ = release
    assert dl.missing_files("clevr", folder) == []
    assert not (folder / "scenes" / "CLEVR_test_scenes.json").exists()
    test_q = load_questions(folder / "questions" / "CLEVR_test_questions.json")
    assert test_q and all("answer" not in q and "program" not in q for q in test_q)
    assert load_scenes(folder / "scenes" / "CLEVR_val_scenes.json")[0]["image_filename"] == "CLEVR_val_000000.png"
    assert sorted(p.name for p in (folder / "images" / "train").iterdir())[0] == "CLEVR_train_000000.png"


def test_downloads_checks_and_extracts(tmp_path, server, release, fake_sources):
    folder, data = release
    server.routes["/CLEVR_v1.0.zip"] = data
    summary = dl.download("clevr", tmp_path, url=server.url("/CLEVR_v1.0.zip"), progress=False)
    target = tmp_path / "CLEVR_v1.0"
    assert summary["status"] == "downloaded" and summary["downloaded_bytes"] == len(data)
    assert _tree_bytes(target) == _tree_bytes(folder)
    record = json.loads((tmp_path / "CLEVR_v1.0.zip.sha256.json").read_text())
    assert record["sha256"] == hashlib.sha256(data).hexdigest() and record["bytes"] == len(data)
    assert not (tmp_path / "CLEVR_v1.0.zip").exists()            # not kept by default
    assert sorted(p.name for p in tmp_path.iterdir()) == ["CLEVR_v1.0", "CLEVR_v1.0.zip.sha256.json"]

    # a second run finds the dataset complete and asks the server for nothing
    before = len(server.log)
    again = dl.download("clevr", tmp_path, url=server.url("/CLEVR_v1.0.zip"), progress=False)
    assert again["status"] == "already complete" and again["downloaded_bytes"] == 0
    assert len(server.log) == before


def test_a_transfer_cut_in_the_middle_resumes_to_the_same_bytes(tmp_path, server, release, fake_sources):
    folder, data = release
    half = len(data) // 2
    server.routes["/a.zip"] = data
    server.behave["/a.zip"] = {"cut": [half]}
    dl.download("clevr", tmp_path, url=server.url("/a.zip"), keep_archive=True, progress=False)
    assert server.requests("/a.zip") == [None, f"bytes={half}-"]
    assert (tmp_path / "CLEVR_v1.0.zip").read_bytes() == data
    assert _tree_bytes(tmp_path / "CLEVR_v1.0") == _tree_bytes(folder)


def test_an_interrupted_download_continues_in_the_next_run(tmp_path, server, release, fake_sources):
    folder, data = release
    cut = len(data) // 3
    server.routes["/a.zip"] = data
    server.behave["/a.zip"] = {"cut": [cut]}
    with pytest.raises(dl.DownloadError, match=r"keeps breaking off.*run the same command again"):
        dl.download("clevr", tmp_path, url=server.url("/a.zip"), retries=0, progress=False)
    part = tmp_path / "CLEVR_v1.0.zip.part"
    assert part.read_bytes() == data[:cut]                     # what arrived is kept
    assert not (tmp_path / "CLEVR_v1.0").exists()
    summary = dl.download("clevr", tmp_path, url=server.url("/a.zip"), retries=0, progress=False)
    assert summary["downloaded_bytes"] == len(data) - cut
    assert server.requests("/a.zip")[-1] == f"bytes={cut}-"
    assert not part.exists()
    assert _tree_bytes(tmp_path / "CLEVR_v1.0") == _tree_bytes(folder)


def test_a_server_that_ignores_range_restarts_from_zero(tmp_path, server, release, fake_sources):
    _, data = release
    server.routes["/a.zip"] = data
    server.behave["/a.zip"] = {"cut": [100], "ignore_range": True}
    dl.download("clevr", tmp_path, url=server.url("/a.zip"), keep_archive=True, progress=False)
    assert (tmp_path / "CLEVR_v1.0.zip").read_bytes() == data


def _flip_inside_first_png(data: bytes) -> bytes:
    """The archive with one byte of a PNG entry's compressed data changed (its CRC then fails)."""
    import io
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith(".png"))
    header = info.header_offset
    name_len = int.from_bytes(data[header + 26:header + 28], "little")
    extra_len = int.from_bytes(data[header + 28:header + 30], "little")
    at = header + 30 + name_len + extra_len + info.compress_size // 2
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]


def test_a_corrupted_archive_is_refused_and_removed(tmp_path, server, release, monkeypatch):
    _, data = release
    bad = _flip_inside_first_png(data)
    server.routes["/bad.zip"] = bad
    # no published checksum: the zip's own CRCs catch it during extraction
    monkeypatch.setitem(dl.SOURCES, "clevr", _source(None))
    with pytest.raises(dl.CorruptArchiveError, match=r"CLEVR_v1.0.zip: entry .*\.png' is damaged.*removed"):
        dl.download("clevr", tmp_path, url=server.url("/bad.zip"), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == []      # no archive, no staging, no tree
    # with the published MD5 it is refused before anything is extracted
    monkeypatch.setitem(dl.SOURCES, "clevr", _source(data))
    with pytest.raises(dl.CorruptArchiveError, match=r"MD5 [0-9a-f]{32} is not the published"):
        dl.download("clevr", tmp_path, url=server.url("/bad.zip"), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_later_copy_is_checked_against_the_recorded_sha256(tmp_path, server, release, monkeypatch):
    folder, data = release
    monkeypatch.setitem(dl.SOURCES, "clevr", _source(None))      # no published MD5 (as for humans)
    server.routes["/a.zip"] = data
    dl.download("clevr", tmp_path, url=server.url("/a.zip"), progress=False)
    import shutil
    shutil.rmtree(tmp_path / "CLEVR_v1.0")
    # the server now hands out a different (still valid) zip under the same name
    other = zip_tree(folder, tmp_path.parent / f"{tmp_path.name}-other.zip",
                     extra={"CLEVR_v1.0/extra.txt": b"not in the release"}).read_bytes()
    server.routes["/a.zip"] = other
    with pytest.raises(dl.CorruptArchiveError, match=r"bytes, and the first complete download"):
        dl.download("clevr", tmp_path, url=server.url("/a.zip"), progress=False)
    assert not (tmp_path / "CLEVR_v1.0.zip").exists() and not (tmp_path / "CLEVR_v1.0").exists()


@pytest.mark.parametrize("entry", ["CLEVR_v1.0/../../evil.txt", "/tmp/evil.txt", "../evil.txt"])
def test_entries_outside_the_target_are_refused(tmp_path, server, release, monkeypatch, entry):
    folder, _ = release
    evil = zip_tree(folder, tmp_path / "evil.zip", extra={entry: b"pwned"}).read_bytes()
    (tmp_path / "evil.zip").unlink()
    monkeypatch.setitem(dl.SOURCES, "clevr", _source(None))
    server.routes["/e.zip"] = evil
    out = tmp_path / "out"
    with pytest.raises(dl.UnsafeArchiveError, match=r"refused \(nothing was extracted, and the archive was removed\)"):
        dl.download("clevr", out, url=server.url("/e.zip"), progress=False)
    assert not list(tmp_path.rglob("evil.txt"))
    assert sorted(p.name for p in out.iterdir()) == []              # no tree, no staging, no archive


def _link(name: str, target: str) -> tuple[zipfile.ZipInfo, str]:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target


@pytest.mark.parametrize("links", [
    [("CLEVR_v1.0/images/escape", "../../../etc")],
    # each link looks harmless alone; together x/y points above the target, and a file under it would land there
    [("CLEVR_v1.0/x", "."), ("CLEVR_v1.0/x/y", ".."), ("CLEVR_v1.0/x/y/y/evil.txt", None)],
])
def test_links_are_refused(tmp_path, server, release, monkeypatch, links):
    folder, _ = release
    archive = tmp_path / "link.zip"
    zip_tree(folder, archive)
    with zipfile.ZipFile(archive, "a") as zf:
        for name, target in links:
            if target is None:
                zf.writestr(name, b"pwned")
            else:
                zf.writestr(*_link(name, target))
    monkeypatch.setitem(dl.SOURCES, "clevr", _source(None))
    server.routes["/l.zip"] = archive.read_bytes()
    with pytest.raises(dl.UnsafeArchiveError, match=r"is a link \(to '.*'\).*refused \(nothing was extracted, and the archive was removed\)"):
        dl.download("clevr", tmp_path / "out", url=server.url("/l.zip"), progress=False)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == []
    assert not list(tmp_path.rglob("evil.txt"))


def test_a_partial_file_longer_than_the_archive_starts_again(tmp_path, server, release, fake_sources):
    folder, data = release
    (tmp_path / "CLEVR_v1.0.zip.part").write_bytes(data + b"junk from another file")
    server.routes["/a.zip"] = data
    summary = dl.download("clevr", tmp_path, url=server.url("/a.zip"), progress=False)     # server answers 416
    assert server.requests("/a.zip") == [f"bytes={len(data) + 22}-", None]
    assert summary["downloaded_bytes"] == len(data)
    assert _tree_bytes(tmp_path / "CLEVR_v1.0") == _tree_bytes(folder)


def test_a_206_from_the_wrong_offset_is_not_spliced_in(tmp_path, server, release, fake_sources):
    folder, data = release
    cut = len(data) // 2
    server.routes["/a.zip"] = data
    server.behave["/a.zip"] = {"cut": [cut], "range_from_zero": True}
    dl.download("clevr", tmp_path, url=server.url("/a.zip"), keep_archive=True, progress=False)
    assert (tmp_path / "CLEVR_v1.0.zip").read_bytes() == data
    assert server.requests("/a.zip") == [None, f"bytes={cut}-", None]      # refused, then afresh


def test_a_server_that_ignores_range_and_keeps_cutting_off_gives_up(tmp_path, server, release, fake_sources):
    _, data = release
    server.routes["/a.zip"] = data
    server.behave["/a.zip"] = {"ignore_range": True, "cut_always": len(data) // 2}
    with pytest.raises(dl.DownloadError, match="keeps breaking off"):
        dl.download("clevr", tmp_path, url=server.url("/a.zip"), retries=2, progress=False)
    assert len(server.requests("/a.zip")) == 3          # the first try, then 2 retries that restart from zero (no progress)


def test_redirects_do_not_use_up_the_retries(tmp_path, server, release, fake_sources):
    folder, data = release
    server.routes["/real.zip"] = data
    server.behave["/moved.zip"] = {"redirect": "/real.zip"}
    dl.download("clevr", tmp_path, url=server.url("/moved.zip"), retries=0, progress=False)
    assert _tree_bytes(tmp_path / "CLEVR_v1.0") == _tree_bytes(folder)


@pytest.mark.parametrize("how, message", [
    ({"status": 404}, r"^http://127\.0\.0\.1:\d+/x\.zip: HTTP 404"),
    ({"status": 500}, r"^http://127\.0\.0\.1:\d+/x\.zip: the server kept failing .*2 tries"),
    ({"delay": 1.5}, r"^http://127\.0\.0\.1:\d+/x\.zip: no answer within 0\.3 s \(2 tries\)$"),
])
def test_server_failures_give_one_line_naming_the_address(tmp_path, server, fake_sources, how, message):
    server.routes["/x.zip"] = b"never sent"
    server.behave["/x.zip"] = how
    with pytest.raises(dl.DownloadError, match=message) as e:
        dl.download("clevr", tmp_path, url=server.url("/x.zip"), retries=1, timeout=0.3, progress=False)
    assert "\n" not in str(e.value)
    assert not list(tmp_path.glob("*.zip"))


def test_the_cli_reports_a_failure_in_one_line(tmp_path, server, fake_sources, capsys):
    code = main(["download", "clevr", "--to", str(tmp_path), "--url", server.url("/missing.zip"),
                 "--retries", "0", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert err.startswith("error: ") and server.url("/missing.zip") in err and "404" in err


def test_the_cli_downloads(tmp_path, server, release, fake_sources, capsys):
    folder, data = release
    server.routes["/CLEVR_v1.0.zip"] = data
    code = main(["download", "clevr", "--to", str(tmp_path), "--url", server.url("/CLEVR_v1.0.zip"), "--quiet"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["path"] == str(tmp_path / "CLEVR_v1.0") and summary["downloaded_bytes"] == len(data)
    assert _tree_bytes(tmp_path / "CLEVR_v1.0") == _tree_bytes(folder)


def test_free_space_is_checked_before_a_byte_is_fetched(tmp_path, server, release, fake_sources, monkeypatch):
    _, data = release
    server.routes["/a.zip"] = data
    import shutil
    real = shutil.disk_usage
    monkeypatch.setattr(dl.shutil, "disk_usage",
                        lambda p: real(p)._replace(free=len(data)))      # not enough for both
    with pytest.raises(OSError, match=r"GB free, and downloading and extracting clevr needs about"):
        dl.download("clevr", tmp_path, url=server.url("/a.zip"), progress=False)
    assert not list(tmp_path.glob("*.part")) and not list(tmp_path.glob("*.zip"))


def test_an_incomplete_folder_in_the_way_is_not_overwritten(tmp_path, server, release, fake_sources):
    (tmp_path / "CLEVR_v1.0" / "images").mkdir(parents=True)
    with pytest.raises(FileExistsError, match=r"not a complete CLEVR_v1.0 \(no questions/CLEVR_train_questions.json"):
        dl.download("clevr", tmp_path, url=server.url("/a.zip"), progress=False)
    assert server.log == []


def test_an_archive_without_the_dataset_is_refused(tmp_path, server, release, fake_sources, monkeypatch):
    folder, _ = release
    wrong = fake_release(tmp_path / "h", "humans", images=2)
    server.routes["/w.zip"] = zip_tree(wrong, tmp_path / "w.zip").read_bytes()
    monkeypatch.setitem(dl.SOURCES, "clevr", _source(None))
    with pytest.raises(dl.CorruptArchiveError, match=r"does not hold a complete CLEVR_v1.0"):
        dl.download("clevr", tmp_path / "out", url=server.url("/w.zip"), progress=False)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("source", ["cogent", "humans"])
def test_cogent_and_humans_in_their_real_layouts(tmp_path, server, monkeypatch, source):
    folder = fake_release(tmp_path / "src", source, images=2)
    data = zip_tree(folder, tmp_path / "r.zip").read_bytes()
    monkeypatch.setitem(dl.SOURCES, source, dataclasses.replace(dl.SOURCES[source], md5=hashlib.md5(data).hexdigest()))
    server.routes["/r.zip"] = data
    summary = dl.download(source, tmp_path / "out", url=server.url("/r.zip"), progress=False)
    target = Path(summary["path"])
    assert target.name == dl.SOURCES[source].folder
    assert _tree_bytes(target) == _tree_bytes(folder)
    assert dl.is_complete(source, target)


def test_downloaded_humans_beside_clevr_is_preprocessed(tmp_path):
    """data/CLEVR-Humans/ (as `download humans` leaves it) next to data/CLEVR_v1.0/ is found by preprocess."""
    from filmlib.data.preprocess import humans_questions_path, preprocess_root
    clevr_root = fake_release(tmp_path / "data", "clevr", images=3)
    humans = fake_release(tmp_path / "data", "humans", images=3)
    assert humans_questions_path(clevr_root, "train") == humans / "CLEVR-Humans-train.json"
    report = preprocess_root(clevr_root, tmp_path / "cache", splits=("train", "val"), image_size=(16, 16),
                             humans_min_count=1)["report"]
    assert {"vocab_humans.json", "train_humans_questions.h5", "val_humans_questions.h5"} <= set(report)


def test_ctrl_c_during_extraction_leaves_the_archive_and_no_half_tree(tmp_path, server, release, fake_sources, monkeypatch):
    folder, data = release
    server.routes["/a.zip"] = data
    real_open = zipfile.ZipFile.open
    calls = {"n": 0}

    def interrupted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:                        # a few entries in
            raise KeyboardInterrupt
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", interrupted)
    with pytest.raises(KeyboardInterrupt):
        dl.download("clevr", tmp_path, url=server.url("/a.zip"), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["CLEVR_v1.0.zip"]     # no staging, no tree, no lock
    monkeypatch.setattr(zipfile.ZipFile, "open", real_open)
    requests = len(server.log)
    summary = dl.download("clevr", tmp_path, url=server.url("/a.zip"), progress=False)
    assert len(server.log) == requests and summary["downloaded_bytes"] == 0      # extracted from the archive kept
    assert _tree_bytes(tmp_path / "CLEVR_v1.0") == _tree_bytes(folder)


def test_a_second_download_into_the_same_folder_at_once_is_refused(tmp_path, server, release, fake_sources):
    import threading
    import time
    from filmlib.io import FolderBusyError
    folder, data = release
    server.routes["/a.zip"] = data
    server.behave["/a.zip"] = {"delay": 1.5}            # the first transfer takes a while
    first = {}
    t = threading.Thread(target=lambda: first.update(dl.download("clevr", tmp_path, url=server.url("/a.zip"),
                                                                 progress=False)))
    t.start()
    time.sleep(0.5)
    with pytest.raises(FolderBusyError, match=r"CLEVR_v1.0.zip is being written by another process"):
        dl.download("clevr", tmp_path, url=server.url("/a.zip"), progress=False)
    t.join(timeout=60)
    assert first["status"] == "downloaded"
    assert _tree_bytes(tmp_path / "CLEVR_v1.0") == _tree_bytes(folder)
