"""The cluster launch files in jobs/: each parses, has the fields its launcher needs, and runs a study command
that the real CLI accepts, so that its flags cannot drift from study.run."""
from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from study.inputs import UsageError, check_args, resolve_spec
from study.run import build_parser

REPO = Path(__file__).resolve().parents[2]
JOBS = REPO / "jobs"
STUDY = ["python", "-m", "study.run"]


def study_commands(shell_text: str) -> list[list[str]]:
    """Every `python -m study.run ...` in a piece of shell, as argv up to the end of that simple command.

    `"$@"` (the arguments a user adds at submission) is dropped: it is not part of the file's command.
    """
    commands = []
    for line in shell_text.replace("\\\n", " ").splitlines():
        if "study.run" not in line or line.lstrip().startswith("#"):
            continue
        lex = shlex.shlex(line, posix=True, punctuation_chars=True)
        lex.whitespace_split = True
        tokens = list(lex)
        for i in range(len(tokens) - 2):
            if tokens[i:i + 3] == STUDY:
                argv = []
                for tok in tokens[i:]:
                    if set(tok) <= set("();<>|&"):  # &&, ;, |, &>, & ... end the command
                        break
                    argv.append(tok)
                commands.append([t for t in argv if t != "$@"])
    return commands


def parse_study(argv: list[str], where: str):
    assert argv[:3] == STUDY, argv
    parser = build_parser()
    parser.allow_abbrev = False  # a launch file spells every flag in full, so a renamed flag cannot slip by
    try:
        return parser.parse_args(argv[3:])
    except SystemExit:
        pytest.fail(f"{where}: the CLI rejects `{shlex.join(argv)}`")


def check_study_commands(shell_texts: list[str], where: str, monkeypatch, needs_address: bool = True):
    """Parse and check every study command; returns the parsed args of the new-study and resume commands."""
    commands = [c for text in shell_texts for c in study_commands(text)]
    assert commands, f"{where} runs no `python -m study.run` command"
    parsed = [parse_study(c, where) for c in commands]
    for argv, args in zip(commands, parsed):
        if needs_address:
            assert args.address, f"{where}: `{shlex.join(argv)}` must join the cluster with --address"
        else:
            monkeypatch.setenv("RAY_ADDRESS", "auto")  # what Ray Jobs set for their driver
        try:
            check_args(args)
        except UsageError as exc:
            pytest.fail(f"{where}: `{shlex.join(argv)}`: {exc}")
        if args.spec:  # a bundled spec's name, or a file in the repository
            monkeypatch.chdir(REPO)
            try:
                resolve_spec(args.spec)
            except UsageError as exc:
                pytest.fail(f"{where}: --spec {args.spec}: {exc}")
    new = [a for a in parsed if not a.resume]
    resume = [a for a in parsed if a.resume]
    assert len(new) == 1 and len(resume) <= 1, f"{where}: expected one new-study command, got {commands}"
    if resume:
        assert resume[0].resume == new[0].out, f"{where}: --resume must continue the run it started"
    return new[0], resume


# --- Ray cluster launcher -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def launcher() -> dict:
    return yaml.safe_load((JOBS / "ray-cluster.yaml").read_text())


def test_launcher_matches_rays_schema(launcher):
    jsonschema = pytest.importorskip("jsonschema")
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(launcher, schema)


def test_launcher_fields(launcher):
    assert launcher["cluster_name"] and launcher["provider"]["type"]
    types = launcher["available_node_types"]
    assert launcher["head_node_type"] in types
    workers = {k: v for k, v in types.items() if k != launcher["head_node_type"]}
    assert workers and all(v.get("max_workers", 0) > 0 for v in workers.values())
    assert any("pip install" in c for c in launcher["setup_commands"])
    assert any("ray start --head" in c for c in launcher["head_start_ray_commands"])
    assert any("ray start --address" in c for c in launcher["worker_start_ray_commands"])


