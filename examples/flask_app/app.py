"""A RAG-shaped Flask service traced by tracewire with one middleware line.

    ENABLE_TRACING=true TRACING_DESTINATION=jsonl:./traces.jsonl \\
        gunicorn -w 2 --preload examples.flask_app.app:app

``POST /chat`` answers with JSON, ``POST /chat/stream`` streams the answer as server-sent events
from a generator (the request span stays open until the server has sent the last chunk),
``GET /documents/<doc_id>`` looks one document up, ``GET /health`` is not traced.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from flask import Flask, Response, jsonify, request

import tracewire
from examples.rag import CORPUS, generate, rerank, retrieve
from middleware import TracingWSGIMiddleware
from tracewire import SpanType

app = Flask(__name__)
app.wsgi_app = TracingWSGIMiddleware(app.wsgi_app, exclude_paths=[r"^/health$"])  # type: ignore[method-assign]


def _chat_request() -> tuple[str, int, int] | Response:
    body = request.get_json(silent=True)
    question = body.get("question") if isinstance(body, dict) else None
    if not isinstance(question, str) or not question.strip() or len(question) > 4000:
        response = jsonify({"detail": "body must be JSON with a non-empty 'question' string"})
        response.status_code = 422
        return response
    top_k = body.get("top_k", 4) if isinstance(body, dict) else 4
    delay = body.get("token_delay_ms", 0) if isinstance(body, dict) else 0
    top_k = min(max(int(top_k), 1), len(CORPUS)) if isinstance(top_k, int) else 4
    delay = min(max(int(delay), 0), 1000) if isinstance(delay, int) else 0
    return question, top_k, delay


@app.post("/chat")
def chat() -> Any:
    parsed = _chat_request()
    if isinstance(parsed, Response):
        return parsed
    question, top_k, _ = parsed
    documents = rerank(question, retrieve(question, top_k))
    answer = "".join(generate(question, documents))
    tracewire.update_current_trace(
        tags={"endpoint": "chat"},
        metadata={"top_k": top_k, "sources": ",".join(d["id"] for d in documents)},
        request_preview=question,
        response_preview=answer,
    )
    return {"answer": answer, "sources": [d["id"] for d in documents],
            "trace_id": tracewire.get_active_trace_id()}


@app.post("/chat/stream")
def chat_stream() -> Any:
    parsed = _chat_request()
    if isinstance(parsed, Response):
        return parsed
    question, top_k, delay_ms = parsed
    documents = rerank(question, retrieve(question, top_k))
    tracewire.update_current_trace(tags={"endpoint": "chat_stream"}, request_preview=question)

    def events() -> Iterator[str]:
        answer = []
        for token in generate(question, documents, delay_ms / 1000):
            answer.append(token)
            yield f"data: {json.dumps({'delta': token})}\n\n"
        tracewire.update_current_trace(response_preview="".join(answer))
        yield "event: done\ndata: {}\n\n"

    return Response(events(), mimetype="text/event-stream")


@app.get("/documents/<doc_id>")
def get_document(doc_id: str) -> Any:
    with tracewire.start_span("lookup", span_type=SpanType.RETRIEVER) as span:
        span.set_inputs({"doc_id": doc_id})
        document = next((d for d in CORPUS if d["id"] == doc_id), None)
    if document is None:
        return {"detail": f"no document {doc_id!r}"}, 404
    return document


@app.get("/health")
def health() -> Any:
    return {"status": "ok"}
