"""Home Assistant MQTT discovery: one device per room, a sensor per reading.

Each sensor is announced with a retained config message on
`<discovery_prefix>/sensor/<node_id>/<object_id>/config` (Home Assistant's documented discovery
topic), where node_id is `serd_<room>` and object_id the reading. An empty retained payload on the
same topic removes the sensor, and the device with its last sensor: that is how a forgotten room
goes away. Full key names, not the abbreviations, so that a payload reads as the documentation does.

A sensor is available when both the bridge (its last will says `offline`) and the room (silent
too long, or stopping) are: `availability_mode: all` over the two availability topics.
"""

from __future__ import annotations

from dataclasses import dataclass

from serd import __version__
from serd.mqtt.rooms import OFFLINE, ONLINE, node_id

MANUFACTURER = "serd"


@dataclass(frozen=True)
class Topics:
    """Where the bridge publishes (all retained)."""

    prefix: str = "serd"
    discovery_prefix: str = "homeassistant"

    @property
    def bridge_availability(self) -> str:
        return f"{self.prefix}/bridge/availability"

    @property
    def discovery_status(self) -> str:
        """Home Assistant's birth message: `online` when it (re)starts, a cue to announce again."""
        return f"{self.discovery_prefix}/status"

    def state(self, device: str) -> str:
        return f"{self.prefix}/{device}/state"

    def availability(self, device: str) -> str:
        return f"{self.prefix}/{device}/availability"

    def config(self, device: str, object_id: str) -> str:
        return f"{self.discovery_prefix}/sensor/{node_id(device)}/{object_id}/config"


@dataclass(frozen=True)
class Reading:
    object_id: str
    name: str
    key: str
    """The state JSON's key the sensor shows."""
    unit: str | None = None
    icon: str = "mdi:information-outline"
    numeric: bool = False
    diagnostic: bool = False


READINGS = (
    Reading("arousal", "Arousal", "arousal_pct", "%", "mdi:pulse", numeric=True),
    Reading("speech_share", "Speech share", "speech_share_pct", "%", "mdi:account-voice", numeric=True),
    Reading("last_label", "Last label", "last_label", icon="mdi:emoticon-outline"),
    Reading("level", "Level", "level_dbfs", "dBFS", "mdi:volume-high", numeric=True, diagnostic=True),
    Reading("status", "Status", "status", diagnostic=True),
)
"""The sensors of a room. Arousal and speech share in % of the period (10 s by default); `null`
(no speech, or no window, in the period) renders as `None`, which Home Assistant shows as unknown."""


def sensor_config(topics: Topics, device: str, reading: Reading, model: str, version: str) -> dict:
    """The discovery payload of one sensor of one room."""
    node = node_id(device)
    config = {
        "name": reading.name,
        "unique_id": f"{node}_{reading.object_id}",
        "state_topic": topics.state(device),
        "value_template": f"{{{{ value_json.{reading.key} }}}}",
        "availability": [
            {"topic": topics.bridge_availability, "payload_available": ONLINE, "payload_not_available": OFFLINE},
            {"topic": topics.availability(device), "payload_available": ONLINE, "payload_not_available": OFFLINE},
        ],
        "availability_mode": "all",
        "icon": reading.icon,
        "device": {
            "identifiers": [node],
            "name": device,
            "manufacturer": MANUFACTURER,
            "model": model or "serd",
            "sw_version": version or __version__,
        },
        "origin": {"name": "serd mqtt", "sw_version": __version__},
    }
    if reading.unit is not None:
        config["unit_of_measurement"] = reading.unit
    if reading.numeric:
        config["state_class"] = "measurement"
        config["suggested_display_precision"] = 0
    if reading.diagnostic:
        config["entity_category"] = "diagnostic"
    return config


def room_configs(topics: Topics, device: str, model: str, version: str) -> dict[str, dict]:
    """Config topic -> payload for every sensor of a room."""
    return {topics.config(device, r.object_id): sensor_config(topics, device, r, model, version) for r in READINGS}


def room_topics(topics: Topics, device: str) -> list[str]:
    """Every retained topic the bridge writes for a room (emptied when the room is forgotten)."""
    return [topics.config(device, r.object_id) for r in READINGS] + [topics.state(device), topics.availability(device)]
