"""`serd mqtt` against a real Mosquitto broker: discovery and state topics arrive, are retained,
follow a daemon's stop and silence, survive the broker going away and coming back, and hostile
daemon messages are counted, never fatal. The daemons are a real `serd run` or a real ZeroMQ
publisher sending real messages (helpers_record.TestPublisher); the bridge runs as `python -m serd`."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from helpers_daemon import DaemonProcess, assert_no_traceback, free_tcp_port, run_serd, write_config
from helpers_mqtt import Watcher, broker, needs_mosquitto
from helpers_record import TestPublisher, emotion, status
from serd.config import EX_CONFIG
from serd.mqtt.discovery import READINGS, Topics, room_configs
from serd.mqtt.rooms import node_id

pytest.importorskip("paho.mqtt.client", reason="pip install -e '.[mqtt]'")

ROOM = "room-101"
TOPICS = Topics()
PERIOD_S = 1.0
STALE_S = 2.0

# -- Home Assistant's MQTT discovery schema, as documented (integrations/sensor.mqtt, and the
# discovery page: device and availability blocks). Types per key; required ones first.
SENSOR_REQUIRED = {"state_topic": str, "unique_id": str, "device": dict}
"""state_topic is required by the sensor platform; unique_id is required for an entity that belongs to a device."""
SENSOR_OPTIONAL = {"name": (str, type(None)), "value_template": str, "unit_of_measurement": str, "icon": str,
                   "availability": list, "availability_mode": str, "state_class": str, "entity_category": str,
                   "suggested_display_precision": int, "origin": dict, "device_class": str, "expire_after": int,
                   "json_attributes_topic": str}
DEVICE_KEYS = {"identifiers": list, "name": str, "manufacturer": str, "model": str, "sw_version": str}
AVAILABILITY_KEYS = {"topic": str, "payload_available": str, "payload_not_available": str, "value_template": str}
STATE_CLASSES = {"measurement", "total", "total_increasing", "measurement_angle"}
ENTITY_CATEGORIES = {"config", "diagnostic"}
AVAILABILITY_MODES = {"all", "any", "latest"}


def check_sensor_config(config: dict, topic: str) -> None:
    """A discovery payload Home Assistant accepts: known keys of the documented types, and consistent."""
    for key, kind in SENSOR_REQUIRED.items():
        assert isinstance(config.get(key), kind), f"{topic}: {key} missing or not {kind.__name__}"
    for key, value in config.items():
        kinds = SENSOR_REQUIRED.get(key) or SENSOR_OPTIONAL.get(key)
        assert kinds is not None, f"{topic}: {key} is not a key of Home Assistant's MQTT sensor"
        assert isinstance(value, kinds) and not isinstance(value, bool), f"{topic}: {key} is {type(value).__name__}"
    device = config["device"]
    assert set(device) <= set(DEVICE_KEYS) and device.get("identifiers"), f"{topic}: device {device}"
    for key, value in device.items():
        assert isinstance(value, DEVICE_KEYS[key]), f"{topic}: device.{key}"
    assert all(isinstance(i, str) and i for i in device["identifiers"])
    for item in config.get("availability", []):
        assert isinstance(item, dict) and isinstance(item.get("topic"), str), f"{topic}: availability {item}"
        assert set(item) <= set(AVAILABILITY_KEYS), f"{topic}: availability {item}"
    assert config.get("availability_mode", "latest") in AVAILABILITY_MODES
    assert config.get("state_class", "measurement") in STATE_CLASSES
    assert config.get("entity_category", "diagnostic") in ENTITY_CATEGORIES
    if "state_class" in config:  # a numeric sensor: Home Assistant refuses text states for it
        assert "unit_of_measurement" in config, topic
    if "origin" in config:
        assert isinstance(config["origin"].get("name"), str), f"{topic}: origin needs a name"
    # The discovery topic: <prefix>/sensor/<node_id>/<object_id>/config, ids of [a-zA-Z0-9_-].
    prefix, component, node, object_id, last = topic.split("/")
    assert (component, last) == ("sensor", "config")
    assert all(part and all(ch.isalnum() or ch in "_-" for ch in part) for part in (node, object_id)), topic


def test_discovery_payloads_follow_the_home_assistant_schema():
    configs = room_configs(TOPICS, ROOM, "serd-emotion6-int8", "0.1.0")
    assert len(configs) == len(READINGS) >= 4
    for topic, config in configs.items():
        check_sensor_config(config, topic)
        assert config["state_topic"] == f"serd/{ROOM}/state"
        assert [a["topic"] for a in config["availability"]] == ["serd/bridge/availability", f"serd/{ROOM}/availability"]
        assert config["availability_mode"] == "all"
        assert config["device"]["identifiers"] == [f"serd_{ROOM}"]
        assert config["unique_id"].startswith(f"serd_{ROOM}_")
    names = {c["name"]: c for c in configs.values()}
    assert names["Arousal"]["unit_of_measurement"] == "%" and names["Speech share"]["unit_of_measurement"] == "%"
    assert "value_json.last_label" in names["Last label"]["value_template"]
    assert names["Status"]["entity_category"] == "diagnostic"
    assert len({c["unique_id"] for c in configs.values()}) == len(configs)


def test_node_ids_are_safe_and_distinct():
    assert node_id("room-101") == "serd_room-101"
    assert node_id("room.1") != node_id("room_1") and node_id("room.1").startswith("serd_room_1_")
    assert all(ch.isalnum() or ch in "_-" for ch in node_id("a:b.c"))


# -- the bridge against a real broker --------------------------------------------------------


def bridge_config(workdir: Path, broker_url: str, endpoint: str, **extra) -> Path:
    lines = [f"  connect: [{endpoint}]", f"  broker: {broker_url}", f"  publish_every_s: {PERIOD_S}",
             f"  stale_after_s: {STALE_S}", f"  client_id: serd-test-bridge-{free_tcp_port()}"]
    lines += [f"  {key}: {value}" for key, value in extra.items()]
    return write_config(workdir / "bridge.yaml", "mqtt:\n" + "\n".join(lines) + "\n")


def configs_of(room: str):
    return [TOPICS.config(room, r.object_id) for r in READINGS]


def announced(room: str):
    return lambda w: all(w.latest.get(t) for t in configs_of(room))


def availability_is(room: str, value: str):
    return lambda w: w.latest.get(TOPICS.availability(room)) == value.encode()


def running_room(publisher: TestPublisher, room: str, n: int, t0: float, seq0: int = 0) -> None:
    publisher.send(status(room, seq0, t0))
    for i in range(n):
        publisher.send(emotion(room, seq0 + i, t0 + i * 0.5, speech=i % 2 == 0, arousal=0.25, smoothed_arousal=0.5))


@needs_mosquitto
def test_rooms_appear_with_retained_discovery_and_state_and_follow_stop_and_silence(workdir):
    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
    publisher = TestPublisher(endpoint)
    with broker(workdir) as mosquitto:
        watcher = Watcher(mosquitto.port)
        with DaemonProcess(["mqtt", "--config", bridge_config(workdir, mosquitto.url, endpoint)], cwd=workdir) as bridge:
            publisher.wait_subscribed()
            running_room(publisher, ROOM, 8, 1_800_000_000.0)
            watcher.wait_for("discovery", announced(ROOM), process=bridge)
            watcher.wait_for("a state", lambda w: TOPICS.state(ROOM) in w.latest, process=bridge)
            state = watcher.json(TOPICS.state(ROOM))
            assert state["status"] == "running" and state["windows"] == 8
            assert state["speech_share_pct"] == 50.0 and state["arousal_pct"] == 50.0 and state["arousal"] == 0.5
            assert state["last_label"] in ("neutral", "happy", "sad", "angry", "fearful", "disgust")
            assert isinstance(state["level_dbfs"], float) and state["model"] == "serd-test"
            assert watcher.latest[TOPICS.bridge_availability] == b"online"
            assert watcher.latest[TOPICS.availability(ROOM)] == b"online"
            for topic in configs_of(ROOM):
                check_sensor_config(watcher.json(topic), topic)

            # Retained: a client connecting now gets them all at once.
            late = Watcher(mosquitto.port)
            late.wait_for("retained topics", lambda w: announced(ROOM)(w) and TOPICS.state(ROOM) in w.latest)
            assert all(late.retained[t] for t in [*configs_of(ROOM), TOPICS.state(ROOM), TOPICS.bridge_availability,
                                                   TOPICS.availability(ROOM)])
            late.close()

            # Bounded rate: one state a period, not one a window (40 windows in well under a period).
            before = sum(1 for t, _, _ in watcher.history if t == TOPICS.state(ROOM))
            running_room(publisher, ROOM, 40, 1_800_000_010.0, seq0=8)
            watcher.wait_for("the next state", lambda w: w.json(TOPICS.state(ROOM))["windows"] == 40, process=bridge)
            assert sum(1 for t, _, _ in watcher.history if t == TOPICS.state(ROOM)) <= before + 2

            # The daemon stops: its sensors go unavailable at once, and its state says so.
            publisher.send(status(ROOM, 99, 1_800_000_030.0, state="stopping"))
            watcher.wait_for("offline after stopping", availability_is(ROOM, "offline"), process=bridge)
            watcher.wait_for("stopping state", lambda w: w.json(TOPICS.state(ROOM))["status"] == "stopping")

            # Back, then silent (killed: no stopping status): unavailable after stale_after_s.
            running_room(publisher, ROOM, 2, 1_800_000_040.0, seq0=100)
            watcher.wait_for("online again", availability_is(ROOM, "online"), process=bridge)
            watcher.wait_for("offline when silent", availability_is(ROOM, "offline"), timeout_s=STALE_S + 20,
                             process=bridge)
            assert watcher.latest[TOPICS.bridge_availability] == b"online"

            bridge.send_signal(signal.SIGTERM)
            assert bridge.wait() == 0, bridge.stderr_text()
            assert_no_traceback(bridge.stderr_text())
        # A clean stop says offline itself (no last will is sent for a clean disconnect).
        watcher.wait_for("bridge offline", lambda w: w.latest.get(TOPICS.bridge_availability) == b"offline")
        watcher.close()
    publisher.close()


@needs_mosquitto
def test_broker_down_and_back_is_refilled(workdir):
    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
    publisher = TestPublisher(endpoint)
    with broker(workdir) as mosquitto:
        with DaemonProcess(["mqtt", "--config", bridge_config(workdir, mosquitto.url, endpoint)], cwd=workdir) as bridge:
            publisher.wait_subscribed()
            watcher = Watcher(mosquitto.port)
            running_room(publisher, ROOM, 4, 1_800_000_000.0)
            watcher.wait_for("discovery", announced(ROOM), process=bridge)
            watcher.close()

            mosquitto.stop()  # no persistence: every retained message is gone with it
            for i in range(6):  # windows while the broker is away: skipped, never queued without bound
                publisher.send(emotion(ROOM, 4 + i, 1_800_000_002.0 + i * 0.5))
            mosquitto.start()
            watcher = Watcher(mosquitto.port)
            publisher.send(emotion(ROOM, 10, 1_800_000_006.0))
            watcher.wait_for("discovery again", announced(ROOM), timeout_s=60, process=bridge)
            watcher.wait_for("availability again", lambda w: availability_is(ROOM, "online")(w)
                             and w.latest.get(TOPICS.bridge_availability) == b"online", process=bridge)
            watcher.wait_for("state again", lambda w: TOPICS.state(ROOM) in w.latest, process=bridge)
            # Live deliveries carry no retain flag: a client connecting now shows they were retained.
            late = Watcher(mosquitto.port)
            late.wait_for("retained configs", announced(ROOM))
            assert all(late.retained[t] for t in configs_of(ROOM)), "re-announced configs must be retained"
            late.close()
            bridge.send_signal(signal.SIGTERM)
            assert bridge.wait() == 0
            stderr = bridge.stderr_text()
            assert "lost the broker" in stderr and stderr.count("connected to") >= 2, stderr
            assert_no_traceback(stderr)
            watcher.close()
    publisher.close()


@needs_mosquitto
def test_hostile_daemon_messages_are_counted_never_fatal(workdir):
    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
    publisher = TestPublisher(endpoint)
    with broker(workdir) as mosquitto:
        watcher = Watcher(mosquitto.port)
        config = bridge_config(workdir, mosquitto.url, endpoint, max_rooms=3)
        with DaemonProcess(["mqtt", "--config", config], cwd=workdir) as bridge:
            publisher.wait_subscribed()
            bad = [[b"serd.emotion.x", b"{not json"], [b"serd.emotion.x"], [b"serd.status.x", b"\xff\xfe"],
                   [b"serd.emotion.x", json.dumps({"schema": "serd.emotion/1", "device": "x", "seq": -1}).encode()],
                   [b"serd.emotion.x", b'{"schema": "serd.emotion/1", "level_dbfs": NaN}'],
                   [b"serd.status.x", b"[]"], [b"serd.emotion.a/b", b"{}"]]
            for frames in bad * 10:
                publisher.send_raw(frames)
            # More devices than max_rooms: the first 3 are bridged, the rest ignored.
            for i in range(20):
                publisher.send(emotion(f"spoof-{i:02d}", 0, 1_800_000_000.0))
            watcher.wait_for("three rooms", lambda w: all(announced(f"spoof-{i:02d}")(w) for i in range(3)),
                             process=bridge)
            bridge.send_signal(signal.SIGTERM)
            assert bridge.wait() == 0
            stderr = bridge.stderr_text()
            assert_no_traceback(stderr)
            assert f"malformed {len(bad) * 10}" in stderr and "ignored 17" in stderr, stderr
        assert not any(t.startswith(("homeassistant/sensor/serd_spoof-03/", "homeassistant/sensor/serd_spoof-19/"))
                       for t in watcher.latest)
        watcher.close()
    publisher.close()


@needs_mosquitto
def test_forget_removes_the_room_device(workdir):
    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
    publisher = TestPublisher(endpoint)
    with broker(workdir) as mosquitto:
        config = bridge_config(workdir, mosquitto.url, endpoint)
        with DaemonProcess(["mqtt", "--config", config], cwd=workdir) as bridge:
            publisher.wait_subscribed()
            watcher = Watcher(mosquitto.port)
            running_room(publisher, ROOM, 4, 1_800_000_000.0)
            watcher.wait_for("discovery", announced(ROOM), process=bridge)
            watcher.wait_for("state", lambda w: TOPICS.state(ROOM) in w.latest, process=bridge)
            bridge.send_signal(signal.SIGTERM)
            assert bridge.wait() == 0
        done = run_serd(["mqtt", "--config", config, "--forget", ROOM], cwd=workdir, timeout=60)
        assert done.returncode == 0, done.stderr
        watcher.wait_for("empty payloads", lambda w: all(w.latest.get(t) == b"" for t in configs_of(ROOM)))
        watcher.close()
        late = Watcher(mosquitto.port)
        late.wait_for("bridge availability", lambda w: TOPICS.bridge_availability in w.latest)
        assert not any(t in late.latest for t in [*configs_of(ROOM), TOPICS.state(ROOM), TOPICS.availability(ROOM)])
        late.close()
    publisher.close()


@needs_mosquitto
def test_a_real_daemon_appears_and_its_end_makes_it_unavailable(workdir):
    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
    with broker(workdir) as mosquitto:
        watcher = Watcher(mosquitto.port)
        config = bridge_config(workdir, mosquitto.url, endpoint)
        with DaemonProcess(["mqtt", "--config", config], cwd=workdir) as bridge:
            from helpers_daemon import DEMO_FLAC

            with DaemonProcess(["run", "--source", DEMO_FLAC, "--bind", endpoint, "--device-id", ROOM], cwd=workdir) \
                    as daemon:
                watcher.wait_for("the daemon's room", lambda w: announced(ROOM)(w) and TOPICS.state(ROOM) in w.latest,
                                 timeout_s=60, process=bridge)
                assert watcher.latest[TOPICS.availability(ROOM)] == b"online"
                device = watcher.json(TOPICS.config(ROOM, "arousal"))["device"]
                assert device["model"] == "serd-emotion5-int8" and device["name"] == ROOM
                daemon.send_signal(signal.SIGTERM)
                assert daemon.wait() == 0
            watcher.wait_for("offline after the daemon's stop", availability_is(ROOM, "offline"), process=bridge)
            assert watcher.json(TOPICS.state(ROOM))["status"] == "stopping"
        watcher.close()


def test_config_errors_are_one_line_and_exit_78(workdir):
    done = run_serd(["mqtt", "--broker", "http://example.org"], cwd=workdir, timeout=60)
    assert done.returncode == EX_CONFIG and "mqtt.broker: expected mqtt://HOST[:PORT]" in done.stderr
    done = run_serd(["mqtt", "--username", "serd", "--password-file", workdir / "missing"], cwd=workdir, timeout=60)
    assert done.returncode == EX_CONFIG and "mqtt.password_file" in done.stderr, done.stderr
    assert_no_traceback(done.stderr)
