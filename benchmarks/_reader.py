"""A read-latency probe run as its own process, so that the load generator's
event loop and interpreter lock never delay the reads it times.

``python -m benchmarks._reader URL SECONDS PATH...`` sends GET requests over
one keep-alive connection, cycling through the paths, for SECONDS, and prints
a JSON list of latencies in milliseconds.
"""

from __future__ import annotations

import http.client
import json
import sys
import time
from urllib.parse import urlsplit


def main() -> None:
    url, seconds, paths = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
    parts = urlsplit(url)
    if parts.hostname != "127.0.0.1":
        sys.exit("the read probe only talks to 127.0.0.1")
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    index = 0
    while time.monotonic() < deadline:
        started = time.perf_counter()
        connection.request("GET", paths[index % len(paths)])
        response = connection.getresponse()
        response.read()
        latencies.append((time.perf_counter() - started) * 1000)
        if response.status != 200:
            sys.exit(f"GET {paths[index % len(paths)]} answered {response.status}")
        index += 1
    connection.close()
    print(json.dumps(latencies))


if __name__ == "__main__":
    main()
