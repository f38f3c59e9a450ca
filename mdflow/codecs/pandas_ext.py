"""numpy and pandas extension types of mdflow's msgpack dialect.

Imported by :mod:`mdflow.codecs.framing` the first time a numpy/pandas object is
packed or unpacked (pandas is slow to import). Payloads are nested mdflow
msgpack; numeric data travels as raw bytes described by a numpy ``dtype.str``
(e.g. ``"<f8"``, ``"<M8[ns]"``), which fixes byte order and unit.

Array specs (one column, or the values of an Index or Series)::

    ["np", dtype_str, raw]                  numeric / bool / complex / datetime64 / timedelta64
    ["obj", [element, ...]]                 object dtype, elements packed as mdflow msgpack
    ["strj", dtype_name, text, n, mask]     pandas StringDtype ("str", "string"): n values
                                            joined by NUL; mask: raw bool (missing) or nil
    ["str", dtype_name, [str | nan | NA]]   the same when a value contains NUL
    ["dttz", unit, tz, raw_int64_utc]       datetime64[unit, tz]
    ["cat", codes_ndarray, categories_index, ordered]
    ["masked", dtype_name, values_spec, raw_bool_mask]   Int64, Float64, boolean ...
    ["period", dtype_name, raw_int64_ordinals]   e.g. "period[M]"
    ["interval", left_spec, right_spec, closed]

A DataFrame is ``[columns_index, index, blocks]``; columns are addressed by
position, so duplicate labels survive. Same-dtype numeric columns share one
block of raw bytes::

    ["nd", [position, ...], dtype_str, raw]   k columns x n rows, column-major
    ["dttz", [position, ...], unit, tz, raw]
    ["col", position, array_spec]
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Literal, cast

import msgpack
import numpy as np
import pandas as pd
import pandas.tseries.frequencies
from pandas.api.extensions import ExtensionArray, ExtensionDtype
from pandas.api.types import pandas_dtype

from ..errors import EncodeError, describe
from .msgpack_ext import (
    EXT_NP_ARRAY,
    EXT_NP_SCALAR,
    EXT_PD_DATAFRAME,
    EXT_PD_INDEX,
    EXT_PD_NA,
    EXT_PD_NAT,
    EXT_PD_PERIOD,
    EXT_PD_SERIES,
    EXT_PD_TIMEDELTA,
    EXT_PD_TIMESTAMP,
    _check_ints,
    _freeze,
    _Invalid,
    _pack,
    _unpack,
    tz_from_spec,
    tz_spec,
)

try:  # pandas >= 3: build frames from blocks without copying or re-checking
    # pandas-stubs does not describe pandas.api.internals
    from pandas.api.internals import (  # type: ignore[import-not-found]
        create_dataframe_from_blocks as _from_blocks,
    )
except ImportError:  # pragma: no cover - older pandas
    _from_blocks = None

_ExtType = msgpack.ExtType  # for calls; annotations say msgpack.ExtType (an alias is not a type)
__all__ = ["DECODERS", "ENCODERS", "array_from_spec", "array_spec", "find_encoder"]

_Unit = Literal["s", "ms", "us", "ns"]
_UNITS: tuple[_Unit, ...] = ("s", "ms", "us", "ns")
_RAW_KINDS = "biufcmM"
_SEP = "\x00"
_DTYPES: dict[str, np.dtype] = {}
_PD_DTYPES: dict[str, np.dtype | ExtensionDtype] = {}
_TZ_DTYPES: dict[tuple[str, str], pd.DatetimeTZDtype] = {}
_MAX_EMPTY_ITEMS = 1 << 16  # elements of a zero-size dtype ("V0") an array may declare


# --- numpy -------------------------------------------------------------------------------------
def _raw_dtype(dtype: np.dtype, what: object) -> str:
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise EncodeError(
            f"cannot encode {what} with numpy dtype {dtype} with codec 'msgpack': "
            "structured and subarray dtypes are not supported; hint: convert it "
            "to a DataFrame or a plain dtype"
        )
    return dtype.str


def _dtype(text: object, kinds: str = _RAW_KINDS + "USV") -> np.dtype:
    dtype = _DTYPES.get(text) if isinstance(text, str) else None
    if dtype is None:
        if not isinstance(text, str) or len(text) > 40:
            raise _Invalid(f"bad dtype {describe(text)}")
        try:
            dtype = np.dtype(text)
        except TypeError:
            raise _Invalid(f"bad dtype {describe(text)}") from None
        if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
            raise _Invalid(f"bad dtype {describe(text)}")
        if len(_DTYPES) < 256:
            _DTYPES[text] = dtype
    if dtype.kind not in kinds:
        raise _Invalid(f"dtype {text!r} is not allowed here")
    return dtype


# The pandas dtype names the wire carries: "string", "str", "string[python]", "Int64",
# "boolean", "period[15min]", "period[W-SUN]"... No "/", ":" or ".": pandas resolves a name
# such as "datetime64[ns, dateutil//etc/passwd]" by reading that file as a time zone.
_PD_DTYPE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_\[\], -]*")


def _pd_dtype(name: object) -> np.dtype | ExtensionDtype:
    """``pandas_dtype(name)`` for a dtype name read from the wire (cached; never evaluated,
    and only names made of letters, digits, ``_[], -``: no path reaches pandas)."""
    dtype = _PD_DTYPES.get(name) if isinstance(name, str) else None
    if dtype is None:
        if not isinstance(name, str) or len(name) > 60 or not _PD_DTYPE_NAME.fullmatch(name):
            raise _Invalid(f"bad dtype {describe(name)}")
        try:
            dtype = pandas_dtype(name)
        except (TypeError, ValueError):
            raise _Invalid(f"bad dtype {describe(name)}") from None
        if len(_PD_DTYPES) < 256:
            _PD_DTYPES[name] = dtype
    return dtype


def _from_raw(raw: object, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    if not isinstance(raw, bytes):
        raise _Invalid(f"expected raw bytes, got {describe(raw)}")
    size = 1
    for dim in shape:
        size *= dim
    if size * dtype.itemsize != len(raw):
        raise _Invalid(f"{len(raw)} bytes do not fill shape {shape} of {dtype.str}")
    if dtype.itemsize == 0:
        # no bytes to check the shape against: a few bytes could declare 10**12 elements
        if size > _MAX_EMPTY_ITEMS:
            most = _MAX_EMPTY_ITEMS
            raise _Invalid(f"{size} elements of zero bytes ({dtype.str}); at most {most}")
        return np.zeros(shape, dtype)
    arr = np.frombuffer(raw, dtype).reshape(shape).copy()  # a writable copy
    if dtype.kind in "mM" and np.datetime_data(dtype)[0] == "generic" and not np.isnat(arr).all():
        # only NaT exists without a unit: any other value cannot even be printed
        raise _Invalid(f"{dtype.str} without a unit holds values other than NaT")
    if dtype.kind == "U" and arr.size and int(arr.view(dtype.byteorder + "u4").max()) > 0x10FFFF:
        # UCS-4 beyond Unicode: numpy keeps it, but no str can be made of it (SystemError)
        raise _Invalid(f"{dtype.str} holds a code point beyond U+10FFFF")
    return arr


def _enc_ndarray(arr: np.ndarray) -> msgpack.ExtType:
    shape = list(arr.shape)
    if arr.dtype == object:
        return _ExtType(EXT_NP_ARRAY, _pack(["|O", shape, arr.ravel().tolist()]))
    return _ExtType(EXT_NP_ARRAY, _pack([_raw_dtype(arr.dtype, "an array"), shape, arr.tobytes()]))


def _shape(value: object) -> tuple[int, ...]:
    if (
        type(value) is not list
        or len(value) > 64
        or any(type(d) is not int or d < 0 for d in value)
    ):
        raise _Invalid(f"bad shape {describe(value)}")
    return tuple(value)


def _dec_ndarray(data: bytes) -> np.ndarray:
    spec = _unpack(data)
    if type(spec) is not list or len(spec) != 3:
        raise _Invalid(f"bad ndarray {describe(spec)}")
    shape = _shape(spec[1])
    if spec[0] == "|O":
        items = spec[2]
        if type(items) is not list or len(items) != int(np.prod(shape)):
            raise _Invalid(f"object ndarray of shape {shape} has bad elements")
        return np.fromiter(items, dtype=object, count=len(items)).reshape(shape)
    return _from_raw(spec[2], _dtype(spec[0]), shape)


def _enc_np_scalar(x: np.generic) -> msgpack.ExtType:
    spec: list[object]
    if isinstance(x, np.str_):  # dtype kind "U"
        spec = ["U", str(x)]
    elif isinstance(x, np.bytes_):  # dtype kind "S"
        spec = ["S", bytes(x)]
    else:
        spec = [_raw_dtype(x.dtype, describe(x)), x.tobytes()]
    return _ExtType(EXT_NP_SCALAR, _pack(spec))


def _dec_np_scalar(data: bytes) -> np.generic:
    spec = _unpack(data)
    if type(spec) is not list or len(spec) != 2:
        raise _Invalid(f"bad numpy scalar {describe(spec)}")
    if spec[0] == "U" and isinstance(spec[1], str):
        return np.str_(spec[1])
    if spec[0] == "S" and isinstance(spec[1], bytes):
        return np.bytes_(spec[1])
    scalar = _from_raw(spec[1], _dtype(spec[0], _RAW_KINDS + "V"), ())[()]
    # a 0-d array indexed by () gives its scalar; numpy's stubs say it gives an array
    return cast(np.generic, scalar)


# --- pandas scalars ----------------------------------------------------------------------------
def _unit(value: object) -> _Unit:
    if value not in _UNITS:
        raise _Invalid(f"bad unit {describe(value)}")
    return value


def _enc_timestamp(ts: pd.Timestamp) -> msgpack.ExtType:
    value = int(ts.to_datetime64().view("i8"))  # UTC for tz-aware timestamps
    return _ExtType(EXT_PD_TIMESTAMP, _pack([value, ts.unit, tz_spec(ts.tzinfo)]))


def _dec_timestamp(data: bytes) -> pd.Timestamp:
    spec = _unpack(data)
    if type(spec) is not list or len(spec) != 3 or type(spec[0]) is not int:
        raise _Invalid(f"bad Timestamp {describe(spec)}")
    ts = pd.Timestamp(np.datetime64(spec[0], _unit(spec[1])))
    if spec[2] is not None:
        ts = ts.tz_localize("UTC").tz_convert(tz_from_spec(spec[2]))
    return ts


def _enc_timedelta(td: pd.Timedelta) -> msgpack.ExtType:
    return _ExtType(EXT_PD_TIMEDELTA, _pack([int(td.to_timedelta64().view("i8")), td.unit]))


def _dec_timedelta(data: bytes) -> pd.Timedelta:
    spec = _unpack(data)
    if type(spec) is not list or len(spec) != 2 or type(spec[0]) is not int:
        raise _Invalid(f"bad Timedelta {describe(spec)}")
    return pd.Timedelta(np.timedelta64(spec[0], _unit(spec[1])))


def _enc_period(p: pd.Period) -> msgpack.ExtType:
    return _ExtType(EXT_PD_PERIOD, _pack([p.ordinal, p.freqstr]))


def _dec_period(data: bytes) -> pd.Period:
    spec = _unpack(data)
    if (
        type(spec) is not list
        or len(spec) != 2
        or type(spec[0]) is not int
        or not isinstance(spec[1], str)
    ):
        raise _Invalid(f"bad Period {describe(spec)}")
    return pd.Period(ordinal=spec[0], freq=spec[1])


# --- pandas arrays -----------------------------------------------------------------------------
_MASKED = (pd.arrays.IntegerArray, pd.arrays.FloatingArray, pd.arrays.BooleanArray)
_STRING_ARRAY = pd.arrays.StringArray


def _tz_dtype(unit: object, tz: object) -> pd.DatetimeTZDtype:
    checked = _unit(unit)  # before it is hashed: the unit comes from the wire
    key = (checked, tz if isinstance(tz, str) else repr(tz))
    dtype = _TZ_DTYPES.get(key)
    if dtype is None:
        dtype = pd.DatetimeTZDtype(checked, tz_from_spec(tz))
        if len(_TZ_DTYPES) < 256:
            _TZ_DTYPES[key] = dtype
    return dtype


def _dttz_array(i8: np.ndarray, unit: object, tz: object) -> ExtensionArray:
    """int64 UTC values -> tz-aware DatetimeArray (fast path with a public fallback)."""
    dtype = _tz_dtype(unit, tz)
    m8 = i8.view(f"M8[{dtype.unit}]")
    try:  # no conversion, no checks: the values are already UTC in this unit
        # private constructor, not in pandas-stubs
        return pd.arrays.DatetimeArray._simple_new(m8, dtype=dtype)  # type: ignore[attr-defined]
    except (AttributeError, TypeError):  # pragma: no cover - pandas without the private helper
        return _dttz_public(m8, dtype)


def _dttz_public(m8: np.ndarray, dtype: pd.DatetimeTZDtype) -> Any:
    """The same as :func:`_dttz_array` through public pandas API only (slower)."""
    return pd.array(m8).tz_localize("UTC").tz_convert(dtype.tz)


def _str_spec(arr: Any, name: str) -> list[Any]:
    """Strings joined by NUL (one UTF-8 decode on the way back), else a plain list."""
    values = np.asarray(arr, dtype=object)
    mask = None
    try:
        text = _SEP.join(values.tolist())
    except TypeError:  # missing values
        mask = np.asarray(arr.isna(), dtype=bool)
        filled = values.copy()
        filled[mask] = ""
        try:
            text = _SEP.join(filled.tolist())
        except TypeError:  # pragma: no cover - not str (cannot happen for StringDtype)
            text = None
    n = len(values)
    if text is None or text.count(_SEP) != max(n - 1, 0):  # a value contains NUL
        return ["str", name, values.tolist()]
    return ["strj", name, text, n, None if mask is None else mask.tobytes()]


def array_spec(arr: Any, what: str) -> list[Any]:
    """Encode one column (a 1-D numpy array or pandas ExtensionArray)."""
    if type(arr) is pd.arrays.NumpyExtensionArray:  # not its subclass StringArray
        arr = arr.to_numpy()
    if isinstance(arr, np.ndarray):
        if arr.dtype == object:
            return ["obj", arr.tolist()]
        return ["np", _raw_dtype(arr.dtype, what), arr.tobytes()]
    dtype = arr.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        return ["dttz", dtype.unit, tz_spec(dtype.tz), arr.asi8.tobytes()]
    if isinstance(arr, (pd.arrays.DatetimeArray, pd.arrays.TimedeltaArray)):
        m8 = arr.to_numpy()
        return ["np", m8.dtype.str, m8.tobytes()]
    if isinstance(dtype, pd.CategoricalDtype):
        return ["cat", arr.codes, dtype.categories, bool(dtype.ordered)]
    if isinstance(dtype, pd.StringDtype):
        return _str_spec(arr, str(dtype))
    if isinstance(arr, _MASKED):
        values = arr.to_numpy(dtype=dtype.numpy_dtype, na_value=dtype.numpy_dtype.type(0))
        mask = np.asarray(arr.isna(), dtype=bool)
        return ["masked", str(dtype), ["np", values.dtype.str, values.tobytes()], mask.tobytes()]
    if isinstance(dtype, pd.PeriodDtype):
        return ["period", str(dtype), arr.asi8.tobytes()]
    if isinstance(dtype, pd.IntervalDtype):
        return [
            "interval",
            array_spec(arr.left.array, what),
            array_spec(arr.right.array, what),
            arr.closed,
        ]
    raise EncodeError(
        f"cannot encode {what} with dtype {dtype} with codec 'msgpack': "
        "unsupported pandas dtype; supported: numpy numeric/bool/complex/"
        "datetime64/timedelta64/object, datetime64 with tz, category, str/string, "
        "Int*/UInt*/Float*/boolean, period, interval; hint: convert it with "
        ".astype(object) or to a numpy dtype"
    )


def _list(value: object, what: str) -> list[Any]:
    if type(value) is not list:
        raise _Invalid(f"bad {what} {describe(value)}")
    return value


def _categorical_dtype(categories: pd.Index, ordered: bool) -> pd.CategoricalDtype:
    """CategoricalDtype; checks distinct str categories itself (pandas' check is slow)."""
    fast = getattr(pd.CategoricalDtype, "_from_fastpath", None)
    if fast is not None and len(categories) <= 10_000 and categories.dtype.kind in "OT":
        values = categories.tolist()
        if all(type(v) is str for v in values) and len(set(values)) == len(values):
            return fast(categories, ordered)
    return pd.CategoricalDtype(categories, ordered)


def _masked_array_type(
    dtype: object,
) -> type[pd.arrays.IntegerArray | pd.arrays.FloatingArray | pd.arrays.BooleanArray] | None:
    """The masked array class (one of ``_MASKED``) that ``dtype`` constructs, else None."""
    cls = dtype.construct_array_type() if isinstance(dtype, ExtensionDtype) else None
    for masked in _MASKED:
        if cls is masked:
            return masked
    return None


def _new_index(arr: Any, name: object) -> pd.Index:
    """pd.Index(arr) keeping the dtype; str and object labels take a shortcut."""
    if type(arr) is _STRING_ARRAY or (isinstance(arr, np.ndarray) and arr.dtype == object):
        return pd.Index._simple_new(arr, name=name)  # type: ignore[attr-defined]  # private, no stub
    return pd.Index(arr, name=name, copy=False)


def array_from_spec(spec: object) -> np.ndarray | ExtensionArray:
    """Inverse of :func:`array_spec`: a 1-D numpy array or ExtensionArray."""
    if type(spec) is not list or not spec:
        raise _Invalid(f"bad array {describe(spec)}")
    kind, n = spec[0], len(spec)
    if kind == "np" and n == 3:
        raw_dtype = _dtype(spec[1])
        return _from_raw(spec[2], raw_dtype, (len(spec[2]) // max(raw_dtype.itemsize, 1),))
    if kind == "obj" and n == 2:
        items = _list(spec[1], "object column")
        return np.fromiter(items, dtype=object, count=len(items))
    if kind == "str" and n == 3:
        dtype = _pd_dtype(spec[1])
        if not isinstance(dtype, pd.StringDtype):
            raise _Invalid(f"bad string dtype {describe(spec[1])}")
        strings = _list(spec[2], "strings")
        # _from_sequence is the ExtensionArray constructor hook; pandas-stubs leaves it out
        return dtype.construct_array_type()._from_sequence(  # type: ignore[attr-defined]
            strings, dtype=dtype
        )
    if kind == "strj" and n == 5 and isinstance(spec[2], str) and type(spec[3]) is int:
        dtype = _pd_dtype(spec[1])
        if not isinstance(dtype, pd.StringDtype):
            raise _Invalid(f"bad string dtype {describe(spec[1])}")
        count = spec[3]
        parts = spec[2].split(_SEP) if count else []
        if len(parts) != count:
            raise _Invalid(f"expected {count} strings, found {len(parts)}")
        values = np.fromiter(parts, dtype=object, count=count)
        if spec[4] is not None:
            values[_from_raw(spec[4], np.dtype(bool), (count,))] = dtype.na_value
        cls = dtype.construct_array_type()
        # _simple_new and _from_sequence are pandas-internal; pandas-stubs leaves them out
        if cls is _STRING_ARRAY:  # every value is a str or the dtype's NA: nothing to check
            return cls._simple_new(values, dtype)  # type: ignore[attr-defined]
        return cls._from_sequence(values, dtype=dtype)  # type: ignore[attr-defined]
    if kind == "dttz" and n == 4:
        raw = spec[3]
        return _dttz_array(_from_raw(raw, np.dtype("i8"), (len(raw) // 8,)), spec[1], spec[2])
    if kind == "cat" and n == 4:
        codes, categories = spec[1], spec[2]
        if (
            not isinstance(codes, np.ndarray)
            or codes.dtype.kind != "i"
            or not isinstance(categories, pd.Index)
            or not isinstance(spec[3], bool)
        ):
            raise _Invalid("bad categorical")
        return pd.Categorical.from_codes(codes, dtype=_categorical_dtype(categories, spec[3]))
    if kind == "masked" and n == 4:
        dtype = _pd_dtype(spec[1])
        masked = _masked_array_type(dtype)
        if masked is None:
            raise _Invalid(f"bad masked dtype {describe(spec[1])}")
        # dtype is then a BaseMaskedDtype (Int64, Float64, boolean ...), whose
        # numpy_dtype pandas-stubs does not describe
        numpy_dtype: np.dtype = dtype.numpy_dtype  # type: ignore[union-attr]
        unmasked = array_from_spec(spec[2])
        mask = _from_raw(spec[3], np.dtype(bool), (len(unmasked),))
        return masked(unmasked.astype(numpy_dtype, copy=False), mask)
    if kind == "period" and n == 3:
        dtype = _pd_dtype(spec[1])
        if not isinstance(dtype, pd.PeriodDtype):
            raise _Invalid(f"bad period dtype {describe(spec[1])}")
        ordinals = _from_raw(spec[2], np.dtype("i8"), (len(spec[2]) // 8,))
        # public since pandas 2.2, but not in pandas-stubs
        periods = pd.PeriodIndex.from_ordinals(  # type: ignore[attr-defined]
            ordinals, freq=dtype.freq
        )
        return periods.array
    if kind == "interval" and n == 4 and spec[3] in ("left", "right", "both", "neither"):
        return pd.arrays.IntervalArray.from_arrays(
            array_from_spec(spec[1]), array_from_spec(spec[2]), closed=spec[3]
        )
    raise _Invalid(f"bad array spec {describe(kind)}")


# --- Index, Series -----------------------------------------------------------------------------
def _enc_index(idx: pd.Index) -> msgpack.ExtType:
    if isinstance(idx, pd.RangeIndex):
        spec = ["range", idx.start, idx.stop, idx.step, _freeze(idx.name)]
    elif isinstance(idx, pd.MultiIndex):
        spec = [
            "multi",
            list(idx.levels),
            [np.asarray(c) for c in idx.codes],
            [_freeze(name) for name in idx.names],
        ]
    else:
        freq = None
        if isinstance(idx, (pd.DatetimeIndex, pd.TimedeltaIndex)) and idx.freq is not None:
            freq = idx.freqstr
            if pd.tseries.frequencies.to_offset(freq) != idx.freq:
                freq = None  # e.g. custom business days: not expressible as a string
        arr = array_spec(idx.array, f"index {idx.name!r}")
        if arr[0] == "obj" and any(isinstance(v, tuple) for v in arr[1]):
            arr[1] = [_freeze(v) for v in arr[1]]
        spec = ["index", arr, _freeze(idx.name), freq]
    return _ExtType(EXT_PD_INDEX, _pack(spec))


def _dec_index(data: bytes) -> pd.Index:
    spec = _list(_unpack(data), "Index")
    kind = spec[0] if spec else None
    if kind == "range" and len(spec) == 5:
        start, stop, step = _check_ints(spec[1:4], 3, "RangeIndex")
        try:  # pandas takes a range whose length is beyond a C ssize_t; len() then raises
            len(range(start, stop, step))
        except (OverflowError, ValueError):
            raise _Invalid(f"bad RangeIndex {describe(spec[1:4])}") from None
        return pd.RangeIndex(start, stop, step, name=spec[4])
    if kind == "multi" and len(spec) == 4:
        levels, codes, names = (_list(v, "MultiIndex") for v in spec[1:])
        return pd.MultiIndex(levels=levels, codes=codes, names=names, verify_integrity=True)
    if kind == "index" and len(spec) == 4:
        arr, name, freq = array_from_spec(spec[1]), spec[2], spec[3]
        if freq is not None:
            if not isinstance(freq, str) or arr.dtype.kind not in "mM":
                raise _Invalid(f"bad freq {describe(freq)}")
            cls = pd.DatetimeIndex if arr.dtype.kind == "M" else pd.TimedeltaIndex
            return cls(arr, freq=freq, name=name)
        return _new_index(arr, name)
    raise _Invalid(f"bad Index {describe(kind)}")


def _enc_series(s: pd.Series) -> msgpack.ExtType:
    return _ExtType(
        EXT_PD_SERIES, _pack([_freeze(s.name), s.index, array_spec(s.array, f"Series {s.name!r}")])
    )


def _dec_series(data: bytes) -> pd.Series:
    spec = _list(_unpack(data), "Series")
    if len(spec) != 3 or not isinstance(spec[1], pd.Index):
        raise _Invalid("bad Series")
    arr = array_from_spec(spec[2])
    if len(arr) != len(spec[1]):
        raise _Invalid(f"Series has {len(arr)} values but an index of {len(spec[1])}")
    dtype = object if isinstance(arr, np.ndarray) and arr.dtype == object else None
    return pd.Series(arr, index=spec[1], name=spec[0], dtype=dtype, copy=False)


# --- DataFrame ---------------------------------------------------------------------------------
def _internal_blocks(df: pd.DataFrame) -> list[tuple[np.ndarray, Any]]:
    return [(blk.mgr_locs.as_array, blk.values) for blk in df._mgr.blocks]


def _blocks(df: pd.DataFrame) -> list[tuple[np.ndarray, Any]]:
    """(positions, values) per pandas block; values are 2-D (k x n) or a 1-D array.

    Reading pandas' blocks directly is ~10x faster than one Series per column; if
    the internals ever change shape, the public per-column path takes over.
    """
    try:
        blocks = _internal_blocks(df)
        if sum(len(locs) for locs, _ in blocks) == df.shape[1]:
            return blocks
    except AttributeError:
        pass
    return [(np.array([i]), df.iloc[:, i].array) for i in range(df.shape[1])]


def _enc_frame(df: pd.DataFrame) -> msgpack.ExtType:
    columns = df.columns
    out = []
    for locs, values in _blocks(df):
        dtype = values.dtype
        if values.ndim == 2:
            if isinstance(values, np.ndarray) and dtype.kind in _RAW_KINDS:
                out.append(["nd", locs.tolist(), dtype.str, values.tobytes()])
                continue
            if isinstance(dtype, pd.DatetimeTZDtype):
                out.append(
                    ["dttz", locs.tolist(), dtype.unit, tz_spec(dtype.tz), values.asi8.tobytes()]
                )
                continue
            if isinstance(values, (pd.arrays.DatetimeArray, pd.arrays.TimedeltaArray)):
                m8 = np.asarray(values)
                out.append(["nd", locs.tolist(), m8.dtype.str, m8.tobytes()])
                continue
            for j, loc in enumerate(locs.tolist()):
                what = f"column {columns[loc]!r} (position {loc})"
                out.append(["col", loc, array_spec(values[j], what)])
        else:
            loc = int(locs[0])
            out.append(
                ["col", loc, array_spec(values, f"column {columns[loc]!r} (position {loc})")]
            )
    return _ExtType(EXT_PD_DATAFRAME, _pack([columns, df.index, out]))


_Placed = tuple[np.ndarray | ExtensionArray, np.ndarray]
"""A DataFrame block as pandas takes it: (2-D ndarray or 1-D ExtensionArray, placement)."""


def _loc(position: int) -> np.ndarray:
    return np.array([position], np.intp)


def _dec_frame(data: bytes) -> pd.DataFrame:
    spec = _list(_unpack(data), "DataFrame")
    if len(spec) != 3 or not isinstance(spec[0], pd.Index) or not isinstance(spec[1], pd.Index):
        raise _Invalid("bad DataFrame")
    columns, index, blocks = spec[0], spec[1], _list(spec[2], "DataFrame blocks")
    n, ncols = len(index), len(columns)
    pairs: list[_Placed] = []
    for block in blocks:
        kind = block[0] if type(block) is list and block else None
        if kind == "nd" and len(block) == 4:
            locs = np.array(_check_ints(block[1], len(block[1]), "positions"), dtype=np.intp)
            dtype = _dtype(block[2], _RAW_KINDS)
            if dtype.kind in "mM" and np.datetime_data(dtype)[0] not in _UNITS:
                raise _Invalid(f"bad unit in {dtype.str}")
            pairs.append((_from_raw(block[3], dtype, (len(locs), n)), locs))
        elif kind == "dttz" and len(block) == 5:
            positions = _check_ints(block[1], len(block[1]), "positions")
            i8 = _from_raw(block[4], np.dtype("i8"), (len(positions), n))
            unit = block[2]
            for j, loc in enumerate(positions):
                pairs.append((_dttz_array(i8[j], unit, block[3]), _loc(loc)))
        elif kind == "col" and len(block) == 3 and type(block[1]) is int:
            arr = array_from_spec(block[2])
            if len(arr) != n:
                raise _Invalid(f"column {block[1]} has {len(arr)} rows, the index {n}")
            if isinstance(arr, np.ndarray):
                arr = arr.reshape(1, n)
            pairs.append((arr, _loc(block[1])))
        else:
            raise _Invalid(f"bad DataFrame block {describe(kind)}")
    placed = sorted(loc for _, locs in pairs for loc in locs.tolist())
    if placed != list(range(ncols)):
        raise _Invalid("DataFrame blocks do not place every column exactly once")
    if _from_blocks is not None:
        return _from_blocks(pairs, index, columns)
    return _assemble(pairs, index, columns)  # pragma: no cover - older pandas


def _assemble(pairs: list[_Placed], index: pd.Index, columns: pd.Index) -> pd.DataFrame:
    """Build a DataFrame with public constructors only (slower)."""
    cols: dict[int, Any] = {}
    for arr, locs in pairs:
        for j, loc in enumerate(locs.tolist()):
            cols[loc] = arr[j] if isinstance(arr, np.ndarray) else arr
    df = pd.DataFrame(
        {i: pd.Series(cols[i], index=index, copy=False) for i in range(len(cols))},
        index=index,
        copy=False,
    )
    df.columns = columns
    return df


# --- registration ------------------------------------------------------------------------------
ENCODERS: dict[type, Callable[[Any], Any]] = {
    np.ndarray: _enc_ndarray,
    pd.Timestamp: _enc_timestamp,
    pd.Timedelta: _enc_timedelta,
    pd.Period: _enc_period,
    type(pd.NaT): lambda _: _ExtType(EXT_PD_NAT, b""),
    type(pd.NA): lambda _: _ExtType(EXT_PD_NA, b""),
    pd.Series: _enc_series,
    pd.DataFrame: _enc_frame,
}


def _empty(value: object) -> Callable[[bytes], object]:
    def decode(data: bytes) -> object:
        if data:
            raise _Invalid("unexpected payload")
        return value

    return decode


DECODERS: dict[int, Callable[[bytes], object]] = {
    EXT_NP_SCALAR: _dec_np_scalar,
    EXT_NP_ARRAY: _dec_ndarray,
    EXT_PD_TIMESTAMP: _dec_timestamp,
    EXT_PD_TIMEDELTA: _dec_timedelta,
    EXT_PD_NAT: _empty(pd.NaT),
    EXT_PD_NA: _empty(pd.NA),
    EXT_PD_PERIOD: _dec_period,
    EXT_PD_INDEX: _dec_index,
    EXT_PD_SERIES: _dec_series,
    EXT_PD_DATAFRAME: _dec_frame,
}


def find_encoder(cls: type) -> Callable[[Any], Any] | None:
    """The encoder for a numpy/pandas type not in :data:`ENCODERS` (e.g. np.float32)."""
    if issubclass(cls, np.generic):
        return _enc_np_scalar
    if issubclass(cls, np.ma.MaskedArray):
        return None  # the mask would be lost
    if issubclass(cls, pd.Index):
        return _enc_index
    for base, encoder in ENCODERS.items():
        if issubclass(cls, base):
            return encoder
    return None
