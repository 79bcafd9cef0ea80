"""deploy/kubernetes/ is a kustomize base a team applies as it is: every manifest valid against the
Kubernetes schemas (kubernetes-validate ships them: no network), rendered by kustomize where kubectl is
installed, non-root and read-only, settings split between the ConfigMap and the Secret, and running only
commands the CLI has.

The helpers that check a command line against the CLI serve tests/unit/test_docs.py too."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import kubernetes_validate
import pytest
import typer
import yaml

from orchestrator.cli import normalise_args
from orchestrator.cli.app import app
from orchestrator.settings import Settings
from orchestrator.settings_doc import env_names, type_name
from tests.conftest import ROOT

BASE = ROOT / "deploy" / "kubernetes"
# The oldest and the newest Kubernetes whose schemas kubernetes-validate ships.
VERSIONS = ("1.25", kubernetes_validate.utils.latest_version())
SECRET_SETTINGS = {"TENANTCTL_DATABASE_URL", "TENANTCTL_BROKER_URL", "TENANTCTL_SECRET_KEY"}

# Commands the manifests run before the CLI has them, each with the work that brings it. A planned
# command that exists must leave this set, so that its options are checked like every other's.
PLANNED: dict[str, str] = {}
# Manifests shipped beside the base but left out of its resources until the command they run exists
# (a team applying the base as it is must not get a crash-looping API): validated like the others.
OPTIONAL: dict[str, str] = {}


# --- command lines against the CLI ------------------------------------------------------------------


def _celery_command(name: str) -> Any:
    """Celery's own parser of the options ``tenantctl worker``/``beat`` pass through."""
    from celery.bin.beat import beat
    from celery.bin.worker import worker

    from workers.app import make_app

    command = {"worker": worker, "beat": beat}[name]
    celery = make_app(Settings(_env_file=None, broker_url="redis://localhost:6379/0"))
    return command, SimpleNamespace(app=celery)


def cli_problem(argv: Sequence[str]) -> str | None:
    """Why ``tenantctl argv`` would not parse (an unknown command or option, a missing argument, a
    value of the wrong type), or None. Nothing runs: only the parsers are asked, Celery's included for
    the options ``worker`` and ``beat`` pass through."""
    args = normalise_args([a for a in argv if a != "--debug"])
    asks_help = "--help" in args  # the commands before it must exist; nothing after it is parsed
    if asks_help:
        args = args[: args.index("--help")]
    command: Any = typer.main.get_command(app)
    path: list[str] = []
    while hasattr(command, "list_commands"):
        if asks_help and not args:
            return None
        names = command.list_commands(None)
        at = next((i for i, a in enumerate(args) if a in names), None)
        if at is None or any(not a.startswith("-") for a in args[:at]):
            if not path and args[:1] and args[0] in PLANNED:
                return None
            if not getattr(command, "invoke_without_command", False):
                wanted = " ".join(["tenantctl", *path])
                return f"`tenantctl {' '.join(argv)}`: `{wanted}` has no such command ({', '.join(names)})"
            break  # a group that runs by itself (`audit --json`): its own options are parsed below
        path.append(args[at])
        command, args = command.get_command(None, args[at]), args[at + 1 :]
    if asks_help:
        return None
    try:
        ctx = command.make_context(" ".join(path), list(args))
    except typer.TyperException as exc:
        return f"`tenantctl {' '.join(argv)}`: {exc.format_message()}"
    # what the command left unparsed: extra arguments, or (for a group) a subcommand name it did not know
    leftover = [*ctx.args, *getattr(ctx, "_protected_args", [])]
    if path in (["worker"], ["beat"]):
        import click

        celery, obj = _celery_command(path[0])
        try:
            celery.make_context(path[0], leftover, obj=obj)
        except click.ClickException as exc:
            return f"`tenantctl {' '.join(argv)}`: Celery {path[0]}: {exc.format_message()}"
    elif leftover:
        return f"`tenantctl {' '.join(argv)}`: unexpected {' '.join(leftover)!r}"
    return None


