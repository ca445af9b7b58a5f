"""Make docs/report.png: the demo report's first screen, as a person sees it.

    python scripts/screenshot.py [OUTDIR]

Runs `gpu-audit demo` into OUTDIR (default /tmp/gpu-audit-demo), then headless Chromium (through
playwright, using the system's chromium) takes the picture. Needs chromium and playwright.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gpu_audit.demo import run_demo  # noqa: E402


def main() -> None:
    out = sys.argv[1] if len(sys.argv) > 1 else "/tmp/gpu-audit-demo"
    res = run_demo(out)
    from playwright.sync_api import sync_playwright

    exe = shutil.which("chromium") or shutil.which("google-chrome")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        page = b.new_page(viewport={"width": 1280, "height": 1500}, device_scale_factor=1)
        page.goto("file://" + str(Path(res.html).resolve()))
        page.wait_for_timeout(1000)
        page.screenshot(path=str(ROOT / "docs" / "report.png"))
        b.close()
    print(ROOT / "docs" / "report.png")


if __name__ == "__main__":
    main()
