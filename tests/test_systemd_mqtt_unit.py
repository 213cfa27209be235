"""systemd/serd-mqtt.service: `systemd-analyze verify` is clean, the exposure score is <= 2.0 (the
daemon's standard, as serd-record.service), and it can write nowhere."""

from __future__ import annotations

from pathlib import Path

from test_systemd_record_unit import INSTALLED_EXEC, assert_exposure_at_most_two, assert_verify_is_clean, settings
from test_systemd_unit import needs_systemd_analyze

REPO_ROOT = Path(__file__).resolve().parents[1]
UNIT = REPO_ROOT / "systemd" / "serd-mqtt.service"
RECORD_UNIT = REPO_ROOT / "systemd" / "serd-record.service"


def one(key: str) -> str:
    values = settings(UNIT).get(key)
    assert values and len(values) == 1, f"{key}= set {values}"
    return values[0]


@needs_systemd_analyze
def test_verify_is_clean(tmp_path):
    assert_verify_is_clean(tmp_path, UNIT)


@needs_systemd_analyze
def test_security_exposure_is_at_most_two():
    assert_exposure_at_most_two(UNIT)


def test_runs_the_bridge_on_the_installed_config():
    assert one("ExecStart") == f"{INSTALLED_EXEC} mqtt --config /etc/serd/config.yaml"
    assert one("Type") == "notify" and int(one("WatchdogSec")) > 0
    assert "78" in one("RestartPreventExitStatus").split()


def test_writes_nowhere_and_is_hardened_like_the_recorder():
    s = settings(UNIT)
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
