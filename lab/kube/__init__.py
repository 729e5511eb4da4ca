"""A Kubernetes API emulator for the lab: no kube-apiserver can be installed on these machines.

It serves the subset of the REST API the operators use (namespaces, deployments, services, pods,
secrets, the Service proxy), runs a rollout controller, and makes every pod a real HTTP server
whose environment may come from Secrets, so the migration is measured against live endpoints.
Run it with `python -m lab.kube`.
"""

from __future__ import annotations

from lab.kube.emulator import IngressRoute, KubeEmulator
from lab.kube.pods import POD_PORT_ANNOTATION

__all__ = ["POD_PORT_ANNOTATION", "IngressRoute", "KubeEmulator"]
