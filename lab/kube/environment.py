"""What the kubelet does with a container's environment: Secrets referenced by name become values.

`env[].valueFrom.secretKeyRef` and `envFrom[].secretRef` are resolved when the pod starts, so a
password reaches the process without appearing in the Deployment or the pod spec. A reference to
a missing Secret (or key) that is not `optional` leaves the container waiting with
CreateContainerConfigError, as the kubelet reports it. ConfigMap references are not served.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from typing import Any

from lab.kube.errors import ApiError
from lab.kube.resources import SECRETS
from lab.kube.store import ObjectStore

SecretReader = Callable[[str], Mapping[str, str] | None]
CONFIG_ERROR_REASON = "CreateContainerConfigError"


class ContainerConfigError(Exception):
    """Why a container cannot start: the kubelet's message for CreateContainerConfigError."""


def secret_reader(store: ObjectStore, namespace: str) -> SecretReader:
    """Name -> the Secret's decoded data in `namespace`, or None when there is no such Secret."""

    def read(name: str) -> Mapping[str, str] | None:
        try:
            secret = store.get(SECRETS, namespace, name)
        except ApiError:
            return None
        decoded = {}
        for key, value in (secret.get("data") or {}).items():
            try:
                decoded[key] = base64.b64decode(str(value)).decode("utf-8", errors="replace")
            except (binascii.Error, ValueError):
                continue
        return decoded

    return read


def resolve_environment(
    namespace: str, container: Mapping[str, Any], read_secret: SecretReader
) -> dict[str, str]:
    """The container's environment: envFrom first, then env (which wins on a clash), as the kubelet builds it.

    Raises ContainerConfigError for a required Secret or key that does not exist.
    """
    environment: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        reference = source.get("secretRef")
        if not reference:
            continue
        data = read_secret(str(reference.get("name", "")))
        if data is None:
            if reference.get("optional"):
                continue
            raise ContainerConfigError(f'secret "{reference.get("name", "")}" not found')
        prefix = str(source.get("prefix") or "")
        environment.update({prefix + key: value for key, value in data.items()})
    for item in container.get("env") or []:
        name = item.get("name")
        if not name:
            continue
        reference = (item.get("valueFrom") or {}).get("secretKeyRef")
        if reference is None:
            environment[name] = str(item.get("value", ""))
            continue
        secret_name, key = str(reference.get("name", "")), str(reference.get("key", ""))
        data = read_secret(secret_name)
        if data is None or key not in data:
            if reference.get("optional"):
                continue
            if data is None:
                raise ContainerConfigError(f'secret "{secret_name}" not found')
            raise ContainerConfigError(f"couldn't find key {key} in Secret {namespace}/{secret_name}")
        environment[name] = data[key]
    return environment
