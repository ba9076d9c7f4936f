#!/usr/bin/env python3
"""Lints, renders and schema-checks the wharf Helm chart, then checks what operators rely on.

    python tests/support/chart_check.py charts/wharf

Renders the chart with its default values and with every `ci/*-values.yaml` (helm-python-sdk:
Helm 4's own template engine and linter, no cluster), validates every manifest against the
Kubernetes OpenAPI schemas of the oldest supported and the newest known version
(kubernetes-validate, strict: unknown fields are errors), and asserts the properties in
`check_release`. Values that must be refused (a secret in the ConfigMap, a worker killed before
its grace is over, …) are rendered too and must fail. Custom resources (the Prometheus
Operator's PodMonitor) have no schema in kubernetes-validate: they are skipped there on purpose
and checked field by field in `check_pod_monitor` instead. Exits 1 naming every failed check.
"""

from __future__ import annotations

import glob
import os
import re
import sys
import traceback
from typing import Any

import helm_python as helm
import kubernetes_validate
import yaml

# The chart's floor (Chart.yaml kubeVersion) and the newest schemas kubernetes-validate ships.
KUBE_VERSIONS = ("1.30.0", kubernetes_validate.utils.latest_version())
RELEASE = "wharf"
NAMESPACE = "jobs"
# The variable the worker reads for its SIGTERM grace (src/config.rs) and its default.
GRACE_VAR = "WORKER_SHUTDOWN_GRACE_SECONDS"
# What the binary does (README, src/config.rs): the chart must agree with these.
DEFAULT_POOLS = {"email", "webhooks", "embeddings", "purge"}
API_PORT = 4000
# `/metrics` and `/healthz` of workers and schedulers (src/config.rs, METRICS_PORT; 0 = off).
METRICS_VAR = "METRICS_PORT"
METRICS_PORT = 9090
# The uid the pods run as; the Dockerfile's USER must be the same.
RUN_AS_USER = 10001
# API groups of custom resources: no Kubernetes schema to validate against.
CRD_GROUPS = ("monitoring.coreos.com/",)
# What the PodMonitor may set (monitoring.coreos.com/v1): anything else is a typo here.
POD_MONITOR_SPEC = {"selector", "podMetricsEndpoints", "namespaceSelector", "jobLabel", "podTargetLabels"}
POD_MONITOR_ENDPOINT = {"port", "path", "interval", "scrapeTimeout", "scheme", "honorLabels", "relabelings", "metricRelabelings"}
SECRET_NAMES = re.compile(r"^(DATABASE_URL|REDIS_URL|SMTP_USER)$|(_KEY|_KEY_ID|_TOKEN|_PASS|_PASSWORD|_SECRET)$")


