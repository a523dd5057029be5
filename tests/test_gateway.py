"""The model gateway's logic against a scripted provider on loopback (a real HTTP server
speaking the real Anthropic and OpenAI streaming formats): streaming, the provider's own
usage, retries honouring Retry-After, the daily budget, prices, tool calls, and the key
going to the provider and nowhere else. No process or socket of warmwire's: ``Gateway`` is
driven directly in asyncio."""

from __future__ import annotations

import asyncio

import pytest

from bench.fake_provider import Answer, FakeProvider, Stall, Status, StreamError
from proto.config import load
from proto.frames import ModelMessage, ToolSpec, TurnRequest
from services.model_gateway.gateway import Gateway, retry_after
from services.model_gateway.providers import AnthropicStream, OpenAIStream, SseParser

KEY = "sk-test-WWSECRET-0123456789"


@pytest.fixture
def provider():
    fake = FakeProvider(KEY).start()
    yield fake
    fake.stop()


def make_gateway(provider, kind="anthropic", spent=0.0, **settings) -> tuple[Gateway, list, list]:
    env = {"WARMWIRE_AGENTS_PROVIDER": kind,
           "WARMWIRE_AGENTS_PROVIDER_URL": provider.url + ("/v1" if kind == "openai" else ""),
           "WARMWIRE_GATEWAY_BACKOFF_INITIAL": "0.01", "WARMWIRE_GATEWAY_BACKOFF_MAX": "0.02"}
    env.update({f"WARMWIRE_{name.upper()}": str(value) for name, value in settings.items()})
    usage, sleeps = [], []
    gateway = Gateway(load(env), KEY, usage.append, spent_today=spent)

    async def record_sleep(seconds: float) -> None:  # what the gateway asked to wait
        sleeps.append(seconds)

    gateway.sleep = record_sleep
    return gateway, usage, sleeps


def turn(gateway: Gateway, tier="container-light", tools=()):
    request = TurnRequest(req="job-1", job="job-1", chat="c", tier=tier, system="be brief",
                          messages=[ModelMessage(role="user", content="how many legs has a spider?")],
                          tools=list(tools))
    deltas: list[str] = []

    async def run():
        try:
            return await gateway.turn(request, deltas.append)
        finally:
            await gateway.close()

    return asyncio.run(run()), deltas


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
def test_a_turn_streams_its_text_and_takes_usage_from_the_provider(provider, kind):
    gateway, usage, _ = make_gateway(provider, kind)
    provider.script(Answer(pieces=("Eight", " legs", "."), input_tokens=40, output_tokens=3))
    result, deltas = turn(gateway)
    assert not result.error, result.error
    assert deltas == ["Eight", " legs", "."] and result.text == "Eight legs."
    assert (result.input_tokens, result.output_tokens) == (40, 3)
    model = "claude-3-5-haiku-latest" if kind == "anthropic" else "gpt-4o-mini"  # the kind's default
    assert result.model == model and result.provider == kind
    price = gateway.config.prices[model]
    assert result.cost_usd == pytest.approx((40 * price.input + 3 * price.output) / 1e6)
    assert [(u.job_id, u.model, u.input_tokens, u.output_tokens) for u in usage] == [("job-1", model, 40, 3)]
    call = provider.calls[0]
    assert call.key == KEY and call.body["stream"] is True
    assert call.body["max_tokens"] == gateway.config.agents.light_max_tokens
    if kind == "anthropic":
        assert call.path == "/v1/messages" and call.body["system"] == "be brief"
        assert call.headers["anthropic-version"] == gateway.config.gateway.anthropic_version
    else:
        assert call.path == "/v1/chat/completions"
        assert call.body["messages"][0] == {"role": "system", "content": "be brief"}


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
def test_429_with_retry_after_then_200_answers_after_the_wait_the_provider_asked(provider, kind):
    gateway, _, sleeps = make_gateway(provider, kind)
    provider.script(Status(429, {"retry-after": "7"}), Answer(pieces=("ok",)))
    result, deltas = turn(gateway)
    assert result.text == "ok" and result.attempts == 2 and not result.error
    assert sleeps == [7.0] and len(provider.calls) == 2


def test_5xx_a_stream_error_and_a_dropped_stream_are_tried_again_with_backoff(provider):
    gateway, _, sleeps = make_gateway(provider, "anthropic")
    provider.script(Status(503), StreamError("overloaded_error"), Status(529), Answer(pieces=("done",)))
    result, deltas = turn(gateway)
    assert result.text == "done" and result.attempts == 4, result
    assert sleeps == [0.01, 0.02, 0.02]  # doubling from backoff_initial, capped at backoff_max


def test_a_provider_that_goes_silent_times_out_and_is_tried_again(provider):
    gateway, _, sleeps = make_gateway(provider, "anthropic", agents_light_timeout=0.3)
    provider.script(Stall(), Answer(pieces=("late", " but here")))
    result, deltas = turn(gateway)
    assert result.text == "late but here" and result.attempts == 2 and len(sleeps) == 1, result


def test_a_client_error_is_not_retried_and_no_body_is_quoted(provider):
    gateway, usage, sleeps = make_gateway(provider, "anthropic")
    gateway._key = "wrong-key"  # the provider answers 401 and echoes the key it got
    result, _ = turn(gateway)
    assert result.error == "anthropic: HTTP 401" and result.error_kind == "provider"
    assert len(provider.calls) == 1 and not sleeps and not usage


