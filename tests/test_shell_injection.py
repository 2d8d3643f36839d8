"""No config value reaches a shell line unquoted (issue 14), and the schema checks the keys that
reach a command line (profile) or the model's shape (num_heads against embed_dim)."""

import json
import os
import subprocess
import sys

import jsonschema
import pytest
import yaml
from conftest import REPO, run_snakemake

SCHEMA = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())


def base_config(edit=None) -> dict:
    config = yaml.safe_load((REPO / "config/test.yaml").read_text())
    if edit:
        edit(config)
    return config


def errors(config) -> list[tuple[list, str]]:
    validator = jsonschema.Draft202012Validator(SCHEMA)
    return [(list(e.absolute_path), e.message) for e in validator.iter_errors(config)]


def poison(config: dict, evil: str) -> list[str]:
    """Puts ``evil`` into every free-text field the schema allows with the tiny backend; the
    dotted keys it filled."""
    data = config["data"]
    for key in ("musiccaps_csv", "audio_dir", "captions_csv", "ytdlp", "cookies"):
        data[key] = f"{evil}/{key}"
    data["ytdlp_args"] = [evil]
    for prompt in config["sample"]["prompts"]:
        prompt["text"] = f"{prompt['text']} {evil}"
    config["train"]["target_modules"] = [evil]
    config["base"]["target_modules"] = [evil]
    filled = [f"data.{k}" for k in ("musiccaps_csv", "audio_dir", "captions_csv", "ytdlp")]
    return [*filled, "data.cookies", "data.ytdlp_args", "sample.prompts.text", "*.target_modules"]


def test_every_shell_line_passes_free_text_as_inert_argv(workflow_copy, tmp_path):
    marker = tmp_path / "PWNED"
    evil = f"$(touch {marker}) `touch {marker}` ; touch {marker} # ' \" \\"
    config = base_config()
    filled = poison(config, evil)
    assert errors(config) == [], (
        "the schema should accept these strings; the shell must not run them"
    )
    path = workflow_copy / "evil.yaml"
    path.write_text(yaml.safe_dump(config))

    result = run_snakemake(
        workflow_copy, "-n", "-p", "--forceall", "--cores", "1", "--configfile", str(path)
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    commands = [
        line.removeprefix("Shell command: ")
        for line in result.stdout.splitlines()
        if line.startswith("Shell command: ") and line != "Shell command: None"  # rule all
    ]
    rules = {f"scripts/{s}.py" for s in ("data", "latents", "train", "sample", "evaluate")}
    assert rules <= {w for c in commands for w in c.split() if w.endswith(".py")}
    assert sum(str(marker) in c for c in commands) >= 10, "the values never reached a command"

    # Run every command, with a stub that records its argv standing in for the interpreter.
    stub = tmp_path / "stub"
    argv_log = tmp_path / "argv.jsonl"
    stub.write_text(
        f"#!{sys.executable}\nimport json, sys\n"
        f"open({str(argv_log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
    )
    stub.chmod(0o755)
    # rules call `python`, a function of the shell prefix (common.smk) that -p does not print
    python = "python"
    for sub in ("data", "latents", "train", "sample", "evaluate", "figures", "report"):
        (workflow_copy / "results" / "logs" / sub).mkdir(parents=True, exist_ok=True)
    for command in commands:
        assert command.startswith(python + " "), command[:200]
        run = subprocess.run(
            ["bash", "-c", str(stub) + command[len(python) :]],
            cwd=workflow_copy,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 0, (command[:300], run.stderr)
    assert not marker.exists(), f"a shell line ran text from one of {filled}"

    argvs = [json.loads(line) for line in argv_log.read_text().splitlines()]
    assert len(argvs) == len(commands)
    # The prompt texts arrive intact, inside the one JSON argument of the sample section.
    sample_args = [a[a.index("--sample-json") + 1] for a in argvs if "--sample-json" in a]
    assert sample_args and all(
        evil in p["text"] for s in sample_args for p in json.loads(s)["prompts"]
    )


@pytest.mark.parametrize("profile", ["x$(touch /tmp/PWN)", "two words", "a;b", "", "-rf", "x" * 65])
def test_the_schema_rejects_a_profile_that_is_not_a_plain_name(profile):
    found = errors(base_config(lambda c: c.update(profile=profile)))
    assert [path for path, _ in found] == [["profile"]], found


def test_snakemake_stops_an_injected_profile_before_any_job(workflow_copy):
    config = base_config(lambda c: c.update(profile="x$(touch PWNED)"))
    path = workflow_copy / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    result = run_snakemake(workflow_copy, "--cores", "1", "--configfile", str(path))
    assert result.returncode != 0
    assert "profile" in result.stdout + result.stderr
    assert not (workflow_copy / "results").exists()
    assert not (workflow_copy / "PWNED").exists()


@pytest.mark.parametrize(
    "embed_dim, num_heads, ok",
    [(64, 2, True), (128, 4, True), (192, 6, True), (64, 3, False), (96, 4, False), (64, 4, False)],
)
def test_num_heads_must_split_embed_dim_into_heads_of_at_least_32(embed_dim, num_heads, ok):
    def edit(config):
        config["backend"]["tiny"].update(embed_dim=embed_dim, num_heads=num_heads)

    found = errors(base_config(edit))
    if ok:
        assert found == []
    else:
        assert found and all(p == ["backend", "tiny", "embed_dim"] for p, _ in found), found


def test_shipped_configs_pass_the_new_checks():
    for name in ("config.yaml", "test.yaml", "paper.yaml", "study.yaml"):
        config = yaml.safe_load((REPO / "config" / name).read_text())
        assert errors(config) == [], name
    assert os.path.exists(REPO / "workflow/rules/report.smk")
