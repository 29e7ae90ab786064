"""The local test stack (Docker Engine, two registries, base images) and Kubernetes cluster of imagegate.

Stdlib-only (Python 3.11+). ``scripts/stack.py`` and ``scripts/k8s.py`` are the command lines; the modules:

* ``host``: progress output, commands, ports, files, apt packages (shared by both);
* ``procs``: detached daemons and the /proc checks that make sure a PID is still the process we started;
* ``state``: the state directory, its JSON and env files and its lock (the stack's, and the shared mechanics);
* ``engine``: the Docker Engine (find, start, ping);
* ``registries`` and ``registry_auth``: the two registries (config, start, health) and the TLS/htpasswd material;
* ``registry_log``: ``registry_requests``, a parser of the registry's request log;
* ``images`` and ``python_rootfs``: the busybox and python base images;
* ``stack_cli``: ``stack.py up|status|env|down``;
* ``k8s_*``: the Kubernetes cluster of ``k8s.py`` (binaries, pause image, PKI, pure config renderers, the
  machine, the API client, start-up, teardown, state, command line).
"""
