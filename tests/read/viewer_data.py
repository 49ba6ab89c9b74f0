"""Traces for the viewer's tests and screenshots, written through the real Delta sink."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import tracewire

XSS = ["<script>window.__xss=1;alert('x')</script>", "<img src=x onerror=\"window.__xss=2;alert('y')\">"]


def configure_delta(table: Path, **overrides: Any) -> None:
    settings: dict[str, Any] = {
        "enabled": True, "destination": f"delta:{table}", "batch_interval": 0.01,
        "sampling_size_threshold": 1 << 30, "max_trace_bytes": 64 << 20, "max_value_bytes": 16 << 20,
    }
    settings.update(overrides)
    tracewire.configure(**settings)


def chat_trace(i: int, session: str, user: str, *, fail: bool = False, answer: str | None = None,
               slow_ms: float = 0.0) -> str:
    """One chat request: root CHAIN -> retrieve (RETRIEVER) -> llm (LLM, token usage) -> tool."""
    with tracewire.start_span("POST /chat", span_type="CHAIN") as root:
        question = f"question {i}: what is the weather in city {i}?"
        root.set_inputs({"messages": [{"role": "user", "content": question}], "long": "L" * 1500})
        root.set_attribute("http.status_code", 500 if fail else 200)
        root.set_attribute("tracewire.ttfb_ms", 1.0)
        tracewire.update_current_trace(session_id=session, user=user, client_request_id=f"req-{i}",
                                       request_preview=question, metadata={"tenant": "acme"})
        with tracewire.start_span("retrieve", span_type="RETRIEVER") as span:
            span.set_inputs({"query": question})
            span.set_outputs([{"doc": f"doc-{i}-{k}"} for k in range(3)])
        with tracewire.start_span("llm", span_type="LLM") as span:
            span.set_inputs({"prompt": question})
            span.set_attribute("mlflow.chat.tokenUsage",
                               {"input_tokens": 10 + i, "output_tokens": 5, "total_tokens": 15 + i})
            if slow_ms:
                time.sleep(slow_ms / 1000)  # a slower span for compare, not waiting for export
            span.set_outputs({"text": answer or f"answer {i}"})
        if fail:
            try:
                with tracewire.start_span("tool", span_type="TOOL") as span:
                    span.set_inputs({"city": i})
                    raise RuntimeError(f"weather service down for city {i}")
            except RuntimeError:
                pass
            tracewire.update_current_trace(state="ERROR", response_preview="error")
        else:
            tracewire.update_current_trace(response_preview=answer or f"answer {i}")
        root.set_outputs({"answer": answer or f"answer {i}"})
        trace_id = root.trace_id
    return trace_id


def xss_trace() -> str:
    with tracewire.start_span(XSS[1], span_type="CHAIN") as root:
        root.set_inputs({"text": XSS[0], XSS[1]: XSS[0]})
        root.set_attribute("evil", XSS[1])
        tracewire.update_current_trace(session_id="sess-xss", user=XSS[1], request_preview=XSS[0],
                                       response_preview=XSS[1], metadata={"note": XSS[0]})
        with tracewire.start_span(XSS[0], span_type="<b>TOOL</b>") as span:
            span.set_inputs(XSS[0])
            span.set_outputs(XSS[1])
            span.add_event("exception", {"exception.type": XSS[1], "exception.message": XSS[0],
                                         "exception.stacktrace": XSS[0]})
        root.set_outputs(XSS[1])
        return root.trace_id


def big_trace(n_spans: int) -> str:
    """A trace of ``n_spans`` spans: 100 agent steps, each with tool calls under it."""
    with tracewire.start_span("POST /agent", span_type="AGENT") as root:
        root.set_inputs({"task": "big"})
        made = 1
        step = 0
        while made < n_spans:
            with tracewire.start_span(f"step {step}", span_type="CHAIN") as parent:
                parent.set_inputs({"step": step})
                made += 1
                for k in range(min(199, n_spans - made)):
                    with tracewire.start_span(f"tool {k}", span_type="TOOL") as span:
                        span.set_inputs({"k": k})
                        span.set_outputs({"ok": True})
                    made += 1
            step += 1
        return root.trace_id


def write_demo(table: Path, *, big: int = 0) -> dict[str, Any]:
    """The demo table: 12 chat traces over 3 sessions (2 errors), an XSS trace, optionally a big one."""
    configure_delta(table)
    ids: dict[str, Any] = {"chat": []}
    try:
        for i in range(12):
            ids["chat"].append(chat_trace(i, f"sess-{i % 3}", f"user-{i % 2}", fail=i in (4, 9)))
        ids["slow"] = chat_trace(100, "sess-cmp", "user-0", answer="a different answer", slow_ms=30)
        ids["xss"] = xss_trace()
        if big:
            ids["big"] = big_trace(big)
        assert tracewire.flush(60)
        configure_delta(table, max_trace_bytes=20_000)  # this one is cut to fit (SPEC §7.4)
        with tracewire.start_span("POST /upload", span_type="CHAIN") as root:
            root.set_inputs({"document": "D" * 100_000})
            ids["truncated"] = root.trace_id
        assert tracewire.flush(60)
    finally:
        tracewire.shutdown()
        tracewire.configure(enabled=False)
    return ids
