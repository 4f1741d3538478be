"""deploy/: the Dockerfile, compose.yaml, haproxy.cfg and the Kubernetes
manifests, checked without a container engine (none runs here).

Every worker and balancer command parses with the real option declarations
(flags and the container's environment), and the pieces agree with each
other: the balancers list exactly the workers there are and send the secret
the workers require, probes and health checks ask /health on the port the
process listens on, the grace periods outlast the drain, the image holds the
graphs where --model-dir looks.
"""
from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from balancer.config import BalancerConfig
from deploy_commands import (
    COMPOSE,
    DEPLOY,
    DOCKERFILE,
    HAPROXY_CFG,
    K8S,
    REPO,
    command_argv,
    compose,
    compose_command,
    entry_point,
    haproxy_binds,
    haproxy_config,
    haproxy_servers,
    interpolate,
    local_command,
    services_running,
    with_values,
)
from deploy_commands import service_environment as compose_environment
from voicestream.options import declared, parse_config
from worker.config import WorkerConfig, exposure
from worker.speakers.graphs import graph_dir

CONFIGS: dict[str, tuple[type, str]] = {"worker": (WorkerConfig, "python -m worker"),
                                        "balancer": (BalancerConfig, "python -m balancer")}
HAPROXY_IMAGE_CONFIG = "/usr/local/etc/haproxy/haproxy.cfg"  # the official image's CMD reads it
# What compose's ${...} are filled with here, as the shell or deploy/.env would.
COMPOSE_VARIABLES = {"WORKER_SECRET": "test-secret-0123456789abcdef"}


# --- the real argument parsers -------------------------------------------------

def option_envs(cls: type) -> set[str]:
    return {opt.env for _, opt in declared(cls)}


def parse(argv: list[str], environ: Mapping[str, str]) -> Any:
    """argv (["python", "-m", "worker", ...]) with environ as the process's
    environment, through the real declarations (what parse_args does, with
    this environment instead of the test's own)."""
    module, args = entry_point(argv)
    cls, prog = CONFIGS[module]
    unknown = set(environ) - option_envs(cls)
    assert not unknown, f"{' '.join(argv)}: no {module} option reads {sorted(unknown)}"
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return parse_config(cls, args, prog, "", environ=dict(environ))
    except SystemExit:
        pytest.fail(f"`{shlex.join(argv)}` (environment {dict(environ)}) does not parse: {stderr.getvalue().strip()}")


# --- compose -----------------------------------------------------------------

WORKER_SERVICES = services_running("worker")
BALANCER_SERVICES = services_running("balancer")


def service(name: str) -> dict[str, Any]:
    found: dict[str, Any] = compose()["services"][name]
    return found


def service_environment(name: str) -> dict[str, str]:
    return compose_environment(name, COMPOSE_VARIABLES)


def service_config(name: str) -> Any:
    return parse(compose_command(name), service_environment(name))


def mounts(name: str) -> dict[str, str]:
    """container path -> source (volume name or host path) of the service's short-syntax volumes."""
    found = {}
    for volume in service(name).get("volumes", []):
        source, target = volume.split(":")[:2]
        found[target] = source
    return found


def seconds(duration: str) -> float:
    """A compose duration (1m30s, 15s, 500ms) in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"not a compose duration: {duration!r}"
    return sum(float(n) * units[u] for n, u in parts)


def healthcheck_port(check: dict[str, Any]) -> int:
    """The port of the http://.../health URL a healthcheck asks."""
    text = " ".join(command_argv(check["test"]))
    m = re.search(r"http://[^/:\s'\"]+:(\d+)/health\b", text)
    assert m, f"the healthcheck does not ask /health: {text}"
    return int(m[1])


def test_compose_has_postgres_three_workers_two_balancers_and_haproxy() -> None:
    services = compose()["services"]
    assert WORKER_SERVICES == ["worker1", "worker2", "worker3"]
    assert BALANCER_SERVICES == ["balancer1", "balancer2"]
    postgres = services["postgres"]
    assert postgres["image"] == "postgres:15"
    assert "pg_isready" in command_argv(postgres["healthcheck"]["test"])
    assert mounts("postgres").get("/var/lib/postgresql/data") in compose()["volumes"]
    assert services["haproxy"]["image"].startswith("haproxy:2.")


