"""`serd mqtt`'s loop: ZeroMQ subscriber -> per-room state -> MQTT broker (paho-mqtt).

The main thread (signals are handled between its steps) is the only user of the SUB socket; it
decodes every message with `serd.messages.decode` (a bad one is counted and skipped), sums each
room's windows up (`serd.mqtt.rooms`) and publishes, per room and at most every
`publish_every_s`, one retained state message. paho's own thread keeps the broker connection and
reconnects with backoff; when it (re)connects, or Home Assistant announces itself, the main
thread publishes the discovery configs, availabilities and last states again, so a broker that
restarted without its retained messages is refilled. While the broker is away nothing is queued
(a state is only worth its latest value): publications are skipped and counted.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from dataclasses import dataclass

from serd.config import EX_INTERRUPTED, MqttSettings, parse_broker
from serd.messages import EMOTION_PREFIX, STATUS_PREFIX, MessageError, StatusMessage, decode
from serd.mqtt.discovery import Topics, room_configs, room_topics
from serd.mqtt.rooms import OFFLINE, ONLINE, Room
from serd.notify import SystemdNotifier
from serd.record.recorder import POLL_MS, RECV_BATCH, REPORT_EVERY_S

_LOGGER = logging.getLogger(__name__)

KEEPALIVE_S = 30
"""MQTT keep-alive: the broker sends the last will about 1.5 keep-alives after the bridge vanished."""
RECONNECT_MIN_S, RECONNECT_MAX_S = 1, 30
"""paho's reconnection backoff, doubling between these."""
MAX_QUEUED = 1000
"""Messages paho may hold unsent (only in flight at a disconnect: the bridge skips publishing while away)."""
QOS = 1
STOP_FLUSH_S = 3.0
"""On shutdown, how long the bridge waits for its `offline` to reach the broker."""
DAY_S = 86400.0


@dataclass
class BridgeCounts:
    received: int = 0
    malformed: int = 0
    ignored: int = 0
    """Messages from devices beyond `max_rooms`."""
    published: int = 0
    skipped: int = 0
    """Publications not made: the broker was away."""
    announced: int = 0
    forgotten: int = 0
    connects: int = 0


def make_client(settings: MqttSettings, client_id: str, password: str | None, topics: Topics, will: bool = True):
    import paho.mqtt.client as mqtt

    host, port, tls = parse_broker(settings.broker)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
    if will:
        client.will_set(topics.bridge_availability, OFFLINE, qos=QOS, retain=True)
    if settings.username is not None:
        client.username_pw_set(settings.username, password)
    if tls:
        client.tls_set(ca_certs=settings.ca_file)
    client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
    client.max_queued_messages_set(MAX_QUEUED)
    client.connect_async(host, port, keepalive=KEEPALIVE_S)
    return client


