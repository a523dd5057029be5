"""The knowledge base in the whole system: chroma supervised beside the services, search that
survives it being killed, and `warmwire learn` importing files."""

from __future__ import annotations

import os
import signal

import pytest
import zmq

from conftest import wait_for
from test_knowledge_rig import Client

pytestmark = pytest.mark.slow
RECOVERY_DEADLINE = 30.0

ENGLISH = """# Car

The car insurance renews in March. The policy number is 88-1020.

# Garden

Water the tomatoes every morning before nine.
"""
THAI = "รหัสไวไฟที่คอนโดคือ sunny2024 เราเตอร์อยู่ในตู้ข้างทีวี\n"


def knowledge_client(warmwire) -> Client:
    client = Client(zmq.Context.instance(), f"ipc://{warmwire.home}/run/search.sock")
    warmwire.clients.append(client)
    return client


def chroma_reached(warmwire) -> bool:
    return warmwire.service("search-cache")["stats"].get("chroma") == "up"


def live_notes(warmwire) -> list[str]:
    with warmwire.db() as db:
        return sorted(row[0] for row in db.execute("SELECT text FROM notes WHERE superseded_at IS NULL"))


def test_chroma_killed_is_restarted_by_the_supervisor_and_search_stops_being_degraded(warmwire):
    wait_for(lambda: chroma_reached(warmwire), RECOVERY_DEADLINE, "the search-cache to reach chroma")
    before = warmwire.service("chroma")
    assert before["state"] == "healthy" and before["stats"]["port"] > 0
    client = knowledge_client(warmwire)
    client.learn("The spare house key is under the blue flower pot.")
    assert client.search("where is the extra key to my home", mode="vector").hits

    os.kill(before["pid"], signal.SIGKILL)
    degraded = client.search("spare key")
    assert degraded.degraded and degraded.hits  # answered from full text, not an error
    wait_for(lambda: (s := warmwire.service("chroma"))["state"] == "healthy" and s["pid"] != before["pid"],
             RECOVERY_DEADLINE, "the supervisor to restart chroma")
    assert warmwire.service("chroma")["restarts"] == before["restarts"] + 1
    assert "chroma exited (signal SIGKILL); restarting" in warmwire.logs()

    def vector_search_works() -> bool:
        answer = client.search("where is the extra key to my home", mode="vector")
        return not answer.degraded and bool(answer.hits)

    wait_for(vector_search_works, RECOVERY_DEADLINE, "search to stop being degraded")
    assert warmwire.healthy()
    # status shows what the last probe (at most a probe interval ago) reported
    wait_for(lambda: "chroma=up" in warmwire.cli("status").stdout, RECOVERY_DEADLINE,
             "status to show the search-cache reaching chroma")
    assert any(line.startswith("chroma ") for line in warmwire.cli("status").stdout.splitlines())


def test_learn_imports_a_folder_once_and_an_edited_file_replaces_its_old_notes(warmwire, tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "home.md").write_text(ENGLISH)
    (notes / "wifi.txt").write_text(THAI)
    (notes / "photo.jpg").write_bytes(b"\xff\xd8 not a note")

    first = warmwire.cli("learn", str(notes))
    assert first.returncode == 0, first.stderr
    assert "2/2 files" in first.stderr and "learned 3 notes from 2 files" in first.stdout
    stored = live_notes(warmwire)
    assert len(stored) == 3

    client = knowledge_client(warmwire)
    wait_for(lambda: chroma_reached(warmwire), RECOVERY_DEADLINE, "the search-cache to reach chroma")
    assert "sunny2024" in client.search("wifi password of the condo").hits[0].text
    assert "88-1020" in client.search("ประกันรถต่ออายุเดือนไหน").hits[0].text

    again = warmwire.cli("learn", str(notes))
    assert again.returncode == 0, again.stderr
    assert live_notes(warmwire) == stored

    (notes / "home.md").write_text(ENGLISH.replace("every morning before nine", "every evening"))
    warmwire.cli("learn", str(notes / "home.md"))
    after = live_notes(warmwire)
    assert len(after) == 3
    assert any("every evening" in text for text in after)
    assert not any("before nine" in text for text in after)
    assert "every evening" in client.search("when do the tomatoes get water").hits[0].text


def test_learn_says_so_when_the_path_is_missing_or_has_no_notes(warmwire, tmp_path):
    missing = warmwire.cli("learn", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    (tmp_path / "empty").mkdir()
    empty = warmwire.cli("learn", str(tmp_path / "empty"))
    assert empty.returncode == 2 and "no .md" in empty.stderr


def test_oracle_only_messages_are_answered_from_the_notes_in_the_users_language(warmwire):
    """Through the router, as a user writes: remember, then ask in other words."""
    wait_for(lambda: chroma_reached(warmwire), RECOVERY_DEADLINE, "the search-cache to reach chroma")
    chat = warmwire.client()
    noted = chat.ask("remember that the spare house key is under the blue flower pot")
    assert noted["type"] == "reply" and noted["tier"] == "oracle-only", noted
    thai_noted = chat.ask("จำไว้ว่ารหัสไวไฟที่บ้านคือ sunflower2024")
    assert thai_noted["tier"] == "oracle-only" and any("\u0e00" <= ch <= "\u0e7f" for ch in thai_noted["text"])
    found = chat.ask("where did I put the extra key to my home?")
    assert found["tier"] == "oracle-only" and "blue flower pot" in found["text"], found
    thai_found = chat.ask("ค้นหารหัสไวไฟ")
    assert thai_found["tier"] == "oracle-only" and "sunflower2024" in thai_found["text"], thai_found
    assert any("\u0e00" <= ch <= "\u0e7f" for ch in thai_found["text"].split("sunflower2024")[0])
    with warmwire.db() as db:
        stored = db.execute("SELECT count(*) FROM messages WHERE tier = 'oracle-only' AND status = 'answered'").fetchone()
    assert stored == (4,)
