"""The explorer in a real browser: JupyterLab started on 127.0.0.1 by the test, Debian's Chromium
driven by Playwright, notebook 08 opened, every cell run, a question typed into the explorer's
box, and its answer awaited on the page. The screenshot goes to
results/figures/08_explorer_browser.png (the README shows it).

Needs /usr/bin/chromium (`make browser-setup`, which `make test` runs, installs Debian's
package) and the Python package playwright (the dev extra)."""
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from process_helpers import stop_group

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("FILMLIB_CHROMIUM", "/usr/bin/chromium")
QUESTION = "How many spheres are there?"
# as root, Chromium needs --no-sandbox; the rest keeps it off the network this machine does not have
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    """JupyterLab serving a copy of notebook 08 (its outputs kept out of the repository)."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} not found: run `make browser-setup` (Debian's chromium package)")
    work = tmp_path / "lab"
    work.mkdir()
    subprocess.run([sys.executable, "-m", "papermill", "--prepare-only", "--log-level", "WARNING",
                    str(ROOT / "notebooks" / "08_explorer.ipynb"), str(work / "08_explorer.ipynb"),
                    "-p", "scale", "smoke", "-p", "results_dir", str(tmp_path / "results"),
                    "-p", "data_root", str(tmp_path / "no-data")], check=True)
    port, token = _free_port(), secrets.token_hex(16)
    settings = tmp_path / "lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false", "checkForUpdates": false}')
    # every cell stays in the page (no windowing), so the test can see each cell's prompt
    notebook_settings = tmp_path / "lab-settings" / "@jupyterlab" / "notebook-extension"
    notebook_settings.mkdir(parents=True)
    (notebook_settings / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "lab-settings")}
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}",
           "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(tmp_path / "lab.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"JupyterLab exited: {(tmp_path / 'lab.log').read_text()[-2000:]}")
                time.sleep(0.5)
        else:
            pytest.fail(f"JupyterLab did not answer on {url}: {(tmp_path / 'lab.log').read_text()[-2000:]}")
        yield url, token, tmp_path
    finally:
        stop_group(proc)
        log.close()


def test_the_explorer_answers_a_typed_question_in_a_browser(lab):
    from playwright.sync_api import expect, sync_playwright
    url, token, tmp = lab
    shot = ROOT / "results" / "figures" / "08_explorer_browser.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}/lab/tree/08_explorer.ipynb?token={token}")
            page.locator(".jp-NotebookPanel").first.wait_for(timeout=90_000)
            expect(page.locator(".jp-StatusBar-Widget", has_text="Idle").first).to_be_visible(timeout=120_000)
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
            box = page.get_by_placeholder("type a question and press Enter")
            box.wait_for(timeout=180_000)                                # the explorer's widgets are up
            expect(page.locator(".filmlib-answer").first).not_to_be_empty(timeout=120_000)
            # the cells below the explorer ask their own questions through it (and set the box):
            # type only once Run All has finished, or the two race for the box
            expect(page.locator(".jp-InputPrompt", has_text="*")).to_have_count(0, timeout=300_000)
            expect(page.locator(".jp-CodeCell .jp-InputPrompt").last).to_have_text(re.compile(r"\[\d+\]"))
            expect(page.locator(".jp-StatusBar-Widget", has_text="Idle").first).to_be_visible(timeout=120_000)
            box.fill(QUESTION)
            expect(box).to_have_value(QUESTION)
            box.press("Enter")
            status = page.locator(".filmlib-question").first
            expect(status).to_have_text(QUESTION, timeout=120_000)       # the kernel answered this question
            answer = page.locator(".filmlib-answer").first.inner_text()
            assert answer.strip() in {str(i) for i in range(11)}, answer  # a count question gets a number
            cell = page.locator(".jp-Cell", has=page.locator(".filmlib-question")).first
            cell.scroll_into_view_if_needed()
            page.wait_for_timeout(1000)                                   # the redrawn figure settles
            cell.screenshot(path=str(tmp / "shot.png"))
        finally:
            browser.close()
    shot.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(tmp / "shot.png", shot)
