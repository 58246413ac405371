"""What a client may put in the strings, numbers and metadata of a request.

Input that passes here is stored, published and sent without surprises. What it rejects would
otherwise fail later and far from the caller: PostgreSQL stores neither NUL (in ``text`` or
``jsonb``) nor lone surrogates (they have no UTF-8 form) nor an infinite number, and a failed
insert in a group commit used to fail the requests sharing it; a line break in a value that
becomes a mail header (an address, a subject) would start a header of the client's choosing; and a
channel service refuses a delivery nested deeper than its JSON parser goes.
"""

from __future__ import annotations

import json
import math
import re
from collections import deque
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

Loc = tuple[str | int, ...]
"""Where a value sits in a request: keys and list indexes from the top."""

MAX_METADATA_DEPTH = 32
"""Levels of nesting metadata may have, the metadata object itself being the first.

The channel services parse a delivery with pydantic's JSON parser, which gives up at about 200
levels (then the delivery is dead-lettered as malformed); 32 is far below that, leaves room for the
delivery around the metadata, and is more than any caller's metadata needs."""

MAX_REPORTED = 20
"""Problems reported for one value's contents: enough to fix the request, and a bounded reply."""

_SURROGATE = re.compile("[\ud800-\udfff]")
# Every character str.splitlines() breaks at: the email package folds headers with it.
_LINE_BREAK = re.compile("[\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_CONTROL_IN_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")

LINE_PATTERN = r"^[^\u0000-\u001f\u007f-\u009f\u2028\u2029]*$"
"""JSON Schema pattern of one line: no control characters, no line or paragraph separators."""
TEXT_PATTERN = r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]*$"
"""JSON Schema pattern of free text: no control characters but tab, LF and CR."""


def _code(char: str) -> str:
    return f"U+{ord(char):04X}"


def _not_unicode(value: str) -> str | None:
    found = _SURROGATE.search(value)
    if found is None:
        return None
    return f"contains a lone surrogate ({_code(found.group())}), which is not Unicode text"


def line_problem(value: str) -> str | None:
    """Why ``value`` cannot be one line (a header's value, a key), or None when it can."""
    if value.isprintable():  # the common case, in one pass: no control, no separator, no surrogate
        return None
    if (reason := _not_unicode(value)) is not None:
        return reason
    if (found := _LINE_BREAK.search(value)) is not None:
        return f"contains a line break ({_code(found.group())}): header injection"
    if (found := _CONTROL.search(value)) is not None:
        return f"contains the control character {_code(found.group())}"
    return None


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be free text (a body, a metadata value): tab, LF and CR may appear."""
    if value.isprintable():
        return None
    if (reason := _not_unicode(value)) is not None:
        return reason
    if (found := _CONTROL_IN_TEXT.search(value)) is not None:
        return f"contains the control character {_code(found.group())}"
    return None


# --- request model fields ---------------------------------------------------------------------


class _Pattern:
    """Documents a rule as a JSON Schema ``pattern``; the validator next to it enforces it."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema["pattern"] = self.pattern
        return json_schema


def _enforce(rule: Callable[[str], str | None]) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if isinstance(value, str) and (reason := rule(value)) is not None:
            raise ValueError(reason)
        return value

    return check


Line = Annotated[str, AfterValidator(_enforce(line_problem)), _Pattern(LINE_PATTERN)]
"""A string that must stay one line: a subject, a filter value."""
Text = Annotated[str, AfterValidator(_enforce(text_problem)), _Pattern(TEXT_PATTERN)]
"""Free text: an email body."""
HEADER_RULE = BeforeValidator(_enforce(line_problem))
"""Checks a value that becomes a header before any other validator reads it (an address)."""


# --- anything JSON ----------------------------------------------------------------------------


def _children(node: dict[Any, Any] | list[Any]) -> list[tuple[str | int, Any]]:
    return list(node.items()) if isinstance(node, dict) else list(enumerate(node))


def json_problems(value: Any, loc: Loc = ()) -> list[tuple[Loc, str]]:
    """Strings (keys too) that are not Unicode text, and numbers JSON cannot carry (``1e400``
    parses as infinity), anywhere in a parsed body: no part of a request may hold them."""
    problems: list[tuple[Loc, str]] = []
    queue: deque[tuple[Loc, Any]] = deque([(loc, value)])
    while queue and len(problems) < MAX_REPORTED:
        here, node = queue.popleft()
        if isinstance(node, str):
            if (reason := _not_unicode(node)) is not None:
                problems.append((here, reason))
        elif isinstance(node, float):
            if not math.isfinite(node):
                problems.append((here, "is a number too large to represent"))
        elif isinstance(node, dict | list):
            for key, child in _children(node):
                if isinstance(key, str) and (reason := _not_unicode(key)) is not None:
                    problems.append(((*here, key), f"the name {reason}"))
                else:
                    queue.append(((*here, key), child))
    return problems


def metadata_problems(metadata: Any, loc: Loc, max_bytes: int) -> list[tuple[Loc, str]]:
    """Why ``metadata`` cannot be stored and delivered: keys must be one line, strings free text,
    nesting at most ``MAX_METADATA_DEPTH`` deep, and the whole at most ``max_bytes`` of compact
    JSON. Anything but an object is left to the request model."""
    if not isinstance(metadata, dict):
        return []
    problems: list[tuple[Loc, str]] = []
    queue: deque[tuple[Loc, dict[Any, Any] | list[Any], int]] = deque([(loc, metadata, 1)])
    while queue and len(problems) < MAX_REPORTED:
        here, node, depth = queue.popleft()
        if depth > MAX_METADATA_DEPTH:
            problems.append((here, f"nests deeper than {MAX_METADATA_DEPTH} levels"))
            continue
        for key, child in _children(node):
            if isinstance(key, str) and (reason := line_problem(key)) is not None:
                problems.append(((*here, key), f"the name {reason}"))
            elif isinstance(child, str) and (reason := text_problem(child)) is not None:
                problems.append(((*here, key), reason))
            elif isinstance(child, dict | list):
                queue.append(((*here, key), child, depth + 1))
    if problems:
        return problems[:MAX_REPORTED]
    size = len(json.dumps(metadata, ensure_ascii=False, separators=(",", ":")).encode())
    if size > max_bytes:
        return [(loc, f"is {size} bytes as compact JSON; at most {max_bytes} are accepted")]
    return []