def test_launcher_uses_token_auth(launcher):
    starts = [c for c in launcher["head_start_ray_commands"] + launcher["worker_start_ray_commands"]
              if "ray start" in c]
    assert starts and all("RAY_AUTH_MODE=token ray start" in c for c in starts)
    assert "~/.ray/auth_token" in launcher["file_mounts"]


def test_launcher_opens_no_port_to_the_world_and_workers_may_write_the_checkpoints(launcher):
    text = (JOBS / "ray-cluster.yaml").read_text()
    assert "0.0.0.0/0" not in text.split("cluster_name:")[1]
    # Ray's default security group opens SSH to 0.0.0.0/0: every node type names a group of the user's own.
    for name, node in launcher["available_node_types"].items():
        assert node["node_config"].get("SecurityGroupIds"), f"{name} would get Ray's default security group"
    workers = [n for k, n in launcher["available_node_types"].items() if k != launcher["head_node_type"]]
    assert all(n["node_config"].get("IamInstanceProfile") for n in workers), "workers write the s3:// checkpoints"


def test_launcher_installs_the_tested_versions(launcher):
    (setup,) = launcher["setup_commands"]
    assert "pip install torch==" + _constraints()["torch"] in setup
    assert "-c ~/charrnn-study/constraints.txt" in setup


def test_launcher_study_command(launcher, monkeypatch):
    new, _ = check_study_commands(launcher["head_start_ray_commands"], "ray-cluster.yaml", monkeypatch)
    assert "://" in new.storage, "workers cannot write checkpoints to the head's disk: --storage must be shared"
    study_lines = [c for c in launcher["head_start_ray_commands"] if "study.run" in c]
    assert all(c.count("RAY_AUTH_MODE=token") == c.count("python -m study.run") for c in study_lines)


# --- KubeRay RayJob ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rayjob() -> dict:
    return yaml.safe_load((JOBS / "rayjob.yaml").read_text())


def _containers(pod_spec: dict) -> list[dict]:
    return pod_spec["template"]["spec"]["containers"]


def test_rayjob_fields(rayjob):
    assert rayjob["apiVersion"] == "ray.io/v1" and rayjob["kind"] == "RayJob" and rayjob["metadata"]["name"]
    spec = rayjob["spec"]
    assert spec["entrypoint"] and spec["shutdownAfterJobFinishes"] is True
    cluster = spec["rayClusterSpec"]
    assert cluster["authOptions"]["mode"] == "token"
    head, workers = cluster["headGroupSpec"], cluster["workerGroupSpecs"]
    assert "rayStartParams" in head and _containers(head)
    assert workers and all(w["groupName"] and _containers(w) and w["maxReplicas"] >= w["minReplicas"]
                           for w in workers)
    images = [c["image"] for g in [head, *workers] for c in _containers(g)]
    assert all(re.fullmatch(rf"rayproject/ray:{re.escape(cluster['rayVersion'])}(-.+)?", i) for i in images), images
    assert any("nvidia.com/gpu" in c["resources"]["limits"] for w in workers for c in _containers(w))


def _constraints() -> dict[str, str]:
    lines = (REPO / "constraints.txt").read_text().splitlines()
    return {canonicalize_name(l.split("==")[0]): l.split("==")[1] for l in lines if "==" in l and l[0] != "#"}


def test_rayjob_runtime_env_installs_the_projects_dependencies_at_the_tested_versions(rayjob):
    env = yaml.safe_load(rayjob["spec"]["runtimeEnvYAML"])
    pins = {canonicalize_name(Requirement(p).name): Requirement(p) for p in env["pip"]}
    tested = _constraints()
    deps = [Requirement(d) for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]]
    missing = [d.name for d in deps if d.name != "ray" and canonicalize_name(d.name) not in pins]
    assert not missing, f"runtimeEnvYAML pip lacks {missing} (the image brings Ray, pip the rest)"
    for name, req in pins.items():
        (spec,) = req.specifier
        assert spec.operator == "==" and spec.version == tested[name], f"{req}: constraints.txt says {tested[name]}"


