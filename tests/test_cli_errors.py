"""What a newcomer sees on stderr: nothing on success, one `serd: PATH: what is wrong` line on bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import RAVDESS_FIXTURES, SAMPLE_CLIPS
from helpers_daemon import assert_no_traceback, run_serd, serd_env, short_tmpdir
from serd.config import EX_CONFIG
from serd.model import BACKENDS

CLIP = RAVDESS_FIXTURES / SAMPLE_CLIPS[0]
BAD_INPUTS = {
    # name in the working directory -> what the one line must say after "serd: NAME: "
    "missing.flac": "no such file",
    "empty.wav": "empty file (0 bytes)",
    "notes.wav": "not a readable audio file (Format not recognised)",
    "recordings": "is a directory, not an audio file",
}


@pytest.fixture(scope="module")
def workdir():
    with short_tmpdir("serd-err-") as d:
        (d / "empty.wav").write_bytes(b"")
        (d / "notes.wav").write_text("a shopping list, not audio\n" * 10)
        (d / "recordings").mkdir()
        yield d


def bad_input_command(command: str, name: str, workdir: Path) -> list[str]:
    if command == "analyze":
        return ["analyze", name]
    return ["run", "--source", name, "--bind", f"ipc://{workdir}/never.ipc"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_successful_analyze_is_silent_on_stderr(backend: str, workdir: Path):
    """The shipped int8 model, through each interpreter: the XNNPACK INFO line must not appear."""
    done = run_serd(["analyze", CLIP], cwd=workdir, env=serd_env(SERD_TFLITE_BACKEND=backend))
    if done.returncode == EX_CONFIG and "no TFLite interpreter" in done.stderr:
        pytest.skip(f"{backend} is not installed")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.startswith(f"{CLIP}: ")


def test_the_runtime_s_other_stderr_text_is_kept():
    """Only the known INFO lines are held back; anything else the C++ runtime writes still reaches the user."""
    code = (
        "import os\n"
        "from serd.model import quiet_runtime_stderr\n"
        "with quiet_runtime_stderr():\n"
        "    os.write(2, b'INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\nERROR: op FOO not supported\\n')\n"
        "os.write(2, b'after\\n')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=serd_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "ERROR: op FOO not supported\nafter\n"


@pytest.mark.parametrize("command", ["analyze", "run"])
@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_naming_the_path_once(command: str, name: str, workdir: Path):
    done = run_serd(bad_input_command(command, name, workdir), cwd=workdir)
    assert_no_traceback(done.stderr)
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [f"serd: {name}: {BAD_INPUTS[name]}"]
    assert done.stdout == ""


@pytest.mark.parametrize("command", ["analyze", "run"])
def test_an_unknown_model_name_lists_the_models_that_exist(command: str, workdir: Path):
    args = ["analyze", CLIP] if command == "analyze" else ["run", "--source", CLIP, "--bind", f"ipc://{workdir}/m.ipc"]
    done = run_serd([*args, "--model", "serd-emotion7"], cwd=workdir)
    assert_no_traceback(done.stderr)
    assert done.returncode == EX_CONFIG, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith("serd: model error: ") and "serd-emotion7.tflite: model file not found" in line
    assert "models that exist: serd-emotion5-float, serd-emotion5-int8, serd-emotion5-wide-int8, serd-emotion6-float, serd-emotion6-int8" in line
