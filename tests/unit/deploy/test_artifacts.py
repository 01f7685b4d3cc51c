"""deploy/: Kubernetes manifests against the API schemas, units, Dockerfile, alerts, dashboard."""

from __future__ import annotations

import configparser
import json
import re
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from dockerfile_parse import DockerfileParser

from lifeboat.agent.metrics import AgentMetrics
from lifeboat.capture import CaptureStatus
from lifeboat.clock import SystemClock
from lifeboat.cli.main import build_parser
from lifeboat.config import resolve_config

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
K8S = DEPLOY / "kubernetes"
KUBERNETES_VERSION = "1.30"


def docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def one(name: str, kind: str) -> dict[str, Any]:
    (found,) = [d for d in docs(name) if d["kind"] == kind]
    return found


@pytest.mark.parametrize("name", sorted(p.name for p in K8S.glob("*.yaml")))
def test_manifest_is_valid_against_the_kubernetes_schema(name: str) -> None:
    for doc in docs(name):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        assert doc["metadata"].get("namespace", "lifeboat") == "lifeboat"


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec = workload["spec"]
    template = spec["jobTemplate"]["spec"]["template"] if workload["kind"] == "CronJob" else spec["template"]
    result: dict[str, Any] = template["spec"]
    return result


@pytest.mark.parametrize(("name", "kind"), [("cronjob.yaml", "CronJob"), ("daemonset.yaml", "DaemonSet")])
def test_workloads_run_on_control_plane_nodes_with_read_only_host_files(name: str, kind: str) -> None:
    spec = pod_spec(one(name, kind))
    assert spec["hostNetwork"] is True
    assert spec["nodeSelector"] == {"node-role.kubernetes.io/control-plane": ""}
    assert {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"} \
        in spec["tolerations"]
    assert spec["automountServiceAccountToken"] is False and spec["serviceAccountName"] == "lifeboat"
    host_volumes = {v["name"] for v in spec["volumes"] if "hostPath" in v}
    assert {v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v} >= {"/etc/kubernetes"}
    (container,) = spec["containers"]
    for mount in container["volumeMounts"]:
        if mount["name"] in host_volumes:
            assert mount.get("readOnly") is True, mount
            assert mount["mountPath"].startswith("/host/")
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    secret_refs = {e["secretRef"]["name"] for e in container.get("envFrom", [])}
    assert secret_refs == {one("secret.yaml", "Secret")["metadata"]["name"]}


def test_cronjob_runs_a_backup_the_cli_accepts() -> None:
    (container,) = pod_spec(one("cronjob.yaml", "CronJob"))["containers"]
    args = build_parser().parse_args(container["args"])
    assert args.command == "backup" and str(args.root) == "/host"
    assert one("cronjob.yaml", "CronJob")["spec"]["concurrencyPolicy"] == "Forbid"


def test_daemonset_agent_config_is_valid_and_probes_its_health_endpoints(tmp_path: Path) -> None:
    spec = pod_spec(one("daemonset.yaml", "DaemonSet"))
    (container,) = spec["containers"]
    args = build_parser().parse_args(container["args"])
    assert args.command == "agent"
    config_file = tmp_path / "lifeboat.yaml"
    config_file.write_text(one("configmap.yaml", "ConfigMap")["data"][args.config.name])
    config = resolve_config(config_file, {}).config
    port = int(config.agent.listen.rpartition(":")[2])
    assert container["ports"][0]["containerPort"] == port
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port, "host": "127.0.0.1"}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}} in container["env"]
    assert str(config.root) == "/host"
    secret_keys = set(one("secret.yaml", "Secret")["stringData"])
    assert {Path(r).name for r in config.encryption.recipients} <= secret_keys


