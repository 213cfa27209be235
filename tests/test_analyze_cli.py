"""`serd analyze FILE...`: real files through the real command, good ones and bad ones together."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile

from helpers_daemon import (
    MODEL_RATE,
    Labels,
    assert_no_traceback,
    load_clip,
    noise,
    run_serd,
    serd_lines,
    short_tmpdir,
    write_pcm16_wav,
)
from serd.config import EX_CONFIG


@pytest.fixture(scope="module")
def files(sample_clip_paths):
    """A real clip, bad files of every kind, and short, silent and multichannel recordings."""
    with short_tmpdir("serd-analyze-") as d:
        clip = load_clip(sample_clip_paths[1])
        (d / "empty.wav").write_bytes(b"")
        (d / "text.wav").write_text("this is not audio, only text pretending to be a wav file\n" * 20)
        # 0.5 s from the middle of the utterance: shorter than one window, still speech.
        write_pcm16_wav(d / "short.wav", clip[int(1.5 * MODEL_RATE): int(2.0 * MODEL_RATE)])
        write_pcm16_wav(d / "silence.wav", np.zeros(3 * MODEL_RATE, dtype=np.float32))
        write_pcm16_wav(d / "floor.wav", noise(3.0, -70.0))
        pcm = write_pcm16_wav(d / "mono.wav", clip)
        soundfile.write(str(d / "stereo.wav"), np.stack([pcm, pcm], axis=1), MODEL_RATE, subtype="PCM_16")
        yield {"clip": sample_clip_paths[1], "dir": d, **{p.stem: p for p in d.iterdir()}}


def analyze(model: Path, paths: list[Path], cwd: Path, *flags: str):
    done = run_serd(["analyze", "--model", model, *flags, *paths], cwd=cwd, timeout=120)
    assert_no_traceback(done.stderr)
    return done


def test_json_one_object_per_file_and_errors_for_bad_ones(tiny_model_int8, files):
    paths = [files["clip"], files["dir"] / "missing.wav", files["empty"], files["text"]]
    done = analyze(tiny_model_int8, paths, files["dir"], "--json")
    assert done.returncode == 1, "a file that failed must make the exit code 1"
    lines = done.stdout.splitlines()
    assert len(lines) == len(paths)
    objects = [json.loads(line) for line in lines]
    assert [o["file"] for o in objects] == [str(p) for p in paths]  # in order, past the failures

    good = objects[0]
    labels = Labels.of(tiny_model_int8).names
    assert set(good) == {"file", "label", "probs", "arousal", "windows"}
    assert tuple(good["probs"]) == labels
    assert abs(sum(good["probs"].values()) - 1) < 1e-3
    assert good["label"] == max(good["probs"], key=good["probs"].get)
    speech = [w for w in good["windows"] if w["speech"]]
    assert speech, good["windows"]
    # The file's probabilities are the mean over its speech windows.
    mean = np.mean([[w["probs"][k] for k in labels] for w in speech], axis=0)
    np.testing.assert_allclose([good["probs"][k] for k in labels], mean, atol=2e-5)
    # arousal: activated (angry, happy, fearful) over activated + calm (neutral, sad); disgust on neither side
    for obj in (good, *speech):
        p = obj["probs"]
        high = p["angry"] + p["happy"] + p["fearful"]
        assert obj["arousal"] == pytest.approx(high / (high + p["neutral"] + p["sad"]), abs=2e-5)
    assert all(w["arousal"] is None for w in good["windows"] if not w["speech"])
    duration = soundfile.info(str(files["clip"])).duration
    assert len(good["windows"]) == int((duration - 2.0) // 0.5) + 1
    for i, w in enumerate(good["windows"]):
        assert (w["start"], w["end"]) == pytest.approx((0.5 * i, 0.5 * i + 2.0))

    for bad, reason in zip(objects[1:], ("no such file", "empty file", "not a readable audio file")):
        assert set(bad) == {"file", "error"}, bad
        assert bad["file"] in bad["error"] and reason in bad["error"], bad
        assert "\n" not in bad["error"]


def test_human_output_on_a_good_file(tiny_model_int8, files):
    done = analyze(tiny_model_int8, [files["clip"]], files["dir"])
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    labels = Labels.of(tiny_model_int8).names
    head = re.match(rf"^{re.escape(str(files['clip']))}: (\w+) \((\d+)%; (\d+)/(\d+) windows with speech\)$", lines[0])
    assert head, lines[0]
    rows = [re.match(r"^  (\w+)\s+(\d+\.\d)%", line) for line in lines[1:-1]]
    assert all(rows) and sorted(r.group(1) for r in rows) == sorted(labels), lines
    assert re.match(r"^  arousal\s+\d+\.\d% \(calm 0 % … activated 100 %\)$", lines[-1]), lines[-1]
    percents = [float(r.group(2)) for r in rows]
    assert percents == sorted(percents, reverse=True) and abs(sum(percents) - 100) < 0.5
    assert head.group(1) == rows[0].group(1)  # the headline is the top row
    assert not serd_lines(done.stderr)


def test_human_output_reports_bad_files_on_stderr(tiny_model_int8, files):
    done = analyze(tiny_model_int8, [files["empty"], files["clip"]], files["dir"])
    assert done.returncode == 1
    errors = serd_lines(done.stderr)
    assert errors == [f"serd: {files['empty']}: empty file (0 bytes)"], done.stderr
    assert done.stdout.startswith(f"{files['clip']}: ")  # the good file after it was still analysed


def test_a_file_shorter_than_one_window_is_padded_to_one(tiny_model_int8, files):
    (result,) = [json.loads(line) for line in analyze(tiny_model_int8, [files["short"]], files["dir"], "--json").stdout.splitlines()]
    assert len(result["windows"]) == 1
    window = result["windows"][0]
    assert (window["start"], window["end"], window["speech"]) == (0.0, 2.0, True)
    assert result["label"] is not None and result["probs"] == window["probs"]


@pytest.mark.parametrize("name", ["silence", "floor"])
def test_a_silent_file_has_no_label(tiny_model_int8, files, name):
    done = analyze(tiny_model_int8, [files[name]], files["dir"], "--json")
    assert done.returncode == 0
    (result,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert result["label"] is None and result["probs"] is None
    assert len(result["windows"]) == 3 and not any(w["speech"] for w in result["windows"])
    assert all(w["probs"] is None for w in result["windows"])
    human = analyze(tiny_model_int8, [files[name]], files["dir"])
    assert human.returncode == 0 and "no speech" in human.stdout


def test_channels_are_averaged_to_mono(tiny_model_int8, files):
    done = analyze(tiny_model_int8, [files["mono"], files["stereo"]], files["dir"], "--json")
    mono, stereo = [json.loads(line) for line in done.stdout.splitlines()]
    assert mono["windows"] == stereo["windows"] and mono["probs"] == stereo["probs"]


def test_the_gate_and_hop_flags_change_the_analysis(tiny_model_int8, files):
    done = analyze(tiny_model_int8, [files["clip"]], files["dir"], "--json", "--hop", "1.0", "--gate-dbfs", "0")
    (result,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert [w["start"] for w in result["windows"]] == [float(i) for i in range(len(result["windows"]))]
    assert result["label"] is None, "a 0 dBFS gate lets nothing through"


def test_bad_hop_and_bad_model_are_refused(tiny_model_int8, files):
    done = analyze(tiny_model_int8, [files["clip"]], files["dir"], "--hop", "0")
    assert done.returncode == 2 and "--hop" in done.stderr and not done.stdout
    done = analyze(files["dir"] / "absent.tflite", [files["clip"]], files["dir"])
    assert done.returncode == EX_CONFIG
    lines = serd_lines(done.stderr)
    assert len(lines) == 1 and "absent.tflite" in lines[0], done.stderr
