"""The Kubernetes manifests under k8s/: render every overlay, validate every object against the
Kubernetes API schemas of two supported releases (strict: unknown fields and unknown kinds fail),
validate the prometheus-operator custom resources against the CRD schemas kept in k8s/schemas/,
and check that the pieces fit together (selectors, ports, probes, drain budget, security).

No kustomize binary is available offline (not on PyPI or in Debian), so ``_render`` implements
the subset of kustomize the overlays use: ``resources`` (files and kustomization folders),
``namespace``, ``labels`` (without selectors), ``images`` and strategic-merge ``patches``
matched by kind and name. Anything else in a kustomization.yaml, or a list in a patch whose
merge semantics it does not know, is an error, not a guess.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import referencing
import yaml
from fastapi.routing import iter_route_contexts

from bots.metrics import Metrics
from bots.settings import Settings

K8S = Path(__file__).resolve().parents[2] / "k8s"
# prod-inflight: prod with the HPA also on messages in flight (needs prometheus-adapter).
OVERLAYS = ("dev", "prod", "prod-inflight")
ENVIRONMENT = {"dev": "dev", "prod": "prod", "prod-inflight": "prod"}
# Oldest and newest Kubernetes minor releases supported upstream (and by kubernetes-validate 1.37).
K8S_VERSIONS = ("1.35.0", "1.37.0")
Doc = dict[str, Any]

# ---------------------------------------------------------------- kustomize subset
_KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "namespace", "labels", "images", "patches"}
_CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                   "PersistentVolume", "StorageClass", "PriorityClass"}
_POD_TEMPLATE = {"Deployment": ("spec", "template"), "StatefulSet": ("spec", "template"),
                 "DaemonSet": ("spec", "template"), "ReplicaSet": ("spec", "template"),
                 "Job": ("spec", "template"), "CronJob": ("spec", "jobTemplate", "spec", "template")}
# Strategic-merge keys (patchMergeKey in the Kubernetes API) of the lists the patches may touch;
# atomic lists are replaced whole.
_MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "volumes": "name",
               "volumeMounts": "mountPath"}
_ATOMIC_LISTS = {"args", "command", "metrics"}  # HorizontalPodAutoscaler spec.metrics is atomic


class KustomizeSubsetError(Exception):
    """The kustomization uses something this renderer does not implement (or is wrong)."""


def _render(folder: Path) -> list[Doc]:
    kfile = folder / "kustomization.yaml"
    if not kfile.is_file():
        raise KustomizeSubsetError(f"{folder}: no kustomization.yaml")
    spec = yaml.safe_load(kfile.read_text()) or {}
    unknown = set(spec) - _KUSTOMIZATION_KEYS
    if unknown:
        raise KustomizeSubsetError(f"{kfile}: unsupported fields {sorted(unknown)}")
    docs: list[Doc] = []
    for entry in spec.get("resources", []):
        path = (folder / entry).resolve()
        if path.is_dir():
            docs.extend(_render(path))
        elif path.is_file():
            docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
        else:
            raise KustomizeSubsetError(f"{kfile}: resource {entry!r} not found")
    for patch in spec.get("patches", []):
        if set(patch) != {"path"}:
            raise KustomizeSubsetError(f"{kfile}: only `patches: - path: FILE` is supported, got {patch}")
        _apply_patch(docs, yaml.safe_load((folder / patch["path"]).read_text()), kfile)
    if "namespace" in spec:
        for doc in docs:
            if doc["kind"] in {"RoleBinding", "ClusterRoleBinding"}:
                raise KustomizeSubsetError(f"{kfile}: namespace rewriting of subjects is not implemented")
            if doc["kind"] not in _CLUSTER_SCOPED:
                doc["metadata"]["namespace"] = spec["namespace"]
    for label_set in spec.get("labels", []):
        _apply_labels(docs, label_set, kfile)
    for image in spec.get("images", []):
        _apply_image(docs, image, kfile)
    ids = [_resource_id(d) for d in docs]
    duplicates = {i for i in ids if ids.count(i) > 1}
    if duplicates:
        raise KustomizeSubsetError(f"{kfile}: duplicate resources {sorted(duplicates)}")
    return docs


def _resource_id(doc: Doc) -> str:
    meta = doc["metadata"]
    return f"{doc['apiVersion']}/{doc['kind']}/{meta.get('namespace', '~')}/{meta['name']}"


def _apply_patch(docs: list[Doc], patch: Doc, kfile: Path) -> None:
    name = patch["metadata"]["name"]
    group = patch["apiVersion"].rpartition("/")[0]
    targets = [d for d in docs if d["kind"] == patch["kind"] and d["metadata"]["name"] == name
               and d["apiVersion"].rpartition("/")[0] == group]
    if len(targets) != 1:
        raise KustomizeSubsetError(f"{kfile}: patch for {patch['kind']}/{name} matches {len(targets)} resources")
    body = {k: v for k, v in patch.items() if k not in ("apiVersion", "kind")}
    _merge(targets[0], body, patch["kind"])


def _merge(target: Doc, patch: Doc, where: str) -> None:
    for key, value in patch.items():
        if key.startswith("$"):
            raise KustomizeSubsetError(f"{where}: patch directive {key} is not implemented")
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value, f"{where}.{key}")
        elif isinstance(value, list) and key in _MERGE_KEYS and isinstance(target.get(key), list):
            merge_key = _MERGE_KEYS[key]
            by_key = {item[merge_key]: item for item in target[key]}
            for item in value:
                if item[merge_key] in by_key:
                    _merge(by_key[item[merge_key]], item, f"{where}.{key}[{item[merge_key]}]")
                else:
                    target[key].append(copy.deepcopy(item))
        elif isinstance(value, list) and key not in _ATOMIC_LISTS and key not in _MERGE_KEYS:
            raise KustomizeSubsetError(f"{where}: merging the list {key!r} is not implemented")
        else:
            target[key] = copy.deepcopy(value)


def _pod_template(doc: Doc) -> Doc | None:
    node: Any = doc
    for step in _POD_TEMPLATE.get(doc["kind"], ()):
        node = node.get(step, {})
    return node if doc["kind"] in _POD_TEMPLATE else None


def _apply_labels(docs: list[Doc], label_set: Doc, kfile: Path) -> None:
    if label_set.get("includeSelectors", False) or set(label_set) - {"pairs", "includeSelectors", "includeTemplates"}:
        raise KustomizeSubsetError(f"{kfile}: only labels with includeSelectors: false are supported")
    for doc in docs:
        doc["metadata"].setdefault("labels", {}).update(label_set["pairs"])
        template = _pod_template(doc)
        if template is not None and label_set.get("includeTemplates", False):
            template.setdefault("metadata", {}).setdefault("labels", {}).update(label_set["pairs"])


def _apply_image(docs: list[Doc], image: Doc, kfile: Path) -> None:
    if set(image) - {"name", "newName", "newTag"}:
        raise KustomizeSubsetError(f"{kfile}: images support name, newName and newTag only")
    for doc in docs:
        template = _pod_template(doc)
        for container in (template or {}).get("spec", {}).get("containers", []):
            ref = container["image"]
            name, _, tag = ref.rpartition(":") if ":" in ref.rsplit("/", 1)[-1] else (ref, "", "")
            if name == image["name"]:
                new_tag = image.get("newTag", tag)
                container["image"] = image.get("newName", name) + (f":{new_tag}" if new_tag else "")


# ---------------------------------------------------------------- schema validation
def _strict(schema: Any) -> Any:
    """What the API server does with unknown fields (fieldValidation=Strict): reject them."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out and not out.get(
                "x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


