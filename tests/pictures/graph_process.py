"""One mdflow graph in a process of its own, for ``test_inspect.py`` (killed by the test).

``python graph_process.py writer URL TOPIC N``: an engine writes N entries to TOPIC, then
nothing (it keeps running). ``python graph_process.py reader URL TOPIC``: ``from_redis``
reads TOPIC in group ``g`` (consumer ``reader``) into a map and a sink.
Both run on streamz's background loop, as a plain script would.
"""

from __future__ import annotations

import sys
import time

from streamz import Stream

import mdflow.pictures.publish  # noqa: F401 - registers the nodes; publishes the graph


def main(role: str, url: str, topic: str, n: str = "0") -> None:
    if role == "writer":
        numbers = iter(range(int(n)))

        def produce():
            i = next(numbers, None)
            return None if i is None else {"n": i}

        node = Stream.engine(topic, produce, push_interval=0.02, redis_url=url)
    else:
        node = Stream.from_redis(topic, group="g", consumer="reader", start_id="0", redis_url=url)
        node.map(lambda x: x).sink(lambda x: None)
    node.start()
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main(*sys.argv[1:])
