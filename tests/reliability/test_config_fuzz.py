"""Config fuzzing: `serd.config.from_dict` and `load` against generated configs.

What is invalid is defined here, by construction, independently of `serd/config.py`:
`FIELDS` lists every key with the types it takes and the values it allows (the README's
table and config.yaml's comments). From a valid config (`valid_configs`), one mutation (a
wrong type, an out-of-range value, an unknown key) gives an invalid one, which must be
refused with `ConfigError` whose one-line message starts with the mutated key's path.
Random nested junk must be refused with `ConfigError` or give Settings that `FIELDS`
calls valid: never accepted silently, never any other exception. `load` must do the same
for the YAML text of all of these, and for random text.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from serd import config
from serd.config import ConfigError, Settings

pytestmark = pytest.mark.reliability

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- what is valid, by construction -------------------------------------------------------------

DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
LOOPBACK_HOSTS = ("127.0.0.1", "127.8.9.10", "localhost", "[::1]")


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v) -> bool:
    if not isinstance(v, int | float) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(float(v))
    except OverflowError:
        return False


def in_range(lo, hi, lo_open=False):
    return lambda v, cfg: (lo < v if lo_open else lo <= v) and v <= hi


def valid_bind(v: str, network_ok: bool) -> bool:
    if v.startswith("ipc://"):
        return len(v) > len("ipc://")
    if not v.startswith("tcp://") or ":" not in v[6:]:
        return False
    host, port = v[6:].rsplit(":", 1)
    if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        return False
    return network_ok or host in ("localhost", "[::1]") or re.fullmatch(r"127\.\d+\.\d+\.\d+", host) is not None


@dataclass(frozen=True)
class Field:
    types: str
    """int, number, bool, str; `?` suffix: null allowed; `str|int?`: either, or null."""
    ok: Callable[[Any, dict], bool] = lambda v, cfg: True
    """Allowed values (the value already has the right type), given the whole config."""
    valid: st.SearchStrategy | None = None
    """Valid values, for building valid configs."""


def _kind_ok(v, cfg):
    return v in ("mic", "file", "stdin")


def _path_ok(v, cfg):
    return bool(v) if cfg.get("source", {}).get("kind") == "file" else True


def _curve_key_ok(v, cfg):
    return bool(v) if cfg.get("publisher", {}).get("curve", {}).get("enabled") else True


def _bind_ok(v, cfg):
    pub = cfg.get("publisher", {})
    return valid_bind(v, bool(pub.get("allow_insecure")) or bool(pub.get("curve", {}).get("enabled")))


def _input_device_ok(v, cfg):
    return v is None or (v >= 0 if is_int(v) else bool(v.strip()))


FIELDS: dict[str, Field] = {
    "device_id": Field("str", lambda v, c: DEVICE_ID.fullmatch(v) is not None,
                       st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,20}", fullmatch=True)),
    "model": Field("str", lambda v, c: bool(v.strip()), st.sampled_from(["serd-emotion6-int8", "/opt/m.tflite"])),
    "source.kind": Field("str", _kind_ok, st.sampled_from(["mic", "stdin"])),
    "source.path": Field("str?", _path_ok, st.sampled_from([None, "take.wav"])),
    "source.input_device": Field("str|int?", _input_device_ok, st.sampled_from([None, 0, 3, "USB", "hw:1"])),
    "source.capture_rate": Field("int?", lambda v, c: v is None or 4000 <= v <= 384000,
                                 st.none() | st.integers(4000, 384000)),
    "source.channels": Field("int", in_range(1, 32), st.integers(1, 32)),
    "source.stdin_rate": Field("int", in_range(4000, 384000), st.integers(4000, 384000)),
    "source.block_s": Field("number", in_range(0.005, 2.0), st.floats(0.005, 2.0)),
    "source.realtime": Field("bool", valid=st.booleans()),
    "source.queue_blocks": Field("int", in_range(2, 100000), st.integers(2, 100000)),
    "source.reconnect_max_s": Field("number", in_range(0.5, 3600), st.floats(0.5, 3600)),
    "source.stall_timeout_s": Field("number", in_range(0.5, 3600), st.integers(1, 3600)),
    "analysis.hop_s": Field("number", in_range(0.05, 10.0), st.floats(0.05, 10.0)),
    "analysis.gate_dbfs": Field("number", in_range(-120.0, 0.0), st.floats(-120.0, 0.0)),
    "analysis.hangover_windows": Field("int", in_range(0, 100), st.integers(0, 100)),
    "analysis.vad": Field("str", lambda v, c: v in ("energy", "silero"), st.sampled_from(["energy", "silero"])),
    "analysis.vad_threshold": Field("number", in_range(0.0, 1.0, lo_open=True), st.floats(0.0, 1.0, exclude_min=True)),
    "analysis.smoothing_alpha": Field("number", in_range(0.0, 1.0, lo_open=True),
                                      st.floats(0.0, 1.0, exclude_min=True)),
    "analysis.smoothing_reset_s": Field("number", in_range(0.0, 3600), st.floats(0.0, 3600)),
    "publisher.bind": Field("str", _bind_ok, st.sampled_from(
        ["tcp://127.0.0.1:5556", "tcp://localhost:1", "tcp://[::1]:65535", "ipc:///run/serd/pub.ipc"])),
    "publisher.sndhwm": Field("int", in_range(1, 1_000_000), st.integers(1, 1_000_000)),
    "publisher.linger_ms": Field("int", in_range(0, 60000), st.integers(0, 60000)),
    "publisher.status_interval_s": Field("number", in_range(0.2, 3600), st.floats(0.2, 3600)),
    "publisher.allow_insecure": Field("bool", valid=st.booleans()),
    "publisher.curve.enabled": Field("bool", valid=st.just(False)),
    "publisher.curve.server_secret_key": Field("str?", _curve_key_ok, st.sampled_from([None, "/etc/serd/k"])),
    "publisher.curve.authorized_clients": Field("str?", _curve_key_ok, st.sampled_from([None, "/etc/serd/a"])),
    "log_level": Field("str", lambda v, c: v in ("debug", "info", "warning", "error"),
                       st.sampled_from(["debug", "info", "warning", "error"])),
}
SECTIONS = ("", "source", "analysis", "publisher", "publisher.curve")


def type_ok(types: str, v) -> bool:
    optional = types.endswith("?")
    if optional and v is None:
        return True
    return any({"int": is_int, "number": is_number, "bool": lambda x: isinstance(x, bool),
                "str": lambda x: isinstance(x, str)}[t](v) for t in types.rstrip("?").split("|"))


def accepts(path: str, value, cfg: dict) -> bool:
    field = FIELDS[path]
    return type_ok(field.types, value) and bool(field.ok(value, cfg))


def get(cfg: dict, path: str, default=None):
    node = cfg
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return default
        node = node[key]
    return node


def put(cfg: dict, path: str, value) -> dict:
    """A copy of `cfg` with `path` set (intermediate sections created)."""
    out = _copy(cfg)
    node = out
    *parents, last = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return out


def _copy(cfg):
    return {k: _copy(v) for k, v in cfg.items()} if isinstance(cfg, dict) else cfg


def effective(cfg: dict) -> dict:
    """The config with every default filled in (what `FIELDS` judges)."""
    return _merge(dataclasses.asdict(Settings()), cfg)


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def settings_are_valid(s: Settings) -> bool:
    """Accepted Settings hold only values `FIELDS` allows, with the declared Python types."""
    cfg = dataclasses.asdict(s)
    for path, field in FIELDS.items():
        value = get(cfg, path)
        if not accepts(path, value, cfg):
            return False
        if field.types == "number" and not isinstance(value, float):  # coerced: 1 becomes 1.0
            return False
    return True


# -- strategies --------------------------------------------------------------------------------------

@st.composite
def valid_configs(draw) -> dict:
    """A random subset of keys set to valid values; sometimes a file source or CURVE, with what they need."""
    cfg: dict = {}
    for path in draw(st.lists(st.sampled_from(sorted(FIELDS)), unique=True, max_size=len(FIELDS))):
        cfg = put(cfg, path, draw(FIELDS[path].valid))
    if draw(st.booleans()):
        cfg = put(put(cfg, "source.kind", "file"), "source.path", "take.wav")
    if draw(st.booleans()):
        for path, value in (("publisher.curve.enabled", True), ("publisher.curve.server_secret_key", "/k/s"),
                            ("publisher.curve.authorized_clients", "/k/a")):
            cfg = put(cfg, path, value)
    # Only loopback binds were drawn, unless the network is allowed: keep what was drawn consistent.
    if not _bind_ok(get(effective(cfg), "publisher.bind"), effective(cfg)):
        cfg = put(cfg, "publisher.bind", "tcp://127.0.0.1:5556")
    return cfg


SCALAR_JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=10**309, max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12), st.binary(max_size=4), st.dates(),
)
JUNK = st.recursive(SCALAR_JUNK, lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=6) | st.integers(), inner, max_size=3), max_leaves=8)

OUT_OF_RANGE = {
    "int": lambda lo, hi: st.integers(max_value=lo - 1) | st.integers(min_value=hi + 1),
    "number": lambda lo, hi: st.floats(max_value=lo, exclude_max=True) | st.floats(min_value=hi, exclude_min=True)
    | st.sampled_from([math.nan, math.inf, -math.inf]),
}
BAD_STRINGS = st.text(max_size=70) | st.sampled_from([
    "", " ", "room\n", "room 101", "-lead", "x" * 65, "Info", "MIC",
    "tcp://127.0.0.1", "tcp://127.0.0.1:", "tcp://127.0.0.1:0", "tcp://127.0.0.1:65536", "tcp://127.0.0.1:²",
    "tcp://127.0.0.1:５５５６", "tcp://0.0.0.0:5556", "tcp://192.0.2.1:5556", "tcp://*:5556", "udp://127.0.0.1:1",
    "ipc://", "inproc://serd", "127.0.0.1:5556",
])
RANGES = {"source.capture_rate": (4000, 384000), "source.channels": (1, 32), "source.stdin_rate": (4000, 384000),
          "source.block_s": (0.005, 2.0), "source.queue_blocks": (2, 100000), "source.reconnect_max_s": (0.5, 3600),
          "source.stall_timeout_s": (0.5, 3600), "analysis.hop_s": (0.05, 10.0), "analysis.gate_dbfs": (-120.0, 0.0),
          "analysis.hangover_windows": (0, 100), "analysis.smoothing_alpha": (0.0, 1.0),
          "analysis.vad_threshold": (0.0, 1.0),
          "analysis.smoothing_reset_s": (0.0, 3600), "publisher.sndhwm": (1, 1_000_000),
          "publisher.linger_ms": (0, 60000), "publisher.status_interval_s": (0.2, 3600)}


def invalid_values(path: str) -> st.SearchStrategy:
    """Candidates for an invalid value at `path`: junk of every type, out-of-range numbers, bad strings."""
    field = FIELDS[path]
    candidates = [JUNK]
    base_type = field.types.rstrip("?").split("|")
    if path in RANGES:
        kind = "int" if "int" in base_type else "number"
        candidates.append(OUT_OF_RANGE[kind](*RANGES[path]))
    if "str" in base_type:
        candidates.append(BAD_STRINGS)
    if path == "source.input_device":
        candidates.append(st.integers(max_value=-1))
    return st.one_of(candidates)


def key_name(key) -> str:
    """How an error shows a key: as is when it is visible on one line, else its repr."""
    return key if isinstance(key, str) and key.isprintable() and key.strip() else repr(key)


@st.composite
def mutated_configs(draw) -> tuple[dict, str]:
    """(an invalid config, the key path that makes it invalid)."""
    base = draw(valid_configs())
    how = draw(st.sampled_from(["value", "value", "value", "unknown key", "section"]))
    if how == "value":
        path = draw(st.sampled_from(sorted(FIELDS)))
        context = effective(base)
        value = draw(invalid_values(path).filter(lambda v: not accepts(path, v, put(context, path, v))))
        return put(base, path, value), path
    if how == "unknown key":
        section = draw(st.sampled_from(SECTIONS))
        known = set(FIELDS) | set(SECTIONS)
        key = draw((st.text(min_size=1, max_size=12) | st.integers()).filter(
            lambda k: (f"{section}.{k}" if section else str(k)) not in known))
        cfg = _copy(base)
        node = cfg
        for part in section.split(".") if section else []:
            node = node.setdefault(part, {})
        node[key] = draw(JUNK)
        return cfg, f"{section}.{key_name(key)}" if section else key_name(key)
    section = draw(st.sampled_from(SECTIONS[1:]))
    value = draw(JUNK.filter(lambda v: v is not None and not isinstance(v, dict)))
    return put(base, section, value), section


# -- from_dict ---------------------------------------------------------------------------------------

def refused_naming(data, path: str, prefix: str = "") -> str:
    with pytest.raises(ConfigError) as caught:
        config.from_dict(data) if not prefix else config.load(data)
    message = str(caught.value)
    assert message.startswith(f"{prefix}{path}: "), f"expected the key path {path!r} first: {message!r}"
    assert "\n" not in message, message
    return message


@FUZZ
@given(valid_configs())
def test_valid_configs_are_accepted(cfg):
    """The premise of the mutations: what they start from is valid."""
    s = config.from_dict(cfg)
    assert settings_are_valid(s), s
    assert config.from_dict(dataclasses.asdict(s)) == s


@FUZZ
@given(mutated_configs())
@example(({"device_id": "room\n"}, "device_id"))
@example(({"analysis": {"hop_s": 10**400}}, "analysis.hop_s"))
@example(({"publisher": {"bind": "tcp://127.0.0.1:²"}}, "publisher.bind"))
@example(({"publisher": {"bind": "tcp://127.0.0.1:５５５６"}}, "publisher.bind"))
@example(({"publisher": {"bind": "ipc://"}}, "publisher.bind"))
@example(({"source": {"input_device": -1}}, "source.input_device"))
@example(({"source": {"input_device": " "}}, "source.input_device"))
@example(({"analysis": {"bad\nkey": 1}}, "analysis.'bad\\nkey'"))
def test_every_invalid_config_is_refused_naming_its_key(case):
    cfg, path = case
    refused_naming(cfg, path)


@FUZZ
@given(JUNK | st.dictionaries(st.sampled_from(["device_id", "source", "analysis", "publisher", "log_level", "x"]),
                              JUNK | st.dictionaries(st.sampled_from(
                                  ["kind", "path", "channels", "hop_s", "bind", "curve", "sndhwm", "y"]), JUNK)))
@example({":": None})  # found by CI: an unquoted ':' key made the path end too early
@example({"analysis": {"a: b": 1}})
def test_random_junk_is_refused_or_valid(data):
    try:
        s = config.from_dict(data)
    except ConfigError as exc:
        message = str(exc)
        assert "\n" not in message and re.match(r"^(top level|[^:]+|'.*'|.*\.'.*'): ", message), message
        return
    assert settings_are_valid(s), (data, s)


# -- load: the same through YAML files ---------------------------------------------------------------

@pytest.fixture(scope="module")
def yaml_dir():
    with tempfile.TemporaryDirectory(prefix="serd-fuzz-") as path:
        yield Path(path)


def yaml_file(directory: Path, text: str) -> Path:
    path = directory / "serd.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@FUZZ
@given(mutated_configs())
def test_load_refuses_every_invalid_yaml_config_naming_file_and_key(yaml_dir, case):
    cfg, path = case
    try:
        text = yaml.safe_dump(cfg, allow_unicode=True)
    except yaml.YAMLError:
        event("not representable in YAML")
        return  # nothing a user could write
    data = yaml.safe_load(text)
    if data != cfg and not _same_nan(data, cfg):
        event("changed by a YAML round trip")
        return  # e.g. a date; covered by from_dict above
    event("loaded")
    file = yaml_file(yaml_dir, text)
    refused_naming(file, path, prefix=f"{file}: ")


def _same_nan(a, b) -> bool:
    return repr(a) == repr(b)


YAML_ALPHABET = st.characters(codec="utf-8", exclude_categories=("Cs",)) | st.sampled_from(list(":-[]{},#&*!|>'\"%@` \n\t?."))


@FUZZ
@given(st.text(YAML_ALPHABET, max_size=200))
@example("analysis:\n  hop_s: 2024-13-45\n")
@example("analysis:\n  hop_s: " + "9" * 5000 + "\n")
@example("analysis:\n  hop_s: 1.0e+400\n")
@example("analysis: {hop_s: 1\n")
@example("? [a, b]\n: 1\n")
@example("a: !!python/object/apply:os.system ['true']\n")
@example("- a\n- b\n")
@example("\x00")
@example("a: &a [1, 2]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
         "d: [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n")
def test_load_of_any_text_is_refused_or_valid(yaml_dir, text):
    file = yaml_file(yaml_dir, text)
    try:
        s = config.load(file)
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith(f"{file}: ") and "\n" not in message, message
        return
    assert settings_are_valid(s), (text, s)