def _crd_validator(api_version: str, kind: str, k8s_version: str) -> jsonschema.protocols.Validator:
    group, _, version = api_version.partition("/")
    path = K8S / "schemas" / f"{kind.lower()}-{group.split('.')[0]}-{version}.json"
    schema = _strict(json.loads(path.read_text()))
    # metadata is a full ObjectMeta, as for built-in kinds: take its (strict) schema from
    # kubernetes-validate's copy of the Kubernetes OpenAPI definitions.
    definitions_file = (resources.files("kubernetes_validate") / "kubernetes-json-schema"
                        / f"v{k8s_version}-local-strict" / "_definitions.json")
    definitions = json.loads(definitions_file.read_text())
    schema["properties"]["metadata"] = {
        "$ref": f"{definitions['$id']}#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
    registry: referencing.Registry[Any] = referencing.Resource.from_contents(definitions) @ referencing.Registry()
    return jsonschema.Draft202012Validator(schema, registry=registry)


def _validate(doc: Doc, k8s_version: str) -> None:
    if doc["apiVersion"].startswith("monitoring.coreos.com/"):
        _crd_validator(doc["apiVersion"], doc["kind"], k8s_version).validate(doc)
    else:
        kubernetes_validate.validate(doc, k8s_version, strict=True)


# ---------------------------------------------------------------- fixtures and helpers
@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[Doc]]:
    return request.param, _render(K8S / "overlays" / request.param)


