"""report --settings: a TOML file of thresholds over the defaults, under the flags."""

from __future__ import annotations

import json
import sys

import pytest

from conftest import ASSETS, ROOT
from gpu_audit.settings import REPORT_DEFAULTS, load_settings, recommend_fields

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PRICING = str(ASSETS / "pricing.toml")
EXAMPLE = ROOT / "examples" / "gpu-audit.toml"


@pytest.fixture
def idle_store(tmp_path):
    """One L40S idle for 24 hours: the idle rule fires with the defaults."""
    from storefix import series, write_samples

    s = str(tmp_path / "idle")
    write_samples(s, series("h", "GPU-i", "NVIDIA L40S", 0, 600, [0] * 6 * 24))
    return s


def test_the_example_lists_every_setting_at_its_default():
    raw = tomllib.loads(EXAMPLE.read_text())
    assert raw["report"] == REPORT_DEFAULTS
    assert raw["recommend"] == recommend_fields()
    loaded = load_settings(str(EXAMPLE))
    assert loaded.recommend == load_settings(None).recommend and loaded.idle_below == 5.0


def _report(run_cli, store, tmp_path, *args):
    out = tmp_path / "f.json"
    code, _, err = run_cli("report", store, "--pricing", PRICING, "--json", str(out), *args)
    assert code == 0, err
    return json.loads(out.read_text())


def test_a_threshold_from_the_file_changes_what_a_rule_says(run_cli, idle_store, tmp_path):
    kinds = [r["kind"] for r in _report(run_cli, idle_store, tmp_path)["recommendations"]]
    assert kinds == ["idle"]
    cfg = tmp_path / "s.toml"
    cfg.write_text("[recommend]\nidle_min_stretch_hours = 48\n")  # a 24-hour window holds no 48-hour stretch
    f = _report(run_cli, idle_store, tmp_path, "--settings", str(cfg))
    assert f["recommendations"] == [] and f["fleet"]["potential_monthly_savings_usd"] == 0
    assert f["recommend_settings"]["idle_min_stretch_hours"] == 48 and f["inputs"]["settings"] == str(cfg)


def test_flags_win_over_the_file_and_the_file_over_the_defaults(run_cli, idle_store, tmp_path, monkeypatch):
    cfg = tmp_path / "s.toml"
    cfg.write_text('[report]\nidle_below = 50\nmemory_limit = "256MB"\n')
    assert _report(run_cli, idle_store, tmp_path)["idle_below_pct"] == 5
    assert _report(run_cli, idle_store, tmp_path, "--settings", str(cfg))["idle_below_pct"] == 50
    assert _report(run_cli, idle_store, tmp_path, "--settings", str(cfg), "--idle-below", "10")["idle_below_pct"] == 10
    monkeypatch.setenv("GPU_AUDIT_SETTINGS", str(cfg))
    assert _report(run_cli, idle_store, tmp_path)["idle_below_pct"] == 50


@pytest.mark.parametrize("text, line, message", [
    ("[recommend]\nidle_min_shar = 0.3\n", 2, "[recommend] has no setting 'idle_min_shar'"),
    ("[recommend]\n\nidle_min_share = 3\n", 3, "[recommend] idle_min_share: is a share: expected 0 to 1, got 3"),
    ("[recommend]\nidle_min_stretch_hours = 1.5\n", 2, "[recommend] idle_min_stretch_hours: expected a whole number, got 1.5"),
    ("[recommend]\nmin_coverage_pct = \"half\"\n", 2, "[recommend] min_coverage_pct: expected a number, got 'half'"),
    ("[report]\nidle_below = 101\n", 2, "[report] idle_below: is a percentage: expected 0 to 100, got 101"),
    ("[report]\nmemory_limit = 5\n", 2, "[report] memory_limit: expected a string such as '1GB', got 5"),
    ("[reprot]\nidle_below = 1\n", 1, "unknown section or key 'reprot' (expected [report], [recommend] and [models.\"NAME\"])"),
    ("recommend = 3\n", 1, "'recommend' must be a table: [recommend]"),
])
def test_a_bad_settings_file_is_one_line_with_its_line(run_cli, idle_store, tmp_path, text, line, message):
    cfg = tmp_path / "s.toml"
    cfg.write_text(text)
    out = tmp_path / "f.json"
    out.write_text('{"previous": true}')
    code, _, err = run_cli("report", idle_store, "--settings", str(cfg), "--json", str(out))
    assert code == 2
    assert err.splitlines()[0] == f"Error: {cfg}:{line}: {message}"
    assert "Traceback" not in err and json.loads(out.read_text()) == {"previous": True}


def test_a_missing_or_broken_settings_file(run_cli, idle_store, tmp_path):
    code, _, err = run_cli("report", idle_store, "--settings", str(tmp_path / "nope.toml"))
    assert code == 2 and err.startswith(f"Error: settings file not found: {tmp_path / 'nope.toml'}")
    cfg = tmp_path / "s.toml"
    cfg.write_text("[recommend\n")
    code, _, err = run_cli("report", idle_store, "--settings", str(cfg))
    assert code == 2 and err.startswith(f"Error: {cfg}: not valid TOML: ") and len(err.strip().splitlines()) <= 2


@pytest.mark.parametrize("option, what", [("--settings", "settings file"), ("--pricing", "pricing file")])
def test_a_folder_given_as_a_toml_file(run_cli, idle_store, tmp_path, option, what):
    code, _, err = run_cli("report", idle_store, option, str(tmp_path))
    assert code == 2 and err.splitlines()[0] == f"Error: {what} {tmp_path} is a folder, not a file"
