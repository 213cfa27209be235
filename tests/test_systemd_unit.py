"""systemd/serd.service: `systemd-analyze verify` is clean, the exposure score is <= 2.0,
and the settings the daemon relies on are there."""

from __future__ import annotations

import configparser
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
UNIT = REPO_ROOT / "systemd" / "serd.service"
INSTALLED_EXEC = "/opt/serd/venv/bin/serd"
MAX_EXPOSURE = 2.0
ANALYZE_TIMEOUT_S = 60

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None,
    reason="systemd-analyze is not installed (apt-get install systemd); CI installs it",
)


def unit_settings() -> dict[str, list[str]]:
    """Every `Key=value` of the unit, by key, in order (keys may repeat)."""
    settings: dict[str, list[str]] = {}
    for raw in UNIT.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def one(key: str) -> str:
    values = unit_settings().get(key)
    assert values, f"{UNIT.name} has no {key}="
    assert len(values) == 1, f"{UNIT.name} sets {key}= {len(values)} times"
    return values[0]


def unit_with_stub_binary(tmp_path: Path) -> Path:
    """A copy of the unit whose ExecStart points at an executable stub in tmp_path.

    `verify` checks that ExecStart's binary exists, and /opt/serd is only there on an
    installed Pi. Everything but that one path is the unit as shipped.
    """
    stub = tmp_path / "serd"
    stub.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    text = UNIT.read_text(encoding="utf-8")
    assert text.count(f"ExecStart={INSTALLED_EXEC} ") == 1
    copy = tmp_path / "serd.service"  # the same unit name: verify derives it from the file
    copy.write_text(text.replace(f"ExecStart={INSTALLED_EXEC} ", f"ExecStart={stub} "), encoding="utf-8")
    return copy


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SYSTEMD_ANALYZE, *args],
        capture_output=True,
        text=True,
        timeout=ANALYZE_TIMEOUT_S,
        check=False,
    )


@needs_systemd_analyze
def test_verify_is_clean(tmp_path):
    result = analyze("verify", str(unit_with_stub_binary(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr
    assert result.stdout.strip() == "", result.stdout


@needs_systemd_analyze
def test_verify_complains_only_about_the_missing_binary():
    """On a machine without serd installed the only complaint is ExecStart's binary."""
    if Path(INSTALLED_EXEC).exists():
        pytest.skip(f"{INSTALLED_EXEC} exists here")
    result = analyze("verify", str(UNIT))
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [f"serd.service: Command {INSTALLED_EXEC} is not executable: No such file or directory"]


def exposure_level(output: str) -> float:
    match = re.search(r"Overall exposure level for serd\.service:\s*([0-9]+(?:\.[0-9]+)?)", output)
    assert match, f"no 'Overall exposure level' line in:\n{output}"
    return float(match.group(1))


@needs_systemd_analyze
def test_security_exposure_is_at_most_two():
    result = analyze("security", "--offline=yes", "--no-pager", str(UNIT))
    assert result.returncode == 0, result.stderr
    level = exposure_level(result.stdout)
    assert level <= MAX_EXPOSURE, f"exposure {level} > {MAX_EXPOSURE}:\n{result.stdout}"


def test_exposure_line_parser():
    assert exposure_level("→ Overall exposure level for serd.service: 1.3 OK 🙂") == 1.3
    assert exposure_level("Overall exposure level for serd.service: 9 UNSAFE") == 9.0


def test_parses_as_ini_with_the_three_sections():
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # keep the case of keys
    parser.read_string(UNIT.read_text(encoding="utf-8"))
    assert parser.sections() == ["Unit", "Service", "Install"]
    assert parser["Install"]["WantedBy"] == "multi-user.target"


def test_notify_service_with_watchdog():
    assert one("Type") == "notify"
    assert one("NotifyAccess") == "main"
    assert int(one("WatchdogSec")) > 0


def test_config_errors_are_not_restarted():
    assert one("Restart") == "on-failure"
    assert "78" in one("RestartPreventExitStatus").split()


def test_runs_the_installed_daemon_on_the_installed_config():
    assert one("ExecStart") == f"{INSTALLED_EXEC} run --config /etc/serd/config.yaml"
    assert one("ExecReload") == "/bin/kill -HUP $MAINPID"


def test_dedicated_user_with_alsa_and_nothing_else():
    assert one("User") == "serd"
    assert one("Group") == "serd"
    assert one("SupplementaryGroups") == "audio"
    assert one("DevicePolicy") == "closed"
    assert one("DeviceAllow") == "char-alsa rw"
    # PrivateDevices=yes would hide /dev/snd.
    assert one("PrivateDevices") == "no"


def test_relaxed_settings_say_why():
    """A relaxed hardening line is preceded by a comment that starts with 'Relaxed'
    or explains it; at least the known ones must be explained next to them."""
    text = UNIT.read_text(encoding="utf-8")
    for setting, reason in (
        ("PrivateDevices=no", "/dev/snd"),
        ("ProcSubset=all", "cpuinfo"),
        ("MemoryDenyWriteExecute=no", "ffi.callback"),
        ("RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK", "getifaddrs"),
    ):
        index = text.index(setting)
        comment = text[max(0, text.rfind("\n\n", 0, index)) : index]
        assert reason in comment, f"{setting} has no comment mentioning {reason!r}"