# tenantctl where a command starts: a line's start, after ; & | ( or `, after exec, or after the -- of
# `kubectl exec POD -- tenantctl …` (not `kubectl -n tenantctl …`).
_INVOCATION = re.compile(r"(?:^|[;&|(`]|\bexec\b|\s--)[ \t]*tenantctl[ \t]+([^;&|)`\n]*)")


def tenantctl_invocations(script: str) -> list[list[str]]:
    """The arguments of every ``tenantctl …`` in a shell script (``exec tenantctl …``, inside
    ``$(…)``, after ``&&``), comments left out; ``$VAR`` and ``${VAR}`` stand for a value."""
    found = []
    for line in script.replace("\\\n", " ").splitlines():
        for match in _INVOCATION.finditer(line.split(" #")[0]):
            words = shlex.split(match.group(1), comments=True)
            found.append([re.sub(r"\$\{?\w+\}?", "1", w) if "$" in w else w for w in words])
    return found


# --- the manifests ------------------------------------------------------------------------------------


def _load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _kustomization() -> dict[str, Any]:
    return _load(BASE / "kustomization.yaml")[0]


def _manifests() -> list[tuple[str, dict[str, Any]]]:
    names = [*_kustomization()["resources"], *OPTIONAL]
    return [(name, doc) for name in names for doc in _load(BASE / name)]


def _of(kind: str, name: str) -> dict[str, Any]:
    return next(d for _, d in _manifests() if d["kind"] == kind and d["metadata"]["name"] == name)


