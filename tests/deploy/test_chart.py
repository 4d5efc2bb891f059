"""The Helm chart: helm lint, rendering of the default and ci/ values, Kubernetes validation,
security settings, targets, Secrets, config files, monitoring objects."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.tools import (
    CHART,
    MONITORING_APIS,
    NAMESPACE,
    RELEASE,
    REPO,
    HelmError,
    Rendered,
    helm_template,
    is_crd_kind,
    kubernetes_validate,
    run,
)

CI = CHART / "ci"
EXISTING = CI / "existing-secret-values.yaml"
MULTI = CI / "multi-target-values.yaml"
OFF = CI / "monitoring-off-values.yaml"
VALUES_FILES = [None, *sorted(CI.glob("*.yaml"))]
FULLNAME = f"{RELEASE}-gecko-exporter"


def _values_id(path: Path | None) -> str:
    return "defaults" if path is None else path.stem


def render(
    chart: Path,
    values: Path | None = None,
    *,
    apis: bool = False,
    sets: tuple[str, ...] = (),
) -> Rendered:
    return helm_template(
        chart,
        values=[values] if values else [],
        sets=sets,
        api_versions=MONITORING_APIS if apis else (),
    )


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(deployment: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in container(deployment)["env"]}


def volume(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    volumes: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["volumes"]
    (found,) = [v for v in volumes if v["name"] == name]
    return found


def mount(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    mounts: list[dict[str, Any]] = container(deployment)["volumeMounts"]
    (found,) = [m for m in mounts if m["name"] == name]
    return found


# ---- helm lint and Kubernetes validation -----------------------------------------------------


@pytest.mark.parametrize("values", VALUES_FILES, ids=_values_id)
def test_helm_lint_strict(helm: str, chart: Path, values: Path | None) -> None:
    args = [helm, "lint", "--strict", str(chart), "--namespace", NAMESPACE]
    if values:
        args += ["--values", str(values)]
    proc = run(args)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("apis", [False, True], ids=["no-crds", "crds"])
@pytest.mark.parametrize("values", VALUES_FILES, ids=_values_id)
def test_rendered_manifests_pass_kubernetes_validate(
    chart: Path, values: Path | None, apis: bool, tmp_path: Path
) -> None:
    rendered = render(chart, values, apis=apis)
    builtin = [d for d in rendered.docs if not is_crd_kind(d)]
    assert {d["kind"] for d in builtin} >= {"Deployment", "Service"}
    proc = kubernetes_validate(builtin, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "INFO" in proc.stdout  # one line per valid resource
    assert proc.stdout.count("INFO") == len(builtin), proc.stdout
    crds = {d["kind"] for d in rendered.docs if is_crd_kind(d)}
    assert crds <= {"ServiceMonitor", "PrometheusRule"}


def test_kubernetes_validate_rejects_a_broken_manifest(chart: Path, tmp_path: Path) -> None:
    """The validation above can fail: a wrongly typed field is reported."""
    deployment = render(chart).of_kind("Deployment")[0]
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] = "yes"
    broken["spec"]["template"]["spec"]["containers"][0]["unknownField"] = 1
    proc = kubernetes_validate([broken], tmp_path)
    assert proc.returncode != 0


# ---- the exporter pods ----------------------------------------------------------------------


@pytest.mark.parametrize("values", VALUES_FILES, ids=_values_id)
def test_pods_are_locked_down_and_probed(chart: Path, values: Path | None) -> None:
    deployments = render(chart, values).of_kind("Deployment")
    assert deployments
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        assert deployment["spec"]["replicas"] == 1
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        c = container(deployment)
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert "add" not in sc["capabilities"]
        assert sc.get("privileged", False) is False
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports == {"http": 8187}
        assert env_of(deployment)["GECKO_LISTEN_ADDRESS"]["value"] == "0.0.0.0:8187"
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert c["resources"]["requests"]["cpu"]
        assert c["resources"]["requests"]["memory"]
        assert c["resources"]["limits"]["memory"]
        assert c["args"] == ["run"]


def test_image_defaults_to_app_version_and_honours_registry_and_digest(chart: Path) -> None:
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))["appVersion"]
    (default,) = render(chart).of_kind("Deployment")
    assert container(default)["image"] == f"gecko-exporter:{app_version}"
    (pinned,) = render(chart, EXISTING).of_kind("Deployment")
    assert container(pinned)["image"] == (
        "registry.example.com/platform/gecko-exporter@sha256:"
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    )


def test_service_selects_the_exporter_pod(chart: Path) -> None:
    rendered = render(chart)
    (deployment,) = rendered.of_kind("Deployment")
    (service,) = rendered.of_kind("Service")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    (port,) = service["spec"]["ports"]
    assert port == {"name": "http", "port": 8187, "targetPort": "http", "protocol": "TCP"}


# ---- the DSN ---------------------------------------------------------------------------------


def test_dsn_is_a_mounted_secret_file(chart: Path) -> None:
    for values in VALUES_FILES:
        rendered = render(chart, values)
        for deployment in rendered.of_kind("Deployment"):
            env = env_of(deployment)
            assert "GECKO_DATABASE_URL" not in env
            assert not any("valueFrom" in e for e in env.values()), "no DSN env from a Secret"
            secret_volume = volume(deployment, "database")["secret"]
            (item,) = secret_volume["items"]
            dsn_path = f"{mount(deployment, 'database')['mountPath']}/{item['path']}"
            assert env["GECKO_DATABASE_URL_FILE"]["value"] == dsn_path
            assert mount(deployment, "database")["readOnly"] is True
            created = {s["metadata"]["name"]: s for s in rendered.of_kind("Secret")}
            if secret_volume["secretName"] in created:
                assert item["key"] in created[secret_volume["secretName"]]["data"]


def test_default_uses_the_existing_secret_by_name(chart: Path) -> None:
    rendered = render(chart)
    assert rendered.of_kind("Secret") == []
    (deployment,) = rendered.of_kind("Deployment")
    secret_volume = volume(deployment, "database")["secret"]
    assert secret_volume["secretName"] == "gecko-exporter-database"
    assert secret_volume["items"] == [{"key": "dsn", "path": "dsn"}]


def test_existing_secret_and_key_are_used(chart: Path) -> None:
    rendered = render(chart, EXISTING)
    assert rendered.of_kind("Secret") == []
    (deployment,) = rendered.of_kind("Deployment")
    secret_volume = volume(deployment, "database")["secret"]
    assert secret_volume["secretName"] == "gecko-advisor-db"
    assert secret_volume["items"] == [{"key": "DATABASE_URL", "path": "dsn"}]


def test_url_creates_a_secret(chart: Path) -> None:
    rendered = render(chart, OFF)
    (secret,) = rendered.of_kind("Secret")
    (deployment,) = rendered.of_kind("Deployment")
    assert volume(deployment, "database")["secret"]["secretName"] == secret["metadata"]["name"]
    assert secret["type"] == "Opaque"
    assert list(secret["data"]) == ["dsn"]


@pytest.mark.parametrize(
    "sets",
    [
        ("database.existingSecret=",),
        ("targets[0].name=a", "targets[0].database.secretKey=dsn"),
        (
            "targets[0].name=a",
            "targets[0].database.existingSecret=s1",
            "targets[1].name=a",
            "targets[1].database.existingSecret=s2",
        ),
    ],
    ids=["no-dsn-source", "target-without-dsn-source", "duplicate-target-names"],
)
def test_inconsistent_targets_are_refused(chart: Path, sets: tuple[str, ...]) -> None:
    with pytest.raises(HelmError):
        render(chart, sets=sets)


# ---- config file -----------------------------------------------------------------------------


def test_config_is_a_mounted_configmap_pointed_to_by_gecko_config(chart: Path) -> None:
    rendered = render(chart, EXISTING)
    (deployment,) = rendered.of_kind("Deployment")
    (configmap,) = rendered.of_kind("ConfigMap")[:1]
    assert volume(deployment, "config")["configMap"]["name"] == configmap["metadata"]["name"]
    config_mount = mount(deployment, "config")
    assert config_mount["readOnly"] is True
    assert env_of(deployment)["GECKO_CONFIG"]["value"] == f"{config_mount['mountPath']}/config.yaml"
    values = yaml.safe_load(EXISTING.read_text(encoding="utf-8"))
    assert yaml.safe_load(configmap["data"]["config.yaml"]) == values["config"]


def test_no_config_no_configmap(chart: Path) -> None:
    rendered = render(chart)
    assert [
        c for c in rendered.of_kind("ConfigMap") if "dashboard" not in c["metadata"]["name"]
    ] == []
    (deployment,) = rendered.of_kind("Deployment")
    assert "GECKO_CONFIG" not in env_of(deployment)


@pytest.mark.parametrize("values", [EXISTING, MULTI], ids=_values_id)
def test_rendered_config_is_accepted_by_the_exporter(
    chart: Path, values: Path, tmp_path: Path
) -> None:
    """`gecko-exporter check-config` accepts every config file the chart renders."""
    dsn = tmp_path / "dsn"
    dsn.write_text("postgresql://gecko@db.invalid:5432/gecko\n", encoding="utf-8")
    configs = [
        d for d in render(chart, values).of_kind("ConfigMap") if "config.yaml" in d.get("data", {})
    ]
    assert configs
    for configmap in configs:
        path = tmp_path / f"{configmap['metadata']['name']}.yaml"
        path.write_text(configmap["data"]["config.yaml"], encoding="utf-8")
        proc = subprocess.run(
            [sys.executable, "-m", "exporter", "check-config"],
            env={
                "GECKO_CONFIG": str(path),
                "GECKO_DATABASE_URL_FILE": str(dsn),
                "PATH": "/usr/bin",
            },
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=REPO,
        )
        assert proc.returncode == 0, proc.stderr


# ---- checksums roll the pods -----------------------------------------------------------------


def _pod_annotations(rendered: Rendered) -> dict[str, str]:
    (deployment,) = rendered.of_kind("Deployment")
    return dict(deployment["spec"]["template"]["metadata"].get("annotations") or {})


def test_config_change_changes_the_config_checksum(chart: Path) -> None:
    before = _pod_annotations(render(chart, EXISTING))
    same = _pod_annotations(render(chart, EXISTING, sets=("log.level=debug",)))
    after = _pod_annotations(
        render(chart, EXISTING, sets=("config.slow_query_threshold_seconds=7",))
    )
    assert before["checksum/config"] == same["checksum/config"]
    assert before["checksum/config"] != after["checksum/config"]
    assert "checksum/secret" not in before, "an existing Secret's content is unknown to the chart"
    assert before["team"] == "data-platform"


def test_dsn_change_changes_the_secret_checksum(chart: Path) -> None:
    before = _pod_annotations(render(chart, OFF))
    after = _pod_annotations(render(chart, OFF, sets=("database.url=postgresql://other@db/gecko",)))
    assert before["checksum/secret"] != after["checksum/secret"]
    assert "checksum/config" not in before


# ---- several targets -------------------------------------------------------------------------


def test_one_exporter_per_target_with_its_own_secret_and_labels(chart: Path) -> None:
    rendered = render(chart, MULTI, apis=True)
    spec = yaml.safe_load(MULTI.read_text(encoding="utf-8"))
    names = [t["name"] for t in spec["targets"]]
    expected = {f"{FULLNAME}-{name}" for name in names}
    for kind in ("Deployment", "Service", "ServiceMonitor"):
        assert {d["metadata"]["name"] for d in rendered.of_kind(kind)} == expected, kind
    secrets = {s["metadata"]["name"]: s for s in rendered.of_kind("Secret")}
    assert set(secrets) == {
        f"{FULLNAME}-{t['name']}-database" for t in spec["targets"] if t["database"].get("url")
    }
    pods = {
        d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
        for d in rendered.of_kind("Deployment")
    }
    secret_names = set()
    for target in spec["targets"]:
        name = f"{FULLNAME}-{target['name']}"
        deployment = rendered.one("Deployment", name)
        service = rendered.one("Service", name)
        monitor = rendered.one("ServiceMonitor", name)
        secret_volume = volume(deployment, "database")["secret"]
        secret_names.add(secret_volume["secretName"])
        if target["database"].get("existingSecret"):
            assert secret_volume["secretName"] == target["database"]["existingSecret"]
        key = target["database"].get("secretKey", "dsn")
        assert secret_volume["items"] == [{"key": key, "path": "dsn"}]
        own_labels = target["labels"] | spec["labels"]
        for obj_labels in (
            deployment["metadata"]["labels"],
            pods[name],
            service["metadata"]["labels"],
            monitor["metadata"]["labels"],
        ):
            assert own_labels.items() <= obj_labels.items()
        # the Service selects this target's pod and no other
        selector = service["spec"]["selector"].items()
        assert [pod for pod, labels in pods.items() if selector <= labels.items()] == [name]
        assert (
            monitor["spec"]["selector"]["matchLabels"].items()
            <= service["metadata"]["labels"].items()
        )
        assert sorted(monitor["spec"]["targetLabels"]) == sorted(own_labels)
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["port"] == service["spec"]["ports"][0]["name"]
        assert endpoint["path"] == "/metrics"
    assert len(secret_names) == len(spec["targets"]), "every target has its own Secret"


def test_target_config_is_merged_over_the_shared_config(chart: Path) -> None:
    rendered = render(chart, MULTI)
    primary = rendered.one("ConfigMap", f"{FULLNAME}-primary-config")
    replica = rendered.one("ConfigMap", f"{FULLNAME}-replica-config")
    assert yaml.safe_load(primary["data"]["config.yaml"]) == {
        "slow_query_threshold_seconds": 5,
        "pools": [{"name": "api", "application_name": "gecko-api", "size": 20}],
    }
    assert yaml.safe_load(replica["data"]["config.yaml"]) == {"slow_query_threshold_seconds": 5}
    replica_deploy = rendered.one("Deployment", f"{FULLNAME}-replica")
    assert container(replica_deploy)["resources"]["limits"] == {"memory": "128Mi"}


# ---- ServiceMonitor and PrometheusRule follow the cluster's APIs ------------------------------


@pytest.mark.parametrize(
    ("values", "apis", "sets", "expected"),
    [
        (None, False, (), set()),
        (None, True, (), {"ServiceMonitor", "PrometheusRule"}),
        (OFF, True, (), set()),
        (EXISTING, False, (), {"ServiceMonitor", "PrometheusRule"}),
        (None, True, ("serviceMonitor.enabled=false",), {"PrometheusRule"}),
        (None, False, ("prometheusRule.force=true",), {"PrometheusRule"}),
    ],
    ids=["no-crds", "crds", "disabled", "forced", "sm-off", "pr-forced"],
)
def test_monitoring_objects_follow_capabilities_and_values(
    chart: Path, values: Path | None, apis: bool, sets: tuple[str, ...], expected: set[str]
) -> None:
    rendered = render(chart, values, apis=apis, sets=sets)
    assert {d["kind"] for d in rendered.docs if is_crd_kind(d)} == expected


def test_monitoring_objects_carry_the_release_selector_labels(chart: Path) -> None:
    rendered = render(chart, EXISTING)
    (monitor,) = rendered.of_kind("ServiceMonitor")
    (rule,) = rendered.of_kind("PrometheusRule")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["endpoints"][0]["interval"] == "15s"
    assert monitor["spec"]["jobLabel"] == "app.kubernetes.io/name"
    (service,) = rendered.of_kind("Service")
    assert service["metadata"]["labels"]["app.kubernetes.io/name"] == "gecko-exporter"


# ---- NOTES.txt -------------------------------------------------------------------------------


def _notes(notes_chart: Path, values: Path | None, apis: bool = False) -> str:
    rendered = render(notes_chart, values, apis=apis)
    return str(rendered.one("ConfigMap", "rendered-notes")["data"]["NOTES.txt"])


def test_notes_name_every_exporter_and_missing_monitoring(notes_chart: Path) -> None:
    multi = _notes(notes_chart, MULTI, apis=True)
    for name in ("primary", "replica", "analytics"):
        assert f"{FULLNAME}-{name}" in multi
    assert "kubectl -n monitoring create secret generic gecko-primary-dsn" in multi
    assert "no ServiceMonitor was rendered" not in multi
    default = _notes(notes_chart, None)
    assert "no ServiceMonitor was rendered" in default
    assert "no PrometheusRule was rendered" in default


def test_release_selector_labels_win_over_shared_labels(chart: Path) -> None:
    rendered = render(
        chart,
        EXISTING,
        sets=("labels.release=shared", "podLabels.release=pod"),
    )
    (monitor,) = rendered.of_kind("ServiceMonitor")
    (rule,) = rendered.of_kind("PrometheusRule")
    (deployment,) = rendered.of_kind("Deployment")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert deployment["metadata"]["labels"]["release"] == "shared"
    assert deployment["spec"]["template"]["metadata"]["labels"]["release"] == "shared"
