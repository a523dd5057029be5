"""The gateway's logic: one model turn at a time per call, many at once, in asyncio.

``Gateway.turn(request, on_delta)`` checks the daily budget, waits for one of
``gateway.max_in_flight`` provider slots, streams the provider's answer (each piece of text
goes to ``on_delta`` as it arrives), tries again on 429, 5xx, a dropped connection or a
timeout (honouring ``Retry-After``), and returns the finished turn with the provider's own
token counts, priced from ``[prices]``. It holds the provider key and is the only code that
sends it anywhere; no error it returns quotes a response body (a provider may echo the key).

No ZeroMQ and no process here: ``service.py`` wires it to sockets, tests drive it directly.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import time
from collections import Counter, deque
from datetime import datetime, timedelta
from typing import Any, Callable

import httpx

from proto.config import Config
from proto.frames import SaveUsage, TurnRequest, TurnResult
from proto.metrics import percentile

from .providers import ANTHROPIC, SseParser, StreamError, new_stream, request_for

log = logging.getLogger("model-gateway")

PER_MILLION = 1_000_000
RETRY_STATUSES = frozenset({429, 529})  # 529: Anthropic's "overloaded"
SERVER_ERRORS = range(500, 600)
SECONDS_PER_MS = 0.001
# Sent with every error text that a user reads; the key never is.
ERROR_CHARS = 200
SAMPLES_KEPT = 1000  # tool steps kept for status percentiles


class Attempt(Exception):
    """One attempt failed. ``retry``: worth another; ``after``: the provider said when."""

    def __init__(self, message: str, retry: bool, after: float | None = None) -> None:
        super().__init__(message)
        self.retry = retry
        self.after = after


def retry_after(headers: httpx.Headers, now: float) -> float | None:
    """Seconds the provider asks us to wait: ``retry-after-ms``, ``retry-after`` in seconds
    or as an HTTP date. None when it does not say."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) * SECONDS_PER_MS)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def next_midnight(now: float) -> float:
    """The next local midnight after ``now`` (seconds since the epoch): when the budget renews."""
    today = datetime.fromtimestamp(now).date()
    return datetime.combine(today + timedelta(days=1), datetime.min.time()).timestamp()


def today_start(now: float) -> float:
    return datetime.combine(datetime.fromtimestamp(now).date(), datetime.min.time()).timestamp()


