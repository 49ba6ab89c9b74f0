"""A RAG-shaped FastAPI service traced by tracewire with one middleware line.

    ENABLE_TRACING=true TRACING_DESTINATION=jsonl:./traces.jsonl uvicorn examples.fastapi_app.app:app

``POST /chat`` answers with JSON, ``POST /chat/stream`` streams the answer as server-sent events,
``GET /documents/{doc_id}`` is a sync endpoint (FastAPI runs it in a worker thread: its spans
still attach to the request), ``GET /health`` is not traced.

OpenAI mode: with ``OPENAI_BASE_URL`` set (any OpenAI-compatible server; ``OPENAI_API_KEY`` and
``OPENAI_MODEL`` optional) the answer comes from the ``openai`` client instead of the fake LLM;
``TRACING_AUTOLOG=openai`` then records each call as a CHAT_MODEL span with its token usage.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

import tracewire
from examples.rag import CORPUS, agenerate, prompt_messages, rerank, retrieve
from middleware import TracingMiddleware
from tracewire import SpanType

app = FastAPI(title="tracewire example: RAG chat")
app.add_middleware(TracingMiddleware, exclude_paths=[r"^/health$"])


OPENAI_MODEL = os.environ.get("OPENAI_MODEL", "gpt-4o-mini")
_llm: Any = None
if os.environ.get("OPENAI_BASE_URL"):
    import openai

    # Reads OPENAI_BASE_URL; a local server (vLLM, Ollama, ...) needs no real key.
    _llm = openai.AsyncOpenAI(api_key=os.environ.get("OPENAI_API_KEY") or "unused")


async def answer_stream(
    question: str, documents: list[dict[str, Any]], delay: float = 0.0
) -> AsyncIterator[str]:
    """The answer's text deltas: from the OpenAI client in OpenAI mode, else from the fake LLM."""
    if _llm is None:
        async for token in agenerate(question, documents, delay):
            yield token
        return
    stream = await _llm.chat.completions.create(
        model=OPENAI_MODEL, messages=prompt_messages(question, documents), stream=True,
        stream_options={"include_usage": True},
    )
    async with stream:
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                yield chunk.choices[0].delta.content


async def answer(question: str, documents: list[dict[str, Any]]) -> str:
    if _llm is None:
        return "".join([token async for token in agenerate(question, documents)])
    completion = await _llm.chat.completions.create(
        model=OPENAI_MODEL, messages=prompt_messages(question, documents))
    return str(completion.choices[0].message.content or "")


class ChatRequest(BaseModel):
    question: str = Field(min_length=1, max_length=4000)
    top_k: int = Field(default=4, ge=1, le=len(CORPUS))
    token_delay_ms: int = Field(default=0, ge=0, le=1000, description="slow the fake LLM down")


@app.post("/chat")
async def chat(request: ChatRequest) -> dict[str, Any]:
    documents = rerank(request.question, retrieve(request.question, request.top_k))
    text = await answer(request.question, documents)
    tracewire.update_current_trace(
        tags={"endpoint": "chat"},
        metadata={"top_k": request.top_k, "sources": ",".join(d["id"] for d in documents)},
        request_preview=request.question,
        response_preview=text,
    )
    return {"answer": text, "sources": [d["id"] for d in documents],
            "trace_id": tracewire.get_active_trace_id()}


@app.post("/chat/stream")
async def chat_stream(request: ChatRequest) -> StreamingResponse:
    documents = rerank(request.question, retrieve(request.question, request.top_k))
    tracewire.update_current_trace(tags={"endpoint": "chat_stream"}, request_preview=request.question)

    async def events() -> AsyncIterator[str]:
        answer = []
        async for token in answer_stream(request.question, documents, request.token_delay_ms / 1000):
            answer.append(token)
            yield f"data: {json.dumps({'delta': token})}\n\n"
        # The body is sent while the request span is still open, so the trace can still be enriched.
        tracewire.update_current_trace(response_preview="".join(answer))
        yield "event: done\ndata: {}\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


@app.get("/documents/{doc_id}")
def get_document(doc_id: str) -> dict[str, str]:
    with tracewire.start_span("lookup", span_type=SpanType.RETRIEVER) as span:
        span.set_inputs({"doc_id": doc_id})
        document = next((d for d in CORPUS if d["id"] == doc_id), None)
    if document is None:
        raise HTTPException(status_code=404, detail=f"no document {doc_id!r}")
    return document


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}