def _one(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _exported_metric_names() -> set[str]:
    names: set[str] = set()
    for family in Metrics().registry.collect():
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
        names.update(family.name + s for s in suffixes[family.type])
    return names


# ---------------------------------------------------------------- tests
def test_overlays_render_every_component(rendered: tuple[str, list[Doc]]) -> None:
    overlay, docs = rendered
    kinds = sorted(d["kind"] for d in docs)
    expected = ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "Job", "Namespace", "NetworkPolicy",
                "PodDisruptionBudget", "PrometheusRule", "Service", "ServiceAccount", "ServiceMonitor"]
    # The Secret template is applied in dev only (prod's Secret is created out of band); prod has a
    # public and an internal Ingress.
    assert kinds == sorted(expected + (["Secret"] if overlay == "dev" else ["Ingress", "Ingress"]))
    namespace = _one(docs, "Namespace")["metadata"]["name"]
    assert all(d["metadata"].get("namespace") == namespace for d in docs if d["kind"] != "Namespace")
    assert all(d["metadata"]["labels"]["environment"] == ENVIRONMENT[overlay] for d in docs)


@pytest.mark.parametrize("k8s_version", K8S_VERSIONS)
def test_every_object_validates_strictly(rendered: tuple[str, list[Doc]], k8s_version: str) -> None:
    _, docs = rendered
    for doc in docs:
        try:
            _validate(doc, k8s_version)
        except kubernetes_validate.SchemaNotFoundError as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message} (unknown kinds are errors)")
        except jsonschema.ValidationError as exc:
            path = ".".join(str(p) for p in exc.absolute_path)
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} invalid for Kubernetes {k8s_version}: "
                        f"{path}: {exc.message}")


