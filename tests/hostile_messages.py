"""Messages a hostile or broken publisher sends (issue 13), each of which `decode` must refuse.

Shared by tests/test_messages.py (decode alone), tests/test_dashboard.py, tests/test_listen.py and
tests/reliability/test_hostile_publisher.py (real sockets, real consumers). `OVERSIZE` names the
cases whose frames are over `MAX_MESSAGE_BYTES`: a consumer's SUB socket drops the peer before
they are decoded, so they are never counted, only survived.
"""

from __future__ import annotations

import json

from serd.messages import MAX_MESSAGE_BYTES, STATUS_SCHEMA, MessageError, decode, encode

EMOTION_OK = {
    "schema": "serd.emotion/1", "device": "kitchen", "seq": 41, "time": 1795000000.123456,
    "captured_at": 1795000000.101, "start_s": 12.5, "end_s": 14.5, "speech": True, "level_dbfs": -31.25,
    "probs": {"neutral": 0.1, "happy": 0.2, "sad": 0.05, "angry": 0.4, "fearful": 0.15, "disgust": 0.1},
    "smoothed": {"neutral": 0.2, "happy": 0.2, "sad": 0.1, "angry": 0.3, "fearful": 0.1, "disgust": 0.1},
    "label": "angry", "confidence": 0.3, "model": "serd-emotion6-int8",
}
STATUS_R = {"schema": STATUS_SCHEMA, "device": "r", "seq": 0, "time": 1, "state": "running",
            "uptime_s": 1, "source": "x", "model": "m"}


def _emotion_body(**changes) -> bytes:
    return json.dumps({**EMOTION_OK, **changes}).encode()


def status_body(**changes) -> bytes:
    return json.dumps({**STATUS_R, **changes}).encode()


def _raw_status(field: str, raw: bytes) -> bytes:
    """A status body with one field's JSON text replaced verbatim (for what json.dumps cannot write)."""
    return status_body(**{field: "@@"}).replace(b'"@@"', raw)


