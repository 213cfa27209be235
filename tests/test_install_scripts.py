"""packaging/*.sh: syntax, shellcheck, the --dry-run plans, the config edit, the wheel check.

The scripts cannot be run for real here (they install a system service); --dry-run
prints every command that would change the system and changes nothing, so the plan
itself is what these tests check, against a throwaway copy of the checkout.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = None

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGING = REPO_ROOT / "packaging"
INSTALL = PACKAGING / "install-pi.sh"
UNINSTALL = PACKAGING / "uninstall-pi.sh"
CHECK_WHEELS = PACKAGING / "check-pi-wheels.sh"
PI_EMULATED_CHECK = PACKAGING / "pi-emulated-check.sh"  # run for real in tests/test_pi_emulated.py
SCRIPTS = (INSTALL, UNINSTALL, CHECK_WHEELS, PI_EMULATED_CHECK)
MODEL_NAME = "serd-emotion5-int8"
INSTALLED_MODEL = f"/opt/serd/models/{MODEL_NAME}.tflite"
SCRIPT_TIMEOUT_S = 60
WHEEL_CHECK_TIMEOUT_S = 600

SYSTEM_PATHS = (Path("/opt/serd"), Path("/etc/serd"), Path("/etc/systemd/system/serd.service"))


def run_script(script: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(script), *args],
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT_S,
        env=env,
        check=False,
    )


def planned_commands(stdout: str) -> list[list[str]]:
    """The commands a --dry-run prints (`+ cmd args...`, shell-quoted), as argv lists."""
    return [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith("+ ")]


def find_command(commands: list[list[str]], *prefix: str) -> list[str]:
    for argv in commands:
        if argv[: len(prefix)] == list(prefix):
            return argv
    raise AssertionError(f"no planned command starting with {prefix}; planned: {commands}")


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of what the installer reads from a checkout, plus a placeholder model."""
    root = tmp_path / "checkout"
    shutil.copytree(PACKAGING, root / "packaging")
    (root / "systemd").mkdir()
    shutil.copy2(REPO_ROOT / "systemd" / "serd.service", root / "systemd")
    shutil.copy2(REPO_ROOT / "pyproject.toml", root)
    shutil.copy2(REPO_ROOT / "config.yaml", root)
    (root / "serd").mkdir()
    (root / "models").mkdir()
    (root / "models" / f"{MODEL_NAME}.tflite").write_bytes(b"placeholder")
    (root / "models" / f"{MODEL_NAME}.json").write_text("{}", encoding="utf-8")
    return root


