"""mdflow.codecs: exact round trips, the wire format, and the errors it raises."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import os
import subprocess
import sys
from collections import OrderedDict
from zoneinfo import ZoneInfo

import msgpack
import numpy as np
import pandas as pd
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mdflow.codecs import (
    CODECS,
    MAGIC,
    check_codec,
    decode_entry,
    decode_message,
    encode_entry,
    encode_message,
    pack,
    unpack,
)
from mdflow.errors import ConfigError, DecodeError, EncodeError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SH = ZoneInfo("Asia/Shanghai")
NY = ZoneInfo("America/New_York")


# --- helpers -----------------------------------------------------------------------------------
def same(a, b) -> bool:
    """Deep equality that also checks types, NaN, -0.0, tzinfo, fold and dtypes."""
    if type(a) is not type(b):
        return False
    if a is pd.NaT or a is pd.NA:
        return a is b
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (
            a == b and math.copysign(1, a) == math.copysign(1, b)
        )
    if isinstance(a, decimal.Decimal):
        return str(a) == str(b)
    if isinstance(a, (dt.datetime, dt.time)):
        return (
            a == b
            and a.tzinfo == b.tzinfo
            and a.fold == b.fold
            and (a.tzinfo is None or type(a.tzinfo) is type(b.tzinfo))
            and str(a) == str(b)
        )
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        if len(a) != len(b) or [type(k) for k in a] != [type(k) for k in b]:
            return False
        return all(k in b and same(v, b[k]) for k, v in a.items())
    if isinstance(a, np.ndarray):
        return (
            a.dtype == b.dtype
            and a.shape == b.shape
            and (
                a.tobytes() == b.tobytes()
                if a.dtype != object
                else all(same(x, y) for x, y in zip(a.ravel(), b.ravel(), strict=False))
            )
        )
    if isinstance(a, np.generic):
        return a.dtype == b.dtype and a.tobytes() == b.tobytes()
    if isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b, check_exact=True, check_freq=True)
        return True
    if isinstance(a, pd.Series):
        pd.testing.assert_series_equal(a, b, check_exact=True, check_freq=True)
        return True
    if isinstance(a, pd.Index):
        pd.testing.assert_index_equal(a, b, exact=True, check_exact=True)
        assert getattr(a, "freq", None) == getattr(b, "freq", None)
        return True
    if isinstance(a, pd.Timestamp):
        return a == b and a.unit == b.unit and a.tz == b.tz and a.fold == b.fold
    if isinstance(a, pd.Timedelta):
        return a == b and a.unit == b.unit
    return a == b


def roundtrip(obj):
    out = unpack(pack(obj))
    assert same(obj, out), (obj, out)
    return out


def quotes(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    codes = [f"{600000 + i:06d}.SH" for i in range(n)]
    base = rng.uniform(5, 100, n)
    df = pd.DataFrame(
        {
            "code": codes,
            "name": [f"股票{i}" for i in range(n)],
            "now": base,
            "open": base * 0.99,
            "high": base * 1.02,
            "low": base * 0.97,
            "buy": base - 0.01,
            "sell": base + 0.01,
            "bid1": base - 0.01,
            "ask1": base + 0.01,
            "volume": rng.integers(0, 10**9, n),
            "turnover": rng.integers(0, 10**11, n),
            "time": pd.date_range(
                "2024-01-02 09:30", periods=n, freq="s", tz="Asia/Shanghai"
            ).as_unit("ns"),
            "exchange": pd.Categorical(rng.choice(["SH", "SZ", "BJ"], n)),
            "halted": rng.random(n) < 0.05,
        }
    )
    return df.set_index(pd.Index(codes, name="code"))


def kitchen_sink(n: int = 6) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    df = pd.DataFrame(
        {
            "i8": np.arange(n, dtype="int8"),
            "u64": np.arange(n, dtype="uint64") * 2**60,
            "f32": rng.random(n).astype("float32"),
            "f16": np.arange(n, dtype="float16"),
            "c128": np.arange(n) + 1j,
            "b": np.arange(n) % 2 == 0,
            "m8": pd.to_timedelta(np.arange(n), unit="s"),
            "naive_s": pd.date_range("2024-01-01", periods=n, freq="D").as_unit("s"),
            "utc": pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC"),
            "fixed": pd.date_range(
                "2024-01-01", periods=n, freq="h", tz=dt.timezone(dt.timedelta(hours=-3))
            ),
            "cat_ord": pd.Categorical(
                ["lo", "hi"] * (n // 2), categories=["lo", "hi"], ordered=True
            ),
            "cat_int": pd.Categorical([1, 2, None] * (n // 3)),
            "s": pd.array(["a", None, "c", "d", "é", ""][:n], dtype="str"),
            "string": pd.array(["a", None, "c", "d", "e", "f"][:n], dtype="string"),
            "Int64": pd.array([1, None, 3, 4, 5, 6][:n], dtype="Int64"),
            "UInt8": pd.array([1, None, 3, 4, 5, 6][:n], dtype="UInt8"),
            "Float64": pd.array([1.5, None, 3, 4, 5, 6][:n], dtype="Float64"),
            "boolean": pd.array([True, None, False, True, True, False][:n], dtype="boolean"),
            "obj": pd.Series([1, "x", None, 2.5, b"b", {"k": [1]}][:n], dtype=object),
            "period": pd.period_range("2024-01", periods=n, freq="M"),
            "interval": pd.interval_range(0, n),
        }
    )
    df.loc[2, "f32"] = np.nan
    df.loc[3, "naive_s"] = pd.NaT
    return df


# --- codec names -------------------------------------------------------------------------------
def test_codecs_constant():
    assert CODECS == ("msgpack", "json", "fields")


@pytest.mark.parametrize("codec", CODECS)
def test_check_codec_accepts(codec):
    assert check_codec(codec, allow_auto=False, where="to_redis") == codec
    assert check_codec("auto", allow_auto=True, where="from_redis") == "auto"


@pytest.mark.parametrize("bad", ["xml", "auto", None, 1, "", "MSGPACK"])
def test_check_codec_rejects(bad):
    with pytest.raises(ConfigError) as info:
        check_codec(bad, allow_auto=False, where="to_redis")
    text = str(info.value)
    assert "to_redis" in text and "'codec'" in text and "'msgpack', 'json', 'fields'" in text
    assert repr(bad) in text
    assert isinstance(info.value, ValueError)
    if bad == "MSGPACK":
        assert "hint: use 'msgpack'" in text


def test_check_codec_auto_listed_when_allowed():
    with pytest.raises(ValueError, match=r"from_redis: .*'auto', 'msgpack'.*got 'pickle'"):
        check_codec("pickle", allow_auto=True, where="from_redis")


# --- plain Python values -----------------------------------------------------------------------
SCALARS = [
    None,
    True,
    False,
    0,
    1,
    -1,
    2**63 - 1,
    -(2**63),
    2**64 - 1,
    2**64,
    -(2**63) - 1,
    10**40,
    -(10**40),
    1.5,
    -0.0,
    float("nan"),
    float("inf"),
    float("-inf"),
    "",
    "héllo",
    "中文",
    "\x00nul",
    b"",
    b"\x00\xff",
    [],
    {},
    [1, [2, [3, {"a": None}]]],
    {"a": {"b": [1.5, "x", b"y"]}, "n": None},
    {1: "int key", 2.5: "float key", None: "none key", b"k": "bytes key"},
    {True: "bool key", False: 0},
    {float("inf"): 1, -0.0: 2},
    {(1, "a"): "tuple key", ((1, 2), 3): "nested tuple key", "plain": [1]},
    {dt.date(2024, 1, 2): 1, decimal.Decimal("1.5"): 2},
    dt.datetime(2024, 1, 2, 3, 4, 5, 678901),
    dt.datetime(1, 1, 1),
    dt.datetime.max,
    dt.datetime(2024, 1, 2, 9, 30, tzinfo=SH),
    dt.datetime(2024, 1, 2, 9, 30, tzinfo=dt.timezone.utc),
    dt.datetime(2024, 1, 2, tzinfo=dt.timezone(dt.timedelta(hours=-5, minutes=-30))),
    dt.datetime(2024, 1, 2, tzinfo=dt.timezone(dt.timedelta(hours=1), "CET")),
    dt.datetime(2024, 1, 2, tzinfo=dt.timezone(dt.timedelta(microseconds=1))),
    dt.datetime(2024, 11, 3, 1, 30, tzinfo=NY, fold=1),
    dt.datetime(2024, 11, 3, 1, 30, tzinfo=NY, fold=0),
    dt.datetime(2024, 1, 2, tzinfo=ZoneInfo("UTC")),
    dt.date(2024, 2, 29),
    dt.time(23, 59, 59, 999999),
    dt.time(1, 2, tzinfo=SH, fold=1),
    dt.timedelta(days=-3, seconds=5, microseconds=7),
    dt.timedelta.max,
    dt.timedelta.min,
    decimal.Decimal("1.10"),
    decimal.Decimal("-0"),
    decimal.Decimal("NaN"),
    decimal.Decimal("-sNaN"),
    decimal.Decimal("1E+3"),
    decimal.Decimal("Infinity"),
    decimal.Decimal("-1.2345678901234567890123456789E-500"),
]


@pytest.mark.parametrize(
    "obj", SCALARS, ids=[f"{type(v).__name__}-{i}" for i, v in enumerate(SCALARS)]
)
def test_python_roundtrip(obj):
    roundtrip(obj)


def test_utc_singleton_and_zoneinfo_preserved():
    out = unpack(pack(dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)))
    assert out.tzinfo is dt.timezone.utc
    out = unpack(pack(dt.datetime(2024, 1, 1, tzinfo=SH)))
    assert out.tzinfo is SH


def test_tuples_decode_as_lists_but_keys_and_names_stay_tuples():
    assert unpack(pack((1, (2, 3), [4, (5,)]))) == [1, [2, 3], [4, [5]]]
    out = unpack(pack({"k": (1, 2), (1, (2, "x")): (3,)}))
    assert out == {"k": [1, 2], (1, (2, "x")): [3]}
    assert type(list(out)[1]) is tuple and type(list(out)[1][1]) is tuple


def test_subclasses_decode_as_base_types():
    import enum

    class Color(enum.IntEnum):
        RED = 1

    class Name(str):
        pass

    out = unpack(
        pack([OrderedDict(a=1), Color.RED, Name("x"), bytearray(b"ab"), memoryview(b"cd"), 2.5])
    )
    assert out == [{"a": 1}, 1, "x", b"ab", b"cd", 2.5]
    assert [type(v) for v in out] == [dict, int, str, bytes, bytes, float]


def test_plain_msgpack_from_other_languages():
    data = msgpack.packb({"sym": "BTC", "px": 1.5, "raw": b"\x01", "xs": [1, None, True]})
    assert unpack(data) == {"sym": "BTC", "px": 1.5, "raw": b"\x01", "xs": [1, None, True]}
    stamp = msgpack.packb(msgpack.Timestamp(1_700_000_000, 5000), datetime=False)
    assert unpack(stamp) == dt.datetime(2023, 11, 14, 22, 13, 20, 5, tzinfo=dt.timezone.utc)


def test_wire_examples_match_the_documented_format():
    assert pack({"a": 1}) == b"\x81\xa1a\x01"
    assert pack(2**64) == b"\xc7\x14\x01" + b"18446744073709551616"
    assert pack(decimal.Decimal("1.10")) == b"\xd6\x02" + b"1.10"
    assert msgpack.unpackb(pack(dt.date(2024, 1, 2)), ext_hook=lambda c, d: (c, d)) == (
        4,
        msgpack.packb([2024, 1, 2]),
    )
    code, payload = msgpack.unpackb(
        pack(dt.datetime(2024, 1, 2, 3, tzinfo=SH)), ext_hook=lambda c, d: (c, d)
    )
    assert (code, msgpack.unpackb(payload)) == (3, [2024, 1, 2, 3, 0, 0, 0, 0, "Asia/Shanghai"])
    code, payload = msgpack.unpackb(pack(np.arange(3, dtype="<i4")), ext_hook=lambda c, d: (c, d))
    assert (code, msgpack.unpackb(payload)) == (9, ["<i4", [3], bytes(np.arange(3, dtype="<i4"))])


json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=20,
)

rich_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**64, max_value=2**200)
    | st.floats()
    | st.text()
    | st.binary()
    | st.decimals(allow_nan=False)
    | st.decimals(allow_nan=True, places=None)
    | st.datetimes(timezones=st.none() | st.timezones() | st.just(dt.timezone.utc))
    | st.dates()
    | st.times(timezones=st.none() | st.timezones())
    | st.timedeltas()
)
rich_keys = st.text() | st.integers() | st.tuples(st.integers(), st.text())
rich = st.recursive(
    rich_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(rich_keys, inner, max_size=5),
    max_leaves=25,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rich)
def test_property_rich_roundtrip(obj):
    assert same(obj, unpack(pack(obj)))


@settings(max_examples=100, deadline=None)
@given(json_like)
def test_property_json_codec_roundtrip(obj):
    assert same(obj, decode_entry(encode_entry(obj, "json")))
    assert same(obj, decode_message(encode_message(obj, "json"), "json"))
    assert same(obj, decode_message(encode_message(obj)))


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(
        st.text(min_size=1).filter(lambda k: not k.startswith("mdflow.")),
        st.text() | st.integers(),
        min_size=1,
        max_size=8,
    )
)
def test_property_fields_codec_roundtrip(obj):
    fields = encode_entry(obj, "fields")
    wire = {k.encode(): v for k, v in fields.items()}  # as redis-py returns them
    assert decode_entry(wire) == {k: str(v) for k, v in obj.items()}


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=64))
def test_property_garbage_raises_only_decode_error(data):
    try:
        unpack(data)
    except DecodeError:
        pass


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_property_corrupted_frames_raise_only_decode_error(data):
    blob = bytearray(pack(kitchen_sink()))
    for _ in range(data.draw(st.integers(1, 4))):
        blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(blob)))
    try:
        unpack(bytes(blob[:cut]))
    except DecodeError:
        pass


# --- numpy -------------------------------------------------------------------------------------
NP_SCALARS = [
    np.int8(-5),
    np.int16(300),
    np.int32(-7),
    np.int64(2**62),
    np.uint8(255),
    np.uint16(9),
    np.uint32(2**31),
    np.uint64(2**64 - 1),
    np.float16(1.5),
    np.float32(0.1),
    np.float64(0.1),
    np.float64("nan"),
    np.longdouble("0.1"),
    np.complex64(1 + 2j),
    np.complex128(3 - 4j),
    np.bool_(True),
    np.bool_(False),
    np.datetime64("2024-01-02T03:04:05.123456789", "ns"),
    np.datetime64("2024-01", "M"),
    np.datetime64("NaT", "ns"),
    np.datetime64("NaT"),
    np.timedelta64(5, "ms"),
    np.timedelta64("NaT", "s"),
    np.str_("abc"),
    np.str_(""),
    np.bytes_(b"xy"),
]


@pytest.mark.parametrize("x", NP_SCALARS, ids=[str(v.dtype) for v in NP_SCALARS])
def test_numpy_scalar_roundtrip(x):
    out = roundtrip(x)
    assert type(out) is type(x)


NP_ARRAYS = [
    np.arange(6, dtype="int8").reshape(2, 3),
    np.arange(5, dtype="uint64") * 2**60,
    np.linspace(0, 1, 7, dtype="float32"),
    np.array([np.nan, -0.0, np.inf]),
    np.array([True, False]),
    np.arange(4) * (1 + 1j),
    np.zeros((2, 0, 3)),
    np.array(3.5),
    np.empty(0, dtype="int64"),
    np.array(["2024-01-01", "NaT"], dtype="M8[ns]"),
    np.array([1, 2], dtype="m8[s]"),
    np.array(["ab", "ü", ""]),
    np.array([b"ab", b""]),
    np.arange(3, dtype=">i4"),
    np.array([1, "x", None, [1, 2], {"a": 1}], dtype=object),
    np.array([[1, "a"], [None, 2.5]], dtype=object),
    np.arange(20).reshape(4, 5)[::2, 1::2],
    np.asfortranarray(np.arange(6).reshape(2, 3)),
]


@pytest.mark.parametrize("arr", NP_ARRAYS, ids=[f"{a.dtype}-{a.shape}" for a in NP_ARRAYS])
def test_numpy_array_roundtrip(arr):
    out = unpack(pack(arr))
    assert out.dtype == arr.dtype and out.shape == arr.shape
    if arr.dtype == object:
        assert same(list(arr.ravel()), list(out.ravel()))
    else:
        assert out.tobytes() == np.ascontiguousarray(arr).tobytes()
        assert out.flags.writeable and out.flags.c_contiguous


# --- pandas scalars, Index, Series -------------------------------------------------------------
PD_SCALARS = [
    pd.Timestamp("2024-01-02 03:04:05.123456789"),
    pd.Timestamp("2024-01-02").as_unit("s"),
    pd.Timestamp("2024-01-02 03:04:05.123").as_unit("ms"),
    pd.Timestamp("2024-01-02 09:30", tz="Asia/Shanghai"),
    pd.Timestamp("2024-01-02", tz="UTC").as_unit("ns"),
    pd.Timestamp("2024-01-02", tz=dt.timezone(dt.timedelta(hours=8))),
    pd.Timestamp("2024-11-03 01:30").tz_localize("America/New_York", ambiguous=False),
    pd.Timestamp("2024-11-03 01:30").tz_localize("America/New_York", ambiguous=True),
    pd.Timestamp("3000-01-01").as_unit("s"),
    pd.NaT,
    pd.NA,
    pd.Timedelta("1 days 00:00:00.000000001"),
    pd.Timedelta(5, unit="s").as_unit("s"),
    pd.Timedelta(-3, unit="ms").as_unit("ms"),
    pd.Period("2024-01-02", freq="D"),
    pd.Period("2024Q1", freq="Q-DEC"),
    pd.Period("2024-01", freq="M"),
    pd.Period("2024-01-01 10:00", freq="2h"),
]


@pytest.mark.parametrize(
    "x", PD_SCALARS, ids=[f"{type(v).__name__}-{i}" for i, v in enumerate(PD_SCALARS)]
)
def test_pandas_scalar_roundtrip(x):
    roundtrip(x)


INDEXES = [
    pd.RangeIndex(5),
    pd.RangeIndex(5, 20, 3, name="r"),
    pd.RangeIndex(0, name=("a", 1)),
    pd.Index([3, 1, 2], dtype="int64", name="i"),
    pd.Index([1, 2], dtype="uint8"),
    pd.Index([0.5, np.nan], dtype="float32"),
    pd.Index([True, False], dtype=bool),
    pd.Index([1 + 1j, 2j]),
    pd.Index([1, "a", None, 2.5], dtype=object, name=7),
    pd.Index(["x", "y", np.nan], dtype="str", name="code"),
    pd.Index(["x", None], dtype="string"),
    pd.Index([], dtype="str"),
    pd.Index([(1, "a"), (2, "b")], tupleize_cols=False, dtype=object),
    pd.date_range("2024-01-01", periods=4, freq="D", name="d"),
    pd.date_range("2024-01-01", periods=4, freq="h", tz="Asia/Shanghai"),
    pd.date_range("2024-01-01", periods=3, freq="15min", tz="UTC").as_unit("s"),
    pd.DatetimeIndex(["2024-01-03", "2024-01-01", None]),
    pd.date_range("2024-01-01", periods=4, freq="B"),
    pd.date_range(
        "2024-01-05", periods=3, freq=pd.offsets.CustomBusinessDay(holidays=["2024-01-08"])
    ),
    pd.timedelta_range("1s", periods=3, freq="s", name="td"),
    pd.CategoricalIndex(["b", "a", "b"], categories=["b", "a"], ordered=True, name="c"),
    pd.CategoricalIndex([1, 2, 1]),
    pd.MultiIndex.from_product([["a", "b"], [1, 2]], names=["letter", ("n", 0)]),
    pd.MultiIndex.from_arrays([pd.date_range("2024-01-01", periods=2, tz="UTC"), [1.5, 2.5]]),
    pd.interval_range(0, 3, name="iv"),
    pd.period_range("2024-01", periods=3, freq="M"),
]


@pytest.mark.parametrize(
    "idx", INDEXES, ids=[f"{type(i).__name__}-{i.dtype}-{n}" for n, i in enumerate(INDEXES)]
)
def test_index_roundtrip(idx):
    out = unpack(pack(idx))
    if isinstance(idx, pd.DatetimeIndex) and idx.freq is not None and idx.freqstr == "C":
        assert out.freq is None  # custom business days have no string form
        pd.testing.assert_index_equal(out, idx._with_freq(None), exact=True)
    else:
        assert same(idx, out)


def test_index_names_stay_tuples():
    out = unpack(pack(pd.RangeIndex(2, name=("a", (1, 2)))))
    assert out.name == ("a", (1, 2))


SERIES = [
    pd.Series([1.5, 2.5], name="px"),
    pd.Series([1, 2], name=("a", 1)),
    pd.Series([1, None, 3], dtype="Int64", name=0),
    pd.Series([1.5, None], dtype="Float64"),
    pd.Series([True, None], dtype="boolean"),
    pd.Series(["a", None], dtype="string"),
    pd.Series(["a", np.nan, "b"], dtype="str"),
    pd.Series(["a\x00b", "c"], dtype="str"),
    pd.Series(pd.Categorical(["x", "y", "x"])),
    pd.Series([], dtype="float64", name="e"),
    pd.Series(pd.date_range("2024-01-01", periods=3, tz="Asia/Shanghai")),
    pd.Series([1, "a", None], dtype=object, index=pd.Index(["x", "y", "z"], name="k")),
    pd.Series(["a", "b"], dtype=object),
    pd.Series([1, 2], index=pd.MultiIndex.from_tuples([("a", 1), ("b", 2)])),
]


@pytest.mark.parametrize("s", SERIES, ids=[f"{s.dtype}-{n}" for n, s in enumerate(SERIES)])
def test_series_roundtrip(s):
    roundtrip(s)


def test_float64_nan_distinct_from_na():
    s = pd.Series([1.0, 0.0, None], dtype="Float64")
    s = s / pd.Series([1.0, 0.0, 1.0], dtype="Float64")  # 0/0
    out = unpack(pack(s))
    pd.testing.assert_series_equal(out, s, check_exact=True)
    assert out.isna().tolist() == s.isna().tolist()


# --- DataFrame ---------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [0, 1, 100, 5000])
def test_quote_frame_roundtrip(n):
    df = quotes(n)
    out = roundtrip(df)
    assert out.index.name == "code"
    assert str(out["time"].dtype) == "datetime64[ns, Asia/Shanghai]"


def test_kitchen_sink_roundtrip():
    df = kitchen_sink()
    out = roundtrip(df)
    assert out.dtypes.tolist() == df.dtypes.tolist()


def test_decoded_frame_is_writable():
    out = unpack(pack(quotes(10)))
    out.iloc[0, 2] = -1.0
    out.loc[out.index[1], "volume"] = 7
    out.loc[out.index[2], "halted"] = True
    assert out.iloc[0, 2] == -1.0 and out["volume"].iloc[1] == 7


def test_frame_tz_datetime_index_with_freq():
    idx = pd.date_range("2024-01-01 09:30", periods=5, freq="min", tz="Asia/Shanghai", name="ts")
    df = pd.DataFrame({"px": np.arange(5.0), "sym": ["a"] * 5}, index=idx)
    out = roundtrip(df)
    assert out.index.freq == idx.freq and out.index.tz == SH


def test_frame_multiindex_rows_and_columns():
    rows = pd.MultiIndex.from_product(
        [["SH", "SZ"], pd.date_range("2024-01-01", periods=2)], names=["ex", "day"]
    )
    cols = pd.MultiIndex.from_tuples(
        [("px", "bid"), ("px", "ask"), ("qty", "")], names=["field", "side"]
    )
    df = pd.DataFrame(np.arange(12.0).reshape(4, 3), index=rows, columns=cols)
    out = roundtrip(df)
    assert out.columns.names == ["field", "side"] and out.loc[("SH",), ("px", "ask")].size == 2


def test_frame_duplicate_and_odd_column_labels():
    df = pd.DataFrame([[1, "a", 2.5, 3]], columns=["x", "x", 0, ("t", 1)])
    df.columns.name = "cols"
    out = roundtrip(df)
    assert list(out.columns) == ["x", "x", 0, ("t", 1)] and out.columns.name == "cols"
    assert out.iloc[:, 1].dtype == df.iloc[:, 1].dtype


@pytest.mark.parametrize(
    "df",
    [
        pd.DataFrame(),
        pd.DataFrame(columns=["a", "b"]),
        pd.DataFrame(index=[1, 2]),
        kitchen_sink().iloc[:0],
        quotes(20).iloc[::3, ::2],
        quotes(20).T.T.iloc[:, 2:6],
    ],
    ids=["empty", "columns-only", "index-only", "zero-rows", "sliced", "fortran-like"],
)
def test_frame_edge_shapes(df):
    roundtrip(df)


def test_frame_unconsolidated_and_object_values():
    df = pd.DataFrame({"a": [1.0, 2.0]})
    for i in range(5):
        df[f"c{i}"] = [float(i), float(i)]  # one block per insert
    df["o"] = pd.Series([(1, 2), {"k": (3,)}], dtype=object)
    out = unpack(pack(df))
    assert out["o"].tolist() == [[1, 2], {"k": [3]}]  # tuples inside values become lists
    pd.testing.assert_frame_equal(out.drop(columns="o"), df.drop(columns="o"), check_exact=True)


def test_frame_strings_with_nul_and_missing():
    df = pd.DataFrame(
        {
            "s": pd.array(["a\x00b", None, ""], dtype="str"),
            "t": pd.array([None, "x", None], dtype="string"),
        }
    )
    roundtrip(df)


def test_frame_public_fallbacks(monkeypatch):
    from mdflow.codecs import pandas_ext as _frames

    expected = kitchen_sink()
    blob = pack(expected)

    def no_internals(df):
        raise AttributeError("no blocks")

    monkeypatch.setattr(_frames, "_internal_blocks", no_internals)
    monkeypatch.setattr(_frames, "_from_blocks", None)
    for df in (expected, quotes(50)):
        assert same(df, unpack(pack(df)))
    assert same(expected, unpack(blob))
    m8 = np.arange(3, dtype="i8").view("M8[ns]")
    dtype = pd.DatetimeTZDtype("ns", SH)
    pd.testing.assert_extension_array_equal(
        _frames._dttz_public(m8, dtype), _frames._dttz_array(m8.view("i8"), "ns", "Asia/Shanghai")
    )


def test_dataframe_in_a_container():
    payload = {"frame": quotes(3), "meta": {"n": 3, "at": pd.Timestamp("2024-01-01", tz="UTC")}}
    out = unpack(pack(payload))
    assert same(payload["frame"], out["frame"]) and same(payload["meta"], out["meta"])


# --- encode errors -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "obj, match",
    [
        (
            object(),
            r"cannot encode <object object at .*> \(object\) with codec 'msgpack'; "
            r"supported: .*DataFrame; hint: convert it",
        ),
        ({1, 2}, r"cannot encode \{1, 2\} \(set\).*hint: convert it to a list"),
        ([1, lambda: 0], r"\(function\) with codec 'msgpack'"),
        (dt.datetime(2024, 1, 1, tzinfo=dt.tzinfo()), r"cannot encode time zone .*zoneinfo"),
        (np.zeros(2, dtype=[("a", "i4")]), r"structured"),
        (np.ma.masked_array([1, 2], mask=[0, 1]), r"MaskedArray"),
        (
            pd.DataFrame({"sp": pd.arrays.SparseArray([0, 1])}),
            r"column 'sp' \(position 0\) with dtype Sparse\[int64, 0\].*unsupported pandas dtype",
        ),
        (pd.Series(pd.arrays.SparseArray([0.0, 1.0]), name="q"), r"Series 'q' with dtype Sparse"),
        (pd.Interval(0, 1), r"\(Interval\) with codec 'msgpack'"),
    ],
)
def test_encode_errors(obj, match):
    with pytest.raises(EncodeError, match=match) as info:
        pack(obj)
    assert isinstance(info.value, TypeError)


def test_encode_error_for_self_reference():
    loop: list = []
    loop.append(loop)
    with pytest.raises(EncodeError, match="nested too deeply or it contains itself"):
        pack(loop)


def test_encode_entry_json_errors():
    with pytest.raises(
        EncodeError,
        match=r"cannot encode b'x' \(bytes\) with codec 'json'.*"
        r"hint: use codec='msgpack'",
    ):
        encode_entry({"raw": b"x"}, "json")
    with pytest.raises(EncodeError, match=r"codec 'json'.*codec='msgpack'"):
        encode_entry({(1, 2): 1}, "json")


@pytest.mark.parametrize(
    "obj, match",
    [
        ({"ok": "1", "flag": True}, r"field 'flag' = True \(bool\).*hint: convert it with str\(\)"),
        ({"n": None}, r"field 'n' = None \(NoneType\)"),
        ({"nested": {"a": 1}}, r"field 'nested' = \{'a': 1\} \(dict\)"),
        ({"l": [1]}, r"field 'l' = \[1\] \(list\)"),
        ({1: "x"}, r"field name 1 \(int\).*must be str"),
        ({}, r"empty mapping"),
        ([("a", 1)], r"needs a flat mapping"),
        ({"mdflow.msgpack": b"x"}, r"lone field named 'mdflow.msgpack'"),
    ],
)
def test_encode_entry_fields_errors(obj, match):
    with pytest.raises(EncodeError, match=match):
        encode_entry(obj, "fields")


def test_encode_entry_bad_codec():
    with pytest.raises(ConfigError, match=r"encode_entry: parameter 'codec'.*got 'pickle'"):
        encode_entry({}, "pickle")


# --- stream entries ----------------------------------------------------------------------------
def test_encode_entry_wire_format():
    assert encode_entry({"a": 1}) == {"mdflow.msgpack": b"\x81\xa1a\x01"}
    assert encode_entry({"a": "é", "n": float("nan")}, "json") == {
        "mdflow.json": '{"a":"é","n":NaN}'.encode()
    }
    assert encode_entry(
        {
            "sym": "BTC",
            "px": 1.5,
            "qty": 3,
            "raw": b"\xff",
            "np": np.float64(0.1),
            "ni": np.int64(-2),
        },
        "fields",
    ) == {"sym": b"BTC", "px": b"1.5", "qty": b"3", "raw": b"\xff", "np": b"0.1", "ni": b"-2"}


@pytest.mark.parametrize("codec", ["msgpack", "json"])
def test_entry_roundtrip_bytes_or_str_keys(codec):
    obj = {"sym": "BTC", "px": 1.5, "qty": [1, 2]}
    fields = encode_entry(obj, codec)
    assert decode_entry(fields) == obj
    assert decode_entry({k.encode(): v for k, v in fields.items()}, codec) == obj
    if codec == "json":
        assert decode_entry({k: v.decode() for k, v in fields.items()}) == obj


def test_decode_entry_foreign_flat_entries():
    assert decode_entry({b"sym": b"BTC", b"px": b"1.5"}) == {"sym": "BTC", "px": "1.5"}
    assert decode_entry({"sym": "BTC"}, "fields") == {"sym": "BTC"}
    not_utf8 = decode_entry({b"bin": b"\xff\x00", b"\xfe": b"v"})
    assert not_utf8 == {"bin": b"\xff\x00", b"\xfe": "v"}
    assert decode_entry({b"mdflow.msgpack": b"x", b"other": b"y"}) == {
        "mdflow.msgpack": "x",
        "other": "y",
    }


@pytest.mark.parametrize(
    "fields, codec, reason",
    [
        (
            {b"mdflow.msgpack": b"\xc1"},
            "auto",
            r"field 'mdflow.msgpack' is not valid mdflow msgpack: ",
        ),
        ({b"mdflow.msgpack": b"\x92\x01"}, "msgpack", r"not valid mdflow msgpack: "),
        (
            {b"mdflow.msgpack": msgpack.packb(msgpack.ExtType(99, b""))},
            "auto",
            r"unknown ext type 99",
        ),
        ({b"mdflow.msgpack": msgpack.packb(msgpack.ExtType(3, b"\x90"))}, "auto", r"bad datetime"),
        ({b"mdflow.msgpack": b"\x01\x02"}, "auto", r"ExtraData"),
        ({b"mdflow.msgpack": "text"}, "auto", r"holds 'text' \(str\), not bytes"),
        ({b"mdflow.json": b"{nope"}, "auto", r"field 'mdflow.json' is not valid UTF-8 JSON"),
        ({b"mdflow.json": b"\xff"}, "json", r"not valid UTF-8 JSON"),
        ({}, "auto", r"the entry has no fields"),
        ([(b"a", b"b")], "auto", r"expected a mapping of fields"),
        (
            {b"sym": b"BTC"},
            "msgpack",
            r"codec='msgpack' expects one field 'mdflow.msgpack', "
            r"found fields \['sym'\]",
        ),
        ({b"mdflow.json": b"1"}, "msgpack", r"expects one field 'mdflow.msgpack'"),
        ({b"mdflow.msgpack": b"\x01"}, "json", r"codec='json' expects one field 'mdflow.json'"),
        ({b"mdflow.msgpack": b"\x01"}, "fields", r"is mdflow-encoded .*not plain fields"),
    ],
)
def test_decode_entry_errors_name_the_place(fields, codec, reason):
    with pytest.raises(
        DecodeError, match=r"cannot decode from 'quotes' entry 1700000000000-3: .*" + reason
    ) as info:
        decode_entry(fields, codec, source=b"quotes", entry_id=b"1700000000000-3")
    err = info.value
    assert isinstance(err, ValueError)
    assert err.source == "quotes" and err.entry_id == "1700000000000-3"


def test_decode_entry_bad_codec_is_config_error():
    with pytest.raises(ConfigError, match="decode_entry: parameter 'codec'"):
        decode_entry({b"a": b"b"}, "xml")


def test_decode_without_place():
    with pytest.raises(DecodeError, match=r"^cannot decode payload: not valid mdflow msgpack"):
        unpack(b"\xc1")
    with pytest.raises(DecodeError, match=r"expected bytes, got 'x' \(str\)"):
        unpack("x")


# --- pub/sub messages --------------------------------------------------------------------------
def test_message_wire_format():
    assert encode_message({"a": 1}) == MAGIC + b"\x81\xa1a\x01"
    assert encode_message({"a": "é"}, "json") == '{"a":"é"}'.encode()
    assert MAGIC == b"\xc1MDF"


@pytest.mark.parametrize("obj", [{"a": [1, 2.5]}, quotes(3), None, "text", b"\x00"])
def test_message_roundtrip_msgpack(obj):
    assert same(obj, decode_message(encode_message(obj)))
    assert same(obj, decode_message(encode_message(obj), "msgpack", source="ch"))


@pytest.mark.parametrize(
    "data, expected",
    [
        (b'{"a":1}', {"a": 1}),
        (b" [1, 2] ", [1, 2]),
        (b"-1.5", -1.5),
        (b"42", 42),
        (b"true", True),
        (b"null", None),
        (b"false ", False),
        ('{"s": "é"}', {"s": "é"}),
        (b"hello", "hello"),
        (b"[1, 2", "[1, 2"),
        (b"123abc", "123abc"),
        (b"NaN", "NaN"),
        (b"", ""),
        (b"nullx", "nullx"),
        ("plain str", "plain str"),
        (b"\xff\xfe\x00", b"\xff\xfe\x00"),
        (bytearray(b"[3]"), [3]),
    ],
)
def test_decode_message_auto(data, expected):
    out = decode_message(data)
    assert out == expected and type(out) is type(expected)


@pytest.mark.parametrize(
    "data, codec, reason",
    [
        (b'{"a":1}', "msgpack", r"codec='msgpack' expects a message starting with b'\\xc1MDF'"),
        ('{"a":1}', "msgpack", r"expects a message starting with"),
        (MAGIC + b"\xc1", "auto", r"message is not valid mdflow msgpack"),
        (MAGIC + b"\xc1", "msgpack", r"message is not valid mdflow msgpack"),
        (b"hello", "json", r"codec='json' expects UTF-8 JSON text; got b'hello' \(bytes\)"),
        (b"\xff", "json", r"codec='json' expects UTF-8 JSON"),
        (42, "auto", r"expected bytes or str, got 42 \(int\)"),
    ],
)
def test_decode_message_errors(data, codec, reason):
    with pytest.raises(DecodeError, match=r"cannot decode from 'ticks': .*" + reason) as info:
        decode_message(data, codec, source="ticks")
    assert info.value.source == "ticks" and info.value.entry_id is None


def test_message_codec_errors():
    with pytest.raises(ConfigError, match=r"encode_message: .*'msgpack' or 'json'.*'fields'"):
        encode_message({"a": 1}, "fields")
    with pytest.raises(ConfigError, match=r"decode_message: .*got 'fields'"):
        decode_message(b"x", "fields")
    with pytest.raises(ConfigError, match="encode_message: parameter 'codec'"):
        encode_message({"a": 1}, "yaml")


# --- docs, threads, import cost, benchmark smoke test ------------------------------------------
def test_module_docstring_examples():
    import doctest

    import mdflow.codecs

    assert doctest.testmod(mdflow.codecs).failed == 0


def test_threads_share_the_codec():
    from concurrent.futures import ThreadPoolExecutor

    objs = [quotes(30, seed=i) if i % 2 else {"n": i, "k": {(i, "t"): [i] * 50}} for i in range(40)]
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda o: unpack(pack(o)), objs))
    for obj, out in zip(objs, outs, strict=True):
        assert same(obj, out)


def test_pandas_half_loads_lazily():
    code = (
        "import sys; from mdflow.codecs import pack, unpack; "
        "unpack(pack({'a': [1, 2.5, 'x']})); print('mdflow.codecs.pandas_ext' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == "False"


def test_benchmark_quick_smoke():
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "bench_codecs.py"), "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith('{"bench": "codecs"')
    report = json.loads(last)
    assert set(report["cases"]) == {"tick", "quotes_100", "quotes_5000"}
    for case in report["cases"].values():
        for lib in ("mdflow", "pickle", "json"):
            assert {"encode_ops", "decode_ops", "encode_mbps", "decode_mbps", "bytes"} <= set(
                case[lib]
            )
        assert {"encode", "decode"} == set(case["ratio_mdflow_pickle"])


# --- through a real Redis ----------------------------------------------------------------------
def test_redis_cli_style_entry_decodes_as_plain_fields(redis_url, prefix):
    client = redis.Redis.from_url(redis_url)
    try:
        stream = prefix + "raw"
        entry_id = client.xadd(stream, {"sym": "BTC", "px": "1.5"})
        [(read_id, fields)] = client.xrange(stream)
        assert read_id == entry_id
        assert decode_entry(fields, source=stream, entry_id=read_id) == {"sym": "BTC", "px": "1.5"}
    finally:
        client.close()


@pytest.mark.parametrize("codec", CODECS)
def test_mdflow_entries_through_redis(redis_url, prefix, codec):
    client = redis.Redis.from_url(redis_url)
    try:
        stream = prefix + codec
        obj = {"sym": "BTC", "px": 1.5} if codec != "msgpack" else quotes(200)
        client.xadd(stream, encode_entry(obj, codec))
        [(entry_id, fields)] = client.xrange(stream)
        out = decode_entry(fields, codec, source=stream, entry_id=entry_id)
        if codec == "fields":
            assert out == {"sym": "BTC", "px": "1.5"}
        else:
            assert same(obj, out)
            assert same(obj, decode_entry(fields, source=stream, entry_id=entry_id))
    finally:
        client.close()


# --- registered mdflow record types (market data) ------------------------------------------------
def _market_data():
    import datetime as dt
    from decimal import Decimal

    from mdflow.marketdata import OHLCV, DataType, MarketDataPoint

    when = dt.datetime(2026, 1, 2, 3, 4, 5, 678900, tzinfo=dt.timezone.utc)
    candle = OHLCV("BTC-USD", "1m", when, "100.5", "101", "99.25", "100", "12.5", trades_count=7)
    point = MarketDataPoint(
        "sim", "BTC-USD", when, DataType.TICKER, {"price": Decimal("100.5"), "candle": candle}
    )
    return candle, point


@pytest.mark.parametrize("index", [0, 1])
def test_market_data_round_trips_exactly(index):
    obj = _market_data()[index]
    assert unpack(pack(obj)) == obj
    assert decode_message(encode_message(obj)) == obj
    assert decode_entry(encode_entry([obj, obj])) == [obj, obj]


def test_unknown_record_tag_is_a_decode_error():
    import msgpack as raw_msgpack

    bogus = raw_msgpack.packb(raw_msgpack.ExtType(18, raw_msgpack.packb(["os.system", {}])))
    with pytest.raises(DecodeError, match="unknown mdflow record"):
        unpack(bogus)
