"""Settings shared by the example DAGs, from the environment (no network, no metadata DB at parse time).

IMAGEGATE_REGISTRY        registry the example job is pushed to (``make demo`` / scripts/stack.py set it)
IMAGEGATE_PYTHON_IMAGE_DIGEST  digest-pinned python base the job is built FROM
IMAGEGATE_EXAMPLE_DATA    where the DAGs read input and write results (default /tmp/imagegate-example-data)
IMAGEGATE_LOCK_FILE       the lock file the build writes and lock_name= reads (default: in the data dir)
IMAGEGATE_EXAMPLE_CLAIM   on Kubernetes, the PersistentVolumeClaim holding the input (default wordcount-data)
"""

from __future__ import annotations

import os
from pathlib import Path

import pendulum

HERE = Path(__file__).resolve().parent
REGISTRY = os.environ.get("IMAGEGATE_REGISTRY", "localhost:5000")
PYTHON_BASE = os.environ.get("IMAGEGATE_PYTHON_IMAGE_DIGEST", "")
DATA = Path(os.environ.get("IMAGEGATE_EXAMPLE_DATA", "/tmp/imagegate-example-data"))
LOCK_FILE = os.environ.get("IMAGEGATE_LOCK_FILE") or str(DATA / "imagegate.lock.json")
DATA_CLAIM = os.environ.get("IMAGEGATE_EXAMPLE_CLAIM", "wordcount-data")
WORDCOUNT_REPOSITORY = f"{REGISTRY}/examples/wordcount"
JOB_DIR = str(HERE / "jobs" / "wordcount")
START = pendulum.datetime(2026, 1, 1, tz="UTC")