@pytest.mark.parametrize("k8s_version", K8S_VERSIONS)
def test_validation_rejects_unknown_fields_and_kinds(k8s_version: str) -> None:
    docs = _render(K8S / "overlays" / "prod")
    deployment = copy.deepcopy(_one(docs, "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    with pytest.raises(jsonschema.ValidationError, match="livenessProbes"):
        _validate(deployment, k8s_version)
    monitor = copy.deepcopy(_one(docs, "ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    with pytest.raises(jsonschema.ValidationError, match="intervall"):
        _validate(monitor, k8s_version)
    rule = copy.deepcopy(_one(docs, "PrometheusRule"))
    rule["spec"]["groups"][0]["rules"][0]["for"] = "ten minutes"
    with pytest.raises(jsonschema.ValidationError, match="ten minutes"):
        _validate(rule, k8s_version)
    rule["metadata"]["labelz"] = {}
    with pytest.raises(jsonschema.ValidationError):
        _validate(rule, k8s_version)
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        _validate({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}, k8s_version)


def test_probes_drain_and_resources(rendered: tuple[str, list[Doc]]) -> None:
    _, docs = rendered
    pod = _one(docs, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    startup = container["startupProbe"]
    assert startup["httpGet"]["path"] == "/healthz"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 30, "model loading needs a startup budget"
    config = _one(docs, "ConfigMap", "switchboard-config")["data"]
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain = float(config["SWITCHBOARD_DRAIN_TIMEOUT_S"])
    # uvicorn gets drain + 1 s; SIGKILL must not come before that ends.
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + drain + 1 + 3
    for pod_spec in (pod, _one(docs, "Job")["spec"]["template"]["spec"]):
        for c in pod_spec["containers"]:
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]) and "memory" in c["resources"]["limits"]


def test_pods_run_restricted(rendered: tuple[str, list[Doc]]) -> None:
    _, docs = rendered
    for workload in (_one(docs, "Deployment"), _one(docs, "Job")):
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001  # the uid created in the Dockerfile
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["automountServiceAccountToken"] is False
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"]
            assert c["image"] and not c["image"].endswith(":latest") and ":" in c["image"]
    namespace = _one(docs, "Namespace")["metadata"]["labels"]
    assert namespace["pod-security.kubernetes.io/enforce"] == "restricted"


def test_selectors_ports_and_references_fit(rendered: tuple[str, list[Doc]]) -> None:
    overlay, docs = rendered
    deployment = _one(docs, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    port_names = {p["name"] for p in container["ports"]}
    assert _selects(deployment["spec"]["selector"]["matchLabels"], pod_labels)
    for spread in deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]:
        assert _selects(spread["labelSelector"]["matchLabels"], pod_labels)
    service = _one(docs, "Service")
    assert _selects(service["spec"]["selector"], pod_labels)
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    assert _selects(_one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"], pod_labels)
    policy = _one(docs, "NetworkPolicy")["spec"]
    assert _selects(policy["podSelector"]["matchLabels"], pod_labels)
    assert {p["port"] for rule in policy["ingress"] for p in rule["ports"]} <= port_names
    for ingress in (d for d in docs if d["kind"] == "Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                assert backend["name"] == service["metadata"]["name"]
                assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
    monitor = _one(docs, "ServiceMonitor")["spec"]
    assert _selects(monitor["selector"]["matchLabels"], service["metadata"]["labels"])
    assert {e["port"] for e in monitor["endpoints"]} <= {p["name"] for p in service["spec"]["ports"]}
    assert all(e["path"] == "/metrics" for e in monitor["endpoints"])
    hpa = _one(docs, "HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                     "name": deployment["metadata"]["name"]}
    assert hpa["minReplicas"] <= deployment["spec"]["replicas"] <= hpa["maxReplicas"]
    pods_metrics = [m["pods"]["metric"]["name"] for m in hpa["metrics"] if m["type"] == "Pods"]
    # A Pods metric needs prometheus-adapter, and one it cannot serve stops every scale-down: only
    # the prod-inflight overlay scales on one.
    assert pods_metrics == (["switchboard_in_flight_messages"] if overlay == "prod-inflight" else [])
    assert set(pods_metrics) <= _exported_metric_names()
    assert {m["resource"]["name"] for m in hpa["metrics"] if m["type"] == "Resource"} == {"cpu"}
    # ConfigMaps and Secrets referenced by pods exist (prod: the Secret is created out of band).
    present = {(d["kind"], d["metadata"]["name"]) for d in docs}
    external = {("Secret", "switchboard-secrets")} if ENVIRONMENT[overlay] == "prod" else set()
    for workload in (deployment, _one(docs, "Job")):
        pod = workload["spec"]["template"]["spec"]
        assert ("ServiceAccount", pod["serviceAccountName"]) in present
        for c in pod["containers"]:
            refs = [("ConfigMap", e["configMapRef"]["name"]) for e in c.get("envFrom", []) if "configMapRef" in e]
            refs += [("Secret", e["secretRef"]["name"]) for e in c.get("envFrom", []) if "secretRef" in e]
            for env in c.get("env", []):
                source = env.get("valueFrom", {})
                if "configMapKeyRef" in source:
                    refs.append(("ConfigMap", source["configMapKeyRef"]["name"]))
                if "secretKeyRef" in source:
                    refs.append(("Secret", source["secretKeyRef"]["name"]))
            assert set(refs) <= present | external, f"missing {set(refs) - present - external}"


def test_settings_keys_are_real_and_secret_template_is_empty() -> None:
    # The server refuses SWITCHBOARD_* variables that are not settings: every key must be one.
    known = set(Settings.variables())
    config = _one(_render(K8S / "overlays" / "prod"), "ConfigMap")["data"]
    assert set(config) <= known, f"unknown settings: {set(config) - known}"
    secret = _one(_render(K8S / "secret-template"), "Secret")
    assert set(secret["stringData"]) <= known
    assert {"SWITCHBOARD_MONGODB_URI", "SWITCHBOARD_TELEGRAM_TOKEN", "SWITCHBOARD_SLACK_SIGNING_SECRET"} <= set(
        secret["stringData"])
    assert "data" not in secret and all(value == "" for value in secret["stringData"].values()), \
        "the Secret template must not carry values"


def test_renderer_refuses_what_it_does_not_implement(tmp_path: Path) -> None:
    (tmp_path / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: '1'}\n")
    kfile = tmp_path / "kustomization.yaml"
    kfile.write_text("resources: [cm.yaml]\nnamePrefix: x-\n")
    with pytest.raises(KustomizeSubsetError, match="namePrefix"):
        _render(tmp_path)
    (tmp_path / "patch.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: other}\n")
    kfile.write_text("resources: [cm.yaml]\npatches: [{path: patch.yaml}]\n")
    with pytest.raises(KustomizeSubsetError, match="matches 0 resources"):
        _render(tmp_path)
    (tmp_path / "patch.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\nlist: [1]\n")
    with pytest.raises(KustomizeSubsetError, match="list 'list'"):
        _render(tmp_path)
    (tmp_path / "patch.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: null, b: '2'}\n")
    assert _render(tmp_path)[0]["data"] == {"b": "2"}


# ---------------------------------------------------------------- what each Ingress exposes
PUBLIC, INTERNAL, UNROUTED = "public", "internal", "unrouted"
_SAMPLE_PARAMS = {"bot": "support", "conversation_id": "c1", "name": "app.css"}


def _exposure(route: str) -> str:
    """Where a route of the app may be reached from: customers and chat platforms (public), staff
    only (the internal Ingress or a port-forward), or no Ingress at all (Prometheus scrapes pods)."""
    if route.startswith("/bots/{bot}/webhooks/") or route in ("/bots/{bot}/chat", "/widget.js"):
        return PUBLIC
    if route.startswith(("/review", "/docs", "/bots/{bot}/conversations")) or route == "/openapi.json":
        return INTERNAL
    if route in ("/metrics", "/healthz", "/readyz", "/"):
        return UNROUTED
    raise AssertionError(f"{route}: new route; say in _exposure whether it is public, internal or unrouted")


def _routes_to(ingress: Doc, url: str) -> bool:
    """Whether ingress-nginx sends ``url`` (a path, no query) to the backend through ``ingress``."""
    regex = ingress["metadata"].get("annotations", {}).get("nginx.ingress.kubernetes.io/use-regex") == "true"
    for rule in ingress["spec"]["rules"]:
        for entry in rule["http"]["paths"]:
            path = entry["path"]
            if regex:  # location ~* "^PATH": case-insensitive, anchored at the start only
                if re.match(path, url, re.IGNORECASE):
                    return True
            elif entry["pathType"] == "Exact":
                if url == path:
                    return True
            elif url == path or url.startswith(path.rstrip("/") + "/"):
                return True
    return False


@pytest.fixture(scope="module")
def app_routes(module_tmp: Callable[[str], Path]) -> list[str]:
    from connectors.app import create_app

    tmp = module_tmp("routes")
    bot = tmp / "support"
    shutil.copytree(Path(__file__).resolve().parents[1] / "data" / "tiny_bot", bot)
    app = create_app(Settings(data_dir=tmp / "data"), [bot])
    # Routes of included routers are reached through FastAPI's route contexts (with their prefixes).
    return sorted({context.path for context in iter_route_contexts(app.routes) if context.path})


@pytest.mark.parametrize("overlay", ["prod", "prod-inflight"])
def test_ingresses_expose_only_what_each_audience_needs(overlay: str, app_routes: list[str]) -> None:
    docs = _render(K8S / "overlays" / overlay)
    ingresses = {d["spec"]["ingressClassName"]: d for d in docs if d["kind"] == "Ingress"}
    assert set(ingresses) == {"nginx", "nginx-internal"}
    public, internal = ingresses["nginx"], ingresses["nginx-internal"]
    assert {r["host"] for r in public["spec"]["rules"]}.isdisjoint(r["host"] for r in internal["spec"]["rules"])
    assert "/metrics" in app_routes and "/review/login" in app_routes and "/bots/{bot}/webhooks/web/ws" in app_routes
    for route in app_routes:
        url = route.format(**_SAMPLE_PARAMS)
        where = _exposure(route)
        assert _routes_to(public, url) == (where == PUBLIC), f"{url} ({where}) through the public Ingress"
        assert _routes_to(internal, url) == (where == INTERNAL), f"{url} ({where}) through the internal Ingress"
    # Nearby paths that are not routes of the public Ingress.
    for url in ("/metrics", "/metrics/", "/METRICS", "/docs", "/openapi.json", "/review", "/review/api/me",
                "/bots/support/conversations", "/bots/support/chat/x", "/widget.jsx", "/healthz", "/"):
        assert not _routes_to(public, url), url
    assert not _routes_to(internal, "/metrics")


def test_route_matching_follows_ingress_nginx() -> None:
    chat = {"path": "/bots/[^/]+/chat$", "pathType": "ImplementationSpecific"}
    regex = {"metadata": {"annotations": {"nginx.ingress.kubernetes.io/use-regex": "true"}},
             "spec": {"rules": [{"http": {"paths": [chat]}}]}}
    assert _routes_to(regex, "/bots/a/chat") and _routes_to(regex, "/BOTS/a/chat")
    assert not _routes_to(regex, "/bots/a/b/chat") and not _routes_to(regex, "/x/bots/a/chat")
    prefix = {"metadata": {}, "spec": {"rules": [{"http": {"paths": [{"path": "/review", "pathType": "Prefix"}]}}]}}
    assert _routes_to(prefix, "/review/login") and _routes_to(prefix, "/review")
    assert not _routes_to(prefix, "/reviewer")


def test_telegram_job_succeeds_without_a_token() -> None:
    """dev's Secret is empty (and a Slack-only install has no Telegram token): the Job must not fail
    and retry; its arguments are a command line the real CLI accepts."""
    from connectors.cli import build_parser

    for overlay in OVERLAYS:
        job = _one(_render(K8S / "overlays" / overlay), "Job")
        (container,) = job["spec"]["template"]["spec"]["containers"]
        args = [re.sub(r"\$\((\w+)\)", "https://bots.example.com", a) for a in container["args"]]
        parsed = build_parser().parse_args(args)
        assert parsed.telegram_command == "set-webhook" and parsed.skip_without_token is True