def test_compose_services_run_the_dockerfile_image() -> None:
    images = set()
    for name in WORKER_SERVICES + BALANCER_SERVICES:
        build = service(name)["build"]
        context = (COMPOSE.parent / build["context"]).resolve()
        assert context == REPO, f"{name} builds from {context}, not the repository root"
        assert (context / build["dockerfile"]).resolve() == DOCKERFILE
        images.add(service(name)["image"])
    assert len(images) == 1, f"one image for both tiers, got {images}"


def test_all_workers_and_all_balancers_run_one_command() -> None:
    """So the multi-host test's local_command("worker1") stands for every worker."""
    assert len({shlex.join(compose_command(name)) for name in WORKER_SERVICES}) == 1
    assert len({shlex.join(compose_command(name)) for name in BALANCER_SERVICES}) == 1


@pytest.mark.parametrize("name", WORKER_SERVICES)
def test_compose_worker_command_parses(name: str) -> None:
    config = service_config(name)
    assert config.host == "0.0.0.0"  # reached by the balancers over the compose network
    # Listening on every address, a worker records its host name with its frames.
    assert service(name)["hostname"] == name
    assert config.encoder == "ge2e"
    # Its own volume holds the frame logs and the spool: nothing shared on disk.
    data = [target for target, source in mounts(name).items() if source in compose()["volumes"]]
    for directory in (config.log_dir, config.spool_dir):
        assert any(PurePosixPath(directory).is_relative_to(target) for target in data), \
            f"{name}: {directory} is not on one of its volumes {data}"


def test_compose_workers_have_a_volume_each() -> None:
    volumes = [source for name in WORKER_SERVICES for source in mounts(name).values()]
    assert len(volumes) == len(set(volumes)) == len(WORKER_SERVICES)


@pytest.mark.parametrize("name", WORKER_SERVICES)
def test_compose_workers_use_the_postgres_service(name: str) -> None:
    config = service_config(name)
    url = urlsplit(config.database)
    env = service_environment("postgres")
    assert url.scheme == "postgresql"
    assert (url.hostname, url.port) == ("postgres", 5432)
    assert (url.username, url.password, url.path) == (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"],
                                                      "/" + env["POSTGRES_DB"])
    assert "postgres" in service(name)["depends_on"]


@pytest.mark.parametrize("name", BALANCER_SERVICES)
def test_compose_balancers_list_every_worker(name: str) -> None:
    config = service_config(name)
    assert config.host == "0.0.0.0"
    assert config.workers == tuple(f"http://{w}:{service_config(w).port}" for w in WORKER_SERVICES)


@pytest.mark.parametrize("name", WORKER_SERVICES + BALANCER_SERVICES)
def test_compose_refuses_to_start_without_the_worker_secret(name: str) -> None:
    """`${WORKER_SECRET:?...}`: compose stops with that message when it is unset or empty."""
    for variables in ({}, {"WORKER_SECRET": ""}):
        with pytest.raises(KeyError, match="required variable WORKER_SECRET is missing a value"):
            compose_environment(name, variables)


def test_compose_gives_every_worker_and_balancer_the_same_secret() -> None:
    """Given once (shell or deploy/.env), it reaches both tiers, and the
    workers, on 0.0.0.0, would start with it (and not without it)."""
    secret = COMPOSE_VARIABLES["WORKER_SECRET"]
    for name in WORKER_SERVICES + BALANCER_SERVICES:
        assert service_config(name).worker_secret == secret, name
        assert "--worker-secret" not in compose_command(name), f"{name}: ps would show the secret"
    for name in WORKER_SERVICES:
        config = service_config(name)
        assert exposure(config) is None
        assert exposure(parse(compose_command(name), {})) is not None, "without it the worker refuses to start"


@pytest.mark.parametrize("name", WORKER_SERVICES + BALANCER_SERVICES)
def test_compose_healthcheck_asks_health_on_the_listening_port(name: str) -> None:
    assert healthcheck_port(service(name)["healthcheck"]) == service_config(name).port


@pytest.mark.parametrize("name", WORKER_SERVICES + BALANCER_SERVICES)
def test_compose_stop_grace_outlasts_the_drain(name: str) -> None:
    config = service_config(name)
    drain = config.graceful_timeout if isinstance(config, WorkerConfig) else config.shutdown_timeout
    assert seconds(service(name)["stop_grace_period"]) > drain


