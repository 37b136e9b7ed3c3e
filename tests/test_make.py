"""The Makefile's front-door behaviour: unknown parameters are refused before anything runs, and
`make lab` serves the repository (notebooks/ and results/) on 127.0.0.1, as root too."""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from process_helpers import stop_group

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(sys.prefix)     # the environment running the tests (make's own .venv under `make test`)


def make(*args, **kw):
    # -o: never (re)build the venv from here; the tests already run inside one
    return subprocess.run(["make", "-C", str(ROOT), "-o", f"{VENV}/.installed", f"VENV={VENV}", *args],
                          capture_output=True, text=True, **kw)


@pytest.mark.parametrize("args, culprit", [(["SCALE=huge"], "SCALE=huge"), (["SOURCE=nowhere"], "SOURCE=nowhere"),
                                           (["DEVICE=tpu"], "DEVICE=tpu")])
def test_reproduce_refuses_unknown_parameters_before_anything_runs(args, culprit):
    before = sorted(p.name for p in (ROOT / "results").iterdir())
    r = make("reproduce", *args, timeout=60)
    assert r.returncode != 0 and culprit in r.stderr and "is not one of" in r.stderr
    assert "papermill" not in r.stdout                      # nothing was started...
    assert sorted(p.name for p in (ROOT / "results").iterdir()) == before   # ... or written


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def test_lab_serves_notebooks_and_results_on_localhost():
    port, token = _free_port(), "filmlib-test"
    proc = subprocess.Popen(["make", "-C", str(ROOT), "-o", f"{VENV}/.installed", f"VENV={VENV}", "lab",
                             f"LAB_PORT={port}", f"LAB_ARGS=--no-browser --IdentityProvider.token={token}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline, listing = time.monotonic() + 90, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                listing = {d: _get(f"http://127.0.0.1:{port}/api/contents/{d}?token={token}") for d in ("notebooks", "results")}
                break
            except OSError:
                time.sleep(0.5)
        assert listing is not None, f"JupyterLab did not answer (exit {proc.poll()}):\n{proc.stdout.read() if proc.poll() is not None else ''}"
        names = {d: {item["name"] for item in listing[d]["content"]} for d in listing}
        assert {p.name for p in (ROOT / "notebooks").glob("0*.ipynb")} <= names["notebooks"]
        assert "README.md" in names["results"] and "figures" in names["results"]
    finally:
        stop_group(proc)


#: The notebooks whose own code reads a release's layout (00: CLEVR itself, 02-03: its caches, 06:
#: CLEVR-Humans, 07: CLEVR-CoGenT); 01, 04, 05 and 08 read only what these write, and nbval runs
#: every notebook anyway.
RELEASE_NOTEBOOKS = ("00_data", "02_train_film", "03_baselines", "06_clevr_humans", "07_cogent")


def test_reproduce_runs_the_notebooks_on_clevr_trees_in_the_release_layout(tmp_path):
    """`make reproduce SCALE=smoke SOURCE=clevr` end to end on fakes of CLEVR_v1.0, CLEVR-Humans and
    CLEVR_CoGenT_v1.0 (built from SynthCLEVR in the releases' exact layouts: their names, keys, test
    questions without answers), with its results kept apart from the repository's."""
    sys.path.insert(0, str(Path(__file__).parent))
    from clevr_fakes import fake_release
    folder = fake_release(tmp_path / "data", "clevr", images=48, questions=5, width=120, height=80)
    fake_release(tmp_path / "data", "humans", images=48, questions=2, width=120, height=80)   # beside it
    fake_release(tmp_path / "data", "cogent", images=48, questions=5, width=120, height=80)
    results = tmp_path / "results"
    before = sorted(p.name for p in (ROOT / "results").iterdir())
    notebooks = sorted(RELEASE_NOTEBOOKS)
    r = make("reproduce", "SCALE=smoke", "SOURCE=clevr", f"DATA_ROOT={folder}", f"RESULTS={results}",
             "WORKERS=1", "DEVICE=cpu", "NOTEBOOKS=" + " ".join(f"notebooks/{nb}.ipynb" for nb in notebooks),
             timeout=1800)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    assert set(notebooks) <= {p.stem for p in (ROOT / "notebooks").glob("0*.ipynb")}
    assert sorted(p.stem.removesuffix("_smoke") for p in results.glob("0*_smoke.ipynb")) == notebooks
    times = (results / "reproduce_times_smoke.md").read_text()
    assert all(f"| {nb}.ipynb |" in times for nb in notebooks)
    film = json.loads((results / "film_smoke" / "metrics.json").read_text())
    assert 0 <= film["val_accuracy"] <= 1
    val_questions = json.loads((folder / "questions" / "CLEVR_val_questions.json").read_text())["questions"]
    predictions = (results / "film_smoke" / "predictions_val.jsonl").read_text().splitlines()
    assert len(predictions) == len(val_questions) > 0                         # scored on the fake's val split
    assert (results / "table1_smoke.md").exists() and (results / "03_image_reliance_smoke.json").exists()
    assert "CLEVR-Humans" in (results / "table4_smoke.md").read_text()          # notebooks 06 and 07 read the real layouts
    assert "CLEVR-CoGenT" in (results / "cogent_smoke.md").read_text()
    # it read the tree it was given (the cache sits beside it) and wrote nothing into the repository's results
    assert (tmp_path / "data" / "cache").is_dir()
    assert sorted(p.name for p in (ROOT / "results").iterdir()) == before