@pytest.fixture
def system_untouched():
    """The dry runs must not create or remove anything the real ones would."""
    before = {path: path.exists() for path in SYSTEM_PATHS}
    yield
    assert {path: path.exists() for path in SYSTEM_PATHS} == before


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bash_syntax(script):
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck(script):
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    result = subprocess.run([shellcheck, str(script)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_strict_mode_and_executable(script):
    assert "set -euo pipefail" in script.read_text(encoding="utf-8")
    assert os.access(script, os.X_OK), f"{script.name} is not executable"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_help_and_unknown_argument(script):
    result = run_script(script, "--help")
    assert result.returncode == 0
    assert "Usage" in result.stdout
    result = run_script(script, "--no-such-option")
    assert result.returncode != 0
    assert "--no-such-option" in result.stderr


def test_install_dry_run_plans_the_whole_install(checkout, system_untouched):
    result = run_script(checkout / "packaging" / "install-pi.sh", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "dry run: nothing was changed" in result.stdout
    commands = planned_commands(result.stdout)

    if not Path("/opt/serd/venv/bin/python").exists():
        assert ["python3", "-m", "venv", "/opt/serd/venv"] in commands
    pip = find_command(commands, "/opt/serd/venv/bin/pip", "install")
    assert "--only-binary=:all:" in pip
    # Built from a copy of the checkout, never in it.
    assert not pip[-1].startswith(str(checkout))

    if subprocess.run(["getent", "passwd", "serd"], capture_output=True, check=False).returncode != 0:
        useradd = find_command(commands, "useradd")
        for flag in ("--system", "--no-create-home", "--user-group"):
            assert flag in useradd
        assert useradd[useradd.index("--shell") + 1] == "/usr/sbin/nologin"
        assert useradd[useradd.index("--groups") + 1] == "audio"
        assert useradd[-1] == "serd"

    assert ["cp", "-r", f"{checkout}/models/.", "/opt/serd/models/"] in commands
    assert find_command(commands, "install", "-m", "0644", f"{checkout}/systemd/serd.service")[-1] == (
        "/etc/systemd/system/serd.service"
    )
    if Path("/run/systemd/system").is_dir():
        assert ["systemctl", "enable", "serd.service"] in commands
        assert ["systemctl", "restart", "--no-block", "serd.service"] in commands
    else:
        assert "systemd is not running here" in result.stderr
        assert "not enabled or started" in result.stdout
        assert not [argv for argv in commands if argv[0] == "systemctl"], commands


def test_install_dry_run_config_edit_sets_the_model_path(checkout, system_untouched, tmp_path):
    """Apply the planned `sed` to the repo's config.yaml: the model is the installed one."""
    if Path("/etc/serd/config.yaml").exists():
        pytest.skip("/etc/serd/config.yaml exists here: the installer keeps it")
    result = run_script(checkout / "packaging" / "install-pi.sh", "--dry-run")
    assert result.returncode == 0, result.stderr
    commands = planned_commands(result.stdout)
    sed = find_command(commands, "sed", "-i")
    draft = tmp_path / "config.yaml"
    shutil.copy2(REPO_ROOT / "config.yaml", draft)
    subprocess.run([*sed[:-1], str(draft)], check=True)

    edited = yaml.safe_load(draft.read_text(encoding="utf-8"))
    original = yaml.safe_load((REPO_ROOT / "config.yaml").read_text(encoding="utf-8"))
    assert edited["model"] == INSTALLED_MODEL
    assert {k: v for k, v in edited.items() if k != "model"} == {k: v for k, v in original.items() if k != "model"}
    install = find_command(commands, "install", "-m", "0640", "-o", "root", "-g", "serd")
    assert install[-1] == "/etc/serd/config.yaml"


def test_install_dry_run_adds_a_model_line_when_there_is_none(checkout, system_untouched, tmp_path):
    if Path("/etc/serd/config.yaml").exists():
        pytest.skip("/etc/serd/config.yaml exists here: the installer keeps it")
    config = checkout / "config.yaml"
    config.write_text("# no model here\nlog_level: debug\n", encoding="utf-8")
    result = run_script(checkout / "packaging" / "install-pi.sh", "--dry-run")
    assert result.returncode == 0, result.stderr
    sed = find_command(planned_commands(result.stdout), "sed", "-i")
    draft = tmp_path / "config.yaml"
    shutil.copy2(config, draft)
    subprocess.run([*sed[:-1], str(draft)], check=True)
    assert yaml.safe_load(draft.read_text(encoding="utf-8")) == {"log_level": "debug", "model": INSTALLED_MODEL}


def test_install_refuses_a_checkout_without_the_model(checkout, system_untouched):
    (checkout / "models" / f"{MODEL_NAME}.tflite").unlink()
    result = run_script(checkout / "packaging" / "install-pi.sh", "--dry-run")
    assert result.returncode != 0
    assert f"models/{MODEL_NAME}.tflite" in result.stderr
    assert planned_commands(result.stdout) == []


def test_install_refuses_32_bit_pi_os(checkout, system_untouched, tmp_path):
    """`dpkg --print-architecture` says armhf on 32-bit Pi OS (even with a 64-bit kernel)."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    dpkg = fake_bin / "dpkg"
    dpkg.write_text("#!/bin/sh\necho armhf\n", encoding="utf-8")
    dpkg.chmod(0o755)
    env = dict(os.environ, PATH=f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    result = run_script(checkout / "packaging" / "install-pi.sh", "--dry-run", env=env)
    assert result.returncode != 0
    assert "32-bit" in result.stderr and "64-bit Pi OS" in result.stderr
    assert planned_commands(result.stdout) == []


def test_uninstall_dry_run(system_untouched):
    for args in ((), ("--purge",)):
        result = run_script(UNINSTALL, "--dry-run", *args)
        assert result.returncode == 0, result.stderr
        assert "dry run: nothing was changed" in result.stdout
        commands = planned_commands(result.stdout)
        if Path("/opt/serd").exists():
            assert ["rm", "-rf", "/opt/serd"] in commands
        if Path("/etc/serd").exists():
            expected = ["rm", "-rf", "/etc/serd"] if args else ["chgrp", "-R", "root", "/etc/serd"]
            assert expected in commands
        # Never anything outside what the installer made.
        for argv in commands:
            if argv[:2] == ["rm", "-rf"]:
                assert argv[2] in ("/opt/serd", "/etc/serd"), argv


BIN_LINK = "/usr/local/bin/serd"
VENV_SERD = "/opt/serd/venv/bin/serd"


def run_with_usr_local_bin(directory: Path, script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a script with `directory` mounted over /usr/local/bin in a mount namespace of its own: the
    script sees (and a dry run decides on) real files there, and the machine's /usr/local/bin is untouched."""
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True,
                           check=False)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a mount namespace here (root and unshare needed): {probe.stderr.decode().strip()}")
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "bash", "-c",
         'mount --bind "$1" /usr/local/bin && shift && exec bash "$@"', "-", str(directory), str(script), *args],
        capture_output=True, text=True, timeout=SCRIPT_TIMEOUT_S, check=False)


