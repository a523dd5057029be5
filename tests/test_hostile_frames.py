"""Property-based tests (hypothesis) of every frame decoder a service runs.

Properties: a valid frame of every type round-trips; any input at all is either a frame or
msgspec.DecodeError (never another exception, never a hang) with a short, specific reason;
the router's user-facing reason is always one sentence it can send back. Inputs are
size-bounded; settings are deterministic (see test_hostile_fuzz.SETTINGS).
"""

from __future__ import annotations

import random
import typing

import msgspec
import pytest
from hypothesis import assume, given, strategies as st

from proto import frames
from proto.frames import (
    NOT_MSGPACK, NO_TYPE, TOO_DEEP, UNKNOWN_TYPE, Codec, Health, ServiceStatus, Status, describe_decode_error,
)
from test_hostile_fuzz import (
    CODECS, FAMILIES, FRAME_BYTES, MAX_INPUT_BYTES, SETTINGS, check_rejection, mutate, no_hang,
)

pytestmark = pytest.mark.hostile

JSON_LIKE = st.recursive(st.none() | st.booleans() | st.integers(-2 ** 63, 2 ** 63 - 1)
                         | st.floats(allow_nan=False) | st.text(max_size=20),
                         lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                         max_leaves=10)
# typing.Any has no strategy of its own: the frames that carry free-form stats get JSON.
SPECIAL = {
    Health: st.builds(Health, stats=st.dictionaries(st.text(max_size=8), JSON_LIKE, max_size=4)),
    Status: st.builds(Status, services=st.lists(st.builds(
        ServiceStatus, stats=st.dictionaries(st.text(max_size=8), JSON_LIKE, max_size=3)), max_size=3),
        supervisor=st.dictionaries(st.text(max_size=8), JSON_LIKE, max_size=3)),
}


def every_field(kind: type) -> st.SearchStrategy:
    """A Struct with a value for each field. Left to itself, hypothesis may pass a field's
    default factory (msgspec's ``<factory>`` for ``= []``) as the value, which no encoder can
    write once ``omit_defaults`` is off."""
    return st.builds(kind, **{name: st.from_type(hint) for name, hint in typing.get_type_hints(kind).items()})


for _struct in vars(frames).values():
    if isinstance(_struct, type) and issubclass(_struct, msgspec.Struct) and _struct not in SPECIAL:
        st.register_type_strategy(_struct, every_field(_struct))


def members(union) -> list[type]:
    return list(typing.get_args(union)) or [union]


def frame_strategy(union) -> st.SearchStrategy:
    return st.one_of([SPECIAL[kind] if kind in SPECIAL else st.from_type(kind) for kind in members(union)])


ALL_FRAMES = st.one_of([st.tuples(st.just(name), frame_strategy(union)) for name, union in FAMILIES.items()])
ENCODER = msgspec.msgpack.Encoder()


def decode_or_reject(codec: Codec, data: bytes) -> None:
    """The property every decoder must hold: a frame, or DecodeError with a clear reason."""
    try:
        with no_hang():
            codec.decode(data)
    except msgspec.DecodeError as error:
        check_rejection(error)


@SETTINGS
@given(ALL_FRAMES)
def test_every_valid_frame_round_trips(named_frame):
    family, frame = named_frame
    try:
        data = ENCODER.encode(frame)
    except OverflowError:  # an int MessagePack cannot carry: no sender can make this frame
        assume(False)
    decoded = CODECS[family].decode(data)
    assert type(decoded) is type(frame)
    assert ENCODER.encode(decoded) == data  # bytes compare NaN too


@SETTINGS
@given(st.sampled_from(sorted(FAMILIES)), st.binary(max_size=512))
def test_random_bytes_are_a_frame_or_a_decode_error(family, data):
    decode_or_reject(CODECS[family], data)


@SETTINGS
@given(st.sampled_from(sorted(FAMILIES)), st.sampled_from(FRAME_BYTES), st.randoms(use_true_random=False))
def test_mutated_valid_frames_are_a_frame_or_a_decode_error(family, sample, rng):
    _, data = mutate(rng, sample)
    decode_or_reject(CODECS[family], data)


