"""The docs as a newcomer follows them: every fenced shell command in README.md, config/README.md
and docs/*.md is either run here (on CPU, offline, in a copy of the workflow; a Snakemake run that
would train or download is run as its dry run), or named as one that cannot run here and why. A
command that is neither fails the test, so new docs cannot carry an untested command. Every file
the docs name exists, and the job counts and the cost table in docs/cloud.md are the DAG's and the
cost model's."""

import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import yaml
from conftest import OWN_MAKE_ENV, REPO, copy_workflow

DOCS = [REPO / "README.md", REPO / "config" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
VENV_BIN = Path(sys.executable).parent

# Commands that cannot run on the machines this project is tested on, by their first word(s).
NOT_HERE = {
    "docker": "no container engine here (the Dockerfile is linted and parsed: test_dockerfile.py)",
    "sudo": "changes ownership on the host (before docker run)",
    "apptainer": "no container runtime here",
    "kubectl": "no cluster here",
    "sbatch": "no SLURM cluster here (the plugin's submission: test_slurm_submit.py)",
    "srun": "no SLURM cluster here",
    "salloc": "no SLURM cluster here",
    "nvidia-smi": "no GPU here",
    "git clone": "no route to GitHub from the test machines",
    "rsync": "copies between machines",
    "scp": "copies between machines",
    "aws": "a real bucket",
    "huggingface-cli": "no route to the hub here",
    "hf": "no route to the hub here",
    "bash scripts/setup_sa3.sh": "installs from GitHub; its offline route (a wheel) runs in test_docs.py",
}
# Shell steps around the commands: setting variables, making folders, changing directory.
SHELL_STEPS = ("export", "mkdir", "cd", "source", "chmod", "cp", "ln", "cat", "printf", "echo")
# Commands CI runs itself (.ci/run: make setup, make lint, make test).
BY_CI = ("make setup", "make test", "make lint", "bash .ci/run")
# Snakemake profiles whose executor needs a cluster; their dry runs are in test_profiles.py.
CLUSTER_PROFILES = {
    "profiles/kubernetes": "test_kubernetes_profile_dry_runs_the_paper_dag_against_s3"
}
# Arguments that name a GPU run's result, which no machine here has made.
GPU_RESULTS = ("results/gpu_check/",)


def fenced_commands(path: Path) -> list[str]:
    """The commands of a file's bash/sh/console blocks, continuation lines joined, comments and
    prompts stripped."""
    commands = []
    for block in re.finditer(
        r"^```(?:bash|sh|shell|console)\n(.*?)^```", path.read_text(), re.M | re.S
    ):
        text = re.sub(r"\\\n\s*", " ", block.group(1))
        for line in text.splitlines():
            line = line.strip().removeprefix("$ ")
            if not line or line.startswith("#"):
                continue
            words = shlex.split(line, comments=True)
            if words:
                commands.append(shlex.join(words))
    return commands


def split_chain(command: str) -> list[list[str]]:
    """`a && b` as [a, b]; pipes and redirections stay with their command."""
    parts, current = [], []
    for word in shlex.split(command):
        if word in ("&&", ";", "||"):
            parts.append(current)
            current = []
        else:
            current.append(word)
    return [p for p in parts + [current] if p]


def make_recipe(target_args: list[str]) -> list[list[str]]:
    """What `make TARGET [VAR=...]` runs, read with make -n (its prerequisites taken as done)."""
    out = subprocess.run(
        ["make", "-n", "--no-print-directory", "-o", "setup", *target_args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        env=OWN_MAKE_ENV,
    ).stdout
    return [shlex.split(line) for line in out.splitlines() if line.strip()]


def classify(argv: list[str]) -> tuple[str, str | list[str]]:
    """(kind, detail): kind is 'run' (detail: the argv to run here), 'not-here' (detail: why),
    'covered' (detail: the test that runs the same argv, then the argv), 'shell', 'ci', or
    'unknown'."""
    head = " ".join(argv[:2])
    for prefix, why in NOT_HERE.items():
        if argv[0] == prefix or head == prefix:
            return "not-here", why
    if argv[0] in SHELL_STEPS:
        return "shell", argv[0]
    if " ".join(argv) in BY_CI or head in BY_CI:
        return "ci", head
    if any(arg.startswith(GPU_RESULTS) for arg in argv):
        return "not-here", "reads a GPU run's result (scripts/gpu_check.sh on a GPU)"
    name = Path(argv[0]).name
    if name == "snakemake":
        for profile, test in CLUSTER_PROFILES.items():
            if profile in argv:
                return "not-here", f"needs its cluster; dry-run in test_profiles.py::{test}"
        if "--default-storage-provider" in argv:
            return "not-here", (
                "needs an S3 server; test_s3_storage.py runs it against moto, and "
                "test_docs_give_the_command_these_tests_run checks that it is this command"
            )
        dry = argv[1:] if {"-n", "--dry-run"} & set(argv) else [*argv[1:], "-n"]
        return "run", [sys.executable, "-m", "snakemake", *dry]
    if (
        name in ("python", "python3", "python3.11")
        and len(argv) > 1
        and argv[1].startswith("scripts/")
    ):
        return "run", [sys.executable, *argv[1:]]
    if argv[0] in ("scripts/gpu_check.sh", "bash") and "scripts/gpu_check.sh" in argv:
        rest = argv[argv.index("scripts/gpu_check.sh") + 1 :]
        if "--device" in rest and rest[rest.index("--device") + 1] == "cpu":
            return "covered", ["tests/test_gpu_check.py", *rest]
        return "not-here", "scripts/gpu_check.sh on a GPU (its CPU path: test_gpu_check.py)"
    launcher = ["python", "-m", "torch.distributed.run"]
    if (name == "torchrun" or argv[:3] == launcher) and "scripts/train.py" in argv:
        # placeholders for a run's arguments; the same launch on CPU/gloo, with real ones
        return "covered", ["tests/test_world_size.py", "--standalone", "scripts/train.py"]
    if argv[0] == "make":
        return "make", argv[1:]
    return "unknown", argv


def every_command():
    """(doc, command, argv) for each command of each doc, make targets expanded."""
    for doc in DOCS:
        for command in fenced_commands(doc):
            for argv in split_chain(command):
                yield doc.relative_to(REPO), command, argv


@cache
def plan() -> tuple[dict[tuple, list[str]], list[str]]:
    """The unique argvs to run (with where the docs give them), and the unclassified commands."""
    to_run: dict[tuple, list[str]] = {}
    unknown = []

    def add(doc, command, argv, depth=0):
        kind, detail = classify(argv)
        if kind == "make" and depth == 0:
            for inner in make_recipe(detail):
                inner = [
                    VENV_BIN.joinpath(Path(w).name).as_posix() if w.startswith(".venv/bin/") else w
                    for w in inner
                ]
                add(doc, command, inner, depth + 1)
        elif kind == "run":
            to_run.setdefault(tuple(detail), []).append(f"{doc}: {command}")
        elif kind == "covered":
            test, *args = detail
            if not all(f'"{arg}"' in (REPO / test).read_text() for arg in args):
                unknown.append(f"{doc}: {command}  ->  said to run in {test}, which lacks {args}")
        elif kind in ("unknown", "make"):
            unknown.append(f"{doc}: {command}  ->  {shlex.join(argv)}")

    for doc, command, argv in every_command():
        add(doc, command, argv)
    return to_run, unknown


def test_every_command_is_run_here_or_said_why_not():
    to_run, unknown = plan()
    assert not unknown, (
        "commands in the docs that this test neither runs nor explains:\n" + "\n".join(unknown)
    )
    assert len(to_run) >= 5  # dry runs, the cost script, gpu_check's CPU path, the site file


@pytest.fixture(scope="module")
def doc_workdir(tmp_path_factory):
    """A copy of the workflow with the site file the docs tell a newcomer to write."""
    workdir = copy_workflow(tmp_path_factory.mktemp("docs"))
    for name in ("benchmarks", "Makefile"):
        src = REPO / name
        (subprocess.run(["cp", "-a", str(src), str(workdir / name)], check=True))
    subprocess.run(
        [sys.executable, "scripts/make_site.py", "--pretrained", "medium-base"],
        cwd=workdir,
        check=True,
        capture_output=True,
    )
    return workdir


@pytest.mark.slow
@pytest.mark.parametrize("argv", sorted(plan()[0]), ids=lambda a: shlex.join(a[1:])[:80])
def test_documented_command_runs(argv, doc_workdir):
    env = {"PATH": f"{VENV_BIN}:/usr/bin:/bin", "HOME": str(doc_workdir), "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        list(argv), cwd=doc_workdir, capture_output=True, text=True, timeout=900, env=env
    )
    where = "\n".join(plan()[0][argv])
    assert result.returncode == 0, f"{where}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"


def named_files(text: str) -> set[str]:
    """Paths of the repository named in backticks (results/ and placeholders excluded)."""
    names = set()
    top = r"(?:eisbach|scripts|workflow|config|docs|tests|benchmarks|envs|profiles)"
    for match in re.finditer(rf"`({top}/[\w./*-]+|Dockerfile|Makefile|Snakefile|\.ci/run)`", text):
        names.add(match.group(1).rstrip("/.").split("::")[0])
    return names


def test_every_file_the_docs_name_exists():
    missing = []
    for doc in DOCS:
        for name in sorted(named_files(doc.read_text())):
            if not list(REPO.glob(name)):
                missing.append(f"{doc.relative_to(REPO)}: {name}")
    assert not missing, "\n".join(missing)


def test_cloud_docs_numbers_are_the_dag_and_the_cost_model():
    """docs/cloud.md's job count and cost table are what eisbach.cloud prints for the paper
    profile (whose job count test_profiles.py checks against the dry run)."""
    from eisbach import cloud

    config = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    est = cloud.estimate(config, cloud.dit_parameters())
    table = [line for line in cloud.markdown(est).splitlines() if line.startswith("|")]
    text = (REPO / "docs" / "cloud.md").read_text()
    cost = next(line for line in cloud.markdown(est).splitlines() if line.startswith("Cost at"))
    for line in [*table, cost]:
        assert line in text, f"docs/cloud.md lacks the cost model's line: {line}"
    from test_profiles import PAPER_JOBS  # what the paper DAG's dry run counts

    assert est["total_jobs"] == PAPER_JOBS
    jobs = {int(n.replace(",", "")) for n in re.findall(r"\b([\d,]+) jobs\b", text)}
    assert est["total_jobs"] in jobs
    readme_jobs = re.findall(r"\((\d+) jobs\)", (REPO / "README.md").read_text())
    assert all(int(n) == est["total_jobs"] for n in readme_jobs)


def test_cloud_docs_memory_and_volume_are_the_models():
    """docs/cloud.md's memory estimate at full size (what gpu_check.sh prints without a GPU) and
    its paper-grid transfer table are what eisbach.gpu_memory and benchmarks/storage_cost.py give
    for Medium's recorded counts."""
    from eisbach import gpu_memory

    text = (REPO / "docs" / "cloud.md").read_text()
    flat = " ".join(text.split())
    for line in gpu_memory.text(gpu_memory.main([])).splitlines():
        assert " ".join(line.split()) in flat, f"docs/cloud.md lacks the memory estimate's: {line}"

    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import storage_cost
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    rows = storage_cost.paper_volume()
    for r in rows:
        row = f"| {r['rule']} | {r['jobs']} | {r['gb_down']:,.1f} | {r['gb_up']:,.1f} |"
        assert row in text, f"docs/cloud.md lacks the paper volume's row: {row}"
    down, up = (round(sum(r[k] for r in rows)) for k in ("gb_down", "gb_up"))
    assert f"| **total** | | **{down:,}** | **{up:,}** |" in text


def shipped_text_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    kinds = (".md", ".py", ".smk", ".yaml", ".yml", ".sh", ".txt", ".j2", ".toml")
    return [
        REPO / name
        for name in listed
        if not name.startswith("tests/")
        and (name.endswith(kinds) or name in {"Dockerfile", "Makefile", "Snakefile"})
    ]


def test_nothing_shipped_points_outside_the_repository_or_at_missing_docs():
    """Code, schema, image and docs name only docs that exist, and never the design card that
    lives beside the checkout rather than in it."""
    problems = []
    for path in shipped_text_files():
        text = path.read_text(errors="replace")
        where = path.relative_to(REPO)
        if "DESIGN.md" in text:
            problems.append(f"{where}: cites DESIGN.md, which is not in the repository")
        for doc in sorted(set(re.findall(r"\bdocs/[\w.-]+\.md\b", text))):
            if not (REPO / doc).is_file():
                problems.append(f"{where}: names {doc}, which does not exist")
    assert not problems, "\n".join(problems)
