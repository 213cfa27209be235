"""`serd mqtt`: a bridge from serd daemons to an MQTT broker, for Home Assistant.

`rooms` sums up each room's windows over a period (pure), `discovery` makes Home Assistant's
discovery payloads (pure), `bridge` is the loop (ZeroMQ subscriber -> rooms -> broker; paho-mqtt,
the `mqtt` extra), `cli` the command.
"""
