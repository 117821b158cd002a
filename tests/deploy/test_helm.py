"""The Helm chart (deploy/helm/eventpipe), checked offline: `helm lint --strict`, `helm template`
with the default values and with each values file, kubernetes-validate --strict against the oldest
and newest Kubernetes the chart supports, and the properties of the rendered manifests."""

from __future__ import annotations

import base64
import ipaddress
import json
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from eventpipe.core.config import Settings
from tests.deploy.tools import INSTALL_TIMEOUT_S, go_tool, pypi_tools

# The first test builds helm from source on a cold machine (about 5 CPU-minutes): pytest's
# 300 s default would cut it off, the install's own limit would not.
pytestmark = [pytest.mark.deploy, pytest.mark.timeout(INSTALL_TIMEOUT_S + 120)]

HELM = ("helm.sh/helm/v3/cmd/helm", "v3.19.0")
KUBERNETES_VALIDATE = "kubernetes-validate==1.37.0"
# The chart's kubeVersion floor, and the newest schemas kubernetes-validate 1.37.0 ships.
KUBERNETES_VERSIONS = ("1.28.0", "1.37.0")
NEWEST = KUBERNETES_VERSIONS[-1]
CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "eventpipe"

Manifest = dict[str, Any]
Layer = Mapping[str, Any] | str  # values as a dict, or the name of a values file of the chart

REDIS_PASSWORD = "redis-pw-0d9f3a"
DB_PASSWORD = "pg-pw-7c21e4"
JWT_PEM = (
    Ed25519PrivateKey.generate()
    .private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    .decode()
)
KAFKA: Layer = {"config": {"kafkaBootstrap": "kafka-0.data.svc:9092,kafka-1.data.svc:9092"}}
REDIS: Layer = {"redis": {"url": f"redis://:{REDIS_PASSWORD}@redis.data.svc:6379/0"}}
DATABASE: Layer = {
    "database": {"url": f"postgresql://eventpipe:{DB_PASSWORD}@pg.data.svc:5432/eventpipe"}
}
JWT: Layer = {"jwt": {"activeKid": "k2026", "privateKey": JWT_PEM}}
HOST: Layer = {"api": {"ingress": {"host": "events.example.com"}}}
S3_SECRET = "s3-secret-5be1f0"
MINIO_PEERS = [
    {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "storage"}},
        "podSelector": {"matchLabels": {"app": "minio"}},
    }
]
S3: Layer = {
    "exports": {
        "s3": {
            "bucket": "eventpipe-exports",
            "endpointUrl": "http://minio.storage.svc:9000",
            "region": "eu-west-1",
            "accessKeyId": "minio-eventpipe",
            "secretAccessKey": S3_SECRET,
        }
    },
    "networkPolicy": {"egress": {"s3": {"to": MINIO_PEERS}}},
}
SECRET_VALUES = (REDIS_PASSWORD, DB_PASSWORD, JWT_PEM.splitlines()[1], S3_SECRET)

# Each values file together with what the others would bring, as an operator layers them.
SCENARIOS: dict[str, tuple[Layer, ...]] = {
    "defaults": (KAFKA, REDIS, DATABASE, JWT, HOST),
    "strimzi": ("values-strimzi.yaml", REDIS, DATABASE, JWT, HOST),
    "valkey": ("values-valkey.yaml", KAFKA, DATABASE, JWT, HOST),
    "cloudnativepg": ("values-cloudnativepg.yaml", KAFKA, REDIS, JWT, HOST),
    "managed": ("values-managed.yaml", {"jwt": {"activeKid": "k2026"}}, HOST),
    "operators": (
        "values-strimzi.yaml",
        "values-valkey.yaml",
        "values-cloudnativepg.yaml",
        JWT,
        HOST,
    ),
    "keda": (
        KAFKA,
        REDIS,
        DATABASE,
        JWT,
        HOST,
        {"processor": {"autoscaling": {"enabled": False}, "keda": {"enabled": True}}},
    ),
    "s3": (KAFKA, REDIS, DATABASE, JWT, HOST, S3),
}
WORKLOAD_PORTS = {"api": 8000, "processor": 9464, "worker": 9465}
EXPORTS_PATH = "/var/lib/eventpipe-exports"
HOOK = "helm.sh/hook"
HOOK_WEIGHT = "helm.sh/hook-weight"


