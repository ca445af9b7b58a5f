"""scripts/device-check.sh is run on lent GPU machines only now and then: its dry run keeps it working."""

import os
import subprocess

from conftest import ROOT


def test_device_check_dry_run(tmp_path):
    env = {**os.environ, "DEVICE_CHECK_SIMULATE": "examples/scenarios/h200-mig.toml", "DEVICE_CHECK_SECONDS": "3",
           "DEVICE_CHECK_STORE": str(tmp_path / "store"), "PYTHON": __import__("sys").executable}
    r = subprocess.run(["bash", "scripts/device-check.sh", str(tmp_path / "out")], cwd=str(ROOT), env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    files = sorted(os.listdir(tmp_path / "out"))
    assert len(files) <= 8 and all(os.path.isfile(tmp_path / "out" / f) for f in files)  # what the device tool returns
    summary = (tmp_path / "out" / "summary.txt").read_text()
    assert "rows 18, devices 6" in summary and "sm_active_pct" in summary and "gpu-audit collect CPU" in summary
    assert "MIG 3g.71gb" in (tmp_path / "out" / "doctor.txt").read_text()
