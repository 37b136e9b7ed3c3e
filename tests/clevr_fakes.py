"""Fakes of the real datasets for tests that must not touch the internet.

``fake_release`` builds, from SynthCLEVR, a tree in the exact layout of a released archive
(CLEVR_v1.0, CLEVR_CoGenT_v1.0, CLEVR-Humans: the same folder and file names, test questions
without answers or programs, no test scenes, the README/LICENSE/COPYRIGHT files), and
``zip_tree`` zips it the way the release is zipped (one top folder). ``ArchiveServer`` is a
real HTTP server on 127.0.0.1, in a thread, that serves such archives with ``Range`` support
and can misbehave on demand (cut a transfer short, answer 404/500, stall, ignore ``Range``)."""
from __future__ import annotations

import http.server
import json
import shutil
import threading
import time
import zipfile
from pathlib import Path

from filmlib.synth.generate import SplitSpec, generate_split, humans_path

_LAYOUTS = {
    # folder, splits with images and questions, splits with scenes (CLEVR withholds test scenes)
    "clevr": ("CLEVR_v1.0", [("train", None), ("val", None), ("test", None)], {"train", "val"}),
    "cogent": ("CLEVR_CoGenT_v1.0", [("train", "A"), ("val", "A"), ("val", "B"), ("test", "A"), ("test", "B")],
               {"trainA", "valA", "valB"}),
}


def fake_release(out: Path, source: str = "clevr", *, images: int = 3, questions: int = 2,
                 width: int = 48, height: int = 32, seed: int = 0) -> Path:
    """A SynthCLEVR tree laid out exactly as the released ``source`` archive; returns its folder."""
    out = Path(out)
    if source == "humans":
        folder = out / "CLEVR-Humans"
        work = out / ".humans-work"
        for split in ("train", "val", "test"):
            generate_split(work, SplitSpec(split=split, num_images=images, questions_per_image=1, width=width,
                                           height=height, seed=seed, humans_per_image=questions), progress=False)
            folder.mkdir(parents=True, exist_ok=True)
            shutil.move(humans_path(work, split), folder / f"CLEVR-Humans-{split}.json")
        shutil.rmtree(work)
        return folder
    name, splits, with_scenes = _LAYOUTS[source]
    folder = out / name
    for split, cogent in splits:
        spec = SplitSpec(split=split, num_images=images, questions_per_image=questions, width=width,
                         height=height, seed=seed, cogent=cogent)
        generate_split(folder, spec, progress=False)
        if spec.name not in with_scenes:
            (folder / "scenes" / f"CLEVR_{spec.name}_scenes.json").unlink()
        if split == "test":          # the release omits answers and programs from test questions
            path = folder / "questions" / f"CLEVR_{spec.name}_questions.json"
            data = json.loads(path.read_text())
            for q in data["questions"]:
                for key in ("answer", "program", "question_family_index"):
                    q.pop(key, None)
            path.write_text(json.dumps(data))
    for extra in ("README.txt", "LICENSE.txt", "COPYRIGHT.txt"):
        (folder / extra).write_text(f"{extra} of a SynthCLEVR fake of {name}, made by a test\n")
    return folder


def zip_tree(folder: Path, archive: Path, *, extra: dict | None = None) -> Path:
    """Zip ``folder`` under its own name, as the releases are (``CLEVR_v1.0/images/...``);
    ``extra`` adds entries verbatim (name -> bytes, or a ZipInfo -> bytes)."""
    folder = Path(folder)
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(folder.name + "/", b"")
        for path in sorted(folder.rglob("*")):
            rel = path.relative_to(folder.parent).as_posix()
            if path.is_dir():
                zf.writestr(rel + "/", b"")
            else:
                zf.write(path, rel)
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return Path(archive)


class ArchiveServer:
    """A real HTTP server on 127.0.0.1 serving ``routes`` (path -> bytes) with Range support.

    ``behave[path]`` sets how a path misbehaves: ``cut`` (a list: the n-th request sends only
    that many body bytes, then drops the connection; None sends all; ``cut_always``: every
    request), ``status`` (answer this HTTP status), ``delay`` (seconds before answering),
    ``ignore_range`` (always 200, whole file), ``range_from_zero`` (206 with the whole file,
    whatever was asked), ``redirect`` (302 to that path). ``log`` records (path, Range header) of every request."""

    def __init__(self):
        self.routes: dict[str, bytes] = {}
        self.behave: dict[str, dict] = {}
        self.log: list[tuple[str, str | None]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):       # quiet
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                server.log.append((self.path, rng))
                how = server.behave.get(self.path, {})
                if how.get("delay"):
                    time.sleep(how["delay"])
                if how.get("redirect"):
                    self.send_response(302)
                    self.send_header("Location", how["redirect"])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = how.get("status")
                if status or self.path not in server.routes:
                    status = status or 404
                    body = f"{status}\n".encode()
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(body)))
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(body)
                    self.close_connection = True
                    return
                data = server.routes[self.path]
                start = 0
                if rng and how.get("range_from_zero"):        # a broken server: 206, but the whole file
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes 0-{len(data) - 1}/{len(data)}")
                elif rng and not how.get("ignore_range"):
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Content-Type", "application/zip")
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                cuts = how.get("cut") or []
                n = sum(1 for p, _ in server.log if p == self.path) - 1
                cut = cuts[n] if n < len(cuts) else how.get("cut_always")
                if cut is not None:
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)     # the link drops mid-transfer
                    return
                self.wfile.write(body)

        class Quiet(http.server.ThreadingHTTPServer):
            def handle_error(self, request, client_address):   # a client that hung up: expected
                pass

        self.httpd = Quiet(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def requests(self, path: str) -> list[str | None]:
        return [r for p, r in self.log if p == path]

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
