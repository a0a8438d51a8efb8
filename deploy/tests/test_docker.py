"""The worker image: hadolint, the build command CI uses, a small non-root runtime."""
import os
import re
import shlex
import tomllib

from conftest import REPO, run

DOCKERFILE = REPO / "Dockerfile"
TEST_SH = REPO / "deploy" / "local" / "test.sh"


def instructions(path=DOCKERFILE):
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def cargo_builds(text):
    """Every `cargo build ...` command in shell text, as token lists (up to ; && || | or a newline)."""
    found = []
    for line in re.sub(r"\\\n", " ", text).splitlines():
        if line.strip().startswith("#"):
            continue
        for m in re.finditer(r"cargo\s+build\b[^;&|\n]*", line):
            found.append(shlex.split(m.group(0)))
    return found


def test_hadolint_passes(tools_bin):
    r = run([str(tools_bin / "hadolint"), str(DOCKERFILE)], env=os.environ.copy())
    assert r.returncode == 0, r.stdout + r.stderr


def test_dockerfile_builds_with_the_ci_release_command():
    """The image's cargo command is the one deploy/local/test.sh (what CI runs) builds the
    release binary with, so the image holds what CI built and tested."""
    runs = [args for ins, args in instructions() if ins == "RUN"]
    image = [b for r in runs for b in cargo_builds(r)]
    assert len(image) == 1, f"one cargo build in the Dockerfile, found {image}"
    ci = [b for b in cargo_builds(TEST_SH.read_text()) if "--release" in b]
    assert ci, ("deploy/local/test.sh has no `cargo build --release ...` line: CI must build the release "
                f"binary with the Dockerfile's command: {' '.join(image[0])}")
    assert image[0] in ci, f"Dockerfile runs {' '.join(image[0])}; test.sh runs {[' '.join(c) for c in ci]}"
    assert {"--release", "--locked"} <= set(image[0])


def test_the_build_stage_uses_the_stated_msrv():
    """`rust-version` in Cargo.toml is the toolchain the image builds with (cargo refuses an
    older one, so CI's toolchain is at least it): one minimum supported version, stated once."""
    msrv = tomllib.loads((REPO / "Cargo.toml").read_text())["package"]["rust-version"]
    build = [args.split()[0] for ins, args in instructions() if ins == "FROM" and args.startswith("rust:")]
    assert build == [f"rust:{msrv}-bookworm"], f"Dockerfile builds with {build}; Cargo.toml's rust-version is {msrv}"


def test_multi_stage_small_non_root_runtime():
    ins = instructions()
    froms = [args for i, args in ins if i == "FROM"]
    assert len(froms) >= 2, "multi-stage"
    final_from = froms[-1]
    assert "distroless" in final_from or "-slim" in final_from, final_from
    assert ":latest" not in " ".join(froms) and all(":" in f.split()[0] for f in froms), "pinned base tags"
    final = ins[max(i for i, (w, _) in enumerate(ins) if w == "FROM"):]
    # Nothing is built or installed in the final stage: only the binary is copied in.
    assert not [a for w, a in final if w == "RUN"], "no RUN (so no build tools) in the runtime stage"
    copies = [a for w, a in final if w == "COPY"]
    assert copies == ["--from=build /src/target/release/stream-worker /usr/local/bin/stream-worker"], copies
    user = [a for w, a in final if w == "USER"]
    assert user and user[-1].split(":")[0] not in ("0", "root"), user
    assert ("STOPSIGNAL", "SIGTERM") in final
    (health,) = [a for w, a in final if w == "HEALTHCHECK"]
    assert health.endswith('CMD ["/usr/local/bin/stream-worker", "healthcheck"]'), health
    assert ("ENTRYPOINT", '["/usr/local/bin/stream-worker"]') in final
    assert ("EXPOSE", "9464") in final


def test_build_context_has_what_cargo_reads_and_nothing_else():
    ignore = [l.strip() for l in (REPO / ".dockerignore").read_text().splitlines()
              if l.strip() and not l.startswith("#")]
    assert ignore[0] == "*", "allow-list: everything out, then what the build needs"
    allowed = {l[1:].rstrip("/") for l in ignore[1:] if l.startswith("!")}
    copied = set()
    for w, a in instructions():
        if w == "COPY" and not a.startswith("--from"):
            copied |= {p.rstrip("/") for p in a.split()[:-1]}
    assert copied == allowed, (copied, allowed)
    # Every target path Cargo.toml declares is in the context (cargo reads them all).
    manifest = tomllib.loads((REPO / "Cargo.toml").read_text())
    for kind in ("bin", "bench", "test", "example"):
        for target in manifest.get(kind, []):
            path = target.get("path") or {"bench": f"benches/{target['name']}.rs"}.get(kind, "")
            if path:
                assert path.split("/")[0] in allowed, f"[[{kind}]] {target['name']}: {path} is not in the build context"
    if "build" in manifest.get("package", {}) or (REPO / "build.rs").exists():
        assert "build.rs" in allowed, "build.rs is not in the build context"
    for out in ("target", ".local", ".git"):
        assert out not in allowed


def test_ecs_health_check_is_the_image_one():
    from test_template import props
    (c,) = props("WorkerTaskDefinition")["ContainerDefinitions"]
    assert c["HealthCheck"]["Command"] == ["CMD", "/usr/local/bin/stream-worker", "healthcheck"]
    assert c["User"].split(":")[0] == [a for w, a in instructions() if w == "USER"][-1].split(":")[0]
