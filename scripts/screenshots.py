"""Screenshots of the Dagster UI's key pages, in headless Chromium, for the README.

Starts ``dagster-webserver`` on the instance at ``DAGSTER_HOME`` (the repo root after
``make demo``), waits until it answers, then drives headless Chromium over the DevTools
protocol: each page is loaded, given time until its data has rendered, scrolled to
what it is about, and saved as a PNG under ``docs/screenshots/``. Rerun it whenever
the UI changes:

    apt-get install -y chromium          # Debian's package; once
    export DAGSTER_HOME=$PWD
    .venv/bin/python scripts/screenshots.py [--pages catalog,leaderboard] [--port 3333]

``--url`` uses a webserver that is already running (``dagster dev``) instead. The
shipped dagster.yaml turns the community dialog off (``nux: enabled: false``); another
instance is told it was seen (what its Skip button does), so it does not cover the pages.

The ``report`` page is not the UI's: it is the HTML report the index writes
(``<data dir>/models/_report.html``, the data dir from ``--data-dir`` or
``SCREENER_SSL_DATA_DIR``), opened from its file.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCATION = "screener_ssl.definitions"


@dataclass(frozen=True)
class Page:
    path: str  # under the webserver; {expanded} = every asset group, expanded
    ready: str  # text the page shows once its data has arrived
    what: str
    scroll_to: str | None = None  # text to scroll to the top of the view
    zoom_on: str | None = None  # a graph: zoom in (mouse wheel) around the node with this text ...
    zoom_steps: int = 0  # ... by this many wheel steps, until its cards show their details


REPORT = "{report}"  # a page's path: the index's HTML report, opened from its file

PAGES: dict[str, Page] = {
    "leaderboard": Page(
        "/assets/experiment_index?view=events", "leaderboard",
        "experiment_index's latest materialization: the leaderboard first (objective, kind, current, test AUPRC "
        "with CI, verdicts), unscrolled",
    ),
    "report": Page(REPORT, "Leaderboard", "the HTML report: the board, each row's per-pattern table and plots"),
    "index_checks": Page(
        "/assets/experiment_index?view=checks&checkDetail=index_current", "out_of_date_rows",
        "experiment_index's index_current check: the board with each row's current flag, kept up to date by the sensor",
    ),
    "catalog": Page("/assets", "windowed_dataset", "the catalog: every asset, its kinds, status and partition counts"),
    "asset_graph": Page("/asset-groups?expanded={expanded}", "experiment_index", "the asset graph, groups expanded"),
    "probe_events": Page(
        "/assets/probe_metrics?view=events", "reachable_patterns",
        "a probe partition's materialization: AUPRC, the reachable-pattern count beside the alert figures, plot previews",
        scroll_to="reachable_patterns",
    ),
    "partitions": Page("/assets/probe_metrics?view=partitions", "Partitions Selected", "probe_metrics: the sweep's partitions"),
    "probe_checks": Page(
        "/assets/probe_metrics?view=checks&checkDetail=partitions_current", "materialized_partitions", "probe_metrics' checks: partitions_current names stale partitions",
    ),
    "probe_lineage": Page(
        "/assets/probe_metrics?view=lineage&lineageScope=upstream&lineageDepth=1", "pretrained_encoder",
        "probe_metrics and its upstream, zoomed in: each card's check status, partitions and sync state",
        zoom_on="pretrained_encoder", zoom_steps=2,
    ),
    "runs": Page("/runs", "sweep_partition_job", "the Runs page: named jobs with the sweep tags"),
}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", default=",".join(PAGES), help=f"comma-separated, of: {', '.join(PAGES)}")
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    parser.add_argument("--suffix", default="", help="appended to each file name, e.g. _stale")
    parser.add_argument("--port", type=int, default=3333)
    parser.add_argument("--url", default=None, help="a running webserver to use instead of starting one")
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds a page may take to show its data")
    parser.add_argument("--settle", type=float, default=4.0, help="seconds more for it to finish rendering")
    parser.add_argument("--chromium", default=None, help="the browser binary (default: chromium on PATH)")
    parser.add_argument("--data-dir", default=os.environ.get("SCREENER_SSL_DATA_DIR", str(ROOT / "data")),
                        help="the data root whose models/_report.html the report page opens")
    args = parser.parse_args(argv)
    unknown = [p for p in args.pages.split(",") if p not in PAGES]
    if unknown:
        parser.error(f"unknown page(s) {unknown}; choose from {list(PAGES)}")
    return args


def _browser_binary(explicit: str | None) -> str:
    for name in [explicit] if explicit else ["chromium", "chromium-browser", "google-chrome"]:
        found = shutil.which(name) if name else None
        if found:
            return found
    sys.exit("no Chromium found: install Debian's package (apt-get install -y chromium) or pass --chromium")


def _graphql(url: str, query: str) -> dict:
    request = urllib.request.Request(
        f"{url}/graphql", data=json.dumps({"query": query}).encode(), headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.load(response)
    if answer.get("errors"):
        sys.exit(f"GraphQL error from {url}: {answer['errors']}")
    return answer["data"]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/server_info", timeout=5):
            return True
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _wait_for_server(url: str, server: subprocess.Popen | None, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server is not None and server.poll() is not None:
            sys.exit(f"dagster-webserver exited with {server.returncode} before answering at {url}")
        if _answers(url):
            return
        time.sleep(1.0)
    sys.exit(f"no answer from {url}/server_info within {timeout:.0f} s")


class Browser:
    """Headless Chromium with one page, driven over the DevTools protocol."""

    def __init__(self, binary: str, width: int, height: int) -> None:
        from websockets.sync.client import connect

        self._profile = tempfile.TemporaryDirectory(prefix="screenshots_profile_", ignore_cleanup_errors=True)
        self._process = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
             f"--user-data-dir={self._profile.name}", "--remote-debugging-port=0",
             f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        port_file = Path(self._profile.name) / "DevToolsActivePort"  # Chromium writes its port here
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.monotonic() > deadline or self._process.poll() is not None:
                self.close()
                sys.exit(f"{binary} did not open its DevTools port")
            time.sleep(0.2)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
            page = next(t for t in json.load(response) if t["type"] == "page")
        self._stack = contextlib.ExitStack()
        self._socket = self._stack.enter_context(connect(page["webSocketDebuggerUrl"], max_size=None))
        self._id = 0
        self.call("Page.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def call(self, method: str, **params) -> dict:
        self._id += 1
        self._socket.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads(self._socket.recv())
            if message.get("id") == self._id:  # events in between are not needed
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return None if "exceptionDetails" in result else result["result"].get("value")

    def open(self, url: str, ready: str, timeout: float, settle: float) -> bool:
        """Load ``url``; True once its text shows ``ready``, ``settle`` seconds later (charts, layout)."""
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + timeout
        probe = f"!!(document.body && document.body.innerText.includes({json.dumps(ready)}))"
        while time.monotonic() < deadline:
            if self.evaluate(probe):
                time.sleep(settle)
                return True
            time.sleep(0.5)
        return False

    def scroll_to(self, text: str) -> None:
        self.evaluate(
            "(() => { const hit = document.evaluate("
            f"'//*[normalize-space(text())={json.dumps(text)}]', document, null, "
            "XPathResult.FIRST_ORDERED_NODE_TYPE, null).singleNodeValue;"
            " if (hit) hit.scrollIntoView({block: 'start'}); })()"
        )
        time.sleep(1.0)

    def zoom(self, text: str, steps: int) -> None:
        at = self.evaluate(
            "(() => { const hit = document.evaluate("
            f"'//*[normalize-space(text())={json.dumps(text)}]', document, null, "
            "XPathResult.FIRST_ORDERED_NODE_TYPE, null).singleNodeValue;"
            " if (!hit) return null; const r = hit.getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        if not at:
            return
        for _ in range(steps):
            self.call("Input.dispatchMouseEvent", type="mouseWheel", x=at[0], y=at[1], deltaX=0, deltaY=-100)
            time.sleep(0.3)
        time.sleep(2.0)

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))

    def close(self) -> None:
        if getattr(self, "_stack", None) is not None:
            self._stack.close()
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
        self._profile.cleanup()


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    binary = _browser_binary(args.chromium)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    server = None
    url = args.url.rstrip("/") if args.url else f"http://127.0.0.1:{args.port}"
    if args.url is None:
        if "DAGSTER_HOME" not in os.environ:
            sys.exit("DAGSTER_HOME is not set: export DAGSTER_HOME=$PWD (the instance make demo filled)")
        if _answers(url):
            sys.exit(f"something already answers at {url}: pass --url {url} to use it, or another --port")
        webserver = Path(sys.executable).with_name("dagster-webserver")
        server = subprocess.Popen(
            [str(webserver), "-w", str(ROOT / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(args.port)],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
    browser = None
    try:
        print(f"waiting for the webserver at {url}", flush=True)
        _wait_for_server(url, server)
        _graphql(url, "mutation { setNuxSeen }")
        groups = sorted({n["groupName"] for n in _graphql(url, "{ assetNodes { groupName } }")["assetNodes"]})
        expanded = ",".join(f"global@global:{g}" for g in groups)
        browser = Browser(binary, args.width, args.height)
        for name in args.pages.split(","):
            page = PAGES[name]
            target = out / f"{name}{args.suffix}.png"
            started = time.monotonic()
            if page.path == REPORT:
                report = Path(args.data_dir).resolve() / "models" / "_report.html"
                if not report.is_file():
                    sys.exit(f"no report at {report}: materialize experiment_index first (make demo)")
                address = report.as_uri()
            else:
                address = url + page.path.format(expanded=expanded)
            if not browser.open(address, page.ready, args.timeout, args.settle):
                shown = (browser.evaluate("document.body ? document.body.innerText : ''") or "")[-600:]
                sys.exit(f"{address}: {page.ready!r} did not appear within {args.timeout:.0f} s; "
                         f"the page ends with:\n{shown}")
            if page.scroll_to:
                browser.scroll_to(page.scroll_to)
            if page.zoom_on:
                browser.zoom(page.zoom_on, page.zoom_steps)
            browser.screenshot(target)
            shown = target.relative_to(ROOT) if target.is_relative_to(ROOT) else target
            print(f"{shown}: {page.what} ({target.stat().st_size // 1024} KiB, {time.monotonic() - started:.0f} s)",
                  flush=True)
    finally:
        try:
            if browser is not None:
                browser.close()
        finally:
            if server is not None:
                server.terminate()
                try:
                    server.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    server.kill()


if __name__ == "__main__":
    main()
