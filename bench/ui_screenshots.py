"""Screenshots of the MLflow UI as a user browsing a search sees it (not part of the test suite).

    .venv/bin/python bench/ui_screenshots.py --tracking-uri sqlite:///mlflow.db --out screenshots

Starts ``mlflow ui`` on the store (on 127.0.0.1, a free port; an ``http(s)://`` URI is used as
it is), finds the latest search's parent run, its champion child and the registered champion,
and saves full-window PNGs with headless Chromium (Debian's ``chromium`` package, or
``$CHROMIUM``) of: the search's trials in the runs table, best first (the address ``aitexvae
tune`` prints), the parent run, the champion's run, its logged
model and the registered model version. The UI is a single-page app: Chromium is given a
virtual-time budget to finish rendering before each shot. Ends with one line
``ratio screenshots-taken: N/M`` (M: 5 with a champion, 2 without).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from mlflow import MlflowClient

from tracking import settings as names
from vae import keys

WINDOW = "1600,1100"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def mlflow_ui(tracking_uri: str, log: Path):
    """The UI's base URL: ``tracking_uri`` itself when it is a server, else a started ``mlflow ui``."""
    if tracking_uri.startswith(("http://", "https://")):
        yield tracking_uri.rstrip("/")
        return
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri,
               "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=5):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"mlflow ui did not start:\n{log.read_text()[-2000:]}") from None
                time.sleep(0.5)
        yield base
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=30)


def chromium() -> str:
    found = os.environ.get("CHROMIUM") or shutil.which("chromium") or \
        shutil.which("chromium-browser")
    if not found:
        raise SystemExit("no chromium on PATH (Debian: apt-get install chromium); or set "
                         "$CHROMIUM to the browser's path")
    return found


def screenshot(browser: str, url: str, path: Path, profile: Path, budget_ms: int) -> bool:
    command = [browser, "--headless=new", "--no-sandbox", "--disable-gpu",
               "--hide-scrollbars", f"--user-data-dir={profile}", f"--window-size={WINDOW}",
               f"--virtual-time-budget={budget_ms}", f"--screenshot={path}", url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    ok = done.returncode == 0 and path.is_file() and path.stat().st_size > 0
    print(f"{'ok  ' if ok else 'FAIL'} {path.name:<24} {url}")
    if not ok:
        print(done.stderr[-1500:], file=sys.stderr)
    return ok


def pages(client: MlflowClient, base: str) -> dict[str, str]:
    """File name -> UI address, for the latest search in the default experiment."""
    experiment = client.get_experiment_by_name(names.DEFAULT_EXPERIMENT)
    if experiment is None:
        raise SystemExit(f"no experiment {names.DEFAULT_EXPERIMENT!r} in the store: run "
                         "`aitexvae tune` first")
    eid = experiment.experiment_id
    try:
        version = client.get_model_version_by_alias(names.DEFAULT_MODEL_NAME,
                                                    names.CHAMPION_ALIAS)
    except Exception:  # noqa: BLE001 - no champion: the latest search's run pages still show
        version = None
    if version is not None:  # the champion's own search, which may not be the latest one
        parent = client.get_run(client.get_run(version.run_id).data.tags["mlflow.parentRunId"])
    else:
        (parent,) = client.search_runs([eid], f"tags.`{names.TAG_ROLE}` = 'search'",
                                       order_by=["attributes.start_time DESC"],
                                       max_results=1) or [None]
    if parent is None:
        raise SystemExit("no search parent run in the store: run `aitexvae tune` first")
    page = names.trials_page(eid, parent.data.tags[names.TAG_SEARCH], keys.OBJECTIVE)
    shots = {"1-runs-table.png": f"{base}/{page}",  # what `aitexvae tune` prints
             "2-parent-run.png": f"{base}/{names.run_page(eid, parent.info.run_id)}"}
    if version is None:
        return shots
    view = urllib.parse.urlencode(names.UI_VIEW)
    shots["3-champion-run.png"] = f"{base}/{names.run_page(eid, version.run_id)}"
    # The SQL registry does not hand model_id back on a version; its source names the model.
    model_id = version.model_id or (version.source or "").removeprefix("models:/")
    if model_id.startswith("m-"):
        shots["4-logged-model.png"] = f"{base}/#/experiments/{eid}/models/{model_id}?{view}"
    shots["5-model-version.png"] = (f"{base}/#/models/{names.DEFAULT_MODEL_NAME}/versions/"
                                    f"{version.version}?{view}")
    return shots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    parser.add_argument("--out", type=Path, default=Path("screenshots"))
    parser.add_argument("--budget-ms", type=int, default=20000,
                        help="virtual time Chromium gives each page to render")
    args = parser.parse_args()
    browser = chromium()
    args.out.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking_uri=args.tracking_uri, registry_uri=args.tracking_uri)
    with tempfile.TemporaryDirectory(prefix="aitexvae-ui-") as scratch, \
            mlflow_ui(args.tracking_uri, Path(scratch) / "ui.log") as base:
        shots = pages(client, base)
        taken = sum(screenshot(browser, url, args.out / name, Path(scratch) / "profile",
                               args.budget_ms) for name, url in shots.items())
    print(f"ratio screenshots-taken: {taken}/{len(shots)}")


if __name__ == "__main__":
    main()
