"""Settings: the shipped config.yaml documents the defaults; bad configs are refused at the door.

The unit tests call `serd.config` directly; the refusal tests run `serd run` as a subprocess
and check the promise to the user: exit code 78 (EX_CONFIG, which systemd is told not to
restart on), one line on stderr naming the key path, never a traceback.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import yaml

from helpers_daemon import REPO_ROOT, assert_no_traceback, free_tcp_port, run_serd, serd_lines, short_tmpdir
from serd import config
from serd.config import EX_CONFIG, ConfigError, Settings

CONFIG_YAML = REPO_ROOT / "config.yaml"


def flatten(data: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            out.update(flatten(value, path))
        else:
            out[path] = list(value) if isinstance(value, tuple) else value  # a YAML list is a tuple in Settings
    return out


# -- the shipped file is the documentation of the defaults ----------------------------------------

def test_shipped_config_yaml_holds_exactly_the_defaults():
    shipped = yaml.safe_load(CONFIG_YAML.read_text(encoding="utf-8"))
    assert flatten(shipped) == flatten(dataclasses.asdict(Settings()))  # every key, every default
    assert config.load(CONFIG_YAML) == Settings() == config.from_dict({}) == config.load(None)


def test_every_key_in_config_yaml_has_a_comment_above_it():
    lines = CONFIG_YAML.read_text(encoding="utf-8").splitlines()
    key_line = re.compile(r"^(\s*)([A-Za-z_]+):(.*)$")
    undocumented = []
    for number, line in enumerate(lines):
        match = key_line.match(line)
        if not match or not match.group(3).strip():  # section headers (`source:`) hold the documented keys
            continue
        above = lines[number - 1].strip() if number else ""
        if not above.startswith("#") or len(above.lstrip("# ")) < 3:
            undocumented.append(f"line {number + 1}: {line.strip()}")
    assert not undocumented, "keys without a comment line right above them:\n" + "\n".join(undocumented)


def test_every_setting_has_a_docstring_in_the_code():
    """STYLE.md item 1: one docstring per field (read from the source, as a reader sees it)."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(config))
    missing = []
    for node in tree.body:
        if not (isinstance(node, ast.ClassDef) and node.name.endswith("Settings")):
            continue
        body = node.body
        for i, stmt in enumerate(body):
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                field_type = ast.unparse(stmt.annotation)
                if field_type.endswith("Settings"):
                    continue  # a nested section, documented field by field
                doc = body[i + 1] if i + 1 < len(body) else None
                if not (isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant) and isinstance(doc.value.value, str)):
                    missing.append(f"{node.name}.{stmt.target.id}")
    assert not missing, missing


# -- from_dict / override ------------------------------------------------------------------------

def test_from_dict_builds_typed_frozen_settings():
    s = config.from_dict({"device_id": "kitchen", "analysis": {"hop_s": 1, "gate_dbfs": -50},
                          "source": {"kind": "file", "path": "a.wav", "input_device": 2}})
    assert s.device_id == "kitchen"
    assert s.analysis.hop_s == 1.0 and isinstance(s.analysis.hop_s, float)  # an int is a fine number
    assert s.analysis.gate_dbfs == -50.0
    assert s.source.input_device == 2 and s.source.path == "a.wav"
    assert s.publisher == Settings().publisher  # untouched sections keep their defaults
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.device_id = "other"  # type: ignore[misc]


def test_override_applies_dotted_keys_and_validates_again():
    base = Settings()
    changed = config.override(base, {"analysis.hop_s": 0.25, "publisher.bind": "ipc:///tmp/x.ipc", "device_id": "d1"})
    assert (changed.analysis.hop_s, changed.publisher.bind, changed.device_id) == (0.25, "ipc:///tmp/x.ipc", "d1")
    assert changed.analysis.gate_dbfs == base.analysis.gate_dbfs
    assert base.analysis.hop_s == 0.5  # the original is untouched
    with pytest.raises(ConfigError, match=r"^analysis\.hop_s: "):
        config.override(base, {"analysis.hop_s": 0.0})
    with pytest.raises(ConfigError, match=r"^publisher\.bind: "):
        config.override(base, {"publisher.bind": "tcp://192.0.2.1:5556"})


