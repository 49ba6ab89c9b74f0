from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

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
