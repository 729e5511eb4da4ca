"""The deployment controller and the kubelet, folded into one reconcile loop.

Every tick it makes each Deployment's pods match its spec (a rolling replace: new pods first,
old Ready pods removed only as new ones become Ready), starts or stops the pods' HTTP servers,
flips pods Ready after the readiness delay, and writes Deployment status the way kubectl and
the operators read it (observedGeneration, replica counts, Available/Progressing conditions).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass

from lab.kube.environment import CONFIG_ERROR_REASON, ContainerConfigError, resolve_environment, secret_reader
from lab.kube.errors import ApiError
from lab.kube.pods import POD_PORT_ANNOTATION, PodBehaviour, PodServer, pod_is_ready
from lab.kube.proxy import UpstreamPool
from lab.kube.resources import DEPLOYMENTS, PODS
from lab.kube.serving import run_concurrently
from lab.kube.store import Object, ObjectStore, utc_timestamp

log = logging.getLogger("lab.kube")

DEPLOYMENT_UID_ANNOTATION = "lab.pyairtable.io/deployment-uid"
TEMPLATE_HASH_LABEL = "pod-template-hash"
# The alphabet Kubernetes uses for generated name suffixes: no vowels, no look-alike digits.
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def template_hash(template: Object) -> str:
    """A stable 10-character hash of a pod template, as the pod-template-hash label carries."""
    number = int.from_bytes(hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()[:8], "big")
    characters = []
    for _ in range(10):
        number, index = divmod(number, len(_NAME_ALPHABET))
        characters.append(_NAME_ALPHABET[index])
    return "".join(characters)


def _max_unavailable(spec: Object, desired: int) -> int:
    strategy = spec.get("strategy") or {}
    if strategy.get("type") == "Recreate":
        return desired
    value = (strategy.get("rollingUpdate") or {}).get("maxUnavailable", "25%")
    if isinstance(value, str) and value.endswith("%"):
        return desired * int(value[:-1]) // 100
    return int(value)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _condition(kind: str, ok: bool, reason: str, message: str, since: str) -> Object:
    return {
        "type": kind,
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
    }


def pod_status(
    pod_spec: Object, ready: bool, started_at: str, ready_since: str, config_error: str | None = None
) -> Object:
    """A Running pod's status; `ready` decides the Ready and ContainersReady conditions.

    With a `config_error` the pod is Pending, its containers waiting with CreateContainerConfigError.
    """
    containers = pod_spec.get("containers") or []
    unready = "" if ready else f"containers with unready status: [{' '.join(c['name'] for c in containers)}]"
    reason = "" if ready else "ContainersNotReady"
    conditions = [
        _condition("Initialized", True, "", "", started_at),
        _condition("Ready", ready, reason, unready, ready_since),
        _condition("ContainersReady", ready, reason, unready, ready_since),
        _condition("PodScheduled", True, "", "", started_at),
    ]
    if config_error is None:
        state: Object = {"running": {"startedAt": started_at}}
    else:
        state = {"waiting": {"reason": CONFIG_ERROR_REASON, "message": config_error}}
    return {
        "phase": "Running" if config_error is None else "Pending",
        "conditions": [
            {key: value for key, value in c.items() if value != ""} | {"lastProbeTime": None}
            for c in conditions
        ],
        "hostIP": "127.0.0.1",
        "podIP": "127.0.0.1",
        "podIPs": [{"ip": "127.0.0.1"}],
        "startTime": started_at,
        "qosClass": "BestEffort",
        "containerStatuses": [
            {
                "name": container["name"],
                "image": container.get("image", ""),
                "imageID": f"{container.get('image', '')}@sha256:{_digest(str(container.get('image')))}",
                "containerID": f"lab://{_digest(started_at + container['name'])[:32]}",
                "ready": ready,
                "started": config_error is None,
                "restartCount": 0,
                "state": state,
            }
            for container in containers
        ],
    }


@dataclass
class _RunningPod:
    server: PodServer
    started_monotonic: float
    started_at: str


@dataclass
class _Progress:
    """When a Deployment last made progress; the progress deadline counts from here."""

    fingerprint: tuple[int, ...]
    since: float


class RolloutController:
    """Reconciles Deployments into pods with live HTTP servers, on a background thread."""

    def __init__(
        self,
        store: ObjectStore,
        upstreams: UpstreamPool,
        pod_ready_delay_seconds: float = 0.5,
        interval_seconds: float = 0.1,
        drain_seconds: float = 1.0,
    ) -> None:
        self._store = store
        self._upstreams = upstreams
        self._ready_delay = pod_ready_delay_seconds
        self._interval = interval_seconds
        self._drain = drain_seconds
        self._running: dict[str, _RunningPod] = {}
        self._draining: list[tuple[float, PodServer]] = []
        self._progress: dict[str, _Progress] = {}
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rollout-controller", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop reconciling, then every pod server at once (each takes up to half a second)."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()
        servers = [running.server for running in self._running.values()]
        servers += [server for _, server in self._draining]
        self._running.clear()
        self._draining.clear()
        run_concurrently(server.stop for server in servers)

    def _loop(self) -> None:
        while not self._stopping.wait(self._interval):
            try:
                self.reconcile()
            except Exception:
                log.exception("reconcile failed; retrying next tick")

    def reconcile(self) -> None:
        """One pass over every Deployment and pod."""
        deployments = self._store.items(DEPLOYMENTS)
        live_deployments = {d["metadata"]["uid"] for d in deployments}
        pods_by_owner: dict[str, list[Object]] = defaultdict(list)
        alive: set[str] = set()
        for pod in self._store.items(PODS):
            owner = (pod["metadata"].get("annotations") or {}).get(DEPLOYMENT_UID_ANNOTATION, "")
            if owner in live_deployments:
                pods_by_owner[owner].append(pod)
                alive.add(pod["metadata"]["uid"])
            else:
                self._delete_pod(pod)
        for deployment in deployments:
            uid = deployment["metadata"]["uid"]
            alive |= self._reconcile_deployment(deployment, pods_by_owner[uid])
        self._progress = {uid: p for uid, p in self._progress.items() if uid in live_deployments}
        self._retire_servers(alive)

    def _reconcile_deployment(self, deployment: Object, pods: list[Object]) -> set[str]:
        """Bring one Deployment's pods toward its spec; the uids of the pods it keeps."""
        spec = deployment["spec"]
        desired = int(spec.get("replicas", 1))
        recreate = (spec.get("strategy") or {}).get("type") == "Recreate"
        current_hash = template_hash(spec["template"])
        for pod in pods:
            self._update_readiness(pod)
        current = [p for p in pods if p["metadata"]["labels"].get(TEMPLATE_HASH_LABEL) == current_hash]
        old = [p for p in pods if p["metadata"]["labels"].get(TEMPLATE_HASH_LABEL) != current_hash]

        if len(current) > desired:
            # Not-Ready pods go first, as the ReplicaSet controller picks them.
            by_readiness = sorted(current, key=pod_is_ready)
            for pod in by_readiness[: len(current) - desired]:
                self._delete_pod(pod)
            current = by_readiness[len(current) - desired :]
        elif len(current) < desired and not (recreate and old):
            for _ in range(desired - len(current)):
                created = self._create_pod(deployment, current_hash)
                if created is not None:
                    current.append(created)

        # Old pods that are not Ready serve nobody; Ready ones stay until new ones replace them.
        ready_old = [p for p in old if pod_is_ready(p)]
        keep = 0 if recreate else max(0, desired - sum(pod_is_ready(p) for p in current))
        for pod in [p for p in old if not pod_is_ready(p)] + ready_old[keep:]:
            self._delete_pod(pod)
        old = ready_old[:keep]

        status = self._deployment_status(deployment, current, old, current_hash)
        if status != deployment.get("status"):
            meta = deployment["metadata"]
            self._store.write_status(DEPLOYMENTS, meta["namespace"], meta["name"], meta["uid"], status)
        return {pod["metadata"]["uid"] for pod in current + old}

    def _create_pod(self, deployment: Object, pod_template_hash: str) -> Object | None:
        meta, template = deployment["metadata"], deployment["spec"]["template"]
        namespace = meta["namespace"]
        name = f"{meta['name']}-{pod_template_hash}-{''.join(random.choices(_NAME_ALPHABET, k=5))}"
        labels = {
            **((template.get("metadata") or {}).get("labels") or {}),
            TEMPLATE_HASH_LABEL: pod_template_hash,
        }
        pod_spec = {**template["spec"], "nodeName": "lab-node"}
        container = pod_spec["containers"][0]
        config_error = None
        try:
            environment = resolve_environment(namespace, container, secret_reader(self._store, namespace))
        except ContainerConfigError as exc:
            # The kubelet would retry; here the pod stays waiting until it is replaced.
            environment, config_error = {}, str(exc)
        server = PodServer(
            PodBehaviour.from_container(namespace, name, labels, container, environment, config_error)
        )
        server.start()
        started_at = utc_timestamp()
        replica_set = f"{meta['name']}-{pod_template_hash}"
        pod = {
            "metadata": {
                "name": name,
                "generateName": f"{replica_set}-",
                "labels": labels,
                "annotations": {
                    **((template.get("metadata") or {}).get("annotations") or {}),
                    POD_PORT_ANNOTATION: str(server.port),
                    DEPLOYMENT_UID_ANNOTATION: meta["uid"],
                },
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "ReplicaSet",
                        "name": replica_set,
                        "uid": str(uuid.uuid5(uuid.UUID(meta["uid"]), pod_template_hash)),
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": pod_spec,
            "status": pod_status(pod_spec, False, started_at, started_at, config_error),
        }
        try:
            created = self._store.create(PODS, namespace, pod)
        except ApiError as exc:
            log.warning("could not create pod %s/%s: %s", namespace, name, exc.message)
            server.stop()
            return None
        self._running[created["metadata"]["uid"]] = _RunningPod(server, time.monotonic(), started_at)
        log.info("pod %s/%s started on port %d", namespace, name, server.port)
        return created

    def _delete_pod(self, pod: Object) -> None:
        meta = pod["metadata"]
        try:
            self._store.delete(PODS, meta["namespace"], meta["name"])
        except ApiError:
            return  # already gone
        log.info("pod %s/%s deleted", meta["namespace"], meta["name"])

    def _update_readiness(self, pod: Object) -> None:
        """The kubelet's part: a pod turns Ready once the delay has passed and its image allows it."""
        running = self._running.get(pod["metadata"]["uid"])
        if running is None:
            return
        ready = running.server.behaviour.can_become_ready and (
            time.monotonic() - running.started_monotonic >= self._ready_delay
        )
        if ready == pod_is_ready(pod):
            return
        meta = pod["metadata"]
        pod["status"] = pod_status(pod["spec"], ready, running.started_at, utc_timestamp())
        self._store.write_status(PODS, meta["namespace"], meta["name"], meta["uid"], pod["status"])
        log.info("pod %s/%s %s", meta["namespace"], meta["name"], "ready" if ready else "not ready")

    def _retire_servers(self, alive: set[str]) -> None:
        """Servers of deleted pods keep serving for the drain period, as a terminating pod does."""
        now = time.monotonic()
        for uid in [uid for uid in self._running if uid not in alive]:
            self._draining.append((now + self._drain, self._running.pop(uid).server))
        due = [server for deadline, server in self._draining if deadline <= now]
        self._draining = [(deadline, server) for deadline, server in self._draining if deadline > now]
        for server in due:
            self._upstreams.forget(server.port)
            threading.Thread(
                target=server.stop, name=f"stop-{server.behaviour.pod_name}", daemon=True
            ).start()

    def _deployment_status(
        self, deployment: Object, current: list[Object], old: list[Object], current_hash: str
    ) -> Object:
        meta, spec = deployment["metadata"], deployment["spec"]
        previous = {c["type"]: c for c in (deployment.get("status") or {}).get("conditions") or []}
        desired = int(spec.get("replicas", 1))
        ready_current = sum(pod_is_ready(p) for p in current)
        available = ready_current + sum(pod_is_ready(p) for p in old)
        total = len(current) + len(old)
        now = time.time()

        fingerprint = (meta["generation"], len(current), ready_current, len(old))
        progress = self._progress.get(meta["uid"])
        if progress is None or progress.fingerprint != fingerprint:
            progress = self._progress[meta["uid"]] = _Progress(fingerprint, now)

        replica_set = f'ReplicaSet "{meta["name"]}-{current_hash}"'
        if len(current) == desired and total == desired and available == desired:
            progressing = ("True", "NewReplicaSetAvailable", f"{replica_set} has successfully progressed.")
        elif now - progress.since > int(spec.get("progressDeadlineSeconds", 600)):
            progressing = ("False", "ProgressDeadlineExceeded", f"{replica_set} has timed out progressing.")
        else:
            progressing = ("True", "ReplicaSetUpdated", f"{replica_set} is progressing.")
        if available >= desired - _max_unavailable(spec, desired):
            availability = ("True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
        else:
            availability = (
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
            )

        def condition(kind: str, state: tuple[str, str, str], updated_at: str) -> Object:
            status, reason, message = state
            before = previous.get(kind, {})
            if not updated_at:
                unchanged = before.get("status") == status and before.get("reason") == reason
                updated_at = before["lastUpdateTime"] if unchanged else utc_timestamp(now)
            return {
                "type": kind,
                "status": status,
                "lastUpdateTime": updated_at,
                "lastTransitionTime": before["lastTransitionTime"]
                if before.get("status") == status
                else utc_timestamp(now),
                "reason": reason,
                "message": message,
            }

        counts = {
            "replicas": total,
            "updatedReplicas": len(current),
            "readyReplicas": available,
            "availableReplicas": available,
            "unavailableReplicas": max(0, total - available),
        }
        return {
            "observedGeneration": meta["generation"],
            # The real API omits zero counts, so clients read None, not 0.
            **{key: value for key, value in counts.items() if value},
            "conditions": [
                condition("Available", availability, ""),
                condition(
                    "Progressing",
                    progressing,
                    utc_timestamp(progress.since) if progressing[1] == "ReplicaSetUpdated" else "",
                ),
            ],
        }