@pytest.mark.parametrize(
    "data, key, expected",
    [
        ({"analysis": {"hopp": 0.5}}, "analysis.hopp", "unknown key"),
        ({"colour": "blue"}, "colour", "unknown key"),
        ({"analysis": {"hop_s": "fast"}}, "analysis.hop_s", "expected a number"),
        ({"analysis": {"hop_s": True}}, "analysis.hop_s", "expected a number"),  # YAML `yes` is not 1
        ({"analysis": {"hop_s": float("nan")}}, "analysis.hop_s", "finite"),
        ({"analysis": {"smoothing_alpha": 2}}, "analysis.smoothing_alpha", "(0, 1]"),
        ({"analysis": {"smoothing_alpha": 0}}, "analysis.smoothing_alpha", "(0, 1]"),
        ({"analysis": {"hangover_windows": 1.5}}, "analysis.hangover_windows", "integer"),
        ({"analysis": "loud"}, "analysis", "mapping"),
        ({"source": {"kind": "radio"}}, "source.kind", "mic, file or stdin"),
        ({"source": {"kind": "file"}}, "source.path", "audio file"),
        ({"source": {"channels": 0}}, "source.channels", "1..32"),
        ({"publisher": {"bind": "udp://127.0.0.1:1"}}, "publisher.bind", "tcp:// or ipc://"),
        ({"publisher": {"bind": "tcp://127.0.0.1:99999"}}, "publisher.bind", "port"),
        ({"publisher": {"status_interval_s": 0.01}}, "publisher.status_interval_s", "0.2..3600"),
        ({"publisher": {"curve": {"enabled": True}}}, "publisher.curve.server_secret_key", "serd keys"),
        ({"device_id": "has space"}, "device_id", "letters"),
        ({"log_level": "loud"}, "log_level", "debug, info"),
    ],
)
def test_bad_values_name_their_key_path(data, key, expected):
    with pytest.raises(ConfigError) as caught:
        config.from_dict(data)
    message = str(caught.value)
    assert message.startswith(f"{key}: ") and expected in message, message
    assert "\n" not in message


def test_top_level_must_be_a_mapping():
    with pytest.raises(ConfigError, match="top level"):
        config.from_dict(["a", "list"])  # type: ignore[arg-type]


@pytest.mark.parametrize("endpoint", ["tcp://127.0.0.1:5556", "tcp://127.8.9.1:5556", "tcp://localhost:5556",
                                      "tcp://[::1]:5556", "ipc:///run/serd/pub.ipc"])
def test_loopback_endpoints_need_no_permission(endpoint):
    assert config.is_loopback_endpoint(endpoint)
    assert config.from_dict({"publisher": {"bind": endpoint}}).publisher.bind == endpoint


@pytest.mark.parametrize("endpoint", ["tcp://0.0.0.0:5556", "tcp://*:5556", "tcp://eth0:5556",
                                      "tcp://192.168.1.20:5556", "tcp://[::]:5556"])
def test_network_bind_needs_curve_or_allow_insecure(endpoint):
    assert not config.is_loopback_endpoint(endpoint)
    with pytest.raises(ConfigError) as caught:
        config.from_dict({"publisher": {"bind": endpoint}})
    assert str(caught.value).startswith("publisher.bind: ") and "allow_insecure" in str(caught.value)
    accepted = config.from_dict({"publisher": {"bind": endpoint, "allow_insecure": True}})
    assert accepted.publisher.bind == endpoint
    curve = config.from_dict({"publisher": {"bind": endpoint, "curve": {
        "enabled": True, "server_secret_key": "k/server.key_secret", "authorized_clients": "k/authorized"}}})
    assert curve.publisher.curve.enabled


def test_load_reports_the_file_and_yaml_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("analysis:\n  hop_s: [1, 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML at line \d+"):
        config.load(bad)
    with pytest.raises(ConfigError, match="config file not found"):
        config.load(tmp_path / "missing.yaml")
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing set\n", encoding="utf-8")
    assert config.load(empty) == Settings()


# -- `serd run` refuses bad configs: exit 78, one line, the key named --------------------------------

@pytest.fixture
def workdir():
    with short_tmpdir() as path:
        yield path


