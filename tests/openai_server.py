"""A local OpenAI-compatible HTTP server for the tests, the example and the benchmark (127.0.0.1 only).

Deterministic answers: ``word0 word1 ...`` with as many words as ``max_tokens`` (default 5),
streamed one word per SSE chunk; prompt tokens are the words in the request's messages/input.
Special models: ``error-400`` / ``error-429`` / ``error-500`` answer with that status,
``stream-error`` sends two chunks and then an error event, ``tool-model`` answers with a tool call.

    with serve() as base_url:  # "http://127.0.0.1:PORT/v1"
        openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=0)

``python -m tests.openai_server --port N`` runs it in the foreground.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

CREATED = 1_700_000_000


def words(n: int) -> list[str]:
    return [f"word{i}" if i == 0 else f" word{i}" for i in range(n)]


def _prompt_tokens(body: dict[str, Any]) -> int:
    text = []
    for message in body.get("messages") or []:
        content = message.get("content")
        text.append(content if isinstance(content, str) else json.dumps(content))
    for key in ("input", "prompt"):
        value = body.get(key)
        if value is not None:
            text.append(value if isinstance(value, str) else json.dumps(value))
    return sum(len(t.split()) for t in text)


def _error(model: str) -> Response | None:
    if model.startswith("error-"):
        status = int(model.partition("-")[2])
        kind = {400: "invalid_request_error", 429: "rate_limit_exceeded"}.get(status, "server_error")
        return JSONResponse({"error": {"message": f"fake {status}", "type": kind, "code": kind}},
                            status_code=status, headers={"x-request-id": f"req-{status}"})
    return None


def _sse(events: Iterator[Any]) -> StreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        for event in events:
            if isinstance(event, tuple):
                name, data = event
                yield f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
            else:
                yield f"data: {json.dumps(event)}\n\n".encode()
        yield b"data: [DONE]\n\n"

    return StreamingResponse(body(), media_type="text/event-stream")


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


TOOL_CALL = {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}


async def chat_completions(request: Request) -> Response:
    body = await request.json()
    model = str(body.get("model", ""))
    failed = _error(model)
    if failed is not None:
        return failed
    n = int(body.get("max_tokens") or body.get("max_completion_tokens") or 5)
    answer = words(n)
    prompt = _prompt_tokens(body)
    tools = model == "tool-model"
    if not body.get("stream"):
        message: dict[str, Any] = {"role": "assistant", "content": None if tools else "".join(answer)}
        if tools:
            message["tool_calls"] = [TOOL_CALL]
        return JSONResponse({
            "id": "chatcmpl-1", "object": "chat.completion", "created": CREATED, "model": model + "-0613",
            "system_fingerprint": "fp_1",
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": "tool_calls" if tools else "stop"}],
            "usage": _usage(prompt, 1 if tools else n),
        })
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": CREATED,
                "model": model + "-0613", "system_fingerprint": "fp_1",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    def events() -> Iterator[Any]:
        yield chunk({"role": "assistant", "content": ""})
        if tools:
            yield chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                         "function": {"name": "get_weather", "arguments": ""}}]})
            for part in ('{"city": ', '"Paris"}'):
                yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": part}}]})
            yield chunk({}, "tool_calls")
        else:
            for i, word in enumerate(answer):
                if model == "stream-error" and i == 2:
                    yield {"error": {"message": "fake mid-stream failure", "type": "server_error"}}
                    return
                yield chunk({"content": word})
            yield chunk({}, "stop")
        if include_usage:
            yield {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": CREATED,
                   "model": model + "-0613", "choices": [], "usage": _usage(prompt, 1 if tools else n)}

    return _sse(events())


async def completions(request: Request) -> Response:
    body = await request.json()
    model = str(body.get("model", ""))
    failed = _error(model)
    if failed is not None:
        return failed
    n = int(body.get("max_tokens") or 5)
    answer, prompt = words(n), _prompt_tokens(body)
    if not body.get("stream"):
        return JSONResponse({
            "id": "cmpl-1", "object": "text_completion", "created": CREATED, "model": model,
            "choices": [{"index": 0, "text": "".join(answer), "logprobs": None, "finish_reason": "length"}],
            "usage": _usage(prompt, n),
        })

    def events() -> Iterator[Any]:
        for i, word in enumerate(answer):
            yield {"id": "cmpl-1", "object": "text_completion", "created": CREATED, "model": model,
                   "choices": [{"index": 0, "text": word, "logprobs": None,
                                "finish_reason": "length" if i == n - 1 else None}]}
        if (body.get("stream_options") or {}).get("include_usage"):
            yield {"id": "cmpl-1", "object": "text_completion", "created": CREATED, "model": model,
                   "choices": [], "usage": _usage(prompt, n)}

    return _sse(events())


def _response(model: str, text: str, status: str, prompt: int, n: int) -> dict[str, Any]:
    output = [] if status == "in_progress" else [{
        "type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }]
    response: dict[str, Any] = {
        "id": "resp_1", "object": "response", "created_at": CREATED, "status": status, "model": model,
        "output": output, "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
    }
    if status != "in_progress":
        response["usage"] = {"input_tokens": prompt, "output_tokens": n, "total_tokens": prompt + n,
                             "input_tokens_details": {"cached_tokens": 0},
                             "output_tokens_details": {"reasoning_tokens": 0}}
    return response


async def responses(request: Request) -> Response:
    body = await request.json()
    model = str(body.get("model", ""))
    failed = _error(model)
    if failed is not None:
        return failed
    n = int(body.get("max_output_tokens") or 5)
    answer, prompt = words(n), _prompt_tokens(body)
    if not body.get("stream"):
        return JSONResponse(_response(model, "".join(answer), "completed", prompt, n))

    def events() -> Iterator[Any]:
        seq = iter(range(1000))
        yield ("response.created", {"type": "response.created", "sequence_number": next(seq),
                                    "response": _response(model, "", "in_progress", prompt, n)})
        for word in answer:
            yield ("response.output_text.delta", {
                "type": "response.output_text.delta", "sequence_number": next(seq), "item_id": "msg_1",
                "output_index": 0, "content_index": 0, "delta": word, "logprobs": []})
        yield ("response.completed", {"type": "response.completed", "sequence_number": next(seq),
                                      "response": _response(model, "".join(answer), "completed", prompt, n)})

    return _sse(events())


async def embeddings(request: Request) -> Response:
    body = await request.json()
    model = str(body.get("model", ""))
    failed = _error(model)
    if failed is not None:
        return failed
    inputs = body.get("input")
    items = inputs if isinstance(inputs, list) else [inputs]
    prompt = sum(len(str(i).split()) for i in items)
    return JSONResponse({
        "object": "list", "model": model,
        "data": [{"object": "embedding", "index": i, "embedding": [0.1 * (i + 1), 0.2, 0.3]}
                 for i in range(len(items))],
        "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
    })


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


app = Starlette(routes=[
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/completions", completions, methods=["POST"]),
    Route("/v1/responses", responses, methods=["POST"]),
    Route("/v1/embeddings", embeddings, methods=["POST"]),
    Route("/health", health),
])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def serve() -> Iterator[str]:
    """Run the server in a thread of this process; yields its ``base_url`` (ending in ``/v1``)."""
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, name="fake-openai", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the fake OpenAI server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")