class Failures:
    """Collects failed checks so that one run reports all of them."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.passed = 0

    def check(self, ok: bool, what: str) -> bool:
        if ok:
            self.passed += 1
        else:
            self.items.append(what)
        return ok


def pod_spec(doc: dict) -> dict:
    return doc["spec"]["template"]["spec"]


def containers(doc: dict) -> list[dict]:
    return pod_spec(doc)["containers"]


def env_of(container: dict) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def parse(manifests: dict[str, str]) -> list[dict]:
    docs = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc["__template"] = path
                docs.append(doc)
    return docs


def validate_schemas(docs: list[dict], case: str, f: Failures) -> None:
    for doc in docs:
        body = {k: v for k, v in doc.items() if k != "__template"}
        name = f"{case}: {doc['kind']}/{doc['metadata']['name']} ({doc['__template']})"
        if doc["apiVersion"].startswith(CRD_GROUPS):
            # A custom resource: kubernetes-validate has no schema for it; check_pod_monitor reads it.
            f.check(doc["kind"] == "PodMonitor", f"{name}: a custom resource that nothing checks")
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(body, version, strict=True)
                f.check(True, "")
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                f.check(False, f"{name} is not a valid Kubernetes {version} object: {path}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError as e:
                f.check(False, f"{name}: no Kubernetes {version} schema for it ({e.message})")


def container_ports(container: dict) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p}


def check_probe_ports(doc: dict, case: str, f: Failures) -> None:
    """A probe on a named port needs a port of that name: the API server does not check it."""
    for c in containers(doc):
        ports = container_ports(c)
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            port = c.get(probe, {}).get("httpGet", {}).get("port")
            if isinstance(port, str):
                f.check(port in ports, f"{case}: {doc['metadata']['name']}/{c['name']} {probe} on port {port!r}, not among {sorted(ports)}")


def check_scrape_annotations(values: dict, own: dict, dep: dict, port: int, case: str, f: Failures) -> None:
    """prometheus.io/* on a pod serving metrics on `port` (0: none), unless its podAnnotations say otherwise."""
    name = f"{case}: {dep['metadata']['name']}"
    annotations = dep["spec"]["template"]["metadata"].get("annotations", {})
    expected = {}
    if port and values["metrics"]["scrapeAnnotations"]:
        expected = {"prometheus.io/scrape": "true", "prometheus.io/port": str(port), "prometheus.io/path": values["metrics"]["path"]}
    # The pod's own annotations (role over chart-wide) win over the chart's.
    for source in (values["podAnnotations"] or {}, own or {}):
        expected.update({k: v for k, v in source.items() if k.startswith("prometheus.io/")})
    got = {k: v for k, v in annotations.items() if k.startswith("prometheus.io/")}
    f.check(got == expected, f"{name}: scrape annotations {got}, expected {expected}")


def metrics_on(values: dict) -> bool:
    return int(values["metrics"]["port"]) != 0


def check_metrics_server(values: dict, settings: dict, dep: dict, case: str, f: Failures) -> None:
    """A worker or scheduler: METRICS_PORT, its `metrics` port, /healthz probes, scrape annotations."""
    name = f"{case}: {dep['metadata']['name']}"
    c = containers(dep)[0]
    port = int(values["metrics"]["port"])
    f.check(env_of(c).get(METRICS_VAR) == str(port), f"{name}: {METRICS_VAR}={env_of(c).get(METRICS_VAR)}, expected {port}")
    ports = container_ports(c)
    check_scrape_annotations(values, settings.get("podAnnotations"), dep, port, case, f)
    if port:
        f.check(ports.get("metrics") == port, f"{name}: containerPort metrics {ports.get('metrics')}, expected {port}")
        for probe in ("livenessProbe", "startupProbe"):
            if settings.get(probe):
                get = c.get(probe, {}).get("httpGet", {})
                f.check(get.get("path") == "/healthz" and get.get("port") in ("metrics", port),
                        f"{name}: {probe} is {get}, expected GET /healthz on the metrics port")
                timing = {k: v for k, v in settings[probe].items() if k != "httpGet"}
                f.check(all(c.get(probe, {}).get(k) == v for k, v in timing.items()),
                        f"{name}: {probe} {c.get(probe)} is not the values' {settings[probe]}")
        f.check("readinessProbe" not in c, f"{name}: a readiness probe on a pod that takes no traffic")
    else:
        f.check("metrics" not in ports, f"{name}: a metrics port although metrics.port is 0")
        f.check(not any(p in c for p in ("livenessProbe", "startupProbe", "readinessProbe")),
                f"{name}: probes although metrics.port is 0 (nothing answers them)")


def check_pod_monitor(values: dict, by_kind: dict, deployments: dict, full: str, case: str, f: Failures) -> None:
    """The PodMonitor (no schema in kubernetes-validate): known fields, and it reaches every metrics port."""
    monitors = by_kind.get("PodMonitor", {})
    if not values["metrics"]["podMonitor"]["enabled"]:
        f.check(not monitors, f"{case}: a PodMonitor without metrics.podMonitor.enabled")
        return
    pm = monitors.get(full)
    if not f.check(pm is not None, f"{case}: metrics.podMonitor.enabled but no PodMonitor {full}"):
        return
    f.check(pm["apiVersion"] == "monitoring.coreos.com/v1", f"{case}: PodMonitor apiVersion {pm['apiVersion']}")
    for k, v in values["metrics"]["podMonitor"]["labels"].items():
        f.check(pm["metadata"]["labels"].get(k) == v, f"{case}: PodMonitor lacks the label {k}={v}")
    spec = pm["spec"]
    f.check(set(spec) <= POD_MONITOR_SPEC, f"{case}: PodMonitor spec fields {sorted(set(spec) - POD_MONITOR_SPEC)} unknown")
    endpoints = spec.get("podMetricsEndpoints", [])
    for e in endpoints:
        f.check(set(e) <= POD_MONITOR_ENDPOINT, f"{case}: PodMonitor endpoint fields {sorted(set(e) - POD_MONITOR_ENDPOINT)} unknown")
        f.check(e.get("path") == values["metrics"]["path"], f"{case}: PodMonitor endpoint {e} path, expected {values['metrics']['path']}")
        for key in ("interval", "scrapeTimeout"):
            f.check(e.get(key, "") == values["metrics"]["podMonitor"][key], f"{case}: PodMonitor endpoint {key} {e.get(key)}")
    ports = {e.get("port") for e in endpoints}
    # Every pod serving metrics is selected and reached on its port name; nothing is scraped twice.
    for dep in deployments.values():
        c = containers(dep)[0]
        serving = "http" if c["name"] == "api" else "metrics" if metrics_on(values) else None
        selected = selects(spec["selector"]["matchLabels"], dep["spec"]["template"]["metadata"]["labels"])
        if serving:
            f.check(selected and serving in ports and serving in container_ports(c),
                    f"{case}: the PodMonitor does not scrape {dep['metadata']['name']} on its {serving} port")
        f.check(len(ports & set(container_ports(c))) <= 1, f"{case}: the PodMonitor scrapes {dep['metadata']['name']} twice")
    f.check(len(ports) == len(endpoints), f"{case}: PodMonitor endpoints repeat a port: {endpoints}")


def check_ingress(values: dict, by_kind: dict, full: str, case: str, f: Failures) -> None:
    """A host without paths of its own routes the public API, never GET /metrics (no auth) or the probes."""
    ing = by_kind.get("Ingress", {}).get(f"{full}-api")
    if not values["api"]["ingress"]["enabled"] or not f.check(ing is not None, f"{case}: no Ingress {full}-api"):
        return
    rules = {r["host"]: r["http"]["paths"] for r in ing["spec"]["rules"]}
    for host in values["api"]["ingress"]["hosts"]:
        paths = rules.get(host["host"], [])
        if host.get("paths"):
            f.check([p["path"] for p in paths] == [p["path"] for p in host["paths"]], f"{case}: Ingress host {host['host']} paths {paths}")
            continue
        routed = {p["path"] for p in paths}
        f.check("/v1" in routed, f"{case}: Ingress host {host['host']} does not route /v1 ({sorted(routed)})")
        for private in (values["metrics"]["path"], "/healthz", "/readyz"):
            reached = [p["path"] for p in paths
                       if private == p["path"] or (p["pathType"] == "Prefix" and private.startswith(p["path"].rstrip("/") + "/"))]
            f.check(not reached, f"{case}: Ingress host {host['host']} exposes {private} through {reached}")


def worker_settings(values: dict, name: str) -> dict:
    """A `workers` entry with `workerDefaults` filled in, as the chart documents it."""
    merged = dict(values["workerDefaults"])
    entry = values["workers"][name] or {}
    for key, value in entry.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key != "resources":
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def check_release(values: dict, docs: list[dict], app_version: str, case: str, f: Failures) -> None:
    by_kind: dict[str, dict[str, dict]] = {}
    for doc in docs:
        kind_docs = by_kind.setdefault(doc["kind"], {})
        f.check(doc["metadata"]["name"] not in kind_docs, f"{case}: two {doc['kind']}s named {doc['metadata']['name']}")
        kind_docs[doc["metadata"]["name"]] = doc
    deployments = by_kind.get("Deployment", {})
    full = RELEASE  # the release is named after the chart, so the full name is not doubled
    secret_name = values["existingSecret"] or f"{full}-secret"
    config_name = f"{full}-config"

    # --- every wharf pod: one image, the Secret and ConfigMap, locked-down security context ---
    pods = list(deployments.values()) + list(by_kind.get("Job", {}).values())
    image = f"{values['image']['repository']}:{values['image']['tag'] or app_version}"
    for doc in pods:
        name = f"{case}: {doc['kind']}/{doc['metadata']['name']}"
        spec = pod_spec(doc)
        psc = spec.get("securityContext", {})
        f.check(psc.get("runAsNonRoot") is True, f"{name}: pod securityContext.runAsNonRoot is not true")
        f.check(spec.get("automountServiceAccountToken") is False, f"{name}: mounts a service account token")
        check_probe_ports(doc, case, f)
        for c in spec["containers"]:
            sc = c.get("securityContext", {})
            f.check(sc.get("readOnlyRootFilesystem") is True, f"{name}/{c['name']}: root filesystem is writable")
            f.check(sc.get("allowPrivilegeEscalation") is False, f"{name}/{c['name']}: privilege escalation allowed")
            f.check("ALL" in sc.get("capabilities", {}).get("drop", []), f"{name}/{c['name']}: does not drop ALL capabilities")
            f.check(c["image"] == image, f"{name}/{c['name']}: image {c['image']}, expected {image}")
            refs = [e.get("secretRef", {}).get("name") for e in c.get("envFrom", []) if "secretRef" in e]
            f.check(refs == [secret_name], f"{name}/{c['name']}: reads Secrets {refs}, expected [{secret_name}]")
            mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
            f.check(values["dataDir"] in mounts and "/tmp" in mounts, f"{name}/{c['name']}: no writable {values['dataDir']} and /tmp")
            f.check(env_of(c).get("WHARF_DATA_DIR") == values["dataDir"], f"{name}/{c['name']}: WHARF_DATA_DIR is not the mounted dataDir")
        if doc["kind"] == "Deployment":
            cm = [e["configMapRef"]["name"] for c in spec["containers"] for e in c.get("envFrom", []) if "configMapRef" in e]
            f.check(cm == [config_name], f"{name}: reads ConfigMaps {cm}, expected [{config_name}]")
            annotations = doc["spec"]["template"]["metadata"].get("annotations", {})
            f.check("checksum/config" in annotations, f"{name}: no checksum/config annotation (config changes would not roll the pods)")
            expected_sa = values["serviceAccount"]["name"] or (full if values["serviceAccount"]["create"] else "default")
            f.check(spec.get("serviceAccountName") == expected_sa, f"{name}: serviceAccountName {spec.get('serviceAccountName')}, expected {expected_sa}")
            # A PDB or Service selecting this Deployment must not select another one's pods.
            pod_labels = doc["spec"]["template"]["metadata"]["labels"]
            f.check(selects(doc["spec"]["selector"]["matchLabels"], pod_labels), f"{name}: selector does not match its pod labels")
            for other in deployments.values():
                if other is not doc:
                    f.check(
                        not selects(doc["spec"]["selector"]["matchLabels"], other["spec"]["template"]["metadata"]["labels"]),
                        f"{name}: its selector also matches the pods of {other['metadata']['name']}",
                    )
    if values["serviceAccount"]["create"]:
        f.check(full in by_kind.get("ServiceAccount", {}), f"{case}: no ServiceAccount {full}")

    # --- secrets: in a Secret only; never in a ConfigMap or anywhere else in the manifests ---
    secret_values = {str(v) for v in (values["secret"]["values"] or {}).values() if str(v)}
    chart_secret = values["secret"]["create"] and not values["existingSecret"]
    if chart_secret:
        s = by_kind.get("Secret", {}).get(secret_name)
        if f.check(s is not None, f"{case}: secret.create is true but there is no Secret {secret_name}"):
            data = s.get("stringData", {})
            f.check(set(data) == set(values["secret"]["values"]), f"{case}: Secret {secret_name} keys {sorted(data)}")
            f.check("pre-install" in s["metadata"].get("annotations", {}).get("helm.sh/hook", ""),
                    f"{case}: Secret {secret_name} is not a pre-install hook, so the migration Job cannot read it on install")
    else:
        f.check(not by_kind.get("Secret"), f"{case}: renders a Secret without secret.create")
    for cm_name, cm in by_kind.get("ConfigMap", {}).items():
        for key, value in (cm.get("data") or {}).items():
            f.check(not SECRET_NAMES.search(key), f"{case}: ConfigMap {cm_name} holds {key}, a secret")
            for secret in secret_values:
                f.check(secret not in str(value), f"{case}: ConfigMap {cm_name}.{key} contains a secret value")
    for doc in docs:
        if doc["kind"] == "Secret":
            continue
        text = yaml.safe_dump({k: v for k, v in doc.items() if k != "__template"})
        for secret in secret_values:
            f.check(secret not in text, f"{case}: {doc['kind']}/{doc['metadata']['name']} contains a secret value")
    cm = by_kind.get("ConfigMap", {}).get(config_name)
    if f.check(cm is not None, f"{case}: no ConfigMap {config_name}"):
        expected = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in (values["env"] or {}).items()}
        f.check(cm.get("data") == expected, f"{case}: ConfigMap {config_name} data {cm.get('data')} is not env {expected}")

    # --- api: Service on PORT, probes on /healthz and /readyz, optional scrape annotations ---
    api_name = f"{full}-api"
    api = deployments.get(api_name)
    if values["api"]["enabled"] and f.check(api is not None, f"{case}: no Deployment {api_name}"):
        port = values["api"]["port"]
        c = containers(api)[0]
        f.check(c.get("args") == ["api"], f"{case}: {api_name} args {c.get('args')}")
        f.check(env_of(c).get("PORT") == str(port), f"{case}: {api_name} PORT is {env_of(c).get('PORT')}, expected {port}")
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        f.check(ports.get("http") == port, f"{case}: {api_name} containerPort http {ports.get('http')}, expected {port}")
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
            get = c.get(probe, {}).get("httpGet", {})
            f.check(get.get("path") == path and get.get("port") in ("http", port),
                    f"{case}: {api_name} {probe} is {get}, expected GET {path} on the http port")
        svc = by_kind.get("Service", {}).get(api_name)
        if f.check(svc is not None, f"{case}: no Service {api_name}"):
            sp = svc["spec"]["ports"][0]
            f.check(sp["port"] == port and sp["targetPort"] in ("http", port), f"{case}: Service {api_name} port {sp}")
            matched = [d["metadata"]["name"] for d in deployments.values()
                       if selects(svc["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])]
            f.check(matched == [api_name], f"{case}: Service {api_name} selects the pods of {matched}")
        check_scrape_annotations(values, values["api"]["podAnnotations"], api, port, case, f)
        f.check(METRICS_VAR not in env_of(c), f"{case}: {api_name} sets {METRICS_VAR}; the API serves /metrics on PORT")
        check_scaling(values["api"], api, by_kind, case, f)
    check_ingress(values, by_kind, full, case, f)
    check_pod_monitor(values, by_kind, deployments, full, case, f)

    # --- scheduler: its own Deployment, N replicas (each tick fires once across them) ---
    sched_name = f"{full}-scheduler"
    sched = deployments.get(sched_name)
    if values["scheduler"]["enabled"] and f.check(sched is not None, f"{case}: no Deployment {sched_name}"):
        f.check(containers(sched)[0].get("args") == ["scheduler"], f"{case}: {sched_name} args {containers(sched)[0].get('args')}")
        f.check(sched["spec"].get("replicas") == values["scheduler"]["replicas"],
                f"{case}: {sched_name} replicas {sched['spec'].get('replicas')}, expected {values['scheduler']['replicas']}")
        schedules_file = env_of(containers(sched)[0]).get("WHARF_SCHEDULES_FILE")
        if values["scheduler"]["schedules"]:
            cm = by_kind.get("ConfigMap", {}).get(f"{full}-schedules", {})
            f.check(cm.get("data", {}).get("schedules.toml", "").strip() == values["scheduler"]["schedules"].strip(),
                    f"{case}: the schedules ConfigMap does not hold scheduler.schedules")
            mounts = {m["mountPath"] for m in containers(sched)[0]["volumeMounts"]}
            f.check(schedules_file is not None and os.path.dirname(schedules_file) in mounts,
                    f"{case}: WHARF_SCHEDULES_FILE={schedules_file} is not in a mounted directory {mounts}")
        else:
            f.check(schedules_file is None, f"{case}: WHARF_SCHEDULES_FILE set without scheduler.schedules")
        check_pdb(values["scheduler"], sched, by_kind, case, f)
        check_metrics_server(values, values["scheduler"], sched, case, f)

    # --- workers: one Deployment per enabled entry, right pools, grace shorter than the pod's ---
    expected_workers = set()
    for name in values["workers"]:
        w = worker_settings(values, name)
        dep_name = f"{full}-worker-{name}"
        if values["workers"][name] is None or w.get("enabled") is False:
            f.check(dep_name not in deployments, f"{case}: {dep_name} rendered although the entry is disabled")
            continue
        expected_workers.add(dep_name)
        dep = deployments.get(dep_name)
        if not f.check(dep is not None, f"{case}: no Deployment {dep_name} for workers.{name}"):
            continue
        c = containers(dep)[0]
        args = ["worker", "--pools", ",".join(w["pools"]), "--concurrency", str(w["concurrency"])]
        f.check(c.get("args") == args, f"{case}: {dep_name} args {c.get('args')}, expected {args}")
        grace = env_of(c).get(GRACE_VAR)
        f.check(grace == str(w["shutdownGraceSeconds"]), f"{case}: {dep_name} {GRACE_VAR}={grace}, expected {w['shutdownGraceSeconds']}")
        term = pod_spec(dep).get("terminationGracePeriodSeconds", 30)
        f.check(grace is not None and term > int(grace),
                f"{case}: {dep_name} terminationGracePeriodSeconds {term} is not longer than {GRACE_VAR}={grace}")
        if w.get("terminationGracePeriodSeconds") is not None:
            f.check(term == w["terminationGracePeriodSeconds"], f"{case}: {dep_name} ignores terminationGracePeriodSeconds")
        if "resources" in (values["workers"][name] or {}):
            f.check(c.get("resources") == values["workers"][name]["resources"], f"{case}: {dep_name} resources {c.get('resources')}")
        check_scaling(w, dep, by_kind, case, f)
        check_metrics_server(values, w, dep, case, f)
    rendered_workers = {n for n in deployments if n.startswith(f"{full}-worker-")}
    f.check(rendered_workers == expected_workers, f"{case}: worker Deployments {sorted(rendered_workers)}, expected {sorted(expected_workers)}")

    # --- migrations: a pre-install/pre-upgrade hook Job running `wharf migrate` ---
    job_name = f"{full}-migrate"
    job = by_kind.get("Job", {}).get(job_name)
    if values["migrations"]["enabled"] and f.check(job is not None, f"{case}: no migration Job {job_name}"):
        hooks = set(job["metadata"].get("annotations", {}).get("helm.sh/hook", "").split(","))
        f.check({"pre-install", "pre-upgrade"} <= hooks, f"{case}: {job_name} hooks {hooks}, expected pre-install and pre-upgrade")
        f.check(containers(job)[0].get("args") == ["migrate"], f"{case}: {job_name} args {containers(job)[0].get('args')}")
        f.check(pod_spec(job).get("restartPolicy") == "Never", f"{case}: {job_name} restartPolicy is not Never")
        # Regular resources do not exist yet when a pre-install hook runs.
        refs = [e for c in containers(job) for e in c.get("envFrom", []) if "configMapRef" in e]
        f.check(not refs, f"{case}: {job_name} reads a ConfigMap that a pre-install hook cannot have")
        env = env_of(containers(job)[0])
        for k, v in (values["env"] or {}).items():
            f.check(k in env, f"{case}: {job_name} lacks env {k}")
        if values["serviceAccount"]["create"]:
            f.check(pod_spec(job).get("serviceAccountName") != full, f"{case}: {job_name} uses the ServiceAccount created after it")
        if chart_secret:
            s = by_kind["Secret"][secret_name]["metadata"]["annotations"]
            f.check(int(s.get("helm.sh/hook-weight", 0)) < int(job["metadata"]["annotations"].get("helm.sh/hook-weight", 0)),
                    f"{case}: the Secret hook does not run before the migration Job")


def check_scaling(settings: dict, dep: dict, by_kind: dict, case: str, f: Failures) -> None:
    name = dep["metadata"]["name"]
    hpa = by_kind.get("HorizontalPodAutoscaler", {}).get(name)
    auto = settings.get("autoscaling", {})
    if auto.get("enabled"):
        if f.check(hpa is not None, f"{case}: autoscaling enabled but no HPA for {name}"):
            ref = hpa["spec"]["scaleTargetRef"]
            f.check(ref == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}, f"{case}: HPA {name} targets {ref}")
            f.check(hpa["spec"]["minReplicas"] == auto["minReplicas"] and hpa["spec"]["maxReplicas"] == auto["maxReplicas"],
                    f"{case}: HPA {name} bounds {hpa['spec']['minReplicas']}..{hpa['spec']['maxReplicas']}")
            if auto.get("metrics"):
                f.check(hpa["spec"]["metrics"] == auto["metrics"], f"{case}: HPA {name} metrics are not autoscaling.metrics")
            else:
                cpu = hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"]
                f.check(cpu == auto["targetCPUUtilizationPercentage"], f"{case}: HPA {name} CPU target {cpu}")
        # The HPA owns the replica count; a fixed one would fight it on every upgrade.
        f.check("replicas" not in dep["spec"], f"{case}: {name} sets replicas although an HPA scales it")
    else:
        f.check(hpa is None, f"{case}: HPA for {name} without autoscaling.enabled")
        f.check(dep["spec"].get("replicas") == settings["replicas"],
                f"{case}: {name} replicas {dep['spec'].get('replicas')}, expected {settings['replicas']}")
    check_pdb(settings, dep, by_kind, case, f)


def check_pdb(settings: dict, dep: dict, by_kind: dict, case: str, f: Failures) -> None:
    name = dep["metadata"]["name"]
    pdb = by_kind.get("PodDisruptionBudget", {}).get(name)
    if settings.get("pdb", {}).get("enabled"):
        if f.check(pdb is not None, f"{case}: no PodDisruptionBudget for {name}"):
            labels = dep["spec"]["template"]["metadata"]["labels"]
            f.check(selects(pdb["spec"]["selector"]["matchLabels"], labels), f"{case}: PDB {name} does not select its pods")
            f.check("maxUnavailable" in pdb["spec"] or "minAvailable" in pdb["spec"], f"{case}: PDB {name} has no budget")
    else:
        f.check(pdb is None, f"{case}: PDB for {name} without pdb.enabled")


def check_defaults(values: dict, docs: list[dict], f: Failures) -> None:
    """What the defaults promise, independent of how values.yaml spells it."""
    case = "defaults"
    names = {d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"}
    expected = {f"{RELEASE}-api", f"{RELEASE}-scheduler"} | {f"{RELEASE}-worker-{p}" for p in DEFAULT_POOLS}
    f.check(names == expected, f"{case}: Deployments {sorted(names)}, expected {sorted(expected)}")
    f.check(values["api"]["port"] == API_PORT, f"{case}: api.port {values['api']['port']}, expected PORT's default {API_PORT}")
    f.check(values["scheduler"]["replicas"] == 2, f"{case}: scheduler.replicas {values['scheduler']['replicas']}, expected 2")
    for pool in DEFAULT_POOLS:
        f.check(worker_settings(values, pool)["pools"] == [pool], f"{case}: workers.{pool} does not run the {pool} pool")
    f.check(not values["secret"]["create"] and not values["existingSecret"], f"{case}: a default Secret")
    f.check(values["migrations"]["enabled"], f"{case}: migrations are off by default")
    m = values["metrics"]
    f.check(m["port"] == METRICS_PORT, f"{case}: metrics.port {m['port']}, expected {METRICS_VAR}'s default {METRICS_PORT}")
    f.check(m["scrapeAnnotations"] is True, f"{case}: scrape annotations are off by default")
    f.check(m["podMonitor"]["enabled"] is False, f"{case}: a PodMonitor by default (it needs the Prometheus Operator's CRDs)")
    f.check(values["podSecurityContext"]["runAsUser"] == RUN_AS_USER, f"{case}: runAsUser {values['podSecurityContext']['runAsUser']}")
    for role in ("scheduler", "workerDefaults"):
        f.check(values[role]["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"},
                f"{case}: {role}.livenessProbe is not GET /healthz on the metrics port")


def check_refused(chart: helm.Chart, f: Failures) -> None:
    """Values the chart must refuse, with a message naming the problem."""
    cases: list[tuple[str, dict, str]] = [
        ("DATABASE_URL in env", {"env": {"DATABASE_URL": "postgres://u:p@db/wharf"}}, "env.DATABASE_URL looks like a secret"),
        ("a provider key in a pool's env", {"workers": {"email": {"env": {"RESEND_API_KEY": "re_x"}}}}, "workers.email.env.RESEND_API_KEY looks like a secret"),
        ("SMTP_PASS in api.env", {"api": {"env": {"SMTP_PASS": "x"}}}, "api.env.SMTP_PASS looks like a secret"),
        ("the pod killed before the worker's grace is over",
         {"workers": {"email": {"shutdownGraceSeconds": 60, "terminationGracePeriodSeconds": 60}}},
         "must be longer than its shutdownGraceSeconds"),
        (f"{GRACE_VAR} in env (the pod's grace would not follow it)", {"env": {GRACE_VAR: "120"}}, f"env.{GRACE_VAR}"),
        (f"{METRICS_VAR} in a pool's env (its port and probes would not follow it)",
         {"workers": {"email": {"env": {METRICS_VAR: "9100"}}}}, f"workers.email.env.{METRICS_VAR}"),
        ("a PodMonitor with nothing to scrape", {"api": {"enabled": False}, "metrics": {"port": 0, "podMonitor": {"enabled": True}}},
         "nothing serves metrics"),
        ("a misspelt PodMonitor setting", {"metrics": {"podMonitor": {"enable": True}}}, "'enable' not allowed"),
        ("a worker without pools", {"workers": {"extra": {"replicas": 1}}}, "workers.extra.pools"),
        ("an unknown pool", {"workers": {"extra": {"pools": ["emails"]}}}, "/workers/extra"),
        ("a misspelt worker setting", {"workers": {"email": {"pool": ["email"]}}}, "'pool' not allowed"),
        ("secret.create without DATABASE_URL", {"secret": {"create": True, "values": {"WHARF_ENCRYPTION_KEY": "k"}}},
         "secret.values.DATABASE_URL is required"),
    ]
    for what, values, message in cases:
        try:
            chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
            f.check(False, f"refused values: the chart renders {what} ({values})")
        except helm.HelmError as e:
            f.check(message in str(e), f"refused values: {what} failed without naming it: {e}")


def lint(chart_dir: str, values: dict | None, case: str, f: Failures) -> None:
    report = helm.lint(chart_dir, values, strict=True, namespace=NAMESPACE)
    for m in report.get("messages", []):
        # 1 = info ("icon is recommended"); 2 = warning, 3 = error.
        f.check(m["severity"] < 2, f"{case}: helm lint: {m['path']}: {m['error']}")
    for e in report.get("errors", []):
        f.check(False, f"{case}: helm lint: {e}")


def run(chart_dir: str) -> Failures:
    f = Failures()
    helm.disable_logging()
    cases: list[tuple[str, dict | None]] = [("defaults", None)]
    for path in sorted(glob.glob(os.path.join(chart_dir, "ci", "*-values.yaml"))):
        with open(path) as fh:
            cases.append((os.path.relpath(path, chart_dir), yaml.safe_load(fh)))
    f.check(len(cases) > 1, f"no ci/*-values.yaml in {chart_dir}: nothing renders the optional parts")
    with helm.Chart.load(chart_dir) as chart:
        for case, values in cases:
            lint(chart_dir, values, case, f)
            try:
                manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
            except helm.HelmError as e:
                f.check(False, f"{case}: render failed: {e}")
                continue
            f.check(bool(manifests.get(f"{chart.name}/templates/NOTES.txt", "").strip()), f"{case}: empty NOTES.txt")
            docs = parse(manifests)
            validate_schemas(docs, case, f)
            merged = chart.merge_values(values)
            check_release(merged, docs, str(chart.metadata["appVersion"]), case, f)
            if values is None:
                check_defaults(merged, docs, f)
            print(f"chart_check: {case}: {len(docs)} manifests ({', '.join(sorted({d['kind'] for d in docs}))})")
        check_refused(chart, f)
        # A release not named after the chart gets prefixed names (release-chart-role).
        other = parse(chart.render(None, name="prod", namespace=NAMESPACE))
        names = {d["metadata"]["name"] for d in other if d["kind"] == "Deployment"}
        f.check("prod-wharf-api" in names and "prod-wharf-worker-email" in names, f"release prod: Deployments {sorted(names)}")
    check_grace_variable(chart_dir, f)
    check_source_agrees(chart_dir, f)
    return f


def check_grace_variable(chart_dir: str, f: Failures) -> None:
    """The chart sets the grace the worker really reads: the name is in src/config.rs."""
    config = os.path.join(chart_dir, "..", "..", "src", "config.rs")
    if os.path.exists(config):
        with open(config) as fh:
            f.check(f'"{GRACE_VAR}"' in fh.read(), f"src/config.rs does not read {GRACE_VAR}: the chart sets the wrong variable")


def check_source_agrees(chart_dir: str, f: Failures) -> None:
    """METRICS_PORT's default in src/config.rs, and the Dockerfile's user, are what the chart assumes."""
    root = os.path.join(chart_dir, "..", "..")
    config = os.path.join(root, "src", "config.rs")
    if os.path.exists(config):
        with open(config) as fh:
            m = re.search(rf'"{METRICS_VAR}",\s*(\d+)', fh.read())
        f.check(m is not None and int(m.group(1)) == METRICS_PORT,
                f"src/config.rs: {METRICS_VAR} default is {m and m.group(1)}, the chart assumes {METRICS_PORT}")
    dockerfile = os.path.join(root, "Dockerfile")
    if f.check(os.path.exists(dockerfile), "no Dockerfile at the repository root (the chart's image)"):
        with open(dockerfile) as fh:
            users = re.findall(r"^USER\s+(\S+)", fh.read(), re.M)
        f.check(users[-1:] == [f"{RUN_AS_USER}:{RUN_AS_USER}"],
                f"Dockerfile: the image runs as {users[-1:] or 'root'}, the pods as {RUN_AS_USER}:{RUN_AS_USER}")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    try:
        f = run(argv[1])
    except Exception:  # a crash is a failure too, with its traceback
        traceback.print_exc()
        return 1
    for item in f.items:
        print(f"FAIL {item}")
    print(f"chart_check: {f.passed} checks passed, {len(f.items)} failed")
    return 1 if f.items else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
