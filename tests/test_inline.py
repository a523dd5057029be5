"""Inline answers: the user's language, the commands, unknown commands."""

from __future__ import annotations

from services.router.inline import InlineResponder, language

STATS = {"uptime": 12.0, "messages": 3, "tiers": {"inline": 2, "oracle-only": 1}, "pending_writes": 0}


def responder() -> InlineResponder:
    return InlineResponder(lambda: STATS, lambda: (3, 1200, 0.0125))


def test_the_answer_is_in_the_language_of_the_message():
    assert language("สวัสดีครับ") == "th"
    assert language("hello ครับ") == "th"
    assert language("hello") == "en"
    assert responder().respond("greeting", "สวัสดีค่ะ").startswith("สวัสดี")
    assert responder().respond("thanks", "thank you!") == "You're welcome!"


def test_commands_answer_from_the_router_itself():
    help_text = responder().respond("command", "/help")
    assert "/status" in help_text and "/ping" in help_text
    assert "inline 2" in responder().respond("command", "/status")
    assert responder().respond("command", "/ping extra words") == "pong"
    assert responder().respond("command", "/help@warmwire_bot") == help_text
    assert responder().respond("command", "/cost") == "today: 3 agent jobs, 1200 tokens, $0.0125"


def test_an_unknown_command_says_so_and_points_to_help():
    assert responder().respond("command", "/launch rockets") == "Unknown command /launch. Send /help for the list."


def test_cost_names_the_tokens_of_models_without_a_price_instead_of_counting_them_as_free():
    unpriced = InlineResponder(lambda: STATS, lambda: (3, 1200, 0.0125), lambda: {"local-llama": 800})
    assert unpriced.respond("command", "/cost") == (
        "today: 3 agent jobs, 1200 tokens, $0.0125 (not counting 800 tokens of models with no price, "
        "whose cost is unknown: local-llama)")
    assert "ไม่รวม 800 โทเค็น" in unpriced.respond("command", "/cost ค่าใช้จ่าย")
