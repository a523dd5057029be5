"""Cue groups: families of words and phrases that signal a kind of request.

Each group fires one shared feature when any of its phrases occurs, so evidence learned from
"jot down", "write down" and "จดไว้" is pooled instead of spread over unrelated n-grams.  The
groups are only features -- the trained model decides how much each one counts and in
combination with what.  English phrases (1-3 words, "|" separated) are matched as whole words
with dictionary look-ups; Thai phrases (space separated) as substrings, because Thai has no
spaces between words.  Both are cheap: a few microseconds per message.
"""
from __future__ import annotations

import re
from itertools import chain

from . import native

_EN = {
    "greet": "hi|hii|hello|hey|heya|hiya|howdy|good morning|good afternoon|good evening|morning",
    "thank": "thanks|thank you|thank u|thx|ty|tysm|cheers|appreciate|appreciated|much obliged",
    "bye": "bye|goodbye|good night|gn|see you|see ya|cya|later|take care|ttyl|signing off",
    "botq": "your name|are you|who made you|who created you|what can you|how are you"
            "|old are you|are you from|you're|you are",
    "notes": "note|notes|my notes|notebook|knowledge base|kb|saved|i saved|journal|tagged"
             "|my list|reading list|shopping list|links",
    "search": "search|find|find my|look up|look for|look through|look in|lookup|pull up|show me"
              "|bring up|dig up|grep|open my|get me my|fetch my|check my notes",
    "learn": "remember that|remember this|remember my|remember the|remember to|remember i'm"
             "|note down|note that|note this|make a note|take a note|jot|write down|log that|log my"
             "|record that|save this|save that|save a note|save to|save my|store this|store that"
             "|keep in mind|keep this|keep a note|memorize|memorise|for future reference"
             "|for the record|fyi|so you know|remind me to|remind me that|don't forget"
             "|let me forget|add to my|add this to|add a note|new note",
    "recall": "again|did i|have i|i told you|i gave you|i mentioned|i said|did we|last time"
              "|last week|the other day|earlier|do you remember|you remember|remember when"
              "|do you know|you know about|do you remember|what you remember|you have on|remind me what|recall|recap",
    "qword": "what|what's|what is|who|when|where|which|is it|are|can|does|how many|how much"
             "|how long|how far|how old|how tall|how big|how often|how hot|how deep",
    "translate": "translate|you say|i say|in thai|in english|in japanese|in chinese"
                 "|in korean|in french|in spanish|in german|in vietnamese|into thai|into english",
    "polish": "rephrase|reword|paraphrase|proofread|shorten|make this|make it|fix the grammar"
              "|fix the spelling|fix typos|correct my grammar|correct this|this sentence"
              "|this line|this phrase|this word|more polite|more formal|sound nicer",
    "code": "code|function|script|regex|sql|python|javascript|typescript|java|bash|react|api|bug"
            "|debug|error|exception|traceback|crash|crashes|compile|deploy|docker|git|npm|pip"
            "|refactor|unit test|unit tests|endpoint|server|database|query|class|module|app",
    "analyse": "analyse|analyze|analysis|compare|comparison|vs|versus|pros and cons|tradeoffs"
               "|trade-offs|evaluate|assess|review|critique|summarize|summarise|break down"
               "|breakdown|which is better|in detail|detailed",
    "plan": "plan|schedule|itinerary|roadmap|timeline|budget|routine|checklist|day by day",
    "act": "create|delete|remove|rename|move|back up|backup|restart|install|update|upgrade"
           "|upload|download|clean up|set up|configure|merge|run the|folder|files",
    "explain": "explain|why|how does|how do|work|works|teach me|walk me through|in depth"
               "|step by step|thoroughly|properly|the physics|the science|what causes",
    "longform": "essay|blog post|report|proposal|cover letter|letter|documentation|article"
                "|speech|policy|press release|user guide|pages|newsletter|story",
    "shortform": "haiku|joke|caption|tweet|poem|limerick|quote|riddle|one line|one-line|short"
                 "|quick|quickly|briefly|one sentence",
    "chat": "recommend|suggest|should i|i'm feeling|i'm so|i'm bored|i'm tired|i feel|guess what"
            "|tell me a|tell me something|give me a|give me some|ideas for|favourite|favorite",
    "laugh": "lol|lmao|haha|hahaha|hehe|rofl|wow|omg",
    "howto": "how do i|how can i|how should i|how to|how do you|how would i|best way to",
    "self": "my|mine|i|i'm|i've|i'd|me|myself",
}
_TH = {
    "greet": "สวัสดี หวัดดี ดีจ้า อรุณสวัสดิ์ ฮัลโหล",
    "thank": "ขอบคุณ ขอบใจ แต๊งกิ้ว ขอบพระคุณ",
    "bye": "ลาก่อน บาย ฝันดี ราตรีสวัสดิ์ แล้วเจอกัน ไปก่อน",
    "botq": "ชื่ออะไร เป็นใคร หุ่นยนต์ ทำอะไรได้บ้าง สบายดี อายุเท่าไหร่",
    "notes": "โน้ต บันทึก ที่จดไว้ ที่เซฟไว้ ที่เก็บไว้ ลิงก์ที่",
    "search": "ค้นหา ค้น หาโน้ต หาที่ หาข้อมูลที่ เปิดโน้ต ขอดู ดูโน้ต มีโน้ต",
    "learn": "จำไว้ จดไว้ จดโน้ต จดว่า บันทึกว่า บันทึกไว้ เซฟไว้ เก็บไว้ว่า ช่วยจำ อย่าลืม เตือนความจำ"
             " โน้ตไว้ เพิ่มโน้ต",
    "recall": "เคยบอก เคยจด เคยบันทึก เคยคุย ครั้งที่แล้ว ครั้งก่อน คราวก่อน คราวที่แล้ว ก่อนหน้านี้"
              " จำได้ไหม จำได้มั้ย จำได้ป่ะ ที่บอกไว้ รู้อะไรเกี่ยวกับ ทวน ย้อนดู เมื่อวานเรา",
    "qword": "อะไร ใคร ที่ไหน เมื่อไหร่ กี่ เท่าไหร่ เท่าไร ไหม มั้ย หรือเปล่า",
    "translate": "แปล ภาษาอังกฤษ ภาษาไทย ภาษาญี่ปุ่น ภาษาจีน ภาษาเกาหลี พูดว่า",
    "polish": "เรียบเรียง สุภาพ ทางการ ขัดเกลา แก้คำผิด ตรวจคำผิด ไวยากรณ์ ย่อให้สั้น สั้นลง",
    "code": "โค้ด โปรแกรม สคริปต์ ฟังก์ชัน บั๊ก ดีบัก เซิร์ฟเวอร์ ฐานข้อมูล",
    "analyse": "วิเคราะห์ เปรียบเทียบ ข้อดีข้อเสีย ประเมิน สรุป รีวิว ดีกว่ากัน อันไหนดีกว่า คุ้มกว่า",
    "plan": "วางแผน แผน ตาราง งบ ทริป",
    "act": "ลบไฟล์ ย้ายไฟล์ สร้างโฟลเดอร์ สร้างไฟล์ ติดตั้ง รีสตาร์ท อัปโหลด แบ็กอัป อัปเดต ตั้งค่า"
           " เปลี่ยนชื่อไฟล์",
    "explain": "อธิบาย ทำไม ทำงานยังไง ทำงานอย่างไร อย่างละเอียด ละเอียด สอน ทีละขั้นตอน หลักการ"
               " เพราะอะไร ได้ยังไง ได้อย่างไร เกิดขึ้น เกิดจากอะไร กลไก",
    "longform": "บทความ รายงาน จดหมาย เรียงความ ข้อเสนอ คู่มือ สุนทรพจน์ นิยาย",
    "shortform": "มุก แคปชั่น กลอน คำคม สั้นๆ คำอวยพร",
    "chat": "แนะนำ ขอไอเดีย ดีไหม เบื่อ เหนื่อย เครียด เศร้า ดีใจ กินอะไรดี",
    "laugh": "ฮ่าๆ ขำ อิอิ",
    "howto": "ทำยังไง ทำอย่างไร ยังไงให้ วิธี",
    "self": "ของฉัน ของผม ฉัน ผม หนู ตัวเอง",
}