class Bridge:
    def __init__(self, settings: MqttSettings, client_id: str, password: str | None = None,
                 server_key=None, client_key=None, notifier: SystemdNotifier | None = None) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_prefix, settings.discovery_prefix)
        self.server_key = server_key
        self.client_key = client_key
        self.notifier = notifier or SystemdNotifier()
        self.rooms: dict[str, Room] = {}
        self.counts = BridgeCounts()
        self.interrupted = False
        self._stop = threading.Event()
        self._announce = threading.Event()
        self._announced: dict[str, tuple[str, str]] = {}
        """device -> (model, version) of the discovery configs published since the last connect."""
        self._last_state: dict[str, str] = {}
        self._last_failure = ""
        self.client = make_client(settings, client_id, password, self.topics)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    # -- paho's thread: only flags and log lines --------------------------------------------------
    def _on_connect(self, client, _userdata, _flags, reason_code, _properties) -> None:
        if reason_code.is_failure:
            if str(reason_code) != self._last_failure:  # a wrong password must not flood the journal
                _LOGGER.error("broker %s refused the connection: %s", self.settings.broker, reason_code)
            self._last_failure = str(reason_code)
            return
        self._last_failure = ""
        self.counts.connects += 1
        _LOGGER.info("connected to %s", self.settings.broker)
        client.subscribe(self.topics.discovery_status, qos=QOS)
        self._announce.set()

    def _on_disconnect(self, _client, _userdata, _flags, reason_code, _properties) -> None:
        if not self._stop.is_set():
            _LOGGER.warning("lost the broker %s (%s); reconnecting", self.settings.broker, reason_code)

    def _on_message(self, _client, _userdata, message) -> None:
        if message.topic == self.topics.discovery_status and message.payload == ONLINE.encode():
            self._announce.set()  # Home Assistant restarted: it may have lost what it knew

    # -- the main thread ----------------------------------------------------------------------------
    def request_stop(self, signum: int | None = None, _frame=None) -> None:
        self.interrupted = self.interrupted or signum == signal.SIGINT
        self._stop.set()

    def publish(self, topic: str, payload: str | bytes) -> bool:
        """Retained, QoS 1; skipped (and counted) while the broker is away."""
        if not self.client.is_connected():
            self.counts.skipped += 1
            return False
        info = self.client.publish(topic, payload, qos=QOS, retain=True)
        if info.rc != 0:
            self.counts.skipped += 1
            return False
        self.counts.published += 1
        return True

    def handle(self, frames: list[bytes], now: float) -> None:
        """One message from a daemon: decode (the one place), add it to its room."""
        try:
            message = decode(frames)
        except MessageError as exc:
            self.counts.malformed += 1
            log = _LOGGER.warning if self.counts.malformed == 1 else _LOGGER.debug
            log("skipped a malformed message (%s)", exc)
            return
        room = self.rooms.get(message.device)
        if room is None:
            if len(self.rooms) >= self.settings.max_rooms:
                self.counts.ignored += 1
                if self.counts.ignored == 1:
                    _LOGGER.warning("more than %d rooms: ignoring %s (mqtt.max_rooms)", self.settings.max_rooms,
                                    message.device)
                return
            room = self.rooms[message.device] = Room(message.device, next_publish=now + self.settings.publish_every_s)
            _LOGGER.info("new room %s", message.device)
        self.counts.received += 1
        room.add(message, now)
        if self._announced.get(room.device) != (room.model, room.version):
            self._announce_room(room)
        if isinstance(message, StatusMessage) and message.state == "stopping":
            room.next_publish = now  # follow a stop at once, not at the end of the period
        self._update_availability(room, now)

    def tick(self, now: float) -> None:
        """Announce after a (re)connect, publish due states, mark silent rooms, forget long-silent ones."""
        if self._announce.is_set() and self.client.is_connected():
            self._announce.clear()
            self._announce_all(now)
        for room in list(self.rooms.values()):
            if now - room.last_heard > self.settings.forget_after_days * DAY_S:
                self.forget(room.device)
                continue
            self._update_availability(room, now)
            if now >= room.next_publish:
                room.next_publish = now + self.settings.publish_every_s
                self._publish_state(room)

    def forget(self, device: str) -> None:
        """Remove a room from Home Assistant: empty retained payloads on every topic it had."""
        _LOGGER.info("forgetting room %s", device)
        for topic in room_topics(self.topics, device):
            self.publish(topic, b"")
        self.rooms.pop(device, None)
        self._announced.pop(device, None)
        self._last_state.pop(device, None)
        self.counts.forgotten += 1

    def _announce_all(self, now: float) -> None:
        self._announced.clear()
        self.publish(self.topics.bridge_availability, ONLINE)
        for room in self.rooms.values():
            self._announce_room(room)
            room.available = None  # published again below
            self._update_availability(room, now)
            if room.device in self._last_state:
                self.publish(self.topics.state(room.device), self._last_state[room.device])

    def _announce_room(self, room: Room) -> None:
        if not self.client.is_connected():
            return  # announced on connect
        for topic, payload in room_configs(self.topics, room.device, room.model, room.version).items():
            self.publish(topic, json.dumps(payload, separators=(",", ":")))
        self._announced[room.device] = (room.model, room.version)
        self.counts.announced += 1

    def _update_availability(self, room: Room, now: float) -> None:
        available = room.availability(now, self.settings.stale_after_s)
        if available != room.available and self.publish(self.topics.availability(room.device), available):
            if available == OFFLINE and room.available is not None:
                _LOGGER.info("room %s unavailable (%s)", room.device,
                             "stopped" if room.status == "stopping" else "silent")
            room.available = available

    def _publish_state(self, room: Room) -> None:
        payload = json.dumps(room.take_state(time.time(), self.settings.publish_every_s), separators=(",", ":"),
                             allow_nan=False)
        self._last_state[room.device] = payload
        self.publish(self.topics.state(room.device), payload)

    def summary(self) -> str:
        c = self.counts
        return (f"{len(self.rooms)} rooms, received {c.received}, malformed {c.malformed}, ignored {c.ignored}, "
                f"published {c.published}, skipped while the broker was away {c.skipped}")

    def run(self) -> int:
        """Until SIGTERM (0) or SIGINT (130)."""
        import zmq

        from serd.subscriber import Subscriber

        # The Subscriber every consumer reads from: it refuses oversized frames and repairs the
        # connections ZeroMQ gives up on after one.
        sub = Subscriber(list(self.settings.connect), [EMOTION_PREFIX, STATUS_PREFIX], self.server_key,
                         self.client_key)
        self.client.loop_start()  # paho's thread: connects, and reconnects with backoff
        self.notifier.ready("bridging")
        _LOGGER.info("bridging %s to %s", ", ".join(self.settings.connect), self.settings.broker)
        next_report = time.monotonic() + REPORT_EVERY_S
        watchdog_s = self.notifier.watchdog_interval_s()
        next_ping = 0.0
        try:
            while not self._stop.is_set():
                if sub.poll(POLL_MS):
                    for _ in range(RECV_BATCH):
                        try:
                            frames = sub.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        self.handle(frames, time.monotonic())
                now = time.monotonic()
                self.tick(now)
                if watchdog_s and now >= next_ping:
                    self.notifier.watchdog()
                    next_ping = now + watchdog_s
                if now >= next_report:
                    next_report = now + REPORT_EVERY_S
                    _LOGGER.info("%s", self.summary())
                    self.notifier.status(self.summary())
        finally:
            sub.close()
            self.notifier.stopping()
            self._close()
            _LOGGER.info("stopped: %s", self.summary())
        return EX_INTERRUPTED if self.interrupted else 0

    def _close(self) -> None:
        """Say `offline` (a clean disconnect sends no last will), then disconnect."""
        if self.client.is_connected():
            info = self.client.publish(self.topics.bridge_availability, OFFLINE, qos=QOS, retain=True)
            try:
                info.wait_for_publish(STOP_FLUSH_S)
            except (RuntimeError, ValueError):  # the connection went meanwhile: the last will says it
                pass
        self.client.disconnect()
        self.client.loop_stop()


FORGET_TIMEOUT_S = 10.0


def forget_rooms(settings: MqttSettings, client_id: str, password: str | None, devices: list[str]) -> str | None:
    """`serd mqtt --forget ROOM`: empty a room's retained topics (its Home Assistant device goes away).

    Its own client id (a running bridge keeps its connection) and no last will. Returns an error, or None.
    """
    topics = Topics(settings.topic_prefix, settings.discovery_prefix)
    client = make_client(settings, f"{client_id}-forget", password, topics, will=False)
    connected = threading.Event()
    client.on_connect = lambda _c, _u, _f, reason_code, _p: None if reason_code.is_failure else connected.set()
    client.loop_start()
    try:
        if not connected.wait(FORGET_TIMEOUT_S):
            return f"cannot reach the broker {settings.broker} within {FORGET_TIMEOUT_S:.0f} s"
        infos = [client.publish(topic, b"", qos=QOS, retain=True) for device in devices
                 for topic in room_topics(topics, device)]
        deadline = time.monotonic() + FORGET_TIMEOUT_S
        for info in infos:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
        if not all(info.is_published() for info in infos):
            return f"the broker {settings.broker} did not confirm every removal"
        return None
    finally:
        client.disconnect()
        client.loop_stop()