HOSTILE = {
    # finding 1: mistyped fields
    "uptime-as-string": [b"serd.status.r", b'{"schema":"serd.status/1","device":"r","seq":0,"time":1,'
                         b'"state":"running","uptime_s":"x","source":"x","model":"m"}'],
    "probs-as-list": [b"serd.emotion.kitchen", _emotion_body(probs=[0.5, 0.5])],
    "probs-as-string": [b"serd.emotion.kitchen", _emotion_body(probs="angry")],
    "seq-as-string": [b"serd.emotion.kitchen", _emotion_body(seq="41")],
    "time-as-string": [b"serd.emotion.kitchen", _emotion_body(time="now")],
    "level-as-string": [b"serd.emotion.kitchen", _emotion_body(level_dbfs="-30")],
    "confidence-as-string": [b"serd.emotion.kitchen", _emotion_body(confidence="0.3")],
    "device-as-int": [b"serd.status.7", status_body(device=7)],
    "device-as-list": [b"serd.status.r", status_body(device=["r"])],
    "seq-as-bool": [b"serd.status.r", status_body(seq=True)],
    "negative-seq": [b"serd.status.r", status_body(seq=-1)],
    "speech-as-int": [b"serd.emotion.kitchen", _emotion_body(speech=1)],
    "5000-digit-seq": [b"serd.status.r", _raw_status("seq", b"9" * 5000)],
    "2**64-seq": [b"serd.status.r", status_body(seq=2**64)],
    "nested-100000-deep": [b"serd.status.r", b"[" * 100_000 + b"]" * 100_000],
    "nested-in-extra": [b"serd.status.r", _raw_status("extra", b'{"a":' + b"[" * 20_000 + b"]" * 20_000 + b"}")],
    "extra-5-deep": [b"serd.status.r", status_body(extra={"a": [[[[1]]]]})],
    # finding 2: non-finite numbers
    "time-NaN": [b"serd.status.r", _raw_status("time", b"NaN")],
    "time-1e400": [b"serd.status.r", _raw_status("time", b"1e400")],
    "seq-NaN": [b"serd.status.r", _raw_status("seq", b"NaN")],
    "windows-Infinity": [b"serd.status.r", _raw_status("windows", b"Infinity")],
    "extra-NaN": [b"serd.status.r", _raw_status("extra", b'{"x":NaN}')],
    "level-minus-Infinity": [b"serd.emotion.kitchen", _emotion_body(level_dbfs="@@").replace(b'"@@"', b"-Infinity")],
    "prob-above-1": [b"serd.emotion.kitchen", _emotion_body(probs={"angry": 1.5})],
    # finding 4: sizes
    "80-KB-emotion": [b"serd.emotion.kitchen", _emotion_body(model="m" * 80_000)],
    "2-MB-device": [b"serd.status." + b"d" * 2_000_000, status_body(device="d" * 2_000_000)],
    "65-char-device": [b"serd.status." + b"d" * 65, status_body(device="d" * 65)],
    "device-with-markup": [b"serd.status.<b>", status_body(device="<b>")],
    "long-label-name": [b"serd.emotion.kitchen", _emotion_body(probs={"x" * 33: 0.5})],
    "33-labels": [b"serd.emotion.kitchen", _emotion_body(probs={f"l{i}": 0.01 for i in range(33)})],
    "long-detail": [b"serd.status.r", status_body(detail="x" * 513)],
    "long-source": [b"serd.status.r", status_body(source="x" * 513)],
    "long-model": [b"serd.status.r", status_body(model="x" * 129)],
    "arousal-above-1": [b"serd.emotion.kitchen", _emotion_body(arousal=2.0)],
    # issue 19, item 2: finite but beyond physics (+1e308 then -1e308 made a minute's level sum infinite)
    "level-1e308": [b"serd.emotion.kitchen", _emotion_body(level_dbfs=1e308)],
    "level-minus-1e308": [b"serd.emotion.kitchen", _emotion_body(level_dbfs=-1e308)],
    "level-21-dBFS": [b"serd.emotion.kitchen", _emotion_body(level_dbfs=21)],
    "start-negative": [b"serd.emotion.kitchen", _emotion_body(start_s=-0.5)],
    "end-1e300": [b"serd.emotion.kitchen", _emotion_body(end_s=1e300)],
    "uptime-1e300": [b"serd.status.r", status_body(uptime_s=1e300)],
    "cpu-negative": [b"serd.status.r", status_body(cpu_percent=-1)],
    "rss-1e300": [b"serd.status.r", status_body(rss_mb=1e300)],
    "smoothed-arousal-string": [b"serd.emotion.kitchen", _emotion_body(smoothed_arousal="high")],
}

OVERSIZE = {name for name, frames in HOSTILE.items() if max(len(f) for f in frames) > MAX_MESSAGE_BYTES}


# -- generated: mistyped and non-finite messages (hypothesis) ---------------------------------------

def _strategies():
    from hypothesis import strategies as st

    scalars = st.one_of(
        st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=80),
        st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e308, -0.0, 2**63, -1, ""]),
    )
    values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                           st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                          max_leaves=12)
    return st, values


def mutated_frames():
    """Frames of a real emotion or status message with 1-3 fields replaced by any JSON-ish value
    (NaN and Infinity written as the literals a careless publisher sends), or removed."""
    st, values = _strategies()

    @st.composite
    def build(draw):
        base = dict(draw(st.sampled_from([EMOTION_OK, STATUS_R])))
        fields = sorted(set(base) - {"schema"})
        for name in draw(st.lists(st.sampled_from(fields), min_size=1, max_size=3, unique=True)):
            if draw(st.booleans()) and name != "device":
                base[name] = draw(values)
            elif draw(st.integers(0, 4)) == 0:
                del base[name]
            else:
                base[name] = draw(values)
        prefix = "serd.emotion." if base["schema"] == "serd.emotion/1" else "serd.status."
        device = base.get("device")
        topic = prefix + (device if isinstance(device, str) else str(device))
        return [topic.encode("utf-8", "surrogatepass"), json.dumps(base, allow_nan=True).encode("utf-8", "surrogatepass")]

    return build()


def rejected(frames: list[bytes]) -> bool:
    """Whether `decode` refuses these frames: what a consumer must count as malformed."""
    try:
        decode(frames)
    except MessageError:
        return True
    return False


def padded(message, padding: int) -> list[bytes]:
    """A valid message with `padding` bytes in an unknown field (decode drops it; ZeroMQ still carries it)."""
    topic, body = encode(message)
    return [topic, body[:-1] + b',"padding":"' + b"x" * padding + b'"}']
