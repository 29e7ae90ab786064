"""Benchmark: a short job as a pod on the local Kubernetes cluster vs ``docker run`` of the same digest.

Run (needs ``python scripts/stack.py up`` and ``python scripts/k8s.py up``)::

    /tmp/venv/bin/python benchmarks/bench_k8s.py [--runs 7] [--json benchmarks/results/k8s.json]

The job is the local busybox base plus ``USER 10001``, pushed to the local registry and run by digest with
``sh -c 'echo ...'``. Both sides have the image already pulled (one warm-up run each, not counted), and both
drop every capability and forbid privilege escalation.

* pod: wall time from ``create_namespaced_pod`` (restricted security context, restartPolicy Never, in the
  restricted test namespace) to the watch event that reports phase ``Succeeded``: admission, scheduling,
  sandbox + CNI, container create/start/exit and the kubelet's status update. Pod deletion is not counted.
* docker: wall time of ``docker run --rm`` of the same digest (CLI process start to exit).

Prints both medians and their ratio (pod / docker), and writes them as JSON.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def load_env(dir_var: str, default: str, name: str, hint: str) -> dict[str, str]:
    state = Path(os.environ.get(dir_var, default)) / name
    if not state.is_file():
        sys.exit(f"no {state}; {hint}")
    env: dict[str, str] = json.loads(state.read_text())["env"]
    return env


def build_image(stack: dict[str, str]) -> str:
    import docker

    dk = docker.DockerClient(base_url=stack.get("DOCKER_HOST") or "unix:///var/run/docker.sock")
    repo = f"{stack['IMAGEGATE_REGISTRY']}/bench-k8s-{uuid.uuid4().hex[:8]}"
    dockerfile = f"FROM {stack['IMAGEGATE_BUSYBOX_LOCAL_IMAGE']}\nUSER 10001\n"
    dk.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=f"{repo}:v1", rm=True, pull=False)
    digest = None
    for line in dk.images.push(repo, tag="v1", stream=True, decode=True):
        if "error" in line:
            raise RuntimeError(line["error"])
        digest = (line.get("aux") or {}).get("Digest", digest)
    if not digest:
        raise RuntimeError("docker push reported no digest")
    dk.images.remove(f"{repo}:v1", noprune=True)
    dk.close()
    return f"{repo}@{digest}"


def pod_manifest(name: str, image: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "imagegate-bench"}},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "base",
                    "image": image,
                    "command": ["sh", "-c", "echo imagegate-bench"],
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                        "runAsNonRoot": True,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                }
            ],
        },
    }


def run_pod(core: Any, namespace: str, image: str) -> float:
    from kubernetes import client, watch

    name = f"bench-{uuid.uuid4().hex[:10]}"
    w = watch.Watch()
    t0 = time.perf_counter()
    core.create_namespaced_pod(namespace, pod_manifest(name, image))
    phase = None
    try:
        for event in w.stream(core.list_namespaced_pod, namespace, field_selector=f"metadata.name={name}",
                              timeout_seconds=180):
            phase = event["object"].status.phase
            if phase in ("Succeeded", "Failed"):
                break
        elapsed = time.perf_counter() - t0
    finally:
        w.stop()
        try:
            core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
        except client.ApiException:
            pass
    if phase != "Succeeded":
        raise RuntimeError(f"pod {name} ended in phase {phase}")
    return elapsed


def run_docker(image: str, docker_host: str) -> float:
    cmd = ["docker", "run", "--rm", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
           image, "sh", "-c", "echo imagegate-bench"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "DOCKER_HOST": docker_host},
                          timeout=180)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0 or "imagegate-bench" not in proc.stdout:
        raise RuntimeError(f"docker run failed: {proc.stderr}")
    return elapsed


def wait_pods_gone(core: Any, namespace: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while core.list_namespaced_pod(namespace, label_selector="app=imagegate-bench").items:
        if time.monotonic() > deadline:
            raise RuntimeError("benchmark pods were not deleted")
        time.sleep(0.2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "k8s.json")
    args = parser.parse_args()

    stack = load_env("IMAGEGATE_STACK_DIR", "/tmp/imagegate-stack", "stack.json",
                     "start the stack with: python scripts/stack.py up")
    k8s = load_env("IMAGEGATE_K8S_DIR", "/tmp/imagegate-k8s", "k8s.json",
                   "start the cluster with: python scripts/k8s.py up")
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=k8s["KUBECONFIG"], context=k8s["IMAGEGATE_K8S_CONTEXT"])
    core = client.CoreV1Api(api)
    namespace = k8s["IMAGEGATE_K8S_NAMESPACE"]
    docker_host = stack.get("DOCKER_HOST") or "unix:///var/run/docker.sock"

    image = build_image(stack)
    print(f"image {image}")
    run_pod(core, namespace, image)  # warm-up: pulls into the cluster's containerd
    run_docker(image, docker_host)  # warm-up: pulls into the Docker Engine
    wait_pods_gone(core, namespace)

    pods, dockers = [], []
    for i in range(args.runs):
        # Alternate so that background load on the shared machine hits both sides alike.
        pods.append(run_pod(core, namespace, image))
        dockers.append(run_docker(image, docker_host))
        wait_pods_gone(core, namespace)
        print(f"run {i + 1}/{args.runs}: pod {pods[-1]:.2f} s, docker run {dockers[-1]:.2f} s")
    subprocess.run(["docker", "image", "rm", image], capture_output=True,
                   env={**os.environ, "DOCKER_HOST": docker_host})

    pod_med, docker_med = statistics.median(pods), statistics.median(dockers)
    result = {
        "benchmark": "pod start-to-finish vs docker run, same digest, image present",
        "kubernetes": k8s.get("IMAGEGATE_K8S_VERSION"),
        "runs": args.runs,
        "pod_seconds": [round(x, 3) for x in pods],
        "docker_seconds": [round(x, 3) for x in dockers],
        "pod_median_s": round(pod_med, 3),
        "docker_run_median_s": round(docker_med, 3),
        "ratio_pod_over_docker": round(pod_med / docker_med, 2),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"pod start-to-finish median {pod_med:.2f} s; docker run median {docker_med:.2f} s; "
          f"ratio {pod_med / docker_med:.2f}x  (-> {args.json})")
    api.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
