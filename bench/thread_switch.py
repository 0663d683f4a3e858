"""What a handoff between two Python threads costs on this machine: the price of every GIL
handoff a web request pays when its database or Redis call releases the GIL while other
threads wait for it (see "Status polls under load" in docs/performance.md).

    .venv/bin/python bench/thread_switch.py [--round-trips 20000]
"""

from __future__ import annotations

import argparse
import os
import threading
import time


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--round-trips", type=int, default=20000)
    round_trips = parser.parse_args().round_trips
    ping, pong = threading.Semaphore(0), threading.Semaphore(0)

    def answer() -> None:
        for _ in range(round_trips):
            ping.acquire()
            pong.release()

    other = threading.Thread(target=answer)
    cpu_before, wall_before = os.times(), time.perf_counter()
    other.start()
    for _ in range(round_trips):
        ping.release()
        pong.acquire()
    other.join()
    wall = time.perf_counter() - wall_before
    cpu_after = os.times()
    cpu = cpu_after.user + cpu_after.system - cpu_before.user - cpu_before.system
    print(
        f"one round trip between two threads (two switches): {wall / round_trips * 1e6:.1f} µs wall, "
        f"{cpu / round_trips * 1e6:.1f} µs CPU"
    )


if __name__ == "__main__":
    main()
