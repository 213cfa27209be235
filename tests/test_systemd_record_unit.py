"""systemd/serd-record.service: `systemd-analyze verify` is clean, the exposure score is <= 2.0
(the daemon's standard), and it can write only to its state directory."""

from __future__ import annotations

import re
import stat
from pathlib import Path

from test_systemd_unit import MAX_EXPOSURE, analyze, needs_systemd_analyze

REPO_ROOT = Path(__file__).resolve().parents[1]
UNIT = REPO_ROOT / "systemd" / "serd-record.service"
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


def unit_with_stub(tmp_path: Path, unit: Path = UNIT) -> Path:
    stub = tmp_path / "serd"
    stub.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    copy = tmp_path / unit.name
    copy.write_text(unit.read_text(encoding="utf-8").replace(f"ExecStart={INSTALLED_EXEC} ", f"ExecStart={stub} "))
    return copy


def assert_verify_is_clean(tmp_path: Path, unit: Path = UNIT) -> None:
    result = analyze("verify", str(unit_with_stub(tmp_path, unit)))
    assert result.returncode == 0 and not result.stderr.strip() and not result.stdout.strip(), result.stderr


def assert_exposure_at_most_two(unit: Path = UNIT) -> None:
    result = analyze("security", "--offline=yes", "--no-pager", str(unit))
    assert result.returncode == 0, result.stderr
    match = re.search(rf"Overall exposure level for {re.escape(unit.name)}:\s*([0-9.]+)", result.stdout)
    assert match, result.stdout
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout


@needs_systemd_analyze
def test_verify_is_clean(tmp_path):
    assert_verify_is_clean(tmp_path)


@needs_systemd_analyze
def test_security_exposure_is_at_most_two():
    assert_exposure_at_most_two()


def test_runs_the_recorder_on_the_installed_config():
    assert one("ExecStart") == f"{INSTALLED_EXEC} record --config /etc/serd/config.yaml"
    assert one("Type") == "notify" and int(one("WatchdogSec")) > 0
    assert "78" in one("RestartPreventExitStatus").split()


def test_writes_only_to_its_state_directory():
    s = settings()
    assert one("ProtectSystem") == "strict" and one("ProtectHome") == "yes"
    assert one("StateDirectory") == "serd-record"
    assert "ReadWritePaths" not in s
    assert one("PrivateDevices") == "yes", "the recorder needs no device"
    assert one("User") == "serd" and one("NoNewPrivileges") == "yes" and one("CapabilityBoundingSet") == ""
    assert one("IPAddressAllow") == "localhost" and one("IPAddressDeny") == "any"
