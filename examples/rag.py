"""The RAG pipeline both example services share: retrieve -> rerank -> generate.

Everything is deterministic (a word-overlap retriever and reranker over a tiny corpus, and a fake
LLM that streams the answer word by word), so the examples run offline and their traces can be
asserted on.  Each step is a ``@tracewire.trace`` child span of the request's root span; the LLM
reports token usage the way a real client wrapper would.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import tracewire
from tracewire import SpanType

CORPUS: list[dict[str, str]] = [
    {"id": "doc-1", "title": "Enabling tracing",
     "text": "Set ENABLE_TRACING=true on the deployment and add one middleware line to the app."},
    {"id": "doc-2", "title": "Request headers",
     "text": "X-Request-ID, X-Session-ID and X-User-ID headers are copied into every trace."},
    {"id": "doc-3", "title": "Streaming responses",
     "text": "Streamed responses keep the request span open until the last chunk is sent."},
    {"id": "doc-4", "title": "Inference tables",
     "text": "Finished traces are exported in the background to Kafka and to a Delta inference table."},
    {"id": "doc-5", "title": "Sampling",
     "text": "Large traces are sampled by size so the bytes kept per trace stay bounded."},
    {"id": "doc-6", "title": "Child spans",
     "text": "Decorate retrieval, reranking and LLM calls with tracewire.trace to add child spans."},
]
_WORD = re.compile(r"[a-z0-9]+")


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


@tracewire.trace(span_type=SpanType.RETRIEVER)
def retrieve(question: str, k: int = 4) -> list[dict[str, Any]]:
    """The ``k`` documents sharing the most words with the question."""
    query = _words(question)
    scored: list[dict[str, Any]] = [
        {**doc, "score": len(query & _words(doc["title"] + " " + doc["text"]))} for doc in CORPUS
    ]
    scored.sort(key=lambda d: (-d["score"], d["id"]))
    return scored[:k]


@tracewire.trace(span_type=SpanType.RERANKER)
def rerank(question: str, documents: list[dict[str, Any]], top_n: int = 2) -> list[dict[str, Any]]:
    """Re-score by overlap density (a stand-in for a cross-encoder) and keep the best ``top_n``."""
    query = _words(question)
    for doc in documents:
        words = _words(doc["text"])
        doc["rerank_score"] = round(len(query & words) / (1 + len(words)) ** 0.5, 4)
    return sorted(documents, key=lambda d: (-d["rerank_score"], d["id"]))[:top_n]


def answer_tokens(question: str, documents: list[dict[str, Any]]) -> list[str]:
    """The fake LLM's answer, as the tokens it streams."""
    if documents:
        text = f"According to \"{documents[0]['title']}\": {documents[0]['text']}"
    else:
        text = "I could not find anything about that."
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def prompt_messages(question: str, documents: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The chat messages a real LLM gets: the retrieved documents as context, then the question."""
    context = "\n".join(f"[{d['id']}] {d['title']}: {d['text']}" for d in documents)
    return [{"role": "system", "content": "Answer from these documents only.\n" + context},
            {"role": "user", "content": question}]


def _report_usage(question: str, documents: list[dict[str, Any]], tokens: list[str]) -> None:
    prompt = question + " ".join(d["text"] for d in documents)
    usage = {"input_tokens": len(prompt.split()), "output_tokens": len(tokens)}
    usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
    span = tracewire.get_current_active_span()
    if span is not None:
        span.set_attribute("mlflow.chat.tokenUsage", usage)
        span.set_attribute("llm.model", "fake-llm-1")


@tracewire.trace(name="llm.generate", span_type=SpanType.LLM, output_reducer="".join)
async def agenerate(
    question: str, documents: list[dict[str, Any]], token_delay: float = 0.0
) -> AsyncIterator[str]:
    """Stream the answer token by token (async, for the FastAPI service)."""
    tokens = answer_tokens(question, documents)
    for token in tokens:
        if token_delay:
            await asyncio.sleep(token_delay)
        yield token
    _report_usage(question, documents, tokens)


@tracewire.trace(name="llm.generate", span_type=SpanType.LLM, output_reducer="".join)
def generate(question: str, documents: list[dict[str, Any]], token_delay: float = 0.0) -> Iterator[str]:
    """Stream the answer token by token (sync, for the Flask service)."""
    tokens = answer_tokens(question, documents)
    for token in tokens:
        if token_delay:
            time.sleep(token_delay)
        yield token
    _report_usage(question, documents, tokens)
