"""k8s/overlays/generator: prod plus an OpenAI-compatible generator server (vLLM) as its own
Deployment and Service on a GPU node. Rendered and validated as tests/e2e/test_deploy_manifests.py
does the other overlays (its kustomize subset, strict Kubernetes schemas of two releases), and
checked for what the generator needs: GPU resources and node selection, probes with a loading
budget, restricted pods, network policies in both directions, and the wiring the docs give bots."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.e2e.test_deploy_manifests import K8S, K8S_VERSIONS, _render, _selects, _validate

Doc = dict[str, Any]
OVERLAY = K8S / "overlays" / "generator"


@pytest.fixture(scope="module")
def docs() -> list[Doc]:
    return _render(OVERLAY)


def _named(docs: list[Doc], kind: str, name: str) -> Doc:
    (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def _generator_pod(docs: list[Doc]) -> Doc:
    return _named(docs, "Deployment", "switchboard-generator")["spec"]["template"]


@pytest.mark.parametrize("k8s_version", K8S_VERSIONS)
def test_every_object_validates_strictly(docs: list[Doc], k8s_version: str) -> None:
    for doc in docs:
        _validate(doc, k8s_version)


def test_it_is_prod_plus_the_generator(docs: list[Doc]) -> None:
    prod = _render(K8S / "overlays" / "prod")
    key = lambda d: (d["kind"], d["metadata"]["name"])  # noqa: E731
    added = sorted(set(map(key, docs)) - set(map(key, prod)))
    assert added == [("Deployment", "switchboard-generator"), ("NetworkPolicy", "switchboard-generator"),
                     ("NetworkPolicy", "switchboard-to-generator"), ("Service", "switchboard-generator")]
    assert set(map(key, prod)) <= set(map(key, docs))
    assert all(d["metadata"].get("namespace") == "switchboard" for d in docs if d["kind"] != "Namespace")
    assert all(d["metadata"]["labels"]["environment"] == "prod" for d in docs)
    # Prod's objects are unchanged but for the bots' optional API key variable.
    by_key = {key(d): d for d in docs}
    for doc in prod:
        if key(doc) != ("Deployment", "switchboard"):
            assert by_key[key(doc)] == doc, key(doc)
    server = by_key[("Deployment", "switchboard")]["spec"]["template"]["spec"]["containers"][0]
    (env,) = [e for e in server["env"] if e["name"] == "GENERATOR_API_KEY"]
    assert env["valueFrom"]["secretKeyRef"] == {"name": "switchboard-generator", "key": "api-key", "optional": True}


def test_the_generator_runs_on_a_gpu_with_probes_and_restricted(docs: list[Doc]) -> None:
    template = _generator_pod(docs)
    pod = template["spec"]
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert {"cpu", "memory"} <= set(container["resources"]["requests"]) and "memory" in container["resources"]["limits"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    port_names = {p["name"] for p in container["ports"]}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "http"} and "http" in port_names
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600, "loading a model takes minutes"
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    image = container["image"]
    assert image.startswith("vllm/vllm-openai:v") and not image.endswith(":latest")
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mounts["model"]["readOnly"] is True and volumes["model"]["persistentVolumeClaim"]["readOnly"] is True
    assert f"--model={mounts['model']['mountPath']}" in container["args"]
    assert {"name": "HF_HUB_OFFLINE", "value": "1"} in container["env"]
    deployment = _named(docs, "Deployment", "switchboard-generator")
    assert _selects(deployment["spec"]["selector"]["matchLabels"], template["metadata"]["labels"])
    assert deployment["spec"]["strategy"]["type"] == "Recreate"  # a surge pod would wait for a second GPU


def test_network_policies_let_the_servers_and_only_them_reach_the_generator(docs: list[Doc]) -> None:
    generator_labels = _generator_pod(docs)["metadata"]["labels"]
    server_labels = _named(docs, "Deployment", "switchboard")["spec"]["template"]["metadata"]["labels"]
    service = _named(docs, "Service", "switchboard-generator")
    assert _selects(service["spec"]["selector"], generator_labels)
    assert not _selects(service["spec"]["selector"], server_labels)
    (port,) = service["spec"]["ports"]
    container_port = {p["name"]: p["containerPort"] for p in _generator_pod(docs)["spec"]["containers"][0]["ports"]}
    target = container_port[port["targetPort"]]
    inbound = _named(docs, "NetworkPolicy", "switchboard-generator")["spec"]
    assert _selects(inbound["podSelector"]["matchLabels"], generator_labels)
    peers = [p for rule in inbound["ingress"] for p in rule["from"]]
    assert any("podSelector" in p and _selects(p["podSelector"]["matchLabels"], server_labels) for p in peers)
    assert all("podSelector" not in p or _selects(p["podSelector"]["matchLabels"], server_labels) for p in peers)
    assert {p["port"] for rule in inbound["ingress"] for p in rule["ports"]} == {port["targetPort"]}
    assert {p["port"] for rule in inbound["egress"] for p in rule["ports"]} == {53}  # DNS only
    outbound = _named(docs, "NetworkPolicy", "switchboard-to-generator")["spec"]
    assert _selects(outbound["podSelector"]["matchLabels"], server_labels)
    (rule,) = outbound["egress"]
    assert _selects(rule["to"][0]["podSelector"]["matchLabels"], generator_labels)
    assert [p["port"] for p in rule["ports"]] == [target]


def test_the_documented_bot_endpoint_matches_the_service_and_model() -> None:
    """k8s/README.md tells bots which url and model to name: they must be what the overlay serves."""
    docs = _render(OVERLAY)
    service = _named(docs, "Service", "switchboard-generator")
    args = _generator_pod(docs)["spec"]["containers"][0]["args"]
    (served,) = [a.split("=", 1)[1] for a in args if a.startswith("--served-model-name=")]
    readme = (K8S / "README.md").read_text(encoding="utf-8")
    url = f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}/v1"
    assert re.search(rf"url: {re.escape(url)}\b", readme), url
    assert re.search(rf"model: {re.escape(served)}\b", readme), served
    kustomization = (OVERLAY / "kustomization.yaml").read_text(encoding="utf-8")
    assert f"url: {url}, model: {served}" in kustomization