CUE_PREFIX = "\x06"
MAX_PHRASE_WORDS = 3
_EN_PHRASES: dict[str, str] = {}
for _group, _phrases in _EN.items():
    for _phrase in _phrases.split("|"):
        if len(_phrase.split()) > MAX_PHRASE_WORDS:
            raise ValueError(f"cue phrase longer than {MAX_PHRASE_WORDS} words: {_phrase!r}")
        _EN_PHRASES[_phrase] = CUE_PREFIX + _group
# Only a pair starting with the first word of a multi-word phrase can be a phrase, and only
# a pair that begins a three-word phrase is worth extending to a triple.
_PAIR_HEADS = frozenset(phrase.split(" ", 1)[0] for phrase in _EN_PHRASES if " " in phrase)
_TRIPLE_HEADS = frozenset(phrase.rsplit(" ", 1)[0] for phrase in _EN_PHRASES if phrase.count(" ") == 2)
_TH_PHRASES = {word: CUE_PREFIX + group for group, words in _TH.items() for word in words.split()}


def _trie_pattern(words: list[str]) -> str:
    """A regex equivalent to "|".join(words) but shaped like a trie.

    Python's `re` tries alternatives one by one at every position; factoring shared prefixes
    makes a failed position cost one character test instead of one per phrase.  Greedy
    optional tails make the match the longest phrase at the leftmost position, so "อธิบาย"
    (explain) is found whole instead of its tail "บาย" (bye).
    """
    trie: dict = {}
    for word in words:
        node = trie
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}

    def build(node: dict) -> str:
        ends_here = "" in node
        alternatives = [re.escape(ch) + build(child) for ch, child in sorted(node.items()) if ch]
        if not alternatives:
            return ""
        if len(alternatives) == 1 and not ends_here:
            return alternatives[0]
        return "(?:" + "|".join(alternatives) + ")" + ("?" if ends_here else "")

    return build(trie)


