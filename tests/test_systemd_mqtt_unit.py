"""systemd/serd-mqtt.service: `systemd-analyze verify` is clean, the exposure score is <= 2.0 (the
daemon's standard, as serd-record.service), and it can write nowhere."""

from __future__ import annotations

import re
import stat
from pathlib import Path

from test_systemd_unit import MAX_EXPOSURE, analyze, needs_systemd_analyze

REPO_ROOT = Path(__file__).resolve().parents[1]
UNIT = REPO_ROOT / "systemd" / "serd-mqtt.service"
RECORD_UNIT = REPO_ROOT / "systemd" / "serd-record.service"
INSTALLED_EXEC = "/opt/serd/venv/bin/serd"


def settings(unit: Path = UNIT) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for raw in unit.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def one(key: str) -> str:
    values = settings().get(key)
    assert values and len(values) == 1, f"{key}= set {values}"
    return values[0]


@needs_systemd_analyze
def test_verify_is_clean(tmp_path):
    stub = tmp_path / "serd"
    stub.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text(encoding="utf-8").replace(f"ExecStart={INSTALLED_EXEC} ", f"ExecStart={stub} "))
    result = analyze("verify", str(copy))
    assert result.returncode == 0 and not result.stderr.strip() and not result.stdout.strip(), result.stderr


@needs_systemd_analyze
def test_security_exposure_is_at_most_two():
    result = analyze("security", "--offline=yes", "--no-pager", str(UNIT))
    assert result.returncode == 0, result.stderr
    match = re.search(r"Overall exposure level for serd-mqtt\.service:\s*([0-9.]+)", result.stdout)
    assert match, result.stdout
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout


def test_runs_the_bridge_on_the_installed_config():
    assert one("ExecStart") == f"{INSTALLED_EXEC} mqtt --config /etc/serd/config.yaml"
    assert one("Type") == "notify" and int(one("WatchdogSec")) > 0
    assert "78" in one("RestartPreventExitStatus").split()


def test_writes_nowhere_and_is_hardened_like_the_recorder():
    s = settings()
    assert one("ProtectSystem") == "strict" and one("ProtectHome") == "yes"
    assert "StateDirectory" not in s and "ReadWritePaths" not in s
    assert one("PrivateDevices") == "yes", "the bridge needs no device"
    assert one("User") == "serd" and one("NoNewPrivileges") == "yes" and one("CapabilityBoundingSet") == ""
    assert one("IPAddressAllow") == "localhost" and one("IPAddressDeny") == "any"
    record = settings(RECORD_UNIT)
    relaxed_for_the_recorder = {"ExecStart", "Description", "SyslogIdentifier", "StateDirectory", "StateDirectoryMode",
                                "TimeoutStopSec", "MemoryMax", "After"}
    for key, values in record.items():
        if key not in relaxed_for_the_recorder:
            assert s.get(key) == values, f"{key}= differs from serd-record.service: {s.get(key)} vs {values}"