def test_rayjob_code_comes_from_a_tag_not_a_branch(rayjob):
    working_dir = yaml.safe_load(rayjob["spec"]["runtimeEnvYAML"])["working_dir"]
    assert "/refs/tags/" in working_dir and "/refs/heads/" not in working_dir, working_dir


def test_rayjob_study_command(rayjob, monkeypatch):
    new, _ = check_study_commands([rayjob["spec"]["entrypoint"]], "rayjob.yaml", monkeypatch, needs_address=False)
    cluster = rayjob["spec"]["rayClusterSpec"]
    # Results and checkpoints (by default in --out) must be on a volume every pod mounts at the same place.
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    mounts = [{m["mountPath"] for c in _containers(g) for m in c.get("volumeMounts", [])} for g in groups]
    shared = set.intersection(*mounts)
    target = new.storage or new.out
    assert any(target.startswith(m.rstrip("/") + "/") for m in shared), (target, mounts)


# --- SLURM -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sbatch() -> str:
    return (JOBS / "slurm.sbatch").read_text()


def test_sbatch_directives(sbatch):
    lines = sbatch.splitlines()
    assert lines[0].startswith("#!") and "bash" in lines[0]
    # sbatch reads #SBATCH lines only until the first command: all of them must come before it.
    first_command = next(i for i, l in enumerate(lines) if l.strip() and not l.startswith("#"))
    directives = [l for l in lines[:first_command] if l.startswith("#SBATCH")]
    assert not any(l.startswith("#SBATCH") for l in lines[first_command:]), "an #SBATCH line after a command"
    options = dict(re.match(r"#SBATCH\s+--([\w-]+)(?:=(\S+))?", l).groups() for l in directives)
    assert int(options["nodes"]) >= 2 and options["ntasks-per-node"] == "1"
    assert {"cpus-per-task", "time", "job-name"} <= set(options)


def test_sbatch_starts_a_ray_cluster(sbatch):
    body = [l.strip() for l in sbatch.splitlines() if not l.lstrip().startswith("#")]
    text = "\n".join(body)
    assert "export RAY_AUTH_MODE=token" in text
    # A token only this user can read, handed over by path; not Ray's 0644 file on a shared home.
    assert "umask 077" in text and 'chmod 600 "$RAY_AUTH_TOKEN_PATH"' in text and "RAY_AUTH_TOKEN=" not in text
    assert text.index("umask 077") < text.index("ray start --head")
    head = [l for l in body if "ray start --head" in l]
    workers = [l for l in body if "ray start --address" in l]
    assert head and workers, "needs `ray start --head` and `ray start --address`"
    assert all("srun" in l or "step[@]" in l for l in head + workers), "each node's Ray starts as an srun step"
    assert "srun" in text and all(l.endswith("&") for l in head + workers)
    assert "ray.nodes()" in text, "waits for every node to join before the study"


def test_sbatch_study_command(sbatch, monkeypatch):
    new, resume = check_study_commands([sbatch], "slurm.sbatch", monkeypatch)
    assert resume, "submitting again should resume the run"


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_sbatch_is_valid_bash():
    proc = subprocess.run(["bash", "-n", str(JOBS / "slurm.sbatch")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_study_commands_helper():
    text = 'cd x && RAY_AUTH_MODE=token python -m study.run --out "a b" --trials 3 &> log & echo\n' \
           'python -m study.run --resume r \\\n  --address h:1 "$@"; python -m study.run'
    assert study_commands(text) == [STUDY + ["--out", "a b", "--trials", "3"],
                                    STUDY + ["--resume", "r", "--address", "h:1"], STUDY]


def test_the_cluster_docs_by_hand_head_uses_token_auth():
    readme = (REPO / "docs" / "cluster.md").read_text()
    starts = [l for l in readme.splitlines() if "ray start --head" in l and "`" not in l]  # commands, not prose
    assert starts and all("RAY_AUTH_MODE=token ray start --head" in l for l in starts), starts
