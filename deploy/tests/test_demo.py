"""deploy/local/demo.sh as a newcomer runs it: on a terminal (a pseudo-terminal here),
until it shows progress; then the leases watched live with the command the demo
prints, one worker stopped as it suggests (the other takes its leases, the demo goes
on), and Ctrl-C. One Ctrl-C must stop every worker gracefully: each releases its
leases, so the final view lists no owners."""
import os
import pty
import re
import select
import signal
import socket
import tempfile
import time

from conftest import REPO


def free_port_pair():
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue


def read_until(fd, pattern, limit):
    """Terminal output until `pattern` matches (or the end, with pattern None), up to `limit` s."""
    out = b""
    end = time.time() + limit
    while time.time() < end:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the terminal closed: the script ended
            break
        if not chunk:
            break
        out += chunk
        if pattern and re.search(pattern, out):
            return out, True
    return out, pattern is None


def test_ctrl_c_stops_the_demo_gracefully_and_every_lease_is_released():
    run_dir = tempfile.mkdtemp(prefix="demo-emulators-")
    env = dict(os.environ, EMULATORS_RUN_DIR=run_dir, DEMO_METRICS_PORT=str(free_port_pair()),
               DEMO_STREAM="demo-ctrl-c")
    pid, fd = pty.fork()
    if pid == 0:  # the child: demo.sh on the pseudo-terminal, as from a shell
        os.chdir(REPO)
        os.execvpe("bash", ["bash", "deploy/local/demo.sh"], env)
    try:
        # Two progress lines with rows: the workers hold leases and write.
        shown, ok = read_until(fd, rb"tweets: [1-9][^\n]*\n[^\n]*tweets: [1-9][^\n]*leases per worker: \{'worker", 600)
        assert ok, shown.decode(errors="replace")
        text = shown.decode(errors="replace")
        watch = re.search(r'(eval "\$\(deploy/local/emulators.sh env\)" && \S+ status --watch --stream \S+)', text)
        assert watch, text
        kill = re.search(r"\(kill (\d+): worker-1", text)
        assert kill, text
        # The printed watch command, on a terminal of its own: redrawn views.
        wpid, wfd = pty.fork()
        if wpid == 0:
            os.chdir(REPO)
            os.execvpe("bash", ["bash", "-c", watch.group(1)], env)
        try:
            views, ok = read_until(wfd, rb"(\x1b\[H\x1b\[2J[\s\S]*workers seen: 2[\s\S]*){2}", 60)
            assert ok, views.decode(errors="replace")
        finally:
            os.kill(wpid, signal.SIGKILL)
            os.waitpid(wpid, 0)
        os.kill(int(kill.group(1)), signal.SIGTERM)
        moved, ok = read_until(fd, rb"worker-1 exited[\s\S]*leases per worker: \{'worker-2': 4\}", 120)
        assert ok, moved.decode(errors="replace")
        os.write(fd, b"\x03")  # Ctrl-C: the terminal sends SIGINT to the foreground group
        rest, _ = read_until(fd, None, 120)
        _, status = os.waitpid(pid, 0)
    except BaseException:
        os.kill(pid, signal.SIGKILL)
        raise
    text = rest.decode(errors="replace")
    leases = re.findall(r"shardId-\d+: owner=(\S+)", text)
    assert len(leases) == 4, text
    assert set(leases) == {"-"}, f"leases still owned after Ctrl-C:\n{text}"
    assert "emulators: stopped" in text, text
    assert os.WIFEXITED(status), status
    # The worker logs are files: plain text, no colour codes.
    for name in ("worker-1.log", "worker-2.log"):
        log = (REPO / ".local" / "demo" / name).read_text()
        assert "\x1b[" not in log, f"colour codes in {name}"
        assert "second signal" not in log, f"{name} got two signals:\n{log[-2000:]}"
