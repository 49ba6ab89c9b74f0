"""The FastAPI example in OpenAI mode under real uvicorn, traced with env vars only, into Delta.

``ENABLE_TRACING=true TRACING_AUTOLOG=openai OPENAI_BASE_URL=...``: no code calls ``autolog()``;
every request's trace must hold the OpenAI call as a CHAT_MODEL child span with its token usage.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

import tracewire
from tests.e2e.servers import DEPLOYMENT, free_port, running, uvicorn_argv
from tests.openai_server import serve

pytest.importorskip("openai")
deltalake = pytest.importorskip("deltalake")
pytestmark = pytest.mark.e2e


def test_fastapi_example_openai_mode_chat_spans_and_tokens_in_delta(tmp_path: Path) -> None:
    table = tmp_path / "inference"
    port = free_port()
    with serve() as base_url:
        env = {"ENABLE_TRACING": "true", "TRACING_AUTOLOG": "openai", "TRACING_DESTINATION": f"delta:{table}",
               "OPENAI_BASE_URL": base_url, "OPENAI_API_KEY": "sk-e2e-secret", "OPENAI_MODEL": "gpt-e2e",
               **DEPLOYMENT}
        with running(uvicorn_argv("examples.fastapi_app.app:app", port), env, port) as server:
            with httpx.Client(base_url=server.base_url, timeout=30) as client:
                sent = {}
                for i in range(4):
                    path = "/chat/stream" if i % 2 else "/chat"
                    response = client.post(path, json={"question": f"how is tracing enabled? {i}"},
                                           headers={"X-Request-ID": f"oai-{i}"})
                    assert response.status_code == 200, response.text
                    sent[f"oai-{i}"] = path
                    if path == "/chat":
                        assert response.json()["answer"] == "word0 word1 word2 word3 word4"
                    else:
                        events = response.text.split("\n\n")
                        deltas = [json.loads(e[len("data: "):])["delta"]
                                  for e in events if e.startswith('data: {"delta"')]
                        assert "".join(deltas) == "word0 word1 word2 word3 word4"
            assert server.stop() in (0, -15), server.log()  # the shutdown flush writes the table

    rows = deltalake.DeltaTable(str(table)).to_pyarrow_table(
        columns=["client_request_id", "state", "trace"]).to_pylist()
    assert sorted(r["client_request_id"] for r in rows) == sorted(sent)
    for row in rows:
        assert "sk-e2e-secret" not in row["trace"]
        trace = tracewire.Trace.from_json(row["trace"])
        root = trace.root_span
        assert root is not None and row["state"] == "OK"
        [llm] = [s for s in trace.data.spans if s.span_type == "CHAT_MODEL"]
        assert llm.name == "AsyncCompletions" and llm.parent_id == root.span_id
        assert llm.status == "OK"
        assert llm.attributes["gen_ai.request.model"] == "gpt-e2e"
        assert llm.attributes["gen_ai.response.model"] == "gpt-e2e-0613"
        usage = llm.attributes["mlflow.chat.tokenUsage"]
        assert usage["output_tokens"] == 5 and usage["input_tokens"] > 10
        assert usage["total_tokens"] == usage["input_tokens"] + 5
        assert trace.info.token_usage == usage  # the only LLM call: the trace total is its usage
        if sent[row["client_request_id"]] == "/chat/stream":
            assert llm.outputs["choices"][0]["message"]["content"] == "word0 word1 word2 word3 word4"
            assert "tracewire.time_to_first_token_ms" in llm.attributes
    streamed = tracewire.search_traces(str(table), "client_request_id = 'oai-1'")
    assert [s.name for s in streamed[0].data.spans if s.span_type == "CHAT_MODEL"] == ["AsyncCompletions"]