# --- haproxy -------------------------------------------------------------------

def test_haproxy_serves_the_compose_balancers() -> None:
    assert haproxy_servers() == {name: f"{name}:{service_config(name).port}" for name in BALANCER_SERVICES}
    haproxy = service("haproxy")
    assert mounts("haproxy") == {HAPROXY_IMAGE_CONFIG: "./haproxy.cfg"}
    assert (COMPOSE.parent / "haproxy.cfg").resolve() == HAPROXY_CFG
    published = {port.rsplit(":", 1)[-1] for port in haproxy["ports"]}
    assert {bind.rsplit(":", 1)[-1] for bind in haproxy_binds()} == published == {"6001"}


def test_haproxy_passes_tcp_and_checks_health() -> None:
    """TCP mode (WebSockets and HTTP pass through), /health checks, a tunnel
    timeout for long calls."""
    lines = {" ".join(line.split()) for line in HAPROXY_CFG.read_text().splitlines()}
    assert "mode tcp" in lines
    assert "option httpchk GET /health" in lines
    assert any(line.startswith("timeout tunnel ") for line in lines)


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
    if found is None:
        pytest.skip("haproxy is not installed (as root, scripts/system_packages.sh installs it)")
    return found


def test_haproxy_config_is_valid_with_loopback_addresses(tmp_path: Path) -> None:
    """haproxy -c on the configuration as the multi-host test renders it."""
    haproxy = haproxy_binary()
    text = haproxy_config({"balancer1": "127.0.0.2:16001", "balancer2": "127.0.0.3:16001"}, bind="127.0.0.1:16000")
    assert haproxy_servers(text) == {"balancer1": "127.0.0.2:16001", "balancer2": "127.0.0.3:16001"}
    assert haproxy_binds(text) == ["127.0.0.1:16000"]
    path = tmp_path / "haproxy.cfg"
    path.write_text(text)
    done = subprocess.run([haproxy, "-c", "-f", str(path)], capture_output=True, text=True, timeout=30)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "[ALERT]" not in output and "[WARNING]" not in output, output


def test_haproxy_config_needs_every_server_named() -> None:
    with pytest.raises(KeyError):
        haproxy_config({"balancer1": "127.0.0.2:16001"}, bind="127.0.0.1:16000")


# --- the helper the multi-host test uses ---------------------------------------

def test_local_command_keeps_the_flags_and_replaces_values() -> None:
    values = {"--host": "127.0.0.2", "--port": "17001", "--database": "postgresql://u@127.0.0.1:5432/db",
              "--model-dir": str(REPO / "models"), "--log-dir": "/tmp/a/logs", "--spool-dir": "/tmp/a/spool"}
    argv = local_command("worker1", values)
    module, args = entry_point(compose_command("worker1"))
    assert argv[1:3] == ["-m", module]
    assert [w for w in argv[3:] if w.startswith("--")] == [w for w in args if w.startswith("--")]
    config = parse(["python", *argv[1:]], {})
    assert (config.host, config.port, config.log_dir) == ("127.0.0.2", 17001, "/tmp/a/logs")
    assert config.encoder == "ge2e"  # what compose says, untouched


def test_with_values_refuses_a_flag_the_command_lacks() -> None:
    assert with_values(["--port=1", "--host", "a"], {"--port": "2", "--host": "b"}) == ["--port=2", "--host", "b"]
    with pytest.raises(KeyError):
        with_values(["--port", "1"], {"--workers": "http://x:1"})


def test_interpolate_fills_in_variables_as_compose_does() -> None:
    variables = {"A": "1", "EMPTY": ""}
    assert interpolate("${A}-${B}", variables) == "1-"
    assert interpolate("${EMPTY:-d} ${EMPTY-d} ${B:-d}", variables) == "d  d"
    assert interpolate("${A:?need A}", variables) == "1"
    with pytest.raises(KeyError, match="required variable EMPTY is missing a value: need it"):
        interpolate("${EMPTY:?need it}", variables)
    assert interpolate("${EMPTY?only when unset}", variables) == ""


# --- Kubernetes ----------------------------------------------------------------

def k8s_documents() -> dict[tuple[str, str], dict[str, Any]]:
    docs: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and "metadata" in doc:
                key = (doc["kind"], doc["metadata"]["name"])
                assert key not in docs, f"{key} is declared twice"
                assert "namespace" not in doc["metadata"], f"{key}: namespace-agnostic manifests"
                docs[key] = doc
    return docs


