"""The wire format: encode/decode round trips and refusing what is not a serd message."""

from __future__ import annotations

import json
import math

import pytest
import zmq
from hypothesis import given, settings

from hostile_messages import EMOTION_OK, HOSTILE, mutated_frames, status_body

from serd.messages import (
    EMOTION_PREFIX,
    EMOTION_SCHEMA,
    MAX_DEVICE_CHARS,
    MAX_LEVEL_DBFS,
    MAX_TOPIC_BYTES,
    STATUS_PREFIX,
    STATUS_SCHEMA,
    EmotionMessage,
    MessageError,
    StatusMessage,
    decode,
    encode,
    is_emotion,
    is_status,
)

PROBS = {"neutral": 0.1, "happy": 0.2, "sad": 0.05, "angry": 0.4, "fearful": 0.15, "disgust": 0.1}
SMOOTHED = {"neutral": 0.2, "happy": 0.2, "sad": 0.1, "angry": 0.3, "fearful": 0.1, "disgust": 0.1}


def emotion(**changes) -> EmotionMessage:
    # Values already at the precision to_dict rounds to, so a round trip is exact.
    fields = dict(
        device="kitchen",
        seq=41,
        time=1_795_000_000.123456,
        captured_at=1_795_000_000.101,
        start_s=12.5,
        end_s=14.5,
        speech=True,
        level_dbfs=-31.25,
        probs=PROBS,
        smoothed=SMOOTHED,
        label="angry",
        confidence=0.3,
        model="serd-emotion6-int8",
    )
    fields.update(changes)
    return EmotionMessage(**fields)


def status(**changes) -> StatusMessage:
    fields = dict(
        device="kitchen",
        seq=3,
        time=1_795_000_000.5,
        state="running",
        uptime_s=12.25,
        source="mic:default",
        model="serd-emotion6-int8",
        windows=20,
        published=20,
        overruns=1,
        dropped=2,
        cpu_percent=7.5,
        rss_mb=61.25,
        detail="",
        version="0.1.0",
    )
    fields.update(changes)
    return StatusMessage(**fields)


def strict_json(body: bytes) -> dict:
    """Parse as standard JSON: NaN and Infinity are not JSON, and other clients reject them."""

    def refuse(constant: str):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(body.decode("utf-8"), parse_constant=refuse)


@pytest.mark.parametrize(
    "message",
    [
        emotion(),
        emotion(speech=False, probs=None, smoothed=None, label=None, confidence=None, level_dbfs=-70.0),
        emotion(device="pi-4.hall_2"),
        status(),
        status(state="source_lost", detail="microphone disappeared", extra={"xruns": [1, 2]}),
    ],
    ids=["emotion", "emotion-silence", "emotion-dotted-device", "status", "status-extra"],
)
def test_round_trip(message):
    frames = encode(message)
    assert len(frames) == 2 and all(isinstance(f, bytes) for f in frames)
    decoded = decode(frames)
    assert type(decoded) is type(message)
    assert decoded == message


def test_topic_is_prefix_plus_device():
    assert encode(emotion(device="hall"))[0] == b"serd.emotion.hall"
    assert encode(status(device="hall"))[0] == b"serd.status.hall"
    assert emotion(device="hall").topic == EMOTION_PREFIX + "hall"
    assert status(device="hall").topic == STATUS_PREFIX + "hall"


def test_body_is_compact_json_with_the_schema_first():
    body = encode(emotion())[1]
    parsed = strict_json(body)
    assert next(iter(parsed)) == "schema" and parsed["schema"] == EMOTION_SCHEMA
    assert b", " not in body and b": " not in body  # compact separators
    assert parsed["probs"] == PROBS and parsed["label"] == "angry" and parsed["seq"] == 41
    assert "PREFIX" not in parsed
    assert strict_json(encode(status())[1])["schema"] == STATUS_SCHEMA
    assert "extra" not in strict_json(encode(status())[1]), "empty extra is left out"


def test_values_are_rounded_on_the_wire():
    parsed = strict_json(encode(emotion(probs={"happy": 0.123456789}, level_dbfs=-31.256, start_s=1.23456))[1])
    assert parsed["probs"] == {"happy": 0.12346}
    assert parsed["level_dbfs"] == -31.26
    assert parsed["start_s"] == 1.2346


@pytest.mark.parametrize("level", [math.nan, -math.inf, math.inf])
def test_non_finite_level_still_gives_valid_json(level):
    frames = encode(emotion(level_dbfs=level, speech=False, probs=None, smoothed=None, label=None, confidence=None))
    parsed = strict_json(frames[1])
    assert parsed["level_dbfs"] == -120.0
    assert decode(frames).level_dbfs == -120.0