@dataclass(frozen=True)
class Tools:
    helm: Path
    python: Path  # the kubernetes-validate venv's interpreter: it has PyYAML, typed or not

    def run(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        command = [str(arg) for arg in args]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def tools() -> Tools:
    venv_bin = pypi_tools(KUBERNETES_VALIDATE)
    return Tools(helm=go_tool(*HELM), python=venv_bin / "python")


@pytest.fixture(scope="module")
def values_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("values")


def _value_files(layers: Sequence[Layer], directory: Path) -> list[str]:
    args: list[str] = []
    for layer in layers:
        if isinstance(layer, str):
            path = CHART / layer
        else:
            text = json.dumps(layer, sort_keys=True)  # JSON is YAML: helm reads it as values
            path = directory / f"{abs(hash(text))}.json"
            path.write_text(text)
        args += ["-f", str(path)]
    return args


def helm_template(
    tools: Tools, directory: Path, *layers: Layer, version: str = NEWEST
) -> subprocess.CompletedProcess[str]:
    # A `go install`-built helm assumes Kubernetes 1.20 (the release build sets it by ldflags):
    # name the version, which the chart's kubeVersion also checks.
    return tools.run(
        tools.helm,
        "template",
        "ep",
        CHART,
        "--namespace",
        "events",
        "--kube-version",
        version,
        *_value_files(layers, directory),
    )


def parse(tools: Tools, text: str) -> list[Manifest]:
    """The documents of a multi-document YAML text, through the tool venv's PyYAML."""
    script = (
        "import json, sys, yaml; "
        "json.dump([d for d in yaml.safe_load_all(sys.stdin) if d], sys.stdout)"
    )
    done = subprocess.run(
        [str(tools.python), "-c", script],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    documents: list[Manifest] = json.loads(done.stdout)
    return documents


@dataclass(frozen=True)
class Render:
    text: str
    manifests: list[Manifest]

    def of_kind(self, kind: str) -> list[Manifest]:
        return [m for m in self.manifests if m["kind"] == kind]

    def named(self, kind: str, name: str) -> Manifest | None:
        found = [m for m in self.of_kind(kind) if m["metadata"]["name"] == name]
        return found[0] if found else None

    def deployment(self, component: str) -> Manifest:
        return next(
            m
            for m in self.of_kind("Deployment")
            if m["metadata"]["labels"]["app.kubernetes.io/component"] == component
        )

    def pod_templates(self) -> Iterator[tuple[Manifest, Manifest]]:
        """(workload, pod template) of every Deployment and Job."""
        for workload in self.of_kind("Deployment") + self.of_kind("Job"):
            yield workload, workload["spec"]["template"]

    def config_data(self) -> dict[str, str]:
        configmap = next(m for m in self.of_kind("ConfigMap") if HOOK not in annotations_of(m))
        data: dict[str, str] = configmap["data"]
        return data


def annotations_of(manifest: Manifest) -> dict[str, str]:
    found: dict[str, str] = manifest["metadata"].get("annotations") or {}
    return found


@pytest.fixture(scope="module")
def render(tools: Tools, values_dir: Path) -> Any:
    @cache
    def rendered(scenario: str, version: str = NEWEST) -> Render:
        done = helm_template(tools, values_dir, *SCENARIOS[scenario], version=version)
        assert done.returncode == 0, f"helm template ({scenario}) failed:\n{done.stderr}"
        return Render(done.stdout, parse(tools, done.stdout))

    return rendered


@pytest.mark.parametrize("scenario", ["as-shipped", *SCENARIOS])
def test_helm_lint_strict_passes(tools: Tools, values_dir: Path, scenario: str) -> None:
    # "as-shipped": the chart's values alone. Lint turns the templates' `fail` into INFO lines,
    # so the refusals are tested through `helm template` below.
    layers = SCENARIOS.get(scenario, ())
    for version in KUBERNETES_VERSIONS:
        done = tools.run(
            tools.helm,
            "lint",
            "--strict",
            "--kube-version",
            version,
            CHART,
            *_value_files(layers, values_dir),
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "1 chart(s) linted, 0 chart(s) failed" in done.stdout


def test_the_chart_refuses_to_render_without_its_required_settings(
    tools: Tools, values_dir: Path
) -> None:
    done = helm_template(tools, values_dir)
    assert done.returncode != 0
    for setting in (
        "config.kafkaBootstrap is required",
        "Redis: set redis.url, redis.existingSecret, redis.host or existingSecret",
        "PostgreSQL: set database.url, database.existingSecret or existingSecret",
        "JWT: set jwt.privateKey, jwt.existingSecret or existingSecret",
        "jwt.activeKid is required",
        "api.ingress.host is required",
    ):
        assert setting in done.stderr
    done = helm_template(tools, values_dir, KAFKA, REDIS, JWT, HOST)
    assert done.returncode != 0
    assert "- PostgreSQL: set database.url" in done.stderr
    assert "Redis:" not in done.stderr and "JWT:" not in done.stderr


def test_a_secret_setting_is_refused_in_the_configmap_values(
    tools: Tools, values_dir: Path
) -> None:
    leak = {"config": {"extra": {"EVENTPIPE_DATABASE_URL": "postgresql://u:pw@h/db"}}}
    done = helm_template(tools, values_dir, *SCENARIOS["defaults"], leak)
    assert done.returncode != 0
    assert "invalid propertyName 'EVENTPIPE_DATABASE_URL'" in done.stderr


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_rendered_manifest_validates(
    tools: Tools, render: Any, tmp_path: Path, version: str
) -> None:
    # Every distinct manifest of every scenario, once (most are alike across scenarios): the
    # validator takes about 50 ms a resource.
    unique = {
        json.dumps(m, sort_keys=True): m for s in SCENARIOS for m in render(s, version).manifests
    }
    path = tmp_path / "rendered.yaml"
    path.write_text("\n---\n".join(unique))  # JSON documents are YAML documents
    # The venv's console script has the shebang of the venv's scratch path (tools.py builds it
    # under another name): run the module through the venv's interpreter instead.
    done = tools.run(tools.python, "-m", "kubernetes_validate", "--strict", "-k", version, path)
    report = done.stdout + done.stderr
    lines = [line for line in report.splitlines() if line.strip()]
    passed = [line for line in lines if line.startswith("INFO") and " passed for resource " in line]
    # KEDA's ScaledObject is a custom resource the tool has no schema for: it can only warn.
    # That warning, once per ScaledObject, is the only other line allowed; its fields are
    # checked by hand in test_keda_scales_the_processor_on_lag.
    keda = (
        "Couldn't find schema for kind ScaledObject with api version keda.sh/v1alpha1"
        f" for kubernetes version {version.rsplit('.', 1)[0]}"
    )
    warned = [line for line in lines if line.startswith("WARN") and line.endswith(keda)]
    assert done.returncode == 0, report
    assert len(passed) + len(warned) == len(lines), report
    manifests = list(unique.values())
    scaled_objects = [m for m in manifests if m["kind"] == "ScaledObject"]
    assert len(scaled_objects) == len(warned) == 1, report
    assert len(passed) == len(manifests) - len(scaled_objects), report


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_pod_runs_non_root_read_only_without_privileges(render: Any, scenario: str) -> None:
    pods = list(render(scenario).pod_templates())
    assert {w["metadata"]["labels"]["app.kubernetes.io/component"] for w, _ in pods} == {
        "api",
        "processor",
        "worker",
        "migrate",
    }
    for workload, template in pods:
        spec = template["spec"]
        name = workload["metadata"]["name"]
        assert spec["automountServiceAccountToken"] is False, name
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] == 1001, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        tmp = [v for v in spec["volumes"] if v["name"] == "tmp"]
        assert tmp and "emptyDir" in tmp[0], name
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True, name
            assert context["runAsUser"] == 1001, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}, name
            # S108: the chart's own emptyDir at /tmp is what is checked, not a temp file we write.
            assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"], name  # noqa: S108
            assert container["command"] == ["eventpipe"], name


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_deployment_has_three_probes_on_its_own_port(render: Any, scenario: str) -> None:
    for component, port in WORKLOAD_PORTS.items():
        container = render(scenario).deployment(component)["spec"]["template"]["spec"][
            "containers"
        ][0]
        assert container["args"] == [component]
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        expected = {
            "startupProbe": "/healthz",
            "livenessProbe": "/healthz",
            "readinessProbe": "/readyz",
        }
        for probe, path in expected.items():
            get = container[probe]["httpGet"]
            assert get["path"] == path, (component, probe)
            assert ports[get["port"]] == port, (component, probe)


def _resources(render: Render, component: str) -> dict[str, dict[str, str]]:
    spec = render.deployment(component)["spec"]["template"]["spec"]
    found: dict[str, dict[str, str]] = spec["containers"][0]["resources"]
    return found


def test_default_requests_and_limits_are_the_measured_ones(render: Any) -> None:
    defaults = render("defaults")
    assert _resources(defaults, "api") == {
        "requests": {"cpu": "250m", "memory": "256Mi"},
        "limits": {"cpu": "1", "memory": "512Mi"},
    }
    assert _resources(defaults, "processor") == {
        "requests": {"cpu": "250m", "memory": "256Mi"},
        "limits": {"cpu": "1", "memory": "512Mi"},
    }
    assert _resources(defaults, "worker") == {
        "requests": {"cpu": "100m", "memory": "256Mi"},
        "limits": {"cpu": "500m", "memory": "768Mi"},
    }
    for scenario in SCENARIOS:
        for workload, template in render(scenario).pod_templates():
            for container in template["spec"]["containers"]:
                for bound in ("requests", "limits"):
                    assert set(container["resources"][bound]) == {"cpu", "memory"}, workload


def test_termination_lets_in_flight_work_finish(render: Any) -> None:
    api = render("defaults").deployment("api")["spec"]["template"]["spec"]
    sleep = api["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep" and int(sleep[1]) >= 5
    # After the sleep, uvicorn still has time to answer the requests it holds.
    assert api["terminationGracePeriodSeconds"] >= int(sleep[1]) + 20
    for component in ("processor", "worker"):
        spec = render("defaults").deployment(component)["spec"]["template"]["spec"]
        assert spec["terminationGracePeriodSeconds"] >= 60, component


def _selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_each_deployment_has_a_disruption_budget_of_its_own(render: Any, scenario: str) -> None:
    rendered = render(scenario)
    budgets = rendered.of_kind("PodDisruptionBudget")
    for deployment in rendered.of_kind("Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        mine = [b for b in budgets if _selects(b["spec"]["selector"]["matchLabels"], labels)]
        assert len(mine) == 1, deployment["metadata"]["name"]
        assert mine[0]["spec"]["maxUnavailable"] == 1
    assert len(budgets) == len(rendered.of_kind("Deployment"))


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_pods_spread_across_zones(render: Any, scenario: str) -> None:
    for deployment in render(scenario).of_kind("Deployment"):
        template = deployment["spec"]["template"]
        constraints = template["spec"]["topologySpreadConstraints"]
        zone = [c for c in constraints if c["topologyKey"] == "topology.kubernetes.io/zone"]
        assert len(zone) == 1, deployment["metadata"]["name"]
        selector = zone[0]["labelSelector"]["matchLabels"]
        assert selector == deployment["spec"]["selector"]["matchLabels"]
        assert _selects(selector, template["metadata"]["labels"])


def test_processor_autoscaler_stays_within_the_partitions(render: Any) -> None:
    rendered = render("defaults")
    partitions = int(rendered.config_data()["EVENTPIPE_PARTITIONS"])
    hpa = rendered.named("HorizontalPodAutoscaler", "ep-eventpipe-processor")
    assert hpa is not None
    assert hpa["spec"]["scaleTargetRef"]["name"] == "ep-eventpipe-processor"
    assert hpa["spec"]["maxReplicas"] == partitions == 12
    assert "replicas" not in rendered.deployment("processor")["spec"]  # the HPA owns it


def test_processor_bound_follows_the_partition_count(tools: Tools, values_dir: Path) -> None:
    wider = {"config": {"partitions": 24}, "processor": {"autoscaling": {"maxReplicas": 24}}}
    done = helm_template(tools, values_dir, *SCENARIOS["defaults"], wider)
    assert done.returncode == 0, done.stderr
    hpa = next(
        m
        for m in parse(tools, done.stdout)
        if m["kind"] == "HorizontalPodAutoscaler" and m["metadata"]["name"].endswith("processor")
    )
    assert hpa["spec"]["maxReplicas"] == 24


TOO_MANY: dict[str, tuple[Layer, str]] = {
    "hpa": (
        {"processor": {"autoscaling": {"maxReplicas": 13}}},
        "processor.autoscaling.maxReplicas (13) is above config.partitions (12)",
    ),
    "replicas": (
        {"processor": {"autoscaling": {"enabled": False}, "replicaCount": 13}},
        "processor.replicaCount (13) is above config.partitions (12)",
    ),
    "keda": (
        {
            "processor": {
                "autoscaling": {"enabled": False},
                "keda": {"enabled": True, "maxReplicaCount": 13},
            }
        },
        "processor.keda.maxReplicaCount (13) is above config.partitions (12)",
    ),
    "fewer-partitions": (
        {"config": {"partitions": 6}},
        "processor.autoscaling.maxReplicas (12) is above config.partitions (6)",
    ),
    "schema": ({"processor": {"autoscaling": {"maxReplicas": 1001}}}, "maximum"),
}


@pytest.mark.parametrize("case", TOO_MANY)
def test_more_processors_than_partitions_is_refused(
    tools: Tools, values_dir: Path, case: str
) -> None:
    values, message = TOO_MANY[case]
    done = helm_template(tools, values_dir, *SCENARIOS["defaults"], values)
    assert done.returncode != 0, done.stdout[:2000]
    assert message in done.stderr


def test_api_scales_on_cpu(render: Any) -> None:
    hpa = render("defaults").named("HorizontalPodAutoscaler", "ep-eventpipe-api")
    assert hpa is not None
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "ep-eventpipe-api",
    }
    [metric] = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}


def test_keda_scales_the_processor_on_lag(render: Any) -> None:
    assert not render("defaults").of_kind("ScaledObject")  # off by default
    rendered = render("keda")
    [scaled] = rendered.of_kind("ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["spec"]["scaleTargetRef"]["name"] == "ep-eventpipe-processor"
    assert scaled["spec"]["maxReplicaCount"] <= int(rendered.config_data()["EVENTPIPE_PARTITIONS"])
    [trigger] = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    assert (
        trigger["metadata"]["consumerGroup"] == rendered.config_data()["EVENTPIPE_PROCESSOR_GROUP"]
    )
    assert trigger["metadata"]["topic"] == rendered.config_data()["EVENTPIPE_EVENTS_TOPIC"]
    # KEDA makes its own HPA: a second one from the chart would fight it.
    assert rendered.named("HorizontalPodAutoscaler", "ep-eventpipe-processor") is None


def _weight(manifest: Manifest) -> int:
    return int(annotations_of(manifest).get(HOOK_WEIGHT, "0"))


def _referenced(pod: Manifest) -> Iterator[tuple[str, str]]:
    """(kind, name) of every ConfigMap, Secret and ServiceAccount a pod needs to start."""
    yield "ServiceAccount", pod["spec"]["serviceAccountName"]
    for container in pod["spec"]["containers"]:
        for source in container.get("envFrom", []):
            yield "ConfigMap", source["configMapRef"]["name"]
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                yield "Secret", ref["name"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_migration_runs_as_a_hook_before_the_release(render: Any, scenario: str) -> None:
    rendered = render(scenario)
    [job] = rendered.of_kind("Job")
    assert set(annotations_of(job)[HOOK].split(",")) == {"pre-install", "pre-upgrade"}
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["migrate"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    # On a first install the release's own resources do not exist yet when the hook runs: all
    # the Job needs is either a hook of lower weight or made outside the chart.
    for kind, name in _referenced(job["spec"]["template"]):
        made = rendered.named(kind, name)
        if made is not None:
            assert HOOK in annotations_of(made), (kind, name)
            assert _weight(made) < _weight(job), (kind, name)


def _extra_egress(scenario: str, component: str) -> set[int]:
    """Ports beyond DNS, Kafka, Redis and PostgreSQL: the worker's webhooks (443, 80), and the
    S3 endpoint's port (MinIO's 9000 in "s3"; in "managed", AWS on 443 through the pods' own
    identity, which the api needs too, to fetch its credentials)."""
    ports = {443, 80} if component == "worker" else set()
    if scenario == "s3" and component == "worker":
        ports.add(9000)
    if scenario == "managed" and component == "api":
        ports.add(443)
    return ports


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_network_policies_fence_every_pod(render: Any, scenario: str) -> None:
    rendered = render(scenario)
    policies = rendered.of_kind("NetworkPolicy")
    for workload, template in rendered.pod_templates():
        labels = template["metadata"]["labels"]
        mine = [p for p in policies if _selects(p["spec"]["podSelector"]["matchLabels"], labels)]
        assert len(mine) == 1, workload["metadata"]["name"]
        policy = mine[0]["spec"]
        assert policy["policyTypes"] == ["Ingress", "Egress"]
        ports = {(p["protocol"], p["port"]) for rule in policy["egress"] for p in rule["ports"]}
        component = labels["app.kubernetes.io/component"]
        expected = {("UDP", 53), ("TCP", 53), ("TCP", 9092), ("TCP", 6379), ("TCP", 5432)}
        expected |= {("TCP", port) for port in _extra_egress(scenario, component)}
        assert ports == expected, component
        ingress_ports = [p["port"] for rule in policy["ingress"] for p in rule["ports"]]
        assert ingress_ports == ([WORKLOAD_PORTS[component]] if component in WORKLOAD_PORTS else [])
    api = rendered.named("NetworkPolicy", "ep-eventpipe-api")
    assert api is not None
    [rule] = api["spec"]["ingress"]
    assert rule["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
    ]


def test_network_policies_narrow_to_the_operators_pods(render: Any) -> None:
    policy = render("operators").named("NetworkPolicy", "ep-eventpipe-processor")
    assert policy is not None
    by_port = {rule["ports"][0]["port"]: rule.get("to") for rule in policy["spec"]["egress"]}
    assert by_port[9092][0]["podSelector"]["matchLabels"]["strimzi.io/cluster"] == "events"
    assert by_port[6379][0]["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "cache"
    assert by_port[5432][0]["podSelector"]["matchLabels"] == {"cnpg.io/cluster": "events-db"}


def _secret_strings(rendered: Render) -> set[str]:
    found = set(SECRET_VALUES)
    for secret in rendered.of_kind("Secret"):
        for value in (secret.get("data") or {}).values():
            found.add(base64.b64decode(value).decode())
    return found


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_no_secret_lands_in_a_configmap(render: Any, scenario: str) -> None:
    rendered = render(scenario)
    secrets = _secret_strings(rendered)
    for configmap in rendered.of_kind("ConfigMap"):
        data = configmap["data"]
        assert not {
            "EVENTPIPE_REDIS_URL",
            "EVENTPIPE_DATABASE_URL",
            "EVENTPIPE_JWT_PRIVATE_KEY",
        } & set(data)
        for key, value in data.items():
            assert not any(secret in value for secret in secrets), key
    # and each secret setting reaches every container from a Secret, never as a literal
    for workload, template in rendered.pod_templates():
        env = {e["name"]: e for e in template["spec"]["containers"][0]["env"]}
        for name in ("EVENTPIPE_DATABASE_URL", "EVENTPIPE_JWT_PRIVATE_KEY"):
            assert "secretKeyRef" in env[name]["valueFrom"], (workload["metadata"]["name"], name)
        redis = env["EVENTPIPE_REDIS_URL"]
        assert "secretKeyRef" in redis.get("valueFrom", {}) or "$(REDIS_PASSWORD)" in redis["value"]


def test_inline_secrets_go_to_the_charts_secret(render: Any) -> None:
    rendered = render("defaults")
    secret = rendered.named("Secret", "ep-eventpipe")
    assert secret is not None
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert decoded["EVENTPIPE_JWT_PRIVATE_KEY"] == JWT_PEM
    assert REDIS_PASSWORD in decoded["EVENTPIPE_REDIS_URL"]
    # With everything in existing Secrets the chart makes none.
    assert not render("managed").of_kind("Secret")


def test_valkey_url_is_built_from_the_charts_password_secret(render: Any) -> None:
    env = render("valkey").deployment("api")["spec"]["template"]["spec"]["containers"][0]["env"]
    names = [e["name"] for e in env]
    password = env[names.index("REDIS_PASSWORD")]
    assert password["valueFrom"]["secretKeyRef"] == {
        "name": "cache-valkey",
        "key": "valkey-password",
    }
    url = env[names.index("EVENTPIPE_REDIS_URL")]
    assert url["value"] == "redis://:$(REDIS_PASSWORD)@cache-valkey-primary:6379/0"
    # Kubernetes expands $(VAR) only from variables defined before it.
    assert names.index("REDIS_PASSWORD") < names.index("EVENTPIPE_REDIS_URL")


def test_cloudnativepg_url_comes_from_the_app_secret(render: Any) -> None:
    rendered = render("cloudnativepg")
    env = rendered.deployment("processor")["spec"]["template"]["spec"]["containers"][0]["env"]
    [database] = [e for e in env if e["name"] == "EVENTPIPE_DATABASE_URL"]
    assert database["valueFrom"]["secretKeyRef"] == {"name": "events-db-app", "key": "uri"}
    secret = rendered.named("Secret", "ep-eventpipe")
    assert secret is not None and "EVENTPIPE_DATABASE_URL" not in secret["data"]


def test_a_changed_setting_rolls_every_deployment(
    tools: Tools, values_dir: Path, render: Any
) -> None:
    before = render("defaults")
    done = helm_template(
        tools, values_dir, *SCENARIOS["defaults"], {"config": {"logLevel": "DEBUG"}}
    )
    assert done.returncode == 0, done.stderr
    after = Render(done.stdout, parse(tools, done.stdout))
    again = render("defaults")
    for component in WORKLOAD_PORTS:
        old = annotations_of(before.deployment(component)["spec"]["template"])["checksum/config"]
        new = annotations_of(after.deployment(component)["spec"]["template"])["checksum/config"]
        same = annotations_of(again.deployment(component)["spec"]["template"])["checksum/config"]
        assert old != new and len(new) == 64, component
        assert old == same


def test_settings_reach_the_pods_through_the_configmap(render: Any) -> None:
    rendered = render("defaults")
    data = rendered.config_data()
    assert data["EVENTPIPE_ENVIRONMENT"] == "production"
    assert data["EVENTPIPE_HTTP_HOST"] == "0.0.0.0"  # noqa: S104 - a container must listen on all
    assert data["EVENTPIPE_PUBLIC_URL"] == "https://events.example.com"
    assert data["EVENTPIPE_PROCESSOR_METRICS_PORT"] == "9464"
    assert data["EVENTPIPE_WORKER_METRICS_PORT"] == "9465"
    for _, template in rendered.pod_templates():
        [source] = template["spec"]["containers"][0]["envFrom"]
        assert source["configMapRef"]["name"] in {"ep-eventpipe", "ep-eventpipe-migrate"}


def test_ingress_terminates_tls_for_its_host(render: Any) -> None:
    rendered = render("defaults")
    [ingress] = rendered.of_kind("Ingress")
    [rule] = ingress["spec"]["rules"]
    assert ingress["spec"]["tls"] == [{"hosts": [rule["host"]], "secretName": "ep-eventpipe-tls"}]
    backend = rule["http"]["paths"][0]["backend"]["service"]
    service = rendered.named("Service", backend["name"])
    assert service is not None
    assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_service_accounts_mount_no_token(render: Any, scenario: str) -> None:
    accounts = render(scenario).of_kind("ServiceAccount")
    assert accounts
    for account in accounts:
        assert account["automountServiceAccountToken"] is False


def _pod_spec(rendered: Render, component: str) -> Manifest:
    spec: Manifest = rendered.deployment(component)["spec"]["template"]["spec"]
    return spec


def _exports_volume(spec: Manifest) -> Manifest | None:
    found = [v for v in spec["volumes"] if v["name"] == "exports"]
    return found[0] if found else None


def _exports_mount(spec: Manifest) -> Manifest | None:
    mounts = spec["containers"][0]["volumeMounts"]
    found = [m for m in mounts if m["name"] == "exports"]
    return found[0] if found else None


def _component(workload: Manifest) -> str:
    component: str = workload["metadata"]["labels"]["app.kubernetes.io/component"]
    return component


def test_export_files_are_one_volume_shared_by_the_api_and_the_worker(render: Any) -> None:
    rendered = render("defaults")
    [claim] = rendered.of_kind("PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert "storageClassName" not in claim["spec"]  # the cluster's default class
    assert rendered.config_data()["EVENTPIPE_EXPORT_DIR"] == EXPORTS_PATH
    volume = {"name": "exports", "persistentVolumeClaim": {"claimName": claim["metadata"]["name"]}}
    for workload, template in rendered.pod_templates():
        spec, component = template["spec"], _component(workload)
        env = {e["name"] for e in spec["containers"][0]["env"]}
        assert "EVENTPIPE_EXPORT_DIR" not in env, component  # the ConfigMap's value holds
        if component not in ("api", "worker"):
            assert _exports_volume(spec) is None and _exports_mount(spec) is None, component
            continue
        assert _exports_volume(spec) == volume, component
        mount = _exports_mount(spec)
        assert mount is not None and mount["mountPath"] == EXPORTS_PATH, component
        # The worker writes the files; the api only streams them.
        assert mount.get("readOnly", False) is (component == "api")


def test_an_existing_claim_is_mounted_and_none_is_made(tools: Tools, values_dir: Path) -> None:
    existing = {"exports": {"persistence": {"existingClaim": "shared-nfs"}}}
    done = helm_template(tools, values_dir, *SCENARIOS["defaults"], existing)
    assert done.returncode == 0, done.stderr
    rendered = Render(done.stdout, parse(tools, done.stdout))
    assert not rendered.of_kind("PersistentVolumeClaim")
    for component in ("api", "worker"):
        volume = _exports_volume(_pod_spec(rendered, component))
        assert volume == {"name": "exports", "persistentVolumeClaim": {"claimName": "shared-nfs"}}


S3_KEY = "EVENTPIPE_EXPORT_S3_SECRET_ACCESS_KEY"


def test_s3_exports_need_no_volume_and_keep_the_secret_key_in_a_secret(render: Any) -> None:
    rendered = render("s3")
    assert not rendered.of_kind("PersistentVolumeClaim")
    data = rendered.config_data()
    assert {k: v for k, v in data.items() if k.startswith("EVENTPIPE_EXPORT_S3_")} == {
        "EVENTPIPE_EXPORT_S3_BUCKET": "eventpipe-exports",
        "EVENTPIPE_EXPORT_S3_ENDPOINT_URL": "http://minio.storage.svc:9000",
        "EVENTPIPE_EXPORT_S3_REGION": "eu-west-1",
        "EVENTPIPE_EXPORT_S3_ACCESS_KEY_ID": "minio-eventpipe",
        "EVENTPIPE_EXPORT_S3_PREFIX": "exports/",
    }
    for configmap in rendered.of_kind("ConfigMap"):
        assert S3_KEY not in configmap["data"]
        assert not any(S3_SECRET in value for value in configmap["data"].values())
    secret = rendered.named("Secret", "ep-eventpipe")
    assert secret is not None
    assert base64.b64decode(secret["data"][S3_KEY]).decode() == S3_SECRET
    # The migration never touches the bucket: its hook Secret goes without the key.
    migrate = rendered.named("Secret", "ep-eventpipe-migrate")
    assert migrate is not None and S3_KEY not in migrate["data"]
    for workload, template in rendered.pod_templates():
        env = {e["name"]: e for e in template["spec"]["containers"][0]["env"]}
        if _component(workload) in ("api", "worker"):
            ref = {"name": "ep-eventpipe", "key": S3_KEY}
            assert env[S3_KEY]["valueFrom"]["secretKeyRef"] == ref, _component(workload)
        else:
            assert S3_KEY not in env, _component(workload)
    # The api redirects to presigned URLs; the worker spools each file before its upload.
    assert _exports_volume(_pod_spec(rendered, "api")) is None
    worker = _pod_spec(rendered, "worker")
    assert _exports_volume(worker) == {"name": "exports", "emptyDir": {"sizeLimit": "10Gi"}}
    mount = _exports_mount(worker)
    assert mount is not None and mount["mountPath"] == data["EVENTPIPE_EXPORT_DIR"]


@pytest.mark.parametrize(
    ("s3", "secret"),
    [
        ({"existingSecret": "s3-creds", "existingSecretKey": "secret-key"}, "s3-creds"),
        ({}, "eventpipe"),  # the top-level existingSecret
    ],
)
def test_s3_secret_key_from_an_existing_secret(
    tools: Tools, values_dir: Path, s3: dict[str, str], secret: str
) -> None:
    bucket = {"bucket": "eventpipe-exports", "accessKeyId": "AKIAEXAMPLE", **s3}
    values = {"exports": {"s3": bucket}, "existingSecret": "eventpipe"}
    done = helm_template(tools, values_dir, *SCENARIOS["defaults"], values)
    assert done.returncode == 0, done.stderr
    rendered = Render(done.stdout, parse(tools, done.stdout))
    for component in ("api", "worker"):
        env = {e["name"]: e for e in _pod_spec(rendered, component)["containers"][0]["env"]}
        ref = env[S3_KEY]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": secret, "key": s3.get("existingSecretKey", S3_KEY)}
    for made in rendered.of_kind("Secret"):
        assert S3_KEY not in (made.get("data") or {})


def test_worker_hands_jobs_back_before_its_grace_period_ends(render: Any) -> None:
    rendered = render("defaults")
    grace = float(rendered.config_data()["EVENTPIPE_WORKER_SHUTDOWN_GRACE_S"])
    assert grace == 45 == Settings.model_fields["worker_shutdown_grace_s"].default
    spec = _pod_spec(rendered, "worker")
    assert spec["terminationGracePeriodSeconds"] == 60
    assert "lifecycle" not in spec["containers"][0]  # no preStop sleep eating into the grace


REFUSED: dict[str, tuple[Layer, str]] = {
    "grace-equal": (
        {"worker": {"shutdownGraceSeconds": 60}},
        "worker.shutdownGraceSeconds (60) must be below worker.terminationGracePeriodSeconds (60)",
    ),
    "grace-above": (
        {"worker": {"shutdownGraceSeconds": 45, "terminationGracePeriodSeconds": 30}},
        "worker.shutdownGraceSeconds (45) must be below worker.terminationGracePeriodSeconds (30)",
    ),
    "no-export-storage": (
        {"exports": {"persistence": {"enabled": False}}},
        "exports: set exports.persistence.enabled (a volume the api and the worker share)"
        " or exports.s3.bucket",
    ),
    "key-id-without-secret": (
        {"exports": {"s3": {"bucket": "eventpipe-exports", "accessKeyId": "AKIAEXAMPLE"}}},
        "exports.s3.accessKeyId is set: give its secret as exports.s3.secretAccessKey",
    ),
    "secret-without-key-id": (
        {"exports": {"s3": {"bucket": "eventpipe-exports", "secretAccessKey": S3_SECRET}}},
        "exports.s3.secretAccessKey or exports.s3.existingSecret is set without"
        " exports.s3.accessKeyId",
    ),
    "extra-repeats-a-chart-setting": (
        {"config": {"extra": {"EVENTPIPE_WORKER_SHUTDOWN_GRACE_S": "120"}}},
        "config.extra.EVENTPIPE_WORKER_SHUTDOWN_GRACE_S is set by the chart itself",
    ),
    "extra-holds-the-s3-secret": (
        {"config": {"extra": {S3_KEY: S3_SECRET}}},
        f"invalid propertyName '{S3_KEY}'",
    ),
}


@pytest.mark.parametrize("case", REFUSED)
def test_job_settings_the_chart_refuses(tools: Tools, values_dir: Path, case: str) -> None:
    values, message = REFUSED[case]
    done = helm_template(tools, values_dir, *SCENARIOS["defaults"], values)
    assert done.returncode != 0, done.stdout[:2000]
    assert message in done.stderr, done.stderr


def _in_block(address: ipaddress.IPv4Address | ipaddress.IPv6Address, block: Manifest) -> bool:
    # An address of the other family is in no network of this one (`in` answers False).
    if address not in ipaddress.ip_network(block["cidr"]):
        return False
    return not any(address in ipaddress.ip_network(e) for e in block.get("except", []))


def _egress_allows(policy: Manifest, address: str, port: int) -> bool:
    """Whether a NetworkPolicy lets its pods open TCP `port` on `address` (ipBlock peers only)."""
    ip = ipaddress.ip_address(address)
    for rule in policy["spec"]["egress"]:
        if "ports" in rule and port not in {p["port"] for p in rule["ports"]}:
            continue
        peers = rule.get("to") or []
        if not peers or any("ipBlock" in p and _in_block(ip, p["ipBlock"]) for p in peers):
            return True
    return False


PUBLIC_ADDRESSES = ("93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c")
INTERNAL_ADDRESSES = (
    "10.0.0.7",  # RFC 1918
    "172.16.5.4",
    "192.168.1.10",
    "127.0.0.1",  # loopback
    "169.254.169.254",  # cloud metadata (link-local)
    "100.64.0.1",  # shared address space (CGNAT)
    "::1",
    "fd00:ec2::254",  # unique local: AWS's IPv6 metadata address
    "fe80::1",
    "::ffff:10.0.0.7",  # IPv4-mapped
)


def test_worker_reaches_webhooks_on_the_internet_but_never_inward(render: Any) -> None:
    rendered = render("defaults")
    worker = rendered.named("NetworkPolicy", "ep-eventpipe-worker")
    assert worker is not None
    for port in (443, 80):
        for address in PUBLIC_ADDRESSES:
            assert _egress_allows(worker, address, port), (address, port)
        for address in INTERNAL_ADDRESSES:
            assert not _egress_allows(worker, address, port), (address, port)
    assert not _egress_allows(worker, PUBLIC_ADDRESSES[0], 8443)
    # Only the worker sends webhooks.
    for component in ("api", "processor", "migrate"):
        policy = rendered.named("NetworkPolicy", f"ep-eventpipe-{component}")
        assert policy is not None
        assert not _egress_allows(policy, PUBLIC_ADDRESSES[0], 443), component


def test_s3_egress_reaches_the_endpoint(tools: Tools, values_dir: Path, render: Any) -> None:
    rendered = render("s3")
    worker = rendered.named("NetworkPolicy", "ep-eventpipe-worker")
    assert worker is not None
    [rule] = [
        r for r in worker["spec"]["egress"] if {"protocol": "TCP", "port": 9000} in r["ports"]
    ]
    assert rule["to"] == MINIO_PEERS  # the endpoint URL's port, to the peers named
    # With an access key the api computes presigned URLs without any call: no S3 egress.
    api = rendered.named("NetworkPolicy", "ep-eventpipe-api")
    assert api is not None
    assert not any(p["port"] == 9000 for r in api["spec"]["egress"] for p in r["ports"])
    # With the pod's own identity (IRSA) boto3 asks STS for credentials, on 443, first.
    aws = {"exports": {"s3": {"bucket": "eventpipe-exports"}}}
    done = helm_template(tools, values_dir, *SCENARIOS["defaults"], aws)
    assert done.returncode == 0, done.stderr
    policies = Render(done.stdout, parse(tools, done.stdout))
    for component in ("api", "worker"):
        policy = policies.named("NetworkPolicy", f"ep-eventpipe-{component}")
        assert policy is not None
        assert _egress_allows(policy, PUBLIC_ADDRESSES[0], 443), component
        assert not _egress_allows(policy, "169.254.169.254", 443), component