class Gateway:
    def __init__(self, config: Config, key: str, on_usage: Callable[[SaveUsage], None],
                 spent_today: float = 0.0, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.agents = config.agents
        self.settings = config.gateway
        self.kind = config.agents.provider
        self._key = key
        self.url = (config.agents.provider_url or (
            self.settings.anthropic_url if self.kind == ANTHROPIC else self.settings.openai_url)).rstrip("/")
        self.on_usage = on_usage
        self.clock = clock
        self.sleep = asyncio.sleep  # between attempts (tests record what was asked for)
        self.day = today_start(clock())
        self.spent = spent_today
        self.warned = self.budget > 0 and self.spent >= self.budget * self.agents.budget_warn_share
        self.client: httpx.AsyncClient | None = None
        self.slots: asyncio.Semaphore | None = None
        self.in_flight = 0
        self.waiting = 0
        self.unpriced: Counter[str] = Counter()   # model -> tokens whose cost is unknown
        self.counts: Counter[str] = Counter({"turns": 0, "answered": 0, "failed": 0, "retries": 0,
                                             "refused_budget": 0, "deltas": 0,
                                             "usage_estimated": 0})
        self.statuses: Counter[str] = Counter()   # HTTP statuses seen, for status
        # A turn that asked for tools: its job -> when the tool calls had arrived whole. The
        # job's next request leaving for the provider closes a tool step: the path from the
        # model's tool call to its next request, less the tools' own run time (the agent's).
        self.tool_calls_at: dict[str, float] = {}
        self.tool_step_ms: deque[float] = deque(maxlen=SAMPLES_KEPT)
        self.estimated_models: set[str] = set()   # models whose usage had to be estimated

    @property
    def budget(self) -> float:
        return self.agents.daily_budget_usd

    def __repr__(self) -> str:
        return f"Gateway({self.kind}, {self.url})"  # never the key

    # -- status ------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        self._roll_day()
        light, full = self.agents.tier("container-light"), self.agents.tier("container-full")
        return {"provider": self.kind, "url": self.url, "key": "set" if self._key else "none",
                "models": {"light": light.model, "full": full.model},
                "in_flight": self.in_flight, "waiting": self.waiting,
                "max_in_flight": self.settings.max_in_flight,
                "spent_today_usd": round(self.spent, 6), "budget_usd": self.budget,
                "budget_left_usd": round(max(0.0, self.budget - self.spent), 6) if self.budget else None,
                "unpriced_models": dict(self.unpriced) or None,
                "http": dict(self.statuses), **self.counts,
                "tool_step": {"steps": len(self.tool_step_ms), "p50_ms": percentile(self.tool_step_ms, 0.5),
                              "p99_ms": percentile(self.tool_step_ms, 0.99)}}

    def unpriced_tier_models(self) -> list[str]:
        """Configured models with no price: flagged at start, before any cost is unknown."""
        if self.kind == "offline":
            return []
        return sorted({self.agents.light_model, self.agents.full_model} - set(self.config.prices))

    # -- budget ------------------------------------------------------------------------
    def _roll_day(self) -> None:
        now = self.clock()
        if now >= self.day + 86400 or today_start(now) != self.day:
            self.day, self.spent, self.warned = today_start(now), 0.0, False

    def _refusal(self, request: TurnRequest) -> TurnResult | None:
        self._roll_day()
        if self.budget <= 0 or self.spent < self.budget:
            return None
        self.counts["refused_budget"] += 1
        wait = max(0.0, next_midnight(self.clock()) - self.clock())
        return TurnResult(
            req=request.req, job=request.job, chat=request.chat, error_kind="budget",
            retry_after=round(wait, 1), provider=self.kind,
            error=(f"today's model budget (${self.budget:.2f}) is spent; agents answer again "
                   f"after midnight, in {wait / 3600:.1f} h"))

    def _count(self, model: str, input_tokens: int, output_tokens: int) -> tuple[float | None, str]:
        """The turn's cost (None: the model has no price) and a budget notice, if this turn
        crossed the warning share."""
        price = self.config.prices.get(model)
        if price is None:
            if model not in self.unpriced:
                log.warning("model %s has no price in [prices]: its cost is unknown and not "
                            "counted (not $0)%s", model,
                            "; the daily budget cannot count it" if self.budget else "")
            self.unpriced[model] += input_tokens + output_tokens
            return None, ""
        cost = (input_tokens * price.input + output_tokens * price.output) / PER_MILLION
        self._roll_day()
        self.spent += cost
        notice = ""
        if self.budget > 0 and not self.warned and self.spent >= self.budget * self.agents.budget_warn_share:
            self.warned = True
            share = min(self.spent / self.budget, 1.0) * 100
            notice = (f"{share:.0f} % of today's model budget is spent (${self.spent:.2f} of "
                      f"${self.budget:.2f}); at 100 % agents stop answering until midnight")
            log.warning("budget: %s", notice)
        return cost, notice

    # -- one turn ----------------------------------------------------------------------
    async def turn(self, request: TurnRequest, on_delta: Callable[[str], None]) -> TurnResult:
        self.counts["turns"] += 1
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        tier = self.agents.tier(request.tier)
        if self.kind == "offline":
            self.counts["failed"] += 1
            return TurnResult(req=request.req, job=request.job, chat=request.chat, error_kind="config",
                              error="no model provider is configured")
        if self.slots is None:
            self.slots = asyncio.Semaphore(self.settings.max_in_flight)
        self.waiting += 1
        async with self.slots:
            self.waiting -= 1
            self.in_flight += 1
            try:
                return await self._attempts(request, tier, on_delta)
            finally:
                self.in_flight -= 1

    async def _attempts(self, request: TurnRequest, tier, on_delta: Callable[[str], None]) -> TurnResult:
        url, headers, body = request_for(self.kind, self.url, self._key, self.settings.anthropic_version,
                                         tier.model, tier.max_tokens, request)
        timeout = httpx.Timeout(tier.timeout, connect=self.settings.connect_timeout)
        delay = self.settings.backoff_initial
        attempt = 0
        while True:
            attempt += 1
            streamed = [False]

            def delta(text: str) -> None:
                streamed[0] = True
                self.counts["deltas"] += 1
                on_delta(text)

            if attempt == 1:
                self._tool_step_ends(request)
            try:
                stream = await self._call(url, headers, body, timeout, delta)
            except Attempt as failure:
                wait = failure.after if failure.after is not None else delay
                if (not failure.retry or streamed[0] or attempt > self.settings.retries
                        or wait > self.settings.retry_after_max):
                    self.counts["failed"] += 1
                    log.warning("turn %s failed after %d attempt(s): %s", request.req, attempt, failure)
                    return TurnResult(req=request.req, job=request.job, chat=request.chat,
                                      provider=self.kind, model=tier.model, attempts=attempt,
                                      error_kind="provider", error=str(failure)[:ERROR_CHARS],
                                      retry_after=failure.after)
                self.counts["retries"] += 1
                log.info("turn %s: %s; trying again in %.2f s", request.req, failure, wait)
                await self.sleep(wait)
                delay = min(delay * 2, self.settings.backoff_max)
                continue
            break
        estimated = not stream.usage_seen
        if estimated:
            self._estimate(stream, request, tier.model)
        cost, notice = self._count(tier.model, stream.input_tokens, stream.output_tokens)
        self.on_usage(SaveUsage(job_id=request.req, model=tier.model, input_tokens=stream.input_tokens,
                                output_tokens=stream.output_tokens, cost_usd=cost))
        self.counts["answered"] += 1
        calls = stream.tool_calls()
        if calls:
            self.tool_calls_at[request.job] = time.perf_counter()
            if len(self.tool_calls_at) > SAMPLES_KEPT:  # jobs that never asked again (step limit, errors)
                del self.tool_calls_at[next(iter(self.tool_calls_at))]
        return TurnResult(req=request.req, job=request.job, chat=request.chat, text=stream.text,
                          tool_calls=calls, stop_reason=stream.stop_reason,
                          model=tier.model, provider=self.kind, input_tokens=stream.input_tokens,
                          output_tokens=stream.output_tokens, cost_usd=cost, unpriced=cost is None,
                          attempts=attempt, budget_notice=notice, usage_estimated=estimated)

    def _tool_step_ends(self, request: TurnRequest) -> None:
        arrived = self.tool_calls_at.pop(request.job, None)
        if arrived is not None:
            self.tool_step_ms.append((time.perf_counter() - arrived) * 1000 - request.tool_ms)

    def _estimate(self, stream, request: TurnRequest, model: str) -> None:
        """A stream that carried no usage (llama-cpp-python's server sends none, even when
        asked): output tokens are the streamed pieces (such servers send one token per
        event), input tokens the prompt's characters / gateway.chars_per_token. Flagged in
        the turn, status and the log (once per model), never passed off as counted."""
        chars = len(request.system) + sum(len(m.content) for m in request.messages)
        stream.input_tokens = math.ceil(chars / self.settings.chars_per_token)
        stream.output_tokens = stream.chunks
        self.counts["usage_estimated"] += 1
        if model not in self.estimated_models:
            self.estimated_models.add(model)
            log.warning("the provider's stream for model %s carries no token usage: counting "
                        "streamed pieces as output tokens and estimating input tokens", model)

    async def _call(self, url: str, headers: dict, body: dict, timeout: httpx.Timeout,
                    on_delta: Callable[[str], None]):
        if self.client is None:
            self.client = httpx.AsyncClient(limits=httpx.Limits(
                max_connections=self.settings.max_in_flight, max_keepalive_connections=self.settings.max_in_flight))
        stream = new_stream(self.kind)
        parser = SseParser()
        try:
            async with self.client.stream("POST", url, json=body, headers=headers, timeout=timeout) as response:
                self.statuses[str(response.status_code)] += 1
                if response.status_code != 200:
                    code = response.status_code
                    retryable = code in RETRY_STATUSES or code in SERVER_ERRORS
                    raise Attempt(f"{self.kind}: HTTP {code}", retryable,
                                  retry_after(response.headers, self.clock()) if retryable else None)
                async for line in response.aiter_lines():
                    event = parser.line(line.rstrip("\r"))
                    if event is not None:
                        text = stream.feed(*event)
                        if text:
                            on_delta(text)
                event = parser.flush()
                if event is not None:
                    text = stream.feed(*event)
                    if text:
                        on_delta(text)
        except StreamError as exc:
            raise Attempt(str(exc), exc.retryable) from None
        except httpx.TimeoutException as exc:
            raise Attempt(f"{self.kind}: timed out ({type(exc).__name__})", True) from None
        except httpx.TransportError as exc:
            raise Attempt(f"{self.kind}: unreachable ({type(exc).__name__})", True) from None
        if not stream.done:
            raise Attempt(f"{self.kind}: the stream ended before the answer did", True)
        return stream

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None