@SETTINGS
@given(st.binary(max_size=512) | st.sampled_from(FRAME_BYTES).flatmap(
    lambda sample: st.randoms(use_true_random=False).map(lambda rng: mutate(rng, sample)[1])))
def test_the_router_explains_every_rejected_frame_in_one_short_sentence(data):
    codec = CODECS["router frontend (ClientIn)"]
    try:
        codec.decode(data)
    except msgspec.DecodeError:
        frame_id, reason = describe_decode_error(data)
        assert isinstance(frame_id, str) and reason and "\n" not in reason and len(reason) < 300


NESTED_CHAT = ENCODER.encode({"type": "chat", "id": "m", "chat": "c", "sender": "s", "text": "t"})


HUGE_TAG = ENCODER.encode({"type": "x" * MAX_INPUT_BYTES})


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("data, reason", [
    # a 1 kB frame deep enough to exhaust Python's recursion limit inside msgspec
    (b"\x86" + NESTED_CHAT[1:] + b"\xa1z" + b"\x91" * 5_000 + b"\xc0", TOO_DEEP),
    (b"\x91" * 20_000 + b"\xc0", TOO_DEEP),
    # a string that is not UTF-8, in the tag and in a field
    (b"\x81\xa4type\xa4\xff\xfe\xfd\xfc", NOT_MSGPACK),
    (b"\x84\xa4type\xa4chat\xa2id\xa2\xff\xfe", NOT_MSGPACK),
    # headers claiming 4 GB strings, arrays and maps that are not there
    (b"\x81\xa4type\xdb\xff\xff\xff\xff", NOT_MSGPACK),
    (b"\xdd\xff\xff\xff\xff\xc0", NOT_MSGPACK),
    (b"\xdf\xff\xff\xff\xff", NOT_MSGPACK),
    # a huge tag, quoted back only in part
    (HUGE_TAG, UNKNOWN_TYPE.format("'" + "x" * 199 + "...")),
], ids=["deep-field", "deep-root", "utf8-tag", "utf8-field", "claimed-str", "claimed-array",
        "claimed-map", "huge-tag"])
def test_known_hostile_frames_get_a_clear_decode_error(family, data, reason):
    """Every decoder refuses them with a short reason; the router tells the client why in its
    own words (never msgspec's, which change between releases)."""
    with pytest.raises(msgspec.DecodeError) as caught:
        with no_hang():
            CODECS[family].decode(data)
    check_rejection(caught.value)
    if family == "router frontend (ClientIn)":
        assert describe_decode_error(data) == ("", reason)


def test_a_chat_map_without_type_is_refused():
    """msgspec takes the tag of a lone tagged Struct as optional; the router must not."""
    data = ENCODER.encode({"id": "m1", "chat": "c", "sender": "s", "text": "hello"})
    with pytest.raises(msgspec.DecodeError):
        CODECS["router frontend (ClientIn)"].decode(data)
    assert describe_decode_error(data) == ("m1", NO_TYPE)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -0.0, 2 ** 64 - 1, -(2 ** 63)])
def test_nan_and_extreme_numbers_are_decoded_or_refused_cleanly(value):
    for family, codec in CODECS.items():
        for field in ("seq", "retry_after", "position", "slots", "written_at", "limit"):
            data = ENCODER.encode({"type": "notice", "id": "m", "kind": "busy", "text": "t",
                                   field: value})
            decode_or_reject(codec, data)


def test_a_random_walk_of_mutations_never_escapes_the_decoders():
    """Mutations stacked on mutations, for inputs further from any valid frame."""
    rng = random.Random(7)
    tried = 0
    for sample in FRAME_BYTES:
        data = sample
        for _ in range(40):
            _, data = mutate(rng, data or sample)
            for codec in CODECS.values():
                decode_or_reject(codec, data)
                tried += 1
    print(f"\n[frames] random walk: {tried} decodes")
