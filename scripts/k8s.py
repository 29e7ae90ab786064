#!/usr/bin/env python3
"""A real single-node Kubernetes cluster for imagegate's tests, built from source, all on loopback.

``python3 scripts/k8s.py up|status|env|down|build`` (stdlib only, root); the code is in ``scripts/localstack/``
(see ``localstack/k8s_cli.py`` and docs/kubernetes-cluster.md).
"""

import sys

from localstack.k8s_cli import main

if __name__ == "__main__":
    sys.exit(main())