def refused(args: list, cwd: Path) -> str:
    """Run `serd run ARGS`; it must refuse with EX_CONFIG and exactly one stderr line, which is returned."""
    done = run_serd(["run", *args], cwd=cwd, timeout=60)
    assert_no_traceback(done.stderr)
    assert done.returncode == EX_CONFIG, (done.returncode, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.mark.parametrize(
    "yaml_text, key",
    [
        ("analysis:\n  hopp: 0.5\n", "analysis.hopp"),
        ('analysis:\n  hop_s: "fast"\n', "analysis.hop_s"),
        ("analysis:\n  smoothing_alpha: 2\n", "analysis.smoothing_alpha"),
        ("publisher:\n  bind: tcp://0.0.0.0:5556\n", "publisher.bind"),
    ],
    ids=["unknown-key", "wrong-type", "out-of-range", "network-bind"],
)
def test_run_refuses_a_bad_config_file(workdir, yaml_text, key):
    path = workdir / "serd.yaml"
    path.write_text(yaml_text, encoding="utf-8")
    line = refused(["--config", path, "--source", "-"], workdir)
    assert line.startswith("serd: config error: ") and f"{key}: " in line and "serd.yaml" in line, line


def test_run_refuses_invalid_yaml(workdir):
    path = workdir / "serd.yaml"
    path.write_text("analysis:\n  hop_s: 0.5\n   gate_dbfs: -40\n", encoding="utf-8")
    line = refused(["--config", path], workdir)
    assert "serd.yaml" in line and "not valid YAML at line" in line, line


ALIAS_BOMB = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{name}: &{name} [{','.join([f'*{prev}'] * 9)}]\n" for prev, name in zip("abcdefgh", "bcdefghi"))


def test_an_alias_bomb_is_refused_before_it_expands(tmp_path):
    """Issue 13, finding 9: this file took 18 s and 2.2 GB before MemoryError."""
    path = tmp_path / "bomb.yaml"
    path.write_text(ALIAS_BOMB + "device_id: *i\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="aliases") as caught:
        config.load(path)
    assert len(str(caught.value)) < 200 and "lol" not in str(caught.value)


def test_a_single_alias_is_refused_too_and_anchors_alone_are_fine(tmp_path):
    path = tmp_path / "serd.yaml"
    path.write_text("device_id: &name hall\n", encoding="utf-8")
    assert config.load(path).device_id == "hall"
    path.write_text("analysis: &a {hop_s: 0.5}\nsource: *a\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="line 2.*aliases"):
        config.load(path)


def test_an_oversized_config_is_refused_unread(tmp_path):
    path = tmp_path / "serd.yaml"
    path.write_text("# padding\n" * 10_000, encoding="utf-8")
    with pytest.raises(ConfigError, match="over 64 KB"):
        config.load(path)


def test_a_fifo_config_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "config.fifo"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        config.load(fifo)


def test_a_huge_bad_value_is_shown_cut_short(tmp_path):
    path = tmp_path / "serd.yaml"
    path.write_text(f"device_id: {'x' * 50_000}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="device_id") as caught:
        config.load(path)
    assert len(str(caught.value)) < 300


def test_run_refuses_an_alias_bomb_in_one_line(workdir):
    path = workdir / "serd.yaml"
    path.write_text(ALIAS_BOMB, encoding="utf-8")
    line = refused(["--config", path], workdir)
    assert "serd.yaml" in line and "aliases" in line, line


def test_run_refuses_a_missing_config_file(workdir):
    line = refused(["--config", workdir / "nowhere.yaml"], workdir)
    assert "nowhere.yaml" in line and "not found" in line, line


def test_run_refuses_a_network_bind_from_the_command_line(workdir):
    line = refused(["--source", "-", "--bind", "tcp://0.0.0.0:5556"], workdir)
    assert "publisher.bind: " in line and "allow_insecure" in line, line


def test_command_line_values_are_validated_too(workdir):
    line = refused(["--source", "-", "--rate", "100"], workdir)
    assert "source.stdin_rate: " in line, line
    line = refused(["--source", "-", "--device-id", "no spaces please"], workdir)
    assert "device_id: " in line, line


# -- the model is checked at start: exit 78, one line ----------------------------------------------

@pytest.fixture
def model_copy(tiny_model_int8, workdir) -> Path:
    target = workdir / "m.tflite"
    shutil.copyfile(tiny_model_int8, target)
    shutil.copyfile(tiny_model_int8.with_suffix(".json"), target.with_suffix(".json"))
    return target


def model_refused(model: Path, cwd: Path) -> str:
    bind = f"tcp://127.0.0.1:{free_tcp_port()}"
    done = run_serd(["run", "--source", "-", "--bind", bind, "--model", model], cwd=cwd, timeout=60)
    assert_no_traceback(done.stderr)
    assert done.returncode == EX_CONFIG, (done.returncode, done.stderr)
    lines = serd_lines(done.stderr)
    assert len(lines) == 1 and lines[0].startswith("serd: model error: "), done.stderr
    return lines[0]


def test_missing_model_is_refused(workdir):
    line = model_refused(workdir / "absent.tflite", workdir)
    assert "absent.tflite" in line and "not found" in line, line


def test_missing_sidecar_is_refused(model_copy, workdir):
    model_copy.with_suffix(".json").unlink()
    line = model_refused(model_copy, workdir)
    assert "m.json" in line and "sidecar" in line, line


def test_corrupt_model_is_refused(model_copy, workdir):
    """Garbage bytes whose sidecar hash matches: the interpreter itself must refuse them, cleanly."""
    from serd.model import sha256_of

    model_copy.write_bytes(bytes(range(256)) * 64)
    sidecar_path = model_copy.with_suffix(".json")
    sidecar = json.loads(sidecar_path.read_text())
    sidecar["sha256"] = sha256_of(model_copy)
    sidecar_path.write_text(json.dumps(sidecar))
    line = model_refused(model_copy, workdir)
    assert "not a loadable TFLite model" in line, line


def test_model_from_another_build_is_refused(model_copy, workdir):
    """A .tflite whose bytes changed after its sidecar was written (a hash mismatch)."""
    with open(model_copy, "ab") as handle:
        handle.write(b"\0")
    line = model_refused(model_copy, workdir)
    assert "SHA-256" in line and "does not match" in line, line


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda s: s.update(labels=s["labels"][:5]), "output shape"),
        (lambda s: s["features"].update(n_mels=40), "input shape"),
        (lambda s: s["input"].update(zero_point=s["input"]["zero_point"] + 1), "input quantisation"),
        (lambda s: s["output"].update(dtype="float32"), "output dtype"),
    ],
    ids=["labels", "mels", "input-zero-point", "output-dtype"],
)
def test_sidecar_that_does_not_describe_the_model_is_refused(model_copy, workdir, change, expected):
    sidecar_path = model_copy.with_suffix(".json")
    sidecar = json.loads(sidecar_path.read_text())
    change(sidecar)
    sidecar_path.write_text(json.dumps(sidecar))
    line = model_refused(model_copy, workdir)
    assert expected in line, line


@pytest.mark.parametrize("record, path", [
    ({"connect": []}, "record.connect"),
    ({"connect": ["udp://x"]}, "record.connect[0]"),
    ({"connect": [5]}, "record.connect[0]"),
    ({"keep_days": 0}, "record.keep_days"),
    ({"keep_days": 30, "keep_aggregate_days": 20}, "record.keep_aggregate_days"),
    ({"flush_s": 0}, "record.flush_s"),
    ({"batch_rows": 10, "queue_rows": 5}, "record.queue_rows"),
    ({"client_key": "k"}, "record.client_key"),
])
def test_record_section_is_validated(record, path):
    with pytest.raises(config.ConfigError, match=re.escape(path)):
        config.from_dict({"record": record})


def test_record_section_takes_a_list_of_endpoints():
    s = config.from_dict({"record": {"connect": ["tcp://127.0.0.1:5556", "ipc:///run/serd/room2"], "keep_days": 3}})
    assert s.record.connect == ("tcp://127.0.0.1:5556", "ipc:///run/serd/room2") and s.record.keep_days == 3.0


def test_device_id_length_comes_from_the_wire_format():
    """Issue 19, item 4: the config, encode and decode share one limit (messages.MAX_DEVICE_CHARS)."""
    from serd.messages import MAX_DEVICE_CHARS

    for chars in (1, MAX_DEVICE_CHARS):
        assert config.from_dict({"device_id": "d" * chars}).device_id == "d" * chars
    with pytest.raises(ConfigError, match=f"device_id: expected 1-{MAX_DEVICE_CHARS} letters"):
        config.from_dict({"device_id": "d" * (MAX_DEVICE_CHARS + 1)})


@pytest.mark.parametrize("yaml_text, match", [
    ("analysis:\n  hop_s: 0.5\n  gate_dbfs: -50\n  hop_s: 0.25\n", r"line 4 \(duplicate key 'hop_s', first given at line 2\)"),
    ("analysis: {hop_s: 0.5}\nlog_level: info\nanalysis:\n  hop_s: 1\n", r"line 3 \(duplicate key 'analysis', first"),
    ("analysis: {hop_s: 0.5, hop_s: 1}\n", r"line 1 \(duplicate key 'hop_s', first given at line 1\)"),
    ("a: 1\n'a': 2\n", r"line 2 \(duplicate key 'a'"),
])
def test_a_key_given_twice_is_refused_with_its_lines(tmp_path, yaml_text, match):
    """Issue 19, item 8: the last of two `hop_s` silently won."""
    path = tmp_path / "serd.yaml"
    path.write_text(yaml_text, encoding="utf-8")
    with pytest.raises(ConfigError, match=match) as caught:
        config.load(path)
    assert "\n" not in str(caught.value)


def test_a_merged_mapping_is_not_a_duplicate(tmp_path):
    path = tmp_path / "serd.yaml"
    path.write_text("analysis: {<<: {hop_s: 0.25}, gate_dbfs: -50}\n", encoding="utf-8")
    assert config.load(path).analysis.hop_s == 0.25


def test_run_refuses_a_duplicate_key_in_one_line(workdir):
    path = workdir / "serd.yaml"
    path.write_text("device_id: hall\nanalysis:\n  hop_s: 0.5\ndevice_id: kitchen\n", encoding="utf-8")
    line = refused(["--config", path, "--source", "-"], workdir)
    assert "serd.yaml" in line and "line 4" in line and "duplicate key 'device_id', first given at line 1" in line
