"""The Kubernetes manifests parse and agree with the gateway's real routes, port and CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from starlette.routing import Route

from router.cli import build_parser
from router.config import parse_config
from router.gateway import create_app

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "kubernetes"


def load(name: str) -> dict[str, Any]:
    return YAML(typ="safe").load((DEPLOY / name).read_text())  # type: ignore[no-any-return]


def container() -> dict[str, Any]:
    return load("deployment.yaml")["spec"]["template"]["spec"]["containers"][0]  # type: ignore[no-any-return]


def test_kustomization_lists_every_manifest() -> None:
    """Every manifest is listed, and every listed file exists and parses."""
    listed = load("kustomization.yaml")["resources"]
    on_disk = {p.name for p in DEPLOY.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(listed) == on_disk
    kinds = {load(name)["kind"] for name in listed}
    assert kinds == {"ConfigMap", "Secret", "Deployment", "Service", "HorizontalPodAutoscaler"}


def test_probes_point_at_real_routes_and_the_served_port() -> None:
    """Readiness probes /ready, liveness /health, on the port `router serve` is told to use."""
    app = create_app("unused.yaml")
    paths = {route.path for route in app.routes if isinstance(route, Route)}
    spec = container()
    assert spec["readinessProbe"]["httpGet"]["path"] == "/ready" and "/ready" in paths
    assert spec["livenessProbe"]["httpGet"]["path"] == "/health" and "/health" in paths
    args = build_parser().parse_args(spec["command"][1:])
    assert spec["command"][0] == "router" and args.command == "serve"
    assert spec["ports"][0]["containerPort"] == args.port and args.host == "0.0.0.0"
    assert spec["resources"]["requests"]["cpu"] and spec["resources"]["requests"]["memory"]


def test_configmap_holds_a_valid_config_where_the_command_reads_it() -> None:
    """The ConfigMap's router.yaml validates and is mounted at the path `--config` names."""
    text = load("configmap.yaml")["data"]["router.yaml"]
    config = parse_config(text, source="configmap", base_dir=Path("/srv"))
    assert config.store.startswith("postgresql://")
    spec = container()
    config_arg = spec["command"][spec["command"].index("--config") + 1]
    mount = next(m for m in spec["volumeMounts"] if m["name"] == "config")
    assert Path(config_arg).parent == Path(mount["mountPath"])


def test_admin_token_comes_from_the_secret() -> None:
    """ROUTER_ADMIN_TOKEN is read from the Secret the manifests define."""
    secret = load("secret.yaml")
    env = {e["name"]: e for e in container()["env"]}
    ref = env["ROUTER_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]


def test_service_and_autoscaler_target_the_deployment() -> None:
    """The Service selects the pods and the HPA scales the Deployment."""
    deployment = load("deployment.yaml")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert load("service.yaml")["spec"]["selector"] == labels
    target = load("hpa.yaml")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])


def test_grace_period_covers_the_documented_shutdown_bound() -> None:
    """SIGTERM to exit takes at most shadow.drain_s + the graceful wait + the log's flush
    (docs/models-and-trust.md); the pods' grace period leaves room for it."""
    from router.gateway.connections import SHUTDOWN_GRACE_S
    from router.gateway.state import STOP_WRITE_TIMEOUT_S

    config = parse_config(load("configmap.yaml")["data"]["router.yaml"], source="configmap",
                          base_dir=Path("/srv"))
    bound = config.shadow.drain_s + SHUTDOWN_GRACE_S + STOP_WRITE_TIMEOUT_S
    grace = load("deployment.yaml")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert bound == 25 and bound + 10 <= grace
