"""The range of every number the wire carries, declared once as annotated types.

msgspec checks these ranges while it decodes a body (one place for every request), the OpenAPI
document shows them as `minimum`/`maximum` (so schemathesis tries the edges), and
`range_problem` turns msgspec's complaint into "field: must be ... from A to B".

Why these bounds:

- counts and anything stored in an INTEGER column stop at 2**31-1: PostgreSQL's INTEGER is
  32 bits, and past 64 bits SQLite raises OverflowError (a 500, before these existed);
- byte offsets, sizes and event sequence numbers stop at 2**63-1 (a signed 64-bit file offset
  and BIGINT);
- slots, attempts and retries have a real bound far below that (see the constants);
- a worker's capabilities are free-form, but a number among them is a 64-bit integer or a
  float (the scheduler compares them as floats: a longer integer would not convert);
- seconds and task limits are finite (JSON cannot carry NaN or infinity, and msgspec refuses
  1e400) and non-negative; limits stop at 2**53, the largest whole number a float holds
  exactly, so a worker's setrlimit never sees a value it cannot take.

Rejected: checking each field by hand after decoding. Every new field would need its own check
(the ones missing are what answered 500), and the OpenAPI document would not show the ranges.
"""

from __future__ import annotations

import re
import sys
from typing import Annotated, Any

import msgspec

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
MAX_SLOTS = 10_000  # slots on one worker (and so the most `cpus` a task may ask for)
MAX_ATTEMPTS = 1_000  # attempts of one task, and retries of a failed one
MAX_SECONDS = 100 * 365 * 86400.0  # a wait, or a token's lifetime: a hundred years
MAX_LIMIT = float(2**53)  # a task limit (seconds, bytes or a count)

Count = Annotated[int, msgspec.Meta(ge=0, le=INT32_MAX)]
Offset = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]  # a byte offset or size
Slots = Annotated[int, msgspec.Meta(ge=1, le=MAX_SLOTS)]
Attempts = Annotated[int, msgspec.Meta(ge=1, le=MAX_ATTEMPTS)]
Retries = Annotated[int, msgspec.Meta(ge=0, le=MAX_ATTEMPTS)]
ExitCode = Annotated[int, msgspec.Meta(ge=-(2**31), le=INT32_MAX)]  # an INTEGER column
FileMode = Annotated[int, msgspec.Meta(ge=0, le=0o7777)]  # permission bits only
Seconds = Annotated[float, msgspec.Meta(ge=0, le=MAX_SECONDS)]
Lifetime = Annotated[float, msgspec.Meta(gt=0, le=MAX_SECONDS)]
LimitValue = Annotated[float, msgspec.Meta(ge=0, le=MAX_LIMIT)]
MAX_PRIORITY = 1_000_000
Priority = Annotated[int, msgspec.Meta(ge=-MAX_PRIORITY, le=MAX_PRIORITY)]  # higher goes first
MAX_SHARE = 1e6
Share = Annotated[float, msgspec.Meta(gt=0, le=MAX_SHARE)]  # an owner's fair-share weight
_Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=INT64_MAX)]
_Finite = Annotated[float, msgspec.Meta(ge=-sys.float_info.max, le=sys.float_info.max)]
# one value of a worker's capabilities: checked at the top level, where the scheduler looks
Fact = str | bool | _Int64 | _Finite | None | list[Any] | dict[str, Any]

# msgspec's words for a number outside its type's range, and where it was
_RANGE = re.compile(r"^(?:Expected `(int|float)` [<>]=? \S+|Number out of range) - at `\$(.*)`$")
_STEP = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")


def range_problem(kind: Any, error: msgspec.ValidationError) -> str | None:
    """'path: must be ... from A to B' when `error` (decoding `kind`) is a number out of its
    range; None for any other decoding error."""
    found = _RANGE.match(str(error))
    if found is None:
        return None
    number, path = found.group(1), found.group(2)
    # "Number out of range" is a float's complaint (1e400)
    want = msgspec.inspect.IntType if number == "int" else msgspec.inspect.FloatType
    node = _follow(msgspec.inspect.type_info(kind), path, want)
    return f"{path.lstrip('.') or 'body'}: {_phrase(node)}"


def _follow(node: Any, path: str, want: type) -> Any:
    """The type (an IntType or FloatType, or None when lost) at a msgspec error path."""
    for name, index in _STEP.findall(path):
        node = _number_in(node, want)
        if name and isinstance(node, msgspec.inspect.StructType):
            node = next((f.type for f in node.fields if f.encode_name == name), None)
        elif index and isinstance(node, msgspec.inspect.DictType):
            node = node.value_type
        elif index and isinstance(node, msgspec.inspect.ListType | msgspec.inspect.SetType):
            node = node.item_type
        else:
            return None
    return _number_in(node, want)


def _number_in(node: Any, want: type) -> Any:
    # `int | None`, a Fact: the part msgspec complained of (a container, further along a path)
    if isinstance(node, msgspec.inspect.UnionType):
        parts = [t for t in node.types if not isinstance(t, msgspec.inspect.NoneType)]
        return next((t for t in parts if isinstance(t, want)), parts[0] if parts else node)
    return node


def _phrase(node: Any) -> str:
    if not isinstance(node, msgspec.inspect.IntType | msgspec.inspect.FloatType):
        return "a number out of range"  # msgspec said so of a type we did not follow
    what = "an integer" if isinstance(node, msgspec.inspect.IntType) else "a finite number"
    parts = []
    if node.ge is not None:
        parts.append(f"from {_text(node.ge)}")
    elif node.gt is not None:
        parts.append(f"above {_text(node.gt)}")
    if node.le is not None:
        parts.append(f"to {_text(node.le)}" if node.ge is not None else f"at most {_text(node.le)}")
    sep = " " if node.ge is not None else ", "  # "from 1 to 10", "above 0, at most 10"
    return " ".join(["must be", what, sep.join(parts)]).rstrip()


def _text(value: float) -> str:
    # 3153600000, not 3.1536e+09: the reader compares it with what they sent
    return str(int(value)) if float(value).is_integer() and abs(value) <= 2**63 else str(value)