def test_predicates():
    assert is_emotion(decode(encode(emotion()))) and not is_status(decode(encode(emotion())))
    assert is_status(decode(encode(status()))) and not is_emotion(decode(encode(status())))


def test_unknown_body_keys_are_ignored_for_forward_compatibility():
    body = emotion().to_dict()
    body["added_in_a_later_version"] = [1, 2]
    decoded = decode([b"serd.emotion.kitchen", json.dumps(body).encode()])
    assert decoded == emotion()


def _emotion_body(**changes) -> bytes:
    body = emotion().to_dict()
    body.update(changes)
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    "frames, message",
    [
        ([b"serd.emotion.kitchen"], "expected 2 frames"),
        ([], "expected 2 frames"),
        ([b"serd.emotion.kitchen", _emotion_body(), b"extra"], "expected 2 frames"),
        ([b"serd.emotion.kitchen", b"{not json"], "undecodable"),
        ([b"serd.emotion.kitchen", b"\xff\xfe"], "undecodable"),
        ([b"\xff", _emotion_body()], "undecodable"),
        ([b"serd.emotion.kitchen", b"[1, 2]"], "not a JSON object"),
        ([b"serd.emotion.kitchen", b"null"], "not a JSON object"),
        ([b"serd.emotion.kitchen", _emotion_body(schema="serd.emotion/2")], "unknown schema"),
        ([b"serd.emotion.kitchen", json.dumps({"device": "kitchen"}).encode()], "unknown schema"),
        ([b"serd.status.kitchen", _emotion_body()], "does not match schema"),
        ([b"other.kitchen", _emotion_body()], "does not match schema"),
        ([b"serd.emotion.hall", _emotion_body()], "does not match device"),
        ([b"serd.emotion.", _emotion_body()], "does not match device"),
        ([b"serd.emotion.kitchen", json.dumps({"schema": EMOTION_SCHEMA, "device": "kitchen"}).encode()], EMOTION_SCHEMA),
    ],
    ids=[
        "one-frame",
        "no-frames",
        "three-frames",
        "bad-json",
        "bad-utf8-body",
        "bad-utf8-topic",
        "list-body",
        "null-body",
        "unknown-schema",
        "no-schema",
        "emotion-on-status-topic",
        "foreign-topic",
        "other-device",
        "empty-device",
        "missing-fields",
    ],
)
def test_malformed_frames_are_message_errors(frames, message):
    with pytest.raises(MessageError, match=message):
        decode(frames)


def test_frames_survive_a_real_zeromq_socket_pair():
    context = zmq.Context.instance()
    sender, receiver = context.socket(zmq.PAIR), context.socket(zmq.PAIR)
    sender.setsockopt(zmq.LINGER, 0)
    receiver.setsockopt(zmq.LINGER, 0)
    receiver.setsockopt(zmq.RCVTIMEO, 2000)
    try:
        receiver.bind("inproc://serd-test-messages")
        sender.connect("inproc://serd-test-messages")
        for message in (emotion(), status()):
            sender.send_multipart(encode(message))
            assert decode(receiver.recv_multipart()) == message
    finally:
        sender.close()
        receiver.close()


def test_arousal_round_trips_and_is_null_without_speech():
    m = emotion(arousal=0.61234567, smoothed_arousal=0.5)
    back = decode(encode(m))
    assert back.arousal == 0.61235 and back.smoothed_arousal == 0.5
    quiet = decode(encode(emotion(speech=False, probs=None, smoothed=None, label=None, confidence=None, arousal=0.3)))
    assert quiet.arousal is None and quiet.smoothed_arousal is None


def test_a_message_from_an_older_publisher_without_arousal_still_decodes():
    body = emotion().to_dict()
    del body["arousal"], body["smoothed_arousal"]
    old = decode([b"serd.emotion.kitchen", json.dumps(body).encode()])
    assert old.arousal is None and old.smoothed_arousal is None and old.label == "angry"


# -- hostile input (issue 13): every field typed, finite and bounded, or a MessageError ----------


