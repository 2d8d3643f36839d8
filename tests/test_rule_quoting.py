"""Every placeholder on a rule's shell line is quoted with ``:q`` (issue 24).

The rule files are compiled with Snakemake's own parser, and each ``shell:`` command is read
from the compiled code, so the test sees what Snakemake formats: every ``{...}`` field of it
must end in ``:q``, whether its value comes from config today or not. A shell line that is not a
plain string (an f-string, a variable) cannot be checked, so it fails too."""

import ast
import string
import types
from pathlib import Path

import pytest
from conftest import REPO
from snakemake import parser
from snakemake.sourcecache import LocalSourceFile

RULE_FILES = sorted([REPO / "Snakefile", *(REPO / "workflow/rules").glob("*.smk")])


def shell_lines(path: Path) -> list[tuple[str, object]]:
    """(rule name, shell command) of each rule in a Snakemake file; the command is the string
    as written, or the AST node where it is not a plain string."""
    files = types.SimpleNamespace(
        open=lambda source: open(source.get_path_or_uri(secret_free=True), encoding="utf-8")
    )
    compiled, _ = parser.parse(
        LocalSourceFile(str(path)), types.SimpleNamespace(sourcecache=files), {}
    )
    found = []
    for node in ast.walk(ast.parse(compiled)):
        if not isinstance(node, ast.FunctionDef):
            continue
        calls = [d for d in node.decorator_list if isinstance(d, ast.Call)]
        name = next(
            (k.value.value for d in calls for k in d.keywords if k.arg == "name"), node.name
        )
        for call in calls:
            if ast.unparse(call.func) == "workflow.shellcmd":
                [arg] = call.args
                command = arg.value if isinstance(arg, ast.Constant) else arg
                found.append((name, command))
    return found


def unquoted_placeholders(command: str) -> list[str]:
    """The fields of a shell command that Snakemake would insert without shell quoting."""
    return [
        "{" + field + (f":{spec}" if spec else "") + "}"
        for _, field, spec, _ in string.Formatter().parse(command)
        if field is not None and not (spec or "").endswith("q")
    ]


def test_the_check_finds_an_unquoted_placeholder(tmp_path):
    rules = tmp_path / "bad.smk"
    rules.write_text(
        "rule bad:\n"
        "    output:\n"
        '        "out.txt",\n'
        "    shell:\n"
        '        "echo {{literal}} {input:q} {output} {params.x:u} "\n'
        '        "{wildcards.sample} > {log:q}"\n'
        "\n\n"
        "rule fstring:\n"
        "    shell:\n"
        "        f\"echo {'{output}'}\"\n"
    )
    [(name, command), (other, node)] = shell_lines(rules)
    assert name == "bad"
    assert unquoted_placeholders(command) == ["{output}", "{params.x:u}", "{wildcards.sample}"]
    assert other == "fstring" and not isinstance(node, str)


def test_the_rule_files_have_shell_lines_to_check():
    rules = {name for path in RULE_FILES for name, _ in shell_lines(path)}
    assert {"evaluate", "figures", "report_html", "finetune", "sample_run"} <= rules, rules


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_every_placeholder_on_a_shell_line_is_quoted(path):
    problems = {}
    for name, command in shell_lines(path):
        if not isinstance(command, str):
            problems[name] = f"not a plain string: {ast.unparse(command)}"
        elif unquoted := unquoted_placeholders(command):
            problems[name] = unquoted
    assert problems == {}, f"{path.relative_to(REPO)}: add :q to {problems}"
