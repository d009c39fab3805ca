"""``logging.actor_logs``: the Ray actors' output shown in the terminal of the command that starts Ray."""

import os
import subprocess
import sys

import pytest

from rad.settings import LoggingConfig

# A fresh process (the session's Ray cluster is already up in this one): Ray started by ensure_ray, one task that
# prints, a pause for Ray's log monitor to forward the line, shutdown.
_PRINT_IN_AN_ACTOR = """
import sys, time
import ray
from rad.runtime.local_ray import ensure_ray
from rad.settings import LearnerResources

assert ensure_ray(LearnerResources(ray_num_cpus=1), 1, actor_logs=sys.argv[1] == "true")

@ray.remote(num_cpus=1)
def shout():
    print("marker-from-a-ray-worker", flush=True)
    return 1

assert ray.get(shout.remote()) == 1
time.sleep(3)
ray.shutdown()
"""


@pytest.mark.slow
def test_actor_logs_true_shows_what_the_actors_print():
    assert LoggingConfig().actor_logs is False  # the default keeps the terminal to the driver's own lines
    done = subprocess.run([sys.executable, "-c", _PRINT_IN_AN_ACTOR, "true"], capture_output=True, text=True,
                          env=os.environ.copy(), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "marker-from-a-ray-worker" in done.stdout + done.stderr
