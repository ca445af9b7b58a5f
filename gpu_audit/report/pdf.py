"""The PDF: the finished HTML printed by headless Chromium."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

from gpu_audit.errors import GpuAuditError

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


class BrowserMissing(GpuAuditError):
    pass


def find_browser(browser: str | None = None) -> str:
    if browser:
        path = shutil.which(browser) or (browser if os.path.isfile(browser) and os.access(browser, os.X_OK) else None)
        if not path:
            raise BrowserMissing(f"--browser {browser!r} is not an executable", hint="give the path of chromium or google-chrome")
        return path
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    raise BrowserMissing("no Chromium found to print the PDF (the HTML report was written)",
                         hint="install it (Debian/Ubuntu: apt-get install chromium) or give --browser PATH")


def html_to_pdf(html_path: str, pdf_path: str, browser: str | None = None, timeout_s: float = 120) -> None:
    exe = find_browser(browser)
    pdf_abs = os.path.abspath(pdf_path)
    tmp_pdf = os.path.join(os.path.dirname(pdf_abs), f".{os.path.basename(pdf_abs)}.tmp")
    with tempfile.TemporaryDirectory(prefix="gpu-audit-chromium-") as profile:
        cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}", "--no-pdf-header-footer",
               "--virtual-time-budget=10000", f"--print-to-pdf={tmp_pdf}", "file://" + os.path.abspath(html_path)]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise GpuAuditError(f"Chromium did not finish printing {pdf_path} within {timeout_s:.0f} s") from None
        except OSError as e:
            raise BrowserMissing(f"cannot run {exe}: {e.strerror}") from None
    if r.returncode != 0 or not os.path.exists(tmp_pdf) or os.path.getsize(tmp_pdf) == 0:
        if os.path.exists(tmp_pdf):
            os.unlink(tmp_pdf)
        last = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise GpuAuditError(f"Chromium failed to print {pdf_path} (exit {r.returncode}): {last}")
    os.replace(tmp_pdf, pdf_abs)
