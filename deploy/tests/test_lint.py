"""Linters on the template: cfn-lint and checkov pass, every suppression says why."""
import re

from conftest import REPO, TEMPLATE, load_template, run

import os


def test_cfn_lint_passes(tools_bin):
    r = run([str(tools_bin / "cfn-lint"), str(TEMPLATE)], env=os.environ.copy())
    assert r.returncode == 0, f"cfn-lint:\n{r.stdout}{r.stderr}"


def test_checkov_passes(tools_bin):
    r = run([str(tools_bin / "checkov"), "--file", str(TEMPLATE), "--framework", "cloudformation",
             "--skip-download", "--compact", "--quiet", "--output", "cli"],
            env={**os.environ, "BC_SKIP_MAPPING": "TRUE"})
    assert r.returncode == 0, f"checkov:\n{r.stdout}{r.stderr}"


def test_every_checkov_skip_is_justified_next_to_its_resource():
    tpl = load_template()
    skips = []
    for name, res in tpl["Resources"].items():
        for skip in res.get("Metadata", {}).get("checkov", {}).get("skip", []):
            skips.append((name, skip["id"]))
            comment = skip.get("comment", "")
            assert len(comment.split()) >= 5, f"{name}: checkov skip {skip['id']} needs a reason, got {comment!r}"
    assert skips, "expected the justified skips to be found (is the Metadata layout still checkov's?)"


def test_every_cfn_lint_suppression_is_explained():
    """A cfn-lint ignore_checks must have a comment right above it naming the rule and why."""
    lines = TEMPLATE.read_text().splitlines()
    found = 0
    for i, line in enumerate(lines):
        m = re.search(r"ignore_checks:\s*\[(.*)\]", line)
        if not m:
            continue
        found += 1
        comment = []
        j = i - 1
        while j >= 0 and lines[j].strip().startswith("#"):
            comment.insert(0, lines[j].strip("# ").strip())
            j -= 1
        text = " ".join(comment)
        for rule in (r.strip() for r in m.group(1).split(",")):
            assert rule in text and len(text.split()) >= 8, \
                f"template.yaml:{i + 1}: suppression of {rule} needs a comment above it that names it and says why"
    # No suppression anywhere else (template-wide Metadata or inline rules).
    tpl = load_template()
    assert "cfn-lint" not in tpl.get("Metadata", {}), "template-wide cfn-lint suppressions are not allowed"
    assert found == sum(1 for r in tpl["Resources"].values() if "cfn-lint" in r.get("Metadata", {}))
