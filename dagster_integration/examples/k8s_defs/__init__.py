"""The example's Kubernetes component folder (loaded where ``IMAGEGATE_K8S_NAMESPACE`` is set)."""
