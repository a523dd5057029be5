"""Recall of knowledge search on a Thai + English set: 24 notes, 36 paraphrased queries (17
of them in the other language than their note) and 10 exact-token queries (codes, names).

Run with -s to see the table. Measured with the real embedding model, a real `chroma run`
(HNSW, ef_search 200) and the search-cache over its socket.
"""

from __future__ import annotations

import pytest

from test_knowledge_rig import ChromaServer, KnowledgeRig, rig_config, wait_until_up

NOTES = {
    "key": "The spare house key is hidden under the blue flower pot by the back door.",
    "passport": "My passport expires on 14 November 2027; renew it at least six months before.",
    "dentist": "Dentist appointment moved to Thursday at 10 am with Dr. Somchai.",
    "coffee": "I take my coffee black, no sugar.",
    "allergy": "I am allergic to penicillin.",
    "car": "The car needs an oil change every 10,000 km; last one was in May.",
    "wifi_mom": "The wifi password at mom's house is sunflower99.",
    "lease": "Our apartment lease ends in August and the rent is 18,000 baht a month.",
    "gym": "The gym closes at 6 pm on Sundays.",
    "ben": "Ben prefers email over phone calls.",
    "plants": "Water the plants on the balcony every three days.",
    "bus": "Bus 47 goes to the airport from the stop outside the office.",
    "cat": "แมวของฉันชื่อมิโซะ ชอบกินปลาทูน่ามาก",
    "door": "รหัสประตูบ้านคือ 2580",
    "spicy": "ฉันไม่กินเผ็ด",
    "sister": "วันเกิดน้องสาววันที่ 9 มีนาคม",
    "parking": "ผมจอดรถไว้ที่โซน B ชั้นสาม",
    "water_meter": "เลขมิเตอร์น้ำคือ 4471",
    "aircon": "เบอร์ช่างแอร์คือ 081-234-5678",
    "credit": "บัตรเครดิตตัดรอบทุกวันที่ 25 ของเดือน",
    "shoes": "ขนาดรองเท้าของลูกคือเบอร์ 33",
    "mom_doctor": "แม่นัดหมอที่โรงพยาบาลวันศุกร์นี้ตอนบ่ายสองโมง",
    "phone_shop": "ร้านซ่อมมือถือชื่อช่างเอก อยู่หน้าตลาด",
    "run": "วันนี้วิ่งได้ห้ากิโลเมตรที่สวนลุมพินี",
}
# (query, expected note); "x" marks a query in the other language than its note.
QUERIES = [
    ("where did I hide the extra key to the house", "key"),
    ("กุญแจบ้านสำรองซ่อนไว้ที่ไหน", "key"),                       # x
    ("when does my passport run out", "passport"),
    ("หนังสือเดินทางหมดอายุเมื่อไหร่", "passport"),                 # x
    ("what day is the dental visit", "dentist"),
    ("how do I like my coffee", "coffee"),
    ("which antibiotic can't I take", "allergy"),
    ("ฉันแพ้ยาอะไร", "allergy"),                                  # x
    ("when is the car due for servicing", "car"),
    ("password for the internet at my mother's place", "wifi_mom"),
    ("how much is the rent and when does the contract end", "lease"),
    ("what time does the fitness center shut on the weekend", "gym"),
    ("how should I contact Ben", "ben"),
    ("how often should the balcony plants get water", "plants"),
    ("which bus takes me to the airport", "bus"),
    ("what's my cat called", "cat"),                              # x
    ("แมวชื่ออะไร", "cat"),
    ("what is the code for the front door", "door"),              # x
    ("รหัสเข้าบ้าน", "door"),
    ("can I eat spicy food", "spicy"),                            # x
    ("อาหารเผ็ดกินได้ไหม", "spicy"),
    ("when is my younger sister's birthday", "sister"),           # x
    ("น้องสาวเกิดวันไหน", "sister"),
    ("where did I park the car", "parking"),                      # x
    ("จอดรถไว้ตรงไหน", "parking"),
    ("water meter number", "water_meter"),                        # x
    ("ช่างแอร์เบอร์อะไร", "aircon"),
    ("phone number of the air conditioner technician", "aircon"), # x
    ("credit card billing cycle date", "credit"),                 # x
    ("ลูกใส่รองเท้าเบอร์อะไร", "shoes"),
    ("what shoe size does my kid wear", "shoes"),                 # x
    ("mom's hospital appointment", "mom_doctor"),                 # x
    ("แม่ไปหาหมอวันไหน", "mom_doctor"),
    ("where can I get my phone repaired", "phone_shop"),          # x
    ("ร้านซ่อมโทรศัพท์", "phone_shop"),
    ("how far did I run today", "run"),                           # x
]
UNRELATED = ["quantum chromodynamics lecture notes", "สูตรทำเค้กช็อกโกแลต", "who won the football match"]
# Exact tokens: codes, numbers and names that full text finds and meaning may not.
EXACT = [
    ("sunflower99", "wifi_mom"), ("2580", "door"), ("4471", "water_meter"), ("081-234-5678", "aircon"),
    ("Somchai", "dentist"), ("ช่างเอก", "phone_shop"), ("ลุมพินี", "run"), ("penicillin", "allergy"),
    ("18,000 baht", "lease"), ("Bus 47", "bus"),
]


