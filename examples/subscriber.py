"""A minimal serd subscriber: pyzmq only. python examples/subscriber.py [tcp://127.0.0.1:5556]"""

import json
import sys

import zmq

sub = zmq.Context().socket(zmq.SUB)
sub.connect(sys.argv[1] if len(sys.argv) > 1 else "tcp://127.0.0.1:5556")
sub.setsockopt(zmq.SUBSCRIBE, b"serd.emotion.")
while True:
    topic, body = sub.recv_multipart()
    msg = json.loads(body)
    if msg["speech"]:
        print(msg["device"], msg["label"], f"{msg['confidence']:.0%}", flush=True)