@pytest.mark.parametrize("frames", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_frames_are_message_errors(frames):
    with pytest.raises(MessageError) as caught:
        decode(frames)
    assert len(str(caught.value)) < 200, "an error never echoes a huge value"


def test_integers_are_accepted_where_numbers_are_expected():
    decoded = decode([b"serd.status.r", status_body(time=1, uptime_s=3, cpu_percent=0)])
    assert decoded.time == 1.0 and isinstance(decoded.time, float) and isinstance(decoded.uptime_s, float)


def test_arousal_fields_are_optional_unit_numbers_or_null():
    for changes in ({}, {"arousal": 0.7, "smoothed_arousal": 0.65}, {"arousal": None, "smoothed_arousal": None}):
        assert decode([b"serd.emotion.kitchen", _emotion_body(**changes)]).device == "kitchen"


def test_serd_keeps_its_own_long_fields_within_the_bounds():
    long_path = "file:/" + "d/" * 400 + "recording.flac"
    decoded = decode(encode(status(source=long_path, detail="why " * 300)))
    assert decoded.source.startswith("file:/d/") and len(decoded.source) <= 512 and len(decoded.detail) <= 512


@settings(max_examples=400, deadline=None)
@given(frames=mutated_frames())
def test_decode_gives_a_message_error_or_a_message_safe_to_use(frames):
    """Whatever a publisher sends: MessageError, or values every consumer can re-encode and format."""
    from serd.listen import DeviceView, render, summary_line

    try:
        message = decode(frames)
    except MessageError:
        return
    json.dumps(message.to_dict(), allow_nan=False)  # the dashboard's and listen --json's encoding
    summary_line(message)
    view = DeviceView()
    if is_emotion(message):
        view.emotion = view.last_speech = message
    else:
        view.status = message
    render({message.device: view}, 0.0)


@pytest.mark.parametrize("field, value", [("time", -1.0), ("time", 1e300), ("captured_at", 1e18), ("captured_at", -5)])
def test_times_outside_unix_seconds_are_refused(field, value):
    """A recorder derives milliseconds from times: 1e300 s overflowed SQLite's INTEGER and stopped it."""
    body = {**EMOTION_OK, field: value}
    with pytest.raises(MessageError, match=field):
        decode([b"serd.emotion.kitchen", json.dumps(body).encode()])


@pytest.mark.parametrize("field, value, ok", [
    ("level_dbfs", -200, True), ("level_dbfs", 20, True), ("level_dbfs", -200.01, False), ("level_dbfs", 1e308, False),
    ("start_s", 0, True), ("start_s", -1e-9, False), ("end_s", 1e11, True), ("end_s", 1.0001e11, False),
])
def test_emotion_numbers_are_held_to_their_physical_range(field, value, ok):
    """Issue 19, item 2: +1e308 and -1e308 dBFS passed decode and made the recorder's minute sums infinite."""
    frames = [b"serd.emotion.kitchen", json.dumps({**EMOTION_OK, field: value}).encode()]
    if ok:
        assert getattr(decode(frames), field) == value
    else:
        with pytest.raises(MessageError, match=field):
            decode(frames)


@pytest.mark.parametrize("field, value, ok", [
    ("uptime_s", 0, True), ("uptime_s", 1e300, False), ("cpu_percent", 400.0, True), ("cpu_percent", -0.5, False),
    ("cpu_percent", 1e9, False), ("rss_mb", 0.0, True), ("rss_mb", 1e300, False),
])
def test_status_numbers_are_held_to_their_physical_range(field, value, ok):
    frames = [b"serd.status.r", status_body(**{field: value})]
    if ok:
        assert getattr(decode(frames), field) == value
    else:
        with pytest.raises(MessageError, match=field):
            decode(frames)


def test_serd_sends_only_numbers_within_the_ranges():
    """A float source can overshoot full scale; a clock can jump: what serd sends, every consumer accepts."""
    loud = decode(encode(emotion(level_dbfs=35.0, start_s=-0.25, end_s=1.75)))
    assert (loud.level_dbfs, loud.start_s, loud.end_s) == (MAX_LEVEL_DBFS, 0.0, 1.75)
    assert decode(encode(emotion(level_dbfs=-math.inf))).level_dbfs == -120.0
    odd = decode(encode(status(uptime_s=-3.0, cpu_percent=math.nan, rss_mb=math.inf)))
    assert (odd.uptime_s, odd.cpu_percent, odd.rss_mb) == (0.0, 0.0, 0.0)


@pytest.mark.parametrize("chars", [1, MAX_DEVICE_CHARS])
def test_a_device_name_of_1_to_64_characters_fits_both_topics(chars):
    """Issue 19, item 4: the topic limit was the status prefix + 64, one byte short of an emotion topic."""
    device = "d" * chars
    for message in (emotion(device=device), status(device=device)):
        frames = encode(message)
        assert len(frames[0]) <= MAX_TOPIC_BYTES
        assert decode(frames).device == device
    assert MAX_TOPIC_BYTES == len(EMOTION_PREFIX) + MAX_DEVICE_CHARS


@pytest.mark.parametrize("device", ["", "d" * (MAX_DEVICE_CHARS + 1), "room\n", "-room", "<b>"])
def test_encode_refuses_a_device_name_no_consumer_accepts(device):
    with pytest.raises(MessageError, match="device"):
        encode(emotion(device=device))