def test_retries_stop_at_the_limit_and_a_long_retry_after_fails_at_once(provider):
    gateway, _, sleeps = make_gateway(provider, "openai", gateway_retries=2)
    provider.script(*[Status(500)] * 3)
    result, _ = turn(gateway)
    assert result.error == "openai: HTTP 500" and result.attempts == 3 and len(sleeps) == 2
    gateway, _, sleeps = make_gateway(provider, "openai")
    provider.script(Status(429, {"retry-after": "3600"}))
    result, _ = turn(gateway)
    assert result.error == "openai: HTTP 429" and result.retry_after == 3600 and not sleeps


def test_a_spent_budget_refuses_without_calling_the_provider(provider):
    gateway, usage, _ = make_gateway(provider, "anthropic", spent=0.01, agents_daily_budget_usd=0.01)
    result, deltas = turn(gateway)
    assert result.error_kind == "budget" and "budget" in result.error and result.retry_after > 0
    assert not provider.calls and not usage and not deltas
    assert gateway.stats()["refused_budget"] == 1


def test_the_user_is_told_once_when_80_percent_of_the_budget_is_spent(provider):
    # 1,000,000 output tokens of haiku cost $4: over 80 % of a $4.50 budget, under 100 %.
    gateway, _, _ = make_gateway(provider, "anthropic", agents_daily_budget_usd=4.5)
    provider.script(Answer(input_tokens=1, output_tokens=1_000_000), Answer(input_tokens=1, output_tokens=1))
    first, _ = turn(gateway)
    assert "89 % of today's model budget" in first.budget_notice, first.budget_notice
    second, _ = turn(gateway)
    assert not second.error and not second.budget_notice  # said once
    provider.script(Answer(input_tokens=1, output_tokens=200_000))
    turn(gateway)  # crosses 100 %
    refused, _ = turn(gateway)
    assert refused.error_kind == "budget" and len(provider.calls) == 3


def test_a_model_without_a_price_is_flagged_not_counted_as_zero(provider):
    gateway, usage, _ = make_gateway(provider, "openai", agents_light_model="local-llama")
    assert gateway.unpriced_tier_models() == ["local-llama"]
    result, _ = turn(gateway)
    assert result.cost_usd is None and result.unpriced and result.input_tokens == 12
    assert gateway.stats()["unpriced_models"] == {"local-llama": 17}
    assert gateway.spent == 0.0 and usage[0].model == "local-llama"


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
def test_tools_are_offered_and_tool_calls_come_back_provider_neutral(provider, kind):
    gateway, _, _ = make_gateway(provider, kind)
    call = {"id": "call_1", "name": "read_file", "arguments": {"path": "/workspace/notes.md"}}
    provider.script(Answer(pieces=("Let me look.",), tool_call=call))
    tool = ToolSpec(name="read_file", description="read a file",
                    parameters={"type": "object", "properties": {"path": {"type": "string"}}})
    result, _ = turn(gateway, tools=[tool])
    assert [(c.id, c.name, c.arguments) for c in result.tool_calls] == [("call_1", "read_file", call["arguments"])]
    assert result.stop_reason == ("tool_use" if kind == "anthropic" else "tool_calls")
    sent = provider.calls[0].body["tools"][0]
    assert (sent["name"] if kind == "anthropic" else sent["function"]["name"]) == "read_file"


def test_a_stream_without_usage_is_counted_as_an_estimate_and_flagged(provider):
    gateway, usage, _ = make_gateway(provider, "openai")
    provider.script(Answer(pieces=("a", "b", "c", "d"), usage=False))
    result, _ = turn(gateway)
    assert result.usage_estimated and result.output_tokens == 4  # one token per streamed piece
    chars = len("be brief") + len("how many legs has a spider?")
    assert result.input_tokens == -(-chars // gateway.config.gateway.chars_per_token)
    assert usage[0].output_tokens == 4 and gateway.stats()["usage_estimated"] == 1


def test_offline_refuses_with_a_clear_error(provider):
    gateway, _, _ = make_gateway(provider, "offline")
    result, _ = turn(gateway)
    assert result.error_kind == "config" and not provider.calls


def test_retry_after_forms():
    import httpx
    assert retry_after(httpx.Headers({"retry-after": "2.5"}), 0) == 2.5
    assert retry_after(httpx.Headers({"retry-after-ms": "250"}), 0) == 0.25
    assert retry_after(httpx.Headers({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"}), 1445412480.0) == 10.0
    assert retry_after(httpx.Headers({}), 0) is None


def test_sse_parser_and_streams_on_split_and_commented_input():
    parser, stream = SseParser(), AnthropicStream()
    lines = [": keep-alive", "event: content_block_delta",
             'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hi"}}', "",
             "event: message_stop", 'data: {"type":"message_stop"}', ""]
    texts = [stream.feed(*event) for line in lines if (event := parser.line(line))]
    assert texts == ["hi", ""] and stream.done
    openai = OpenAIStream()
    assert openai.feed("", '{"choices":[{"index":0,"delta":{"content":"x"}}]}') == "x"
    openai.feed("", "[DONE]")
    assert openai.done and openai.text == "x"