_TH_RE = re.compile(_trie_pattern(list(_TH_PHRASES)))


def thai_cues_by_regex(norm: str) -> list[str]:
    """The cue features of the Thai phrases in `norm`, in order, by the trie regex."""
    return list(map(_TH_PHRASES.__getitem__, _TH_RE.findall(norm)))


# The same, by the C extension's trie walk where it is built (native.py): the regex costs
# ~400 instructions per character of Thai text.  Tests hold the two to the same answers.
thai_cues = (native.extension.PhraseMatcher(_TH_PHRASES).find if native.extension
             else thai_cues_by_regex)


# Pairs of groups whose co-occurrence means more than either alone: a linear model cannot
# form an AND by itself.  "question + first person" is how personal facts are recalled
# ("what's my passport number?", "พาสปอร์ตฉันหมดอายุเมื่อไหร่").
CONJUNCTIONS = (("qword", "self"), ("learn", "self"), ("search", "self"), ("search", "notes"))
_CONJUNCTIONS = tuple((CUE_PREFIX + a, CUE_PREFIX + b, f"{CUE_PREFIX}{a}+{b}")
                      for a, b in CONJUNCTIONS)

_QUESTION = CUE_PREFIX + "qword"


def cue_features(norm: str, words: list[str], ascii_only: bool) -> set[str]:
    """Cue-group features of normalised text whose Latin word tokens are `words`.

    `ascii_only` says `norm` has no Thai.
    """
    get = _EN_PHRASES.get
    pairs = [f"{word} {after}" for word, after in zip(words, words[1:]) if word in _PAIR_HEADS]
    # Whole-word phrases of one to three words, looked up without a Python-level loop.
    found = set(filter(None, map(get, chain(words, pairs))))
    heads = _TRIPLE_HEADS.intersection(pairs)
    if heads:
        triples = [f"{first} {second} {third}" for first, second, third
                   in zip(words, words[1:], words[2:]) if f"{first} {second}" in heads]
        found.update(filter(None, map(get, triples)))
    if not ascii_only:
        found.update(thai_cues(norm))
    if "?" in norm:
        found.add(_QUESTION)
    if len(found) > 1:
        found.update([both for a, b, both in _CONJUNCTIONS if a in found and b in found])
    return found
