"""The worker and balancer commands of deploy/compose.yaml, for tests that run
the same commands with the same flags as processes on this machine, and
deploy/haproxy.cfg with local addresses.

    worker = local_command("worker1", {"--host": "127.0.0.2", "--port": "17001",
                                       "--database": url, "--model-dir": "models",
                                       "--log-dir": f"{a}/logs", "--spool-dir": f"{a}/spool"})
    balancer = local_command("balancer1", {"--host": "127.0.0.2", "--port": "16001",
                                           "--workers": "http://127.0.0.2:17001,http://127.0.0.3:17001"})
    config = haproxy_config({"balancer1": "127.0.0.2:16001", "balancer2": "127.0.0.3:16001"},
                            bind="127.0.0.1:16000")
    env = service_environment("worker1", {"WORKER_SECRET": secret})  # its environment, ${...} filled in

Only the values of flags the command already has can be replaced, so a test
starts exactly the deployment's flags (tests/test_deploy.py checks that they
parse with the real argument parsers).
"""
from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
HAPROXY_CFG = DEPLOY / "haproxy.cfg"
DOCKERFILE = DEPLOY / "Dockerfile"
K8S = DEPLOY / "k8s"
ENTRY_POINTS = ("worker", "balancer")

# compose's interpolation: ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}.
INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
SERVER_LINE = re.compile(r"^(?P<head>\s*server\s+(?P<name>\S+)\s+)(?P<address>\S+)(?P<tail>.*)$")
BIND_LINE = re.compile(r"^(?P<head>\s*bind\s+)(?P<address>\S+)(?P<tail>.*)$")


def compose() -> dict[str, Any]:
    """deploy/compose.yaml, parsed (YAML merge keys resolved)."""
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def command_argv(command: str | Sequence[Any]) -> list[str]:
    """A compose or Kubernetes command as argv: a string is split as compose does (shell words)."""
    return shlex.split(command) if isinstance(command, str) else [str(word) for word in command]


def compose_command(service: str) -> list[str]:
    """The service's command exactly as compose.yaml gives it: ["python", "-m", "worker", ...]."""
    return command_argv(compose()["services"][service]["command"])


def entry_point(argv: Sequence[str]) -> tuple[str, list[str]]:
    """("worker", flags) for ["python", "-m", "worker", *flags]; ValueError for any other command."""
    if len(argv) < 3 or argv[0] != "python" or argv[1] != "-m" or argv[2] not in ENTRY_POINTS:
        raise ValueError(f"not a `python -m {'|'.join(ENTRY_POINTS)}` command: {' '.join(argv)}")
    return argv[2], list(argv[3:])


def services_running(module: str) -> list[str]:
    """The compose services whose command is `python -m <module>`, in file order."""
    names = []
    for name, service in compose()["services"].items():
        command = service.get("command")
        if command is None:
            continue
        argv = command_argv(command)
        if argv[:3] == ["python", "-m", module]:
            names.append(name)
    return names


def with_values(args: Sequence[str], values: Mapping[str, str]) -> list[str]:
    """args with the value of each flag in values replaced (`--flag value` or
    `--flag=value`); KeyError for a flag args does not have exactly once."""
    out = list(args)
    for flag, value in values.items():
        spots = [i for i, word in enumerate(out) if word == flag or word.startswith(flag + "=")]
        if len(spots) != 1 or (out[spots[0]] == flag and spots[0] + 1 >= len(out)):
            raise KeyError(f"{flag} is not in the command once with a value: {' '.join(args)}")
        i = spots[0]
        if out[i] == flag:
            out[i + 1] = value
        else:
            out[i] = f"{flag}={value}"
    return out


def local_command(service: str, values: Mapping[str, str]) -> list[str]:
    """The compose service's command for this machine: this interpreter, the
    same module and flags, the given flags' values replaced (addresses, ports,
    URLs, directories)."""
    module, args = entry_point(compose_command(service))
    return [sys.executable, "-m", module, *with_values(args, values)]


def interpolate(value: str, variables: Mapping[str, str]) -> str:
    """value with compose's ${...} filled in from variables (the shell's
    environment and .env, for compose); KeyError with compose's message for
    a required variable (`:?`) that is unset or empty."""
    def one(m: re.Match[str]) -> str:
        name, op, arg = m["name"], m["op"], m["arg"]
        found = variables.get(name)
        unset = found is None or (found == "" and op is not None and op.startswith(":"))
        if not unset:
            return str(found)
        if op is not None and op.endswith("?"):
            raise KeyError(f"required variable {name} is missing a value: {arg}")
        return arg if op is not None else ""
    return INTERPOLATION.sub(one, value)


def service_environment(service: str, variables: Mapping[str, str]) -> dict[str, str]:
    """The compose service's `environment`, interpolated from variables."""
    env = compose()["services"][service].get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: interpolate(str(value), variables) for key, value in env.items()}


def haproxy_servers(text: str | None = None) -> dict[str, str]:
    """server name -> address of haproxy.cfg's `server` lines."""
    text = HAPROXY_CFG.read_text() if text is None else text
    return {m["name"]: m["address"] for m in map(SERVER_LINE.match, text.splitlines()) if m}


def haproxy_binds(text: str | None = None) -> list[str]:
    """The addresses of haproxy.cfg's `bind` lines."""
    text = HAPROXY_CFG.read_text() if text is None else text
    return [m["address"] for m in map(BIND_LINE.match, text.splitlines()) if m]


def haproxy_config(servers: Mapping[str, str], bind: str) -> str:
    """deploy/haproxy.cfg with each named server's address (host:port) and the
    frontend's bind address replaced; every server must be named, so no line
    keeps a compose host name."""
    text = HAPROXY_CFG.read_text()
    missing = set(haproxy_servers(text)) ^ set(servers)
    if missing:
        raise KeyError(f"haproxy.cfg's servers are {sorted(haproxy_servers(text))}, not {sorted(servers)}")
    lines = []
    for line in text.splitlines():
        if m := SERVER_LINE.match(line):
            line = f"{m['head']}{servers[m['name']]}{m['tail']}"
        elif m := BIND_LINE.match(line):
            line = f"{m['head']}{bind}{m['tail']}"
        lines.append(line)
    return "\n".join(lines) + "\n"