def k8s(kind: str, name: str) -> dict[str, Any]:
    docs = k8s_documents()
    assert (kind, name) in docs, f"no {kind} {name} in {K8S}"
    return docs[(kind, name)]


def only_container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    found: dict[str, Any] = containers[0]
    return found


def container_environment(container: dict[str, Any]) -> dict[str, str]:
    """The container's environment, Secret and ConfigMap references resolved
    from the manifests (the example Secret's placeholder value)."""
    env = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = str(var["value"])
            continue
        ref = var["valueFrom"]
        if "secretKeyRef" in ref:
            secret = k8s("Secret", ref["secretKeyRef"]["name"])
            env[var["name"]] = secret["stringData"][ref["secretKeyRef"]["key"]]
        else:
            env[var["name"]] = k8s("ConfigMap", ref["configMapKeyRef"]["name"])["data"][ref["configMapKeyRef"]["key"]]
    return env


def container_config(workload: dict[str, Any]) -> Any:
    container = only_container(workload)
    return parse(command_argv(container["command"]) + command_argv(container.get("args", [])),
                 container_environment(container))


def container_port(container: dict[str, Any], port: int | str) -> int:
    """A probe's or Service's port (a number or a port name) as the container's port number."""
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in container["ports"] if "name" in p}
    assert port in named, f"no container port named {port!r}"
    return int(named[port])


def prestop_seconds(container: dict[str, Any]) -> float:
    """How long the preStop hook holds SIGTERM back: a `sleep N` exec, a sleep
    action, or the worker's drain (`python -m worker.drain --wait N`)."""
    hook = container.get("lifecycle", {}).get("preStop")
    assert hook, f"{container['name']} has no preStop hook"
    if "sleep" in hook:
        return float(hook["sleep"]["seconds"])
    argv = command_argv(hook["exec"]["command"])
    m = re.search(r"(?:\bsleep|-m worker\.drain .*--wait)\s+(\d+(?:\.\d+)?)", " ".join(argv))
    assert m, f"preStop neither drains nor sleeps: {argv}"
    return float(m[1])


def test_the_worker_prestop_drains_the_port_it_listens_on() -> None:
    t = worker_tier()
    argv = command_argv(t.container["lifecycle"]["preStop"]["exec"]["command"])
    assert argv[:3] == ["python", "-m", "worker.drain"]
    from worker.drain import main  # noqa: F401  (the module the hook runs exists)
    assert argv[argv.index("--port") + 1] == str(container_config(t.workload).port)


@dataclass
class Tier:
    workload: dict[str, Any]
    service: dict[str, Any]
    container: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.container = only_container(self.workload)


def worker_tier() -> Tier:
    sts = k8s("StatefulSet", "voicestream-worker")
    return Tier(sts, k8s("Service", sts["spec"]["serviceName"]))


def balancer_tier() -> Tier:
    return Tier(k8s("Deployment", "voicestream-balancer"), k8s("Service", "voicestream-balancer"))


def test_kustomization_applies_the_workloads_not_the_example_secret() -> None:
    resources = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    assert all((K8S / name).is_file() for name in resources)
    kinds = {doc["kind"] for name in resources for doc in yaml.safe_load_all((K8S / name).read_text())}
    assert kinds == {"StatefulSet", "Deployment", "Service"}