K = 5


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    home = tmp_path_factory.mktemp("recall")
    chroma = ChromaServer(home).start()
    rig = KnowledgeRig(rig_config(home, chroma.port))
    try:
        wait_until_up(rig.index, rig.service)
        names = {rig.client.learn(text).id: name for name, text in NOTES.items()}
        results = {}
        for mode in ("fts", "vector", "hybrid"):
            for label, queries in (("paraphrase", QUERIES), ("exact", EXACT)):
                ranks, similarities = [], []
                for query, expected in queries:
                    answer = rig.client.search(query, mode=mode, limit=K)
                    assert not answer.degraded and not answer.error
                    found = [names[hit.id] for hit in answer.hits]
                    ranks.append(found.index(expected) + 1 if expected in found else None)
                    if mode == "vector" and expected in found:
                        similarities.append(answer.hits[found.index(expected)].score)
                results[mode, label] = (ranks, similarities)
        unrelated = {query: rig.client.search(query, mode="vector", limit=K).hits for query in UNRELATED}
    finally:
        rig.close()
        chroma.stop()
    print(f"\n{'mode':<8}{'queries':<12}{'hit@1':>7}{'hit@3':>7}{'hit@5':>7}")
    for (mode, label), (ranks, _) in results.items():
        rates = [sum(1 for rank in ranks if rank is not None and rank <= k) / len(ranks) for k in (1, 3, 5)]
        print(f"{mode:<8}{label:<12}" + "".join(f"{rate:>7.2f}" for rate in rates))
    similarities = results["vector", "paraphrase"][1]
    print(f"vector similarity of the right note: min {min(similarities):.3f}, "
          f"median {sorted(similarities)[len(similarities) // 2]:.3f}")
    print("unrelated queries, best vector hit:",
          {query: round(hits[0].score, 3) if hits else None for query, hits in unrelated.items()})
    return results, unrelated


def hit_rate(ranks: list[int | None], k: int) -> float:
    return sum(1 for rank in ranks if rank is not None and rank <= k) / len(ranks)


def test_the_set_is_big_enough_and_crosses_languages():
    assert len(NOTES) >= 20 and len(QUERIES) >= 20
    thai = {name for name, text in NOTES.items() if any("\u0e00" <= ch <= "\u0e7f" for ch in text)}
    crossing = [q for q, name in QUERIES if (name in thai) != any("\u0e00" <= ch <= "\u0e7f" for ch in q)]
    assert len(crossing) >= 10


def test_vector_and_hybrid_search_find_paraphrases_in_either_language(measured):
    results, _ = measured
    assert hit_rate(results["vector", "paraphrase"][0], 1) >= 0.9
    assert hit_rate(results["hybrid", "paraphrase"][0], 1) >= 0.9
    assert hit_rate(results["hybrid", "paraphrase"][0], K) >= 0.95


def test_hybrid_search_keeps_what_full_text_finds_for_exact_codes_and_names(measured):
    results, _ = measured
    assert hit_rate(results["fts", "exact"][0], 1) >= 0.9
    assert hit_rate(results["hybrid", "exact"][0], 1) >= 0.9


def test_unrelated_queries_find_little_by_meaning(measured):
    _, unrelated = measured
    assert not any(unrelated.values()), unrelated