def test_install_links_serd_onto_the_path_and_leaves_a_foreign_file_alone(checkout, system_untouched, tmp_path):
    """Issue 18: the docs say `sudo -u serd serd ...`, so the install puts `serd` on the PATH."""
    install = checkout / "packaging" / "install-pi.sh"
    bin_dir = tmp_path / "usr-local-bin"
    bin_dir.mkdir()
    result = run_with_usr_local_bin(bin_dir, install, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert ["ln", "-s", VENV_SERD, BIN_LINK] in planned_commands(result.stdout)

    (bin_dir / "serd").symlink_to(VENV_SERD)  # installed before: nothing to do
    result = run_with_usr_local_bin(bin_dir, install, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert f"{BIN_LINK} links to {VENV_SERD}" in result.stdout
    assert not [argv for argv in planned_commands(result.stdout) if BIN_LINK in argv]

    (bin_dir / "serd").unlink()
    (bin_dir / "serd").write_text("#!/bin/sh\necho another serd\n", encoding="utf-8")  # someone else's
    result = run_with_usr_local_bin(bin_dir, install, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert f"{BIN_LINK} exists and is not a link to {VENV_SERD}: left alone" in result.stderr
    assert not [argv for argv in planned_commands(result.stdout) if BIN_LINK in argv]


@pytest.mark.parametrize("present, removed", [
    (VENV_SERD, True),                       # the installer's link (dangling once /opt/serd is gone: still removed)
    ("/usr/bin/true", False),                # a link of someone else's
    (None, False),                           # a file of someone else's
])
def test_uninstall_removes_usr_local_bin_serd_only_when_it_is_the_installers_link(present, removed, tmp_path,
                                                                                   system_untouched):
    bin_dir = tmp_path / "usr-local-bin"
    bin_dir.mkdir()
    if present is None:
        (bin_dir / "serd").write_text("#!/bin/sh\n", encoding="utf-8")
    else:
        (bin_dir / "serd").symlink_to(present)
    result = run_with_usr_local_bin(bin_dir, UNINSTALL, "--dry-run")
    assert result.returncode == 0, result.stderr
    planned = [argv for argv in planned_commands(result.stdout) if BIN_LINK in argv]
    assert planned == ([["rm", "-f", BIN_LINK]] if removed else [])
    if not removed:
        assert f"keeping {BIN_LINK}: it is not the installer's link to {VENV_SERD}" in result.stdout
    assert (bin_dir / "serd").is_symlink() == (present is not None)  # a dry run: still there


@pytest.mark.parametrize("flags, extras", [
    (("--with-postgres",), "[postgres]"),
    (("--with-metrics", "--with-postgres"), "[metrics,postgres]"),
])
def test_install_dry_run_with_postgres_installs_the_extra(checkout, system_untouched, flags, extras):
    """docs/history.md: on a Pi, `install-pi.sh --with-postgres` adds serd[postgres] (psycopg)."""
    result = run_script(checkout / "packaging" / "install-pi.sh", "--dry-run", *flags)
    assert result.returncode == 0, result.stderr
    pip = find_command(planned_commands(result.stdout), "/opt/serd/venv/bin/pip", "install")
    assert pip[-1].endswith(f"/src{extras}"), pip


@pytest.mark.skipif(tomllib is None, reason="tomllib needs Python >= 3.11")
def test_the_extras_the_installer_names_exist():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    named = re.findall(r"--with-(\w+)\) EXTRAS\+=\((\w+)\)", INSTALL.read_text(encoding="utf-8"))
    assert ("postgres", "postgres") in named
    for flag, extra in named:
        assert flag == extra and extra in extras, (flag, extra)
    assert "psycopg" in {requirement_name(r) for r in extras["postgres"]}


def requirement_name(requirement: str) -> str:
    """`ai-edge-litert>=1.2; platform_machine != 'armv7l'` -> `ai-edge-litert` (normalised)."""
    name = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement).group(1)
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.mark.skipif(tomllib is None, reason="tomllib needs Python >= 3.11")
def test_wheel_check_covers_every_runtime_dependency():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    script = CHECK_WHEELS.read_text(encoding="utf-8")
    block = re.search(r"RUNTIME_REQUIREMENTS=\((.*?)\)", script, re.S).group(1)
    checked = {requirement_name(item) for item in re.findall(r'"([^"]+)"', block)}
    wanted = {requirement_name(item) for item in project["dependencies"]}
    assert wanted <= checked, f"not checked for Pi wheels: {sorted(wanted - checked)}"
    fallback = {requirement_name(item) for item in project["optional-dependencies"]["tflite-runtime"]}
    assert fallback <= {"tflite-runtime", "numpy"}
    assert '"tflite-runtime==2.14.0"' in script and '"numpy<2"' in script


@pytest.mark.slow
@pytest.mark.skipif(bool(os.environ.get("SERD_SKIP_NETWORK_CHECKS")), reason="SERD_SKIP_NETWORK_CHECKS is set")
def test_every_runtime_dependency_has_an_aarch64_wheel():
    result = subprocess.run(
        ["bash", str(CHECK_WHEELS)],
        capture_output=True,
        text=True,
        timeout=WHEEL_CHECK_TIMEOUT_S,
        env=dict(os.environ, PYTHON=sys.executable),
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    ok_lines = [line for line in result.stdout.splitlines() if line.startswith("ok ")]
    for name in ("numpy", "pyzmq", "pyyaml", "soundfile", "soxr", "sounddevice", "ai-edge-litert", "tflite-runtime"):
        assert any(f" {name}" in line and line.rstrip().endswith(".whl") for line in ok_lines), (
            f"{name}: no wheel line in\n{result.stdout}"
        )
    assert "FAIL" not in result.stdout


def test_install_dry_run_with_record_installs_and_starts_the_recorder(checkout, system_untouched):
    """docs/history.md: `install-pi.sh --with-record` puts serd-record.service in place (no copying by hand)."""
    result = run_script(checkout / "packaging" / "install-pi.sh", "--dry-run", "--with-record")
    assert result.returncode == 0, result.stderr
    commands = planned_commands(result.stdout)
    assert find_command(commands, "install", "-m", "0644", f"{checkout}/systemd/serd-record.service")[-1] == (
        "/etc/systemd/system/serd-record.service")
    if Path("/run/systemd/system").is_dir():
        assert ["systemctl", "enable", "serd-record.service"] in commands
        assert ["systemctl", "restart", "--no-block", "serd-record.service"] in commands
    else:
        assert "sudo systemctl enable --now serd serd-record" in result.stdout
    plain = planned_commands(run_script(checkout / "packaging" / "install-pi.sh", "--dry-run").stdout)
    assert not [argv for argv in plain if any("serd-record" in a for a in argv)], plain


def test_uninstall_removes_every_serd_unit_and_nothing_else(tmp_path):
    """serd-mqtt.service (--with-mqtt) and serd-record.service were left behind, running a removed venv."""
    units = tmp_path / "units"
    units.mkdir()
    for name in ("serd.service", "serd-record.service", "serd-mqtt.service", "other.service"):
        (units / name).write_text("[Unit]\n")
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a mount namespace here (root and unshare needed): {probe.stderr.decode().strip()}")
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "bash", "-c",
         'mount --bind "$1" /etc/systemd/system && shift && exec bash "$@"', "-", str(units), str(UNINSTALL),
         "--dry-run"], capture_output=True, text=True, timeout=SCRIPT_TIMEOUT_S, check=False)
    assert result.returncode == 0, result.stderr
    removed = [argv[-1] for argv in planned_commands(result.stdout)
               if argv[:2] == ["rm", "-f"] and argv[-1].startswith("/etc/systemd/system/")]
    assert sorted(removed) == sorted(f"/etc/systemd/system/{u}" for u in
                                     ("serd.service", "serd-record.service", "serd-mqtt.service")), removed
