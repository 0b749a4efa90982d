"""Run a two-node Ray cluster on this machine until terminated (used by tests/ray/conftest.py).

Usage: python cluster_proc.py TEMP_DIR ADDRESS_FILE. Starts a head node and a second, separate node
(its own raylet and worker processes), 1 CPU each, all on the loopback interface (Ray's own
``ray.cluster_utils.Cluster``: ``ray start`` refuses a second node on a loopback-only cluster), writes the
head's GCS address to ADDRESS_FILE and sleeps until SIGTERM, then stops both nodes.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # loopback only; set before Ray is imported

from ray.cluster_utils import Cluster


def main() -> None:
    temp_dir, address_file = sys.argv[1], Path(sys.argv[2])
    stop = False

    def on_term(_sig: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0, "temp_dir": temp_dir,
                                                               "include_dashboard": False})
    cluster.add_node(num_cpus=1, num_gpus=0)
    cluster.wait_for_nodes(timeout=120)
    address_file.write_text(cluster.address)
    try:
        while not stop:
            time.sleep(0.2)
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
