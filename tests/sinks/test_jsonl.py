from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import tracewire
from sinks import JsonlSink


def test_jsonl_uri_writes_one_trace_per_line(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "traces.jsonl"
    tracewire.configure(enabled=True, destination=f"jsonl:{path}", batch_interval=0.01)
    try:
        for i in range(5):
            with tracewire.start_span(f"s{i}"):
                pass
        assert tracewire.flush()
    finally:
        tracewire.shutdown()
        tracewire.configure(enabled=False)
    lines = path.read_text().splitlines()
    assert [tracewire.Trace.from_json(line).data.spans[0].name for line in lines] == [
        f"s{i}" for i in range(5)
    ]


def test_jsonl_sink_instance(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path / "t.jsonl")
    tracewire.configure(enabled=True, sinks=[sink])
    try:
        with tracewire.start_span("x"):
            pass
        assert tracewire.flush()
    finally:
        tracewire.shutdown()
        tracewire.configure(enabled=False)
    assert len((tmp_path / "t.jsonl").read_text().splitlines()) == 1


def test_several_processes_append_without_interleaving(tmp_path: Path) -> None:
    path = tmp_path / "shared.jsonl"
    script = textwrap.dedent(f"""
        import sys, tracewire
        tracewire.configure(enabled=True, destination="jsonl:{path}", batch_size=7)
        for i in range(300):
            with tracewire.start_span(f"p{{sys.argv[1]}}-{{i}}") as span:
                span.set_outputs("z" * 5000)
        assert tracewire.flush(30)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(n)]) for n in range(4)]
    assert [p.wait(120) for p in procs] == [0, 0, 0, 0]
    names = [tracewire.Trace.from_json(line).data.spans[0].name
             for line in path.read_text().splitlines()]
    assert sorted(names) == sorted(f"p{n}-{i}" for n in range(4) for i in range(300))


def _traces_in(path: Path) -> list[str]:
    """Span names of the file's lines; every line must be one whole trace."""
    return [tracewire.Trace.from_json(line).data.spans[0].name for line in path.read_bytes().split(b"\n")
            if line]


def _emit(count: int, prefix: str) -> None:
    for i in range(count):
        with tracewire.start_span(f"{prefix}{i}") as span:
            span.set_outputs("y" * 200)


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB filesystem (needs the privilege to mount; skipped without it)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_writes_whole_batches_and_retries_deliver_each_trace_once(small_tmpfs: Path) -> None:
    path = small_tmpfs / "traces.jsonl"
    filler = small_tmpfs / "filler"
    free = shutil.disk_usage(small_tmpfs).free
    filler.write_bytes(b"\0" * (free - 24 * 1024))  # room for a few batches, not all of them
    tracewire.configure(enabled=True, destination=f"jsonl:{path}", batch_size=7, batch_interval=0.01)
    try:
        _emit(300, "t")
        assert not tracewire.flush(2), "the disk is full: not everything can be written"
        stats = tracewire.stats()
        assert stats["sinks"][f"jsonl:{path}"]["retries"] > 0
        written = _traces_in(path)  # only whole lines, every one a trace
        assert 0 < len(written) < 300
        assert len(set(written)) == len(written)
        filler.unlink()
        assert tracewire.flush(30)
    finally:
        tracewire.shutdown()
        tracewire.configure(enabled=False)
    names = _traces_in(path)
    assert sorted(names) == sorted(f"t{i}" for i in range(300))


def test_file_size_limit_keeps_whole_batches_and_retries_deliver(tmp_path: Path) -> None:
    """RLIMIT_FSIZE (no privilege needed): writes past the limit fail with EFBIG part-way."""
    path = tmp_path / "limited.jsonl"
    script = textwrap.dedent(f"""
        import resource, signal, sys, tracewire
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, resource.RLIM_INFINITY))
        tracewire.configure(enabled=True, destination="jsonl:{path}", batch_size=7,
                            batch_interval=0.01)
        for i in range(300):
            with tracewire.start_span(f"t{{i}}") as span:
                span.set_outputs("y" * 200)
        assert not tracewire.flush(2)
        assert tracewire.stats()["sinks"]["jsonl:{path}"]["retries"] > 0
        with open("{path}", "rb") as f:
            lines = f.read().split(b"\\n")
        assert lines[-1] == b"", "the file ends with a whole line"
        names = [tracewire.Trace.from_json(line).data.spans[0].name for line in lines[:-1]]
        assert 0 < len(names) < 300 and len(set(names)) == len(names), names
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        assert tracewire.flush(30)
        tracewire.shutdown()
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert sorted(_traces_in(path)) == sorted(f"t{i}" for i in range(300))
