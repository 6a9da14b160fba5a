"""A scripted :class:`~frugal_chains.vllm.VLLMClient` for adapter unit tests (no server, no engine): it records
every request and every ``generate`` batch, answers in turn, streams one word a chunk with the usage on the last
chunk, and can fail."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, Literal

from frugal_chains import Usage
from frugal_chains.vllm import ChatRequest, Completion, CompletionChunk, ToolCall, ToolCallDelta

USAGE = Usage(input_tokens=20, output_tokens=5, cache_read_tokens=16)


class ScriptedClient:
    def __init__(
        self,
        answers: Sequence[str] = ("Paris is the capital .",),
        *,
        model: str = "smol",
        usage: Usage = USAGE,
        tool_calls: Sequence[ToolCall] = (),
        error: Callable[[], BaseException] | None = None,
    ) -> None:
        self.answers = list(answers)
        self._model = model
        self.usage = usage
        self.tool_calls = tuple(tool_calls)
        self.error = error
        self.batches: list[list[ChatRequest]] = []
        self.streams: list[ChatRequest] = []
        self.n = 0

    @property
    def model(self) -> str:
        return self._model

    @property
    def mode(self) -> Literal["engine", "server"]:
        return "server"

    def _next(self) -> str:
        if self.error is not None:
            raise self.error()
        text = self.answers[self.n % len(self.answers)]
        self.n += 1
        return text

    def generate(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        self.batches.append(list(requests))
        return [
            Completion(
                text=self._next(),
                model=self._model,
                usage=self.usage,
                tool_calls=self.tool_calls,
                finish_reason="tool_calls" if self.tool_calls else "stop",
            )
            for _ in requests
        ]

    async def agenerate(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        return self.generate(requests)

    def _chunks(self, text: str) -> list[CompletionChunk]:
        words = text.split(" ")
        pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
        out = [CompletionChunk(text=p, model=self._model) for p in pieces]
        for i, tc in enumerate(self.tool_calls):
            half = len(tc.arguments) // 2
            out.append(
                CompletionChunk(
                    tool_calls=(
                        ToolCallDelta(index=i, id=tc.id, name=tc.name, arguments=tc.arguments[:half]),
                    )
                )
            )
            out.append(CompletionChunk(tool_calls=(ToolCallDelta(index=i, arguments=tc.arguments[half:]),)))
        out.append(CompletionChunk(model=self._model, finish_reason="stop", usage=self.usage))
        return out

    def stream(self, request: ChatRequest) -> Iterator[CompletionChunk]:
        self.streams.append(request)
        yield from self._chunks(self._next())

    async def astream(self, request: ChatRequest) -> AsyncIterator[CompletionChunk]:
        self.streams.append(request)
        for c in self._chunks(self._next()):
            yield c

    def close(self) -> None:
        pass


def attach(model: Any, client: Any) -> Any:
    """Put ``client`` under an adapter (its private, lazily built client)."""
    model._client = client
    return model