def _pods(docs: Sequence[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in docs:
        if doc["kind"] in ("Deployment", "Job"):
            yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def _argvs(container: dict[str, Any]) -> list[list[str]]:
    """The tenantctl command lines a container runs: its command and args (the image's ENTRYPOINT is
    ``tenantctl``), or each ``tenantctl …`` of its shell script."""
    command = container.get("command", ["tenantctl"])
    if command == ["tenantctl"]:
        return [list(container.get("args", []))]
    assert command[0] in ("/bin/sh", "sh") and command[-1].lstrip("-").endswith("c"), command
    return tenantctl_invocations("\n".join(container["args"]))


def _dotenv(path: Path) -> dict[str, str]:
    lines = [ln for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    return dict(ln.split("=", 1) for ln in lines)


def _dockerfile_user() -> tuple[int, int]:
    match = re.search(r"^USER (\d+):(\d+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert match, "the Dockerfile's USER must be a numeric uid:gid for runAsNonRoot"
    return int(match.group(1)), int(match.group(2))


# --- tests --------------------------------------------------------------------------------------------


def test_kustomization_lists_every_manifest_and_nothing_else() -> None:
    kustomization = _kustomization()
    listed = set(kustomization["resources"])
    present = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"} - set(OPTIONAL)
    assert listed == present, (
        f"in the folder, not listed: {present - listed}; listed, missing: {listed - present}"
    )
    for generator in kustomization["configMapGenerator"]:
        for env in generator["envs"]:
            assert (BASE / env).is_file(), env
    assert [i["name"] for i in kustomization["images"]] == ["tenantctl"]
    assert kustomization["images"][0]["newTag"] not in ("", "latest")


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    "name", sorted(p.name for p in BASE.glob("*.yaml") if p.name != "kustomization.yaml")
)
def test_manifest_validates_against_the_kubernetes_schemas(name: str, version: str) -> None:
    for doc in _load(BASE / name):
        kubernetes_validate.validate(doc, version, strict=True)  # strict: an unknown field is an error


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (kustomize) is not installed")
def test_rendered_kustomization_validates_and_wires_the_configmap_and_image() -> None:
    out = subprocess.run(
        ["kubectl", "kustomize", str(BASE)], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    for doc in docs:
        for version in VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)
    (config,) = [d for d in docs if d["kind"] == "ConfigMap"]
    assert config["metadata"]["name"].startswith("tenantctl-")  # the content hash rolls the pods
    assert config["data"] == _dotenv(BASE / "settings.env")
    image = _kustomization()["images"][0]
    for _, pod in _pods(docs):
        for container in _containers(pod):
            assert container["image"] == f"{image['newName']}:{image['newTag']}"
            refs = {
                kind: source[kind]["name"]
                for source in container["envFrom"]
                for kind in ("configMapRef", "secretRef")
                if kind in source
            }
            assert refs == {"configMapRef": config["metadata"]["name"], "secretRef": "tenantctl"}


def test_every_command_the_manifests_run_exists_in_the_cli() -> None:
    argvs = [
        argv for _, pod in _pods([d for _, d in _manifests()]) for c in _containers(pod) for argv in _argvs(c)
    ]
    assert ["db", "upgrade"] in argvs and ["upgrade", "head", "--json"] in argvs
    assert ["tenants", "list", "--json"] in argvs
    problems = [p for argv in argvs if (p := cli_problem(argv))]
    assert not problems, "\n".join(problems)
    root = typer.main.get_command(app)
    landed = [name for name in PLANNED if root.get_command(None, name) is not None]
    assert not landed, (
        f"tenantctl {landed} exists now: remove it from PLANNED (and its manifest from OPTIONAL, into the "
        "base's resources) so its options are checked"
    )


def test_the_command_check_catches_mistakes() -> None:
    assert cli_problem(["upgrade", "head", "--json"]) is None
    assert cli_problem(["downgrade", "-1", "--tag", "eu"]) is None
    assert cli_problem(["audit", "--json"]) is None and cli_problem(["audit", "show", "3"]) is None
    assert cli_problem(["worker", "-c", "2", "--without-gossip"]) is None
    assert cli_problem(["--help"]) is None and cli_problem(["tenants", "add", "--help"]) is None
    for wrong in (
        ["upgrade", "head", "--jsn"],
        ["upgrade"],
        ["db"],
        ["status", "latest"],
        ["tenants", "lst"],
        ["rollback", "3"],
        ["worker", "--concurency", "2"],
        ["heads", "extra"],
        ["tenants", "ad", "--help"],
    ):
        assert cli_problem(wrong), wrong
    script = 'x="$(tenantctl tenants list --json)" && exec tenantctl status "$ID" -f # tenantctl nope'
    assert tenantctl_invocations(script) == [["tenants", "list", "--json"], ["status", "1", "-f"]]
    kubectl = "kubectl -n tenantctl exec deploy/tenantctl-worker -- tenantctl reap"
    assert tenantctl_invocations(kubectl) == [["reap"]]
    assert (
        tenantctl_invocations("kubectl -n tenantctl create secret generic tenantctl --from-env-file=x") == []
    )


def test_the_pre_deploy_label_selects_everything_the_job_needs() -> None:
    """`kubectl apply -k … -l tenantctl/phase=pre-deploy` applies the Job alone, with what it needs (the
    Secret is created by hand): docs/kubernetes.md deploys that way."""
    labelled = {
        (d["kind"], d["metadata"]["name"])
        for _, d in _manifests()
        if d["metadata"].get("labels", {}).get("tenantctl/phase") == "pre-deploy"
    }
    assert labelled == {("ServiceAccount", "tenantctl"), ("Job", "tenantctl-migrate")}
    (generator,) = _kustomization()["configMapGenerator"]
    assert generator["options"]["labels"]["tenantctl/phase"] == "pre-deploy"
    assert _of("Job", "tenantctl-migrate")["spec"]["template"]["spec"]["serviceAccountName"] == "tenantctl"


def test_pods_run_as_the_images_non_root_user_on_a_read_only_filesystem() -> None:
    uid, gid = _dockerfile_user()
    assert uid != 0
    for name, pod in _pods([d for _, d in _manifests()]):
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True, name
        assert (context["runAsUser"], context["runAsGroup"]) == (uid, gid), name
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["automountServiceAccountToken"] is False, name
        # Kubernetes would otherwise put TENANTCTL_API_PORT and the like (from the Service's name) in
        # every pod's environment, where settings are read.
        assert pod["enableServiceLinks"] is False, name
        tmp = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        for container in _containers(pod):
            where = f"{name}/{container['name']}"
            assert container["image"] == "tenantctl", where  # kustomization's images: names it
            assert container["securityContext"] == {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
            }, where
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), where
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mounts.get("/tmp") in tmp, f"{where}: /tmp must be an emptyDir"


def test_settings_come_from_the_configmap_and_the_secret() -> None:
    fields = {env: field for name, field in Settings.model_fields.items() for env in env_names(name, field)}
    config = _dotenv(BASE / "settings.env")
    secret = _dotenv(BASE / "secret.env.example")
    assert set(config) <= set(fields), f"not settings: {set(config) - set(fields)}"
    secrets_in_config = {k for k in config if type_name(fields[k].annotation).startswith("secret")}
    assert not secrets_in_config, f"secrets belong in the Secret: {secrets_in_config}"
    assert set(secret) == SECRET_SETTINGS and not any(secret.values()), "secret.env.example: keys, no values"
    assert "secret.env" in (BASE / ".gitignore").read_text().split()
    for name, pod in _pods([d for _, d in _manifests()]):
        for container in _containers(pod):
            assert container["envFrom"] == [
                {"configMapRef": {"name": "tenantctl"}},
                {"secretRef": {"name": "tenantctl"}},
            ], f"{name}/{container['name']}"
            assert "env" not in container, "every setting comes from the ConfigMap or the Secret"


def test_api_worker_and_beat() -> None:
    for _, doc in _manifests():
        if doc["kind"] == "Deployment":
            labels = doc["spec"]["template"]["metadata"]["labels"]
            assert doc["spec"]["selector"]["matchLabels"].items() <= labels.items()

    api = _of("Deployment", "tenantctl-api")["spec"]["template"]["spec"]["containers"][0]
    assert api["args"] == ["serve", "--host", "0.0.0.0", "--port", "8000"]
    assert api["ports"] == [{"name": "http", "containerPort": 8000}]
    assert api["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert api["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    service = _of("Service", "tenantctl-api")["spec"]
    assert service["selector"] == _of("Deployment", "tenantctl-api")["spec"]["selector"]["matchLabels"]
    assert service["ports"][0]["targetPort"] == "http"

    worker = _of("Deployment", "tenantctl-worker")
    assert worker["spec"]["template"]["spec"]["containers"][0]["args"][:3] == ["worker", "-c", "2"]
    beat = _of("Deployment", "tenantctl-beat")
    assert beat["spec"]["replicas"] == 1 and beat["spec"]["strategy"] == {"type": "Recreate"}
    assert beat["spec"]["template"]["spec"]["containers"][0]["args"][0] == "beat"


def test_the_migrate_job_fails_the_deploy_on_any_error() -> None:
    job = _of("Job", "tenantctl-migrate")
    pod = job["spec"]["template"]["spec"]
    assert job["spec"]["backoffLimit"] == 0 and pod["restartPolicy"] == "Never"
    (init,) = pod["initContainers"]
    assert init["command"] == ["tenantctl"] and init["args"] == ["db", "upgrade"]
    (main,) = pod["containers"]
    assert main["command"] == ["/bin/sh", "-ec"]  # -e: any failing line fails the container
    script = main["args"][0]
    lines = [ln.strip() for ln in script.splitlines() if ln.strip()]
    assert lines[0] == "unset TENANTCTL_BROKER_URL", "the Job migrates in-process, never on the old workers"
    assert lines[-1] == "exec tenantctl upgrade head --json", "its exit code must be the container's"
    assert tenantctl_invocations(script) == [["tenants", "list", "--json"], ["upgrade", "head", "--json"]]


def test_the_helm_hook_annotations_shown_in_the_job_are_valid() -> None:
    text = (BASE / "migrate-job.yaml").read_text()
    block = re.search(r"^  # annotations:\n(?:  #   .*\n)+", text, re.MULTILINE)
    assert block, "the commented Helm annotations are gone from migrate-job.yaml"
    annotations = yaml.safe_load(re.sub(r"^  # ?", "", block.group(0), flags=re.MULTILINE))["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation"
    job = _of("Job", "tenantctl-migrate")
    job["metadata"]["annotations"] = annotations
    for version in VERSIONS:
        kubernetes_validate.validate(job, version, strict=True)
