"""What KServe's controller manager needs around it to run against our control plane, on loopback.

Standard (RawDeployment) mode with Gateway API routing: the manager reads its configuration from
the ConfigMap `inferenceservice-config` in its own namespace (POD_NAMESPACE) at start and on every
reconcile. We start from the ConfigMap the pinned module ships (the defaults a real install has)
and change only the deployment mode, the ingress, and the two addresses in it that point off this
machine (the logger's broker and the OpenTelemetry scaler), which now point at loopback's discard
port. The manager itself dials nothing but the apiserver in Standard mode (no model server, no
Knative, no Istio).

Its admission webhooks (the InferenceService defaulter and validator) are real too: they serve TLS
on a self-signed certificate for 127.0.0.1, and the apiserver calls them by URL on loopback, so
every InferenceService the operator writes is defaulted and validated by KServe's own code.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .server import free_port
from .upstream import PINS, download

MODULE = "github.com/kserve/kserve"
NAMESPACE = "kserve"
CONFIG_MAP = "inferenceservice-config"
INGRESS_GATEWAY = "kserve/kserve-ingress-gateway"
DOMAIN = "example.com"
DISCARD = "127.0.0.1:9"  # nothing listens there: a misdirected call fails at once, on this machine
MUTATE_ISVC = "/mutate-serving-kserve-io-v1beta1-inferenceservice"
VALIDATE_ISVC = "/validate-serving-kserve-io-v1beta1-inferenceservice"


def shipped_config() -> dict[str, Any]:
    """config/configmap/inferenceservice.yaml of the pinned module: each key's JSON, parsed."""
    pin = next(p for p in PINS if p.module == MODULE)
    source = download((pin,))[f"{pin.module}@{pin.version}"]
    doc = yaml.safe_load((source / "config" / "configmap" / "inferenceservice.yaml").read_text())
    return {key: json.loads(value) for key, value in doc["data"].items() if key != "_example"}


def inferenceservice_config(shipped: dict[str, Any], gateway: str = INGRESS_GATEWAY) -> dict[str, Any]:
    """The ConfigMap for Standard mode with Gateway API routes on `gateway` (<namespace>/<name>)."""
    data = json.loads(json.dumps(shipped))  # a deep copy
    data["deploy"] = {"defaultDeploymentMode": "Standard"}
    data["ingress"].update(
        enableGatewayApi=True,
        kserveIngressGateway=gateway,
        ingressDomain=DOMAIN,
        urlScheme="http",
        # No Istio here: without this KServe warns on every reconcile that VirtualServices are absent.
        disableIstioVirtualHost=True,
        localGatewayService=DISCARD.split(":")[0],
    )
    data["logger"]["defaultUrl"] = f"http://{DISCARD}"
    data["opentelemetryCollector"].update(metricReceiverEndpoint=DISCARD, metricScalerEndpoint=DISCARD)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": CONFIG_MAP, "namespace": NAMESPACE},
        "data": {key: json.dumps(value, indent=2) for key, value in data.items()},
    }


def serving_certificate(folder: Path) -> bytes:
    """A self-signed certificate for 127.0.0.1 as tls.crt/tls.key in `folder`; its PEM (the CA bundle)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kserve-webhook-server")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tls.crt").write_bytes(pem)
    (folder / "tls.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    (folder / "tls.key").chmod(0o600)
    return pem


def webhook_configurations(port: int, ca_bundle: bytes) -> list[dict[str, Any]]:
    """KServe's InferenceService defaulter and validator (config/webhook/manifests.yaml), called by
    URL on loopback instead of through the webhook Service."""

    def hook(name: str, path: str) -> dict[str, Any]:
        return {
            "name": name,
            "clientConfig": {
                "url": f"https://127.0.0.1:{port}{path}",
                "caBundle": base64.b64encode(ca_bundle).decode(),
            },
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1", "v1beta1"],
            "rules": [
                {
                    "apiGroups": ["serving.kserve.io"],
                    "apiVersions": ["v1beta1"],
                    "operations": ["CREATE", "UPDATE"],
                    "resources": ["inferenceservices"],
                }
            ],
        }

    meta = {"name": "inferenceservice.serving.kserve.io"}
    return [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": meta,
            "webhooks": [hook("inferenceservice.kserve-webhook-server.defaulter", MUTATE_ISVC)],
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": meta,
            "webhooks": [hook("inferenceservice.kserve-webhook-server.validator", VALIDATE_ISVC)],
        },
    ]


@dataclass(frozen=True)
class ManagerSetup:
    """How to run the manager: its command line, environment, and the objects to create first."""

    argv: list[str]
    env: dict[str, str]
    objects: list[dict[str, Any]]
    ready_url: str


def manager_setup(binary: Path, workdir: Path, gateway: str = INGRESS_GATEWAY) -> ManagerSetup:
    """Every address on 127.0.0.1 (the webhook server takes only a port: it listens on all
    interfaces, and only the apiserver, on loopback, calls it); the serving certificate where
    controller-runtime looks for it by default, $TMPDIR/k8s-webhook-server/serving-certs."""
    tmp = workdir / "kserve-tmp"
    ca = serving_certificate(tmp / "k8s-webhook-server" / "serving-certs")
    webhook_port, probe = free_port(), f"127.0.0.1:{free_port()}"
    argv = [
        str(binary),
        f"--metrics-addr=127.0.0.1:{free_port()}",
        f"--webhook-port={webhook_port}",
        f"--health-probe-addr={probe}",
        "--leader-elect=false",
    ]
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    objects = [namespace, inferenceservice_config(shipped_config(), gateway), *webhook_configurations(webhook_port, ca)]
    return ManagerSetup(argv, {"TMPDIR": str(tmp), "POD_NAMESPACE": NAMESPACE}, objects, f"http://{probe}/readyz")
