#!/usr/bin/env python3
"""Local test stack for imagegate: a Docker Engine, three OCI registries (plain, basic auth, token auth), a token
issuer and local base images.

``python3 scripts/stack.py up|status|env|down`` (stdlib only); the code is in ``scripts/localstack/``
(see ``localstack/stack_cli.py``).
"""

import sys

from localstack.stack_cli import main

if __name__ == "__main__":
    sys.exit(main())