def test_service_account_has_no_kubernetes_api_rights() -> None:
    kinds = [d["kind"] for d in docs("rbac.yaml")]
    assert "ServiceAccount" in kinds
    assert not {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"} & set(kinds)
    assert one("rbac.yaml", "ServiceAccount")["automountServiceAccountToken"] is False


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((DEPLOY / "systemd" / name).read_text())
    return parser


def test_systemd_units_have_what_they_need() -> None:
    backup, timer, agent = unit("lifeboat-backup.service"), unit("lifeboat-backup.timer"), unit("lifeboat-agent.service")
    assert backup["Service"]["Type"] == "oneshot"
    assert timer["Timer"]["Unit"] == "lifeboat-backup.service" and timer["Timer"]["Persistent"] == "true"
    assert timer["Install"]["WantedBy"] == "timers.target"
    assert agent["Service"]["Restart"] == "always" and agent["Service"]["KillSignal"] == "SIGTERM"
    parser = build_parser()
    for service in (backup, agent):  # both stream snapshots and capture beside etcd: etcd gets the CPU and disk first
        assert service["Service"]["Nice"] == "10"
        assert service["Service"]["IOSchedulingClass"] == "best-effort"
        assert service["Service"]["IOSchedulingPriority"] == "7"
        command = service["Service"]["ExecStart"].split()
        assert command[0] == "/usr/local/bin/lifeboat"
        parser.parse_args(command[1:])


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed; keys checked above")
def test_systemd_analyze_verifies_the_units(tmp_path: Path) -> None:
    lifeboat = Path(sys.executable).with_name("lifeboat")
    assert lifeboat.exists()
    for source in (DEPLOY / "systemd").iterdir():
        # verify insists that ExecStart's binary exists: point it at the installed one.
        text = source.read_text().replace("/usr/local/bin/lifeboat", str(lifeboat))
        (tmp_path / source.name).write_text(text.replace("EnvironmentFile=/", "EnvironmentFile=-/"))
    names = sorted(str(p) for p in tmp_path.iterdir())
    result = subprocess.run(["systemd-analyze", "verify", *names], capture_output=True, text=True, timeout=60)
    problems = [line for line in result.stderr.splitlines() if str(tmp_path) in line or "lifeboat" in line]
    assert result.returncode == 0 and not problems, result.stderr


def test_dockerfile_builds_from_pinned_bases_and_ships_the_restore_tools() -> None:
    parser = DockerfileParser(path=str(DEPLOY / "Dockerfile"))
    stages = [i for i in parser.structure if i["instruction"] == "FROM"]
    assert stages[-1]["value"].startswith("python:3.12-slim")
    for stage in stages:
        image = stage["value"].split()[0]
        assert re.search(r":[\w.-]+$", image) and not image.endswith(":latest"), image
    runs = " ".join(i["value"] for i in parser.structure if i["instruction"] == "RUN")
    assert "pip install" in runs and " ." in runs
    copies = [i["value"] for i in parser.structure if i["instruction"] == "COPY"]
    assert any("--from=etcd" in c and "etcdutl" in c for c in copies)
    entry = next(i["value"] for i in parser.structure if i["instruction"] == "ENTRYPOINT")
    assert json.loads(entry) == ["lifeboat"]
    for c in copies:
        if not c.startswith("--from"):
            assert (DEPLOY.parent / c.split()[0]).exists(), c


def exported_metrics() -> set[str]:
    m = AgentMetrics("c", "a", "0", SystemClock())
    m.backup_succeeded(datetime.now(timezone.utc), 1.0, 1, 1)
    m.drill(True, datetime.now(timezone.utc))
    m.good_cycle()
    m.failed("any")
    now = datetime.now(timezone.utc)
    m.capture(CaptureStatus(last_revision=5, last_seen=now, oldest_pending=now), lambda: True)
    return set(re.findall(r"^(lifeboat_\w+?)(?:\{| )", m.render(), re.M))


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\blifeboat_\w+", expr))


def test_alert_rules_use_only_metrics_the_agent_exports() -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus-rules.yaml").read_text())
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"]}
    assert {"LifeboatNoRecentBackup", "LifeboatDrillFailed", "LifeboatAgentDown"} <= set(alerts)
    exported = exported_metrics()
    for name, rule in alerts.items():
        assert metric_names(rule["expr"]) <= exported, (name, metric_names(rule["expr"]) - exported)
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"]


def test_dashboard_queries_use_only_metrics_the_agent_exports() -> None:
    dash = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert exprs and any("lifeboat_backup_age_seconds" in e for e in exprs)
    for expr in exprs:
        assert metric_names(expr) <= exported_metrics(), expr
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