@pytest.mark.parametrize("tier", [worker_tier, balancer_tier], ids=["worker", "balancer"])
def test_k8s_service_selects_the_pods_on_the_listening_port(tier: Any) -> None:
    t = tier()
    config = container_config(t.workload)
    assert config.host == "0.0.0.0"
    labels = t.workload["spec"]["template"]["metadata"]["labels"]
    assert t.workload["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert t.service["spec"]["selector"].items() <= labels.items()
    [port] = t.service["spec"]["ports"]
    assert container_port(t.container, port["targetPort"]) == config.port


@pytest.mark.parametrize("tier", [worker_tier, balancer_tier], ids=["worker", "balancer"])
def test_k8s_readiness_is_health_on_the_listening_port(tier: Any) -> None:
    t = tier()
    probe = t.container["readinessProbe"]["httpGet"]
    assert probe["path"] == "/health"
    assert container_port(t.container, probe["port"]) == container_config(t.workload).port


@pytest.mark.parametrize("tier", [worker_tier, balancer_tier], ids=["worker", "balancer"])
def test_k8s_grace_period_outlasts_prestop_and_the_drain(tier: Any) -> None:
    """Kubernetes counts the preStop hook inside the grace period; SIGTERM
    comes after it, and then the drain (--graceful-timeout / --shutdown-timeout)."""
    t = tier()
    config = container_config(t.workload)
    drain = config.graceful_timeout if isinstance(config, WorkerConfig) else config.shutdown_timeout
    grace = t.workload["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > prestop_seconds(t.container) + drain


def test_k8s_workers_are_a_statefulset_behind_a_headless_service() -> None:
    t = worker_tier()
    assert t.service["spec"]["clusterIP"] == "None"
    assert t.workload["spec"]["replicas"] == 3


def test_k8s_worker_database_comes_from_the_secret() -> None:
    t = worker_tier()
    [var] = [v for v in t.container["env"] if v["name"] == "DATABASE_URL"]
    assert "secretKeyRef" in var["valueFrom"], "the URL holds a password: a Secret, not a value"
    assert urlsplit(container_config(t.workload).database).scheme == "postgresql"


def secret_reference(container: dict[str, Any], variable: str) -> tuple[str, str]:
    """(Secret name, key) the container's variable is read from; fails for a plain value."""
    [var] = [v for v in container.get("env", []) if v["name"] == variable]
    assert "secretKeyRef" in var.get("valueFrom", {}), f"{container['name']}: {variable} must come from a Secret"
    ref = var["valueFrom"]["secretKeyRef"]
    return ref["name"], ref["key"]


def test_k8s_worker_secret_reaches_both_tiers_from_one_secret() -> None:
    """One Secret key read by the workers (which, on 0.0.0.0, refuse to start
    without it) and by the balancers (which send it); the balancers get no
    DATABASE_URL with it."""
    worker, balancer = worker_tier(), balancer_tier()
    ref = secret_reference(worker.container, "WORKER_SECRET")
    assert secret_reference(balancer.container, "WORKER_SECRET") == ref
    assert ref[0] != secret_reference(worker.container, "DATABASE_URL")[0]
    assert "DATABASE_URL" not in container_environment(balancer.container)
    worker_config, balancer_config = container_config(worker.workload), container_config(balancer.workload)
    assert worker_config.worker_secret and worker_config.worker_secret == balancer_config.worker_secret
    assert exposure(worker_config) is None
    container = only_container(worker.workload)
    bare = {k: v for k, v in container_environment(container).items() if k != "WORKER_SECRET"}
    argv = command_argv(container["command"]) + command_argv(container.get("args", []))
    assert exposure(parse(argv, bare)) is not None, "without it the worker refuses to start"
    for tier in (worker, balancer):
        argv = command_argv(tier.container["command"]) + command_argv(tier.container.get("args", []))
        assert "--worker-secret" not in argv, "ps would show the secret"


def test_k8s_worker_logs_and_spool_are_on_its_claim() -> None:
    t = worker_tier()
    config = container_config(t.workload)
    claims = {c["metadata"]["name"] for c in t.workload["spec"]["volumeClaimTemplates"]}
    on_claims = [m["mountPath"] for m in t.container["volumeMounts"] if m["name"] in claims]
    for directory in (config.log_dir, config.spool_dir):
        assert any(PurePosixPath(directory).is_relative_to(path) for path in on_claims), \
            f"{directory} is not on a volume claim ({on_claims})"


def test_k8s_balancers_list_the_statefulset_dns_names() -> None:
    """voicestream-worker-<i>.voicestream-worker: stable across restarts, so
    every replica hashes an account to the same worker."""
    workers, balancers = worker_tier(), balancer_tier()
    sts = workers.workload
    port = container_config(sts).port
    names = tuple(f"http://{sts['metadata']['name']}-{i}.{sts['spec']['serviceName']}:{port}"
                  for i in range(sts["spec"]["replicas"]))
    assert container_config(balancers.workload).workers == names
    assert balancers.workload["spec"]["replicas"] == 2


def test_k8s_and_compose_run_the_same_worker_settings() -> None:
    """Only addresses, the database's location and directories differ."""
    k8s_config = container_config(worker_tier().workload)
    compose_config = service_config(WORKER_SERVICES[0])
    same = ("port", "encoder", "model_dir", "graceful_timeout", "threads", "vad_threshold")
    assert {f: getattr(k8s_config, f) for f in same} == {f: getattr(compose_config, f) for f in same}


# --- Dockerfile ----------------------------------------------------------------

@dataclass
class Stage:
    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def dockerfile_stages(text: str) -> list[Stage]:
    """The Dockerfile's stages with their instructions (continuations joined, comments dropped)."""
    logical, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    stages: list[Stage] = []
    for instruction in logical:
        keyword, _, args = instruction.partition(" ")
        keyword, args = keyword.upper(), " ".join(args.split())
        if keyword == "FROM":
            m = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", args, re.IGNORECASE)
            assert m, f"FROM {args}"
            stages.append(Stage(m[1], m[2] or str(len(stages))))
        elif stages:
            stages[-1].instructions.append((keyword, args))
    return stages


def pip_installs(stage: Stage) -> list[list[str]]:
    """The targets of each `pip install` in the stage's RUNs (options and shell expansions left out)."""
    installs = []
    for run in stage.args("RUN"):
        for command in re.split(r"&&|;|\|\|", run):
            words = command.split()
            if "pip" in words and words[words.index("pip") + 1:words.index("pip") + 2] == ["install"]:
                rest = words[words.index("pip") + 2:]
                installs.append([w.strip("'\"") for w in rest if not w.startswith("-") and "$" not in w])
    return installs


STAGES = dockerfile_stages(DOCKERFILE.read_text())


def test_dockerfile_has_a_build_and_a_runtime_stage() -> None:
    assert len(STAGES) >= 2
    assert all(stage.base == "python:3.11-slim" for stage in STAGES)


def test_build_stage_installs_the_export_tools_and_makes_the_graphs() -> None:
    build = STAGES[0]
    assert [".[export]"] in pip_installs(build)
    runs = " ".join(build.args("RUN"))
    assert "python -m worker.export --encoder ge2e --model-dir /models" in runs
    assert "--encoder ecapa" in runs and "ECAPA_SOURCE" in " ".join(build.args("ARG"))


def test_runtime_stage_installs_the_project_without_the_export_extra() -> None:
    runtime = STAGES[-1]
    assert pip_installs(runtime) == [["."]]
    assert "export" not in " ".join(runtime.args("RUN"))


def test_runtime_stage_takes_only_the_graphs_from_the_build_stage() -> None:
    """Copied where the workers' --model-dir (compose and Kubernetes) looks for them."""
    runtime, build = STAGES[-1], STAGES[0]
    copies = [args.split() for args in runtime.args("COPY") if args.startswith("--from=")]
    model_dirs = {service_config(WORKER_SERVICES[0]).model_dir, container_config(worker_tier().workload).model_dir}
    assert copies == [[f"--from={build.name}", "/models/onnx", str(graph_dir(Path(d)))] for d in model_dirs]


def test_runtime_stage_runs_as_a_user_and_exposes_both_tiers() -> None:
    runtime = STAGES[-1]
    users = runtime.args("USER")
    assert users and users[-1].split(":")[0] not in ("root", "0")
    exposed = {int(port.split("/")[0]) for args in runtime.args("EXPOSE") for port in args.split()}
    ports = {service_config(name).port for name in WORKER_SERVICES + BALANCER_SERVICES}
    ports |= {container_config(t().workload).port for t in (worker_tier, balancer_tier)}
    assert ports <= exposed == {6001, 7001}


def test_runtime_default_command_is_the_worker_and_every_command_an_entry_point() -> None:
    """One image: `python -m worker` by default, `python -m balancer` as the
    balancers' command (compose and Kubernetes)."""
    assert json.loads(STAGES[-1].args("CMD")[-1]) == ["python", "-m", "worker"]
    for name in WORKER_SERVICES + BALANCER_SERVICES:
        assert entry_point(compose_command(name))[0] == name.rstrip("0123456789")
    for tier, module in ((worker_tier, "worker"), (balancer_tier, "balancer")):
        assert command_argv(tier().container["command"]) == ["python", "-m", module]


def test_build_context_leaves_out_the_venv_local_graphs_and_secrets() -> None:
    ignored = {line.strip() for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()}
    assert {".venv", ".git", "models/onnx", "**/.env"} <= ignored  # .env: deploy/.env holds WORKER_SECRET
