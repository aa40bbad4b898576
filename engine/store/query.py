"""The API's list-query language (``filter``/``search``/``orderby``/``skip``/``top``),
compiled to SQL with bound parameters over whitelisted fields only, and the list specs of the
resources.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic, Literal, ParamSpec, TypeVar

from engine.errors import (
    QueryError,
)

P = ParamSpec("P")
T = TypeVar("T")


MAX_TOP = 100
MAX_SKIP = 2**31 - 1


Kind = Literal["str", "int", "float", "bool"]


@dataclass(frozen=True)
class Field:
    """A field clients may filter and order by: its SQL expression (a constant written here,
    never built from input) and its type."""

    sql: str
    kind: Kind = "str"


@dataclass(frozen=True)
class ListSpec:
    fields: Mapping[str, Field]
    search: tuple[str, ...]
    default_order: str


@dataclass(frozen=True)
class ListOptions:
    """PortSIP's list options, as given by the client."""

    filter: str | None = None
    search: str | None = None
    orderby: str | None = None
    skip: int = 0
    top: int = MAX_TOP


@dataclass(frozen=True)
class Page(Generic[T]):
    count: int
    items: list[T]


_COMPARE_SQL = {
    "eq": "IS",
    "ne": "IS NOT",
    "gt": ">",
    "ge": ">=",
    "lt": "<",
    "le": "<=",
}
_FUNCTIONS = ("contains", "startswith", "endswith")
_TOKEN_RE = re.compile(r"\s+|'(?:[^']|'')*'|-?\d+(?:\.\d+)?|[A-Za-z_][A-Za-z0-9_]*|[(),]")
MAX_FILTER_CHARS = 2000
MAX_FILTER_DEPTH = 16
MAX_FILTER_TERMS = 64


@dataclass(frozen=True)
class _Token:
    kind: Literal["str", "num", "name", "punct"]
    text: str
    pos: int


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        if match is None:
            if text[pos] == "'":
                raise QueryError("filter", f"unterminated string starting at position {pos}")
            raise QueryError("filter", f"unexpected character {text[pos]!r} at position {pos}")
        chunk = match.group()
        if chunk.startswith("'"):
            tokens.append(_Token("str", chunk[1:-1].replace("''", "'"), pos))
        elif chunk[0].isdigit() or chunk[0] == "-":
            tokens.append(_Token("num", chunk, pos))
        elif chunk[0] in "(),":
            tokens.append(_Token("punct", chunk, pos))
        elif not chunk.isspace():
            tokens.append(_Token("name", chunk, pos))
        pos = match.end()
    return tokens


class _FilterCompiler:
    """Recursive descent over the OData-like grammar, emitting SQL with `?` placeholders:

    expr    := and ('or' and)*
    and     := unary ('and' unary)*
    unary   := 'not' unary | '(' expr ')' | func '(' field ',' string ')'
             | field op value
    op      := eq | ne | gt | ge | lt | le
    value   := 'text' | number | true | false | null
    """

    def __init__(self, text: str, fields: Mapping[str, Field]) -> None:
        self.tokens = _tokenize(text)
        self.fields = fields
        self.index = 0
        self.depth = 0
        self.terms = 0
        self.params: list[Any] = []

    def compile(self) -> str:
        if not self.tokens:
            raise QueryError("filter", "is empty")
        sql = self._or()
        if self.index < len(self.tokens):
            token = self.tokens[self.index]
            raise QueryError("filter", f"unexpected {token.text!r} at position {token.pos}")
        return sql

    # token access
    def _peek(self) -> _Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def _next(self, expected: str) -> _Token:
        token = self._peek()
        if token is None:
            raise QueryError("filter", f"ends too early: expected {expected}")
        self.index += 1
        return token

    def _keyword(self, word: str) -> bool:
        token = self._peek()
        if token is not None and token.kind == "name" and token.text.lower() == word:
            self.index += 1
            return True
        return False

    def _punct(self, char: str) -> None:
        token = self._next(repr(char))
        if token.text != char or token.kind != "punct":
            raise QueryError("filter", f"expected {char!r} at position {token.pos}")

    # grammar
    def _or(self) -> str:
        parts = [self._and()]
        while self._keyword("or"):
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")"

    def _and(self) -> str:
        parts = [self._unary()]
        while self._keyword("and"):
            parts.append(self._unary())
        return parts[0] if len(parts) == 1 else "(" + " AND ".join(parts) + ")"

    def _unary(self) -> str:
        self.depth += 1
        if self.depth > MAX_FILTER_DEPTH:
            raise QueryError("filter", f"is nested more than {MAX_FILTER_DEPTH} levels deep")
        try:
            if self._keyword("not"):
                return f"(NOT {self._unary()})"
            token = self._peek()
            if token is not None and token.kind == "punct" and token.text == "(":
                self.index += 1
                inner = self._or()
                self._punct(")")
                return f"({inner})"
            return self._term()
        finally:
            self.depth -= 1

    def _term(self) -> str:
        self.terms += 1
        if self.terms > MAX_FILTER_TERMS:
            raise QueryError("filter", f"has more than {MAX_FILTER_TERMS} conditions")
        token = self._next("a field name or a function")
        if token.kind != "name":
            raise QueryError(
                "filter", f"expected a field name at position {token.pos}, not {token.text!r}"
            )
        following = self._peek()
        if token.text.lower() in _FUNCTIONS and following is not None and following.text == "(":
            return self._function(token.text.lower())
        spec = self._field(token)
        op_token = self._next("an operator (eq ne gt ge lt le)")
        op = op_token.text.lower()
        if op_token.kind != "name" or op not in _COMPARE_SQL:
            raise QueryError(
                "filter",
                f"expected an operator (eq ne gt ge lt le) at position {op_token.pos}, "
                f"not {op_token.text!r}",
            )
        value = self._value(token.text, spec)
        if value is None and op not in ("eq", "ne"):
            raise QueryError("filter", f"null can only be compared with eq or ne ({token.text})")
        if isinstance(value, bool) and op not in ("eq", "ne"):
            raise QueryError("filter", "true/false can only be compared with eq or ne")
        self.params.append(value)
        return f"{spec.sql} {_COMPARE_SQL[op]} ?"

    def _function(self, name: str) -> str:
        self._punct("(")
        field_token = self._next("a field name")
        spec = self._field(field_token)
        if spec.kind != "str":
            raise QueryError("filter", f"{name}() needs a text field; {field_token.text} is not")
        self._punct(",")
        value_token = self._next("a quoted text")
        if value_token.kind != "str":
            raise QueryError(
                "filter", f"{name}() needs a quoted text like 'abc' at position {value_token.pos}"
            )
        self._punct(")")
        text = value_token.text
        if text == "":
            return f"({spec.sql} IS NOT NULL)"
        if name == "contains":
            self.params.append(text)
            return f"(instr({spec.sql}, ?) > 0)"
        self.params += [text, text]
        if name == "startswith":
            return f"(substr({spec.sql}, 1, length(?)) = ?)"
        return f"(substr({spec.sql}, -length(?)) = ?)"

    def _field(self, token: _Token) -> Field:
        spec = self.fields.get(token.text) if token.kind == "name" else None
        if spec is None:
            raise QueryError(
                "filter",
                f"unknown field {token.text!r} at position {token.pos}; fields: "
                + ", ".join(sorted(self.fields)),
            )
        return spec

    def _value(self, field_name: str, spec: Field) -> Any:
        token = self._next("a value")
        value: Any
        if token.kind == "str":
            value = token.text
        elif token.kind == "num":
            value = float(token.text) if "." in token.text else int(token.text)
            if isinstance(value, int) and not -(2**63) <= value < 2**63:
                raise QueryError("filter", f"number out of range at position {token.pos}")
        elif token.kind == "name" and token.text.lower() in ("true", "false"):
            value = token.text.lower() == "true"
        elif token.kind == "name" and token.text.lower() == "null":
            return None
        else:
            raise QueryError(
                "filter",
                f"expected a value ('text', a number, true, false or null) at position "
                f"{token.pos}, not {token.text!r}",
            )
        expected: dict[Kind, tuple[type, ...]] = {
            "str": (str,),
            "int": (int,),
            "float": (int, float),
            "bool": (bool,),
        }
        if isinstance(value, bool) != (spec.kind == "bool") or not isinstance(
            value, expected[spec.kind]
        ):
            example = {"str": "'text'", "int": "a whole number", "float": "a number"}
            raise QueryError(
                "filter",
                f"{field_name} is compared with {example.get(spec.kind, 'true or false')}"
                f" (position {token.pos})",
            )
        return value


def compile_filter(text: str, fields: Mapping[str, Field]) -> tuple[str, list[Any]]:
    """A filter expression as (SQL condition, parameters). Raises QueryError."""
    if len(text) > MAX_FILTER_CHARS:
        raise QueryError("filter", f"is longer than {MAX_FILTER_CHARS} characters")
    compiler = _FilterCompiler(text, fields)
    sql = compiler.compile()
    return sql, compiler.params


def compile_orderby(text: str, fields: Mapping[str, Field]) -> str:
    """`name desc, extension_number` as an ORDER BY list. Raises QueryError."""
    terms = []
    items = [item.strip() for item in text.split(",")]
    if len(items) > 5:
        raise QueryError("orderby", "may name at most 5 fields")
    for item in items:
        words = item.split()
        if not words or len(words) > 2:
            raise QueryError("orderby", f"{item!r} is not 'field' or 'field asc|desc'")
        spec = fields.get(words[0])
        if spec is None:
            raise QueryError(
                "orderby", f"unknown field {words[0]!r}; fields: " + ", ".join(sorted(fields))
            )
        direction = words[1].lower() if len(words) == 2 else "asc"
        if direction not in ("asc", "desc"):
            raise QueryError("orderby", f"direction {words[1]!r} must be asc or desc")
        terms.append(f"{spec.sql} {direction.upper()}")
    return ", ".join(terms)


def compile_list(options: ListOptions, spec: ListSpec) -> tuple[str, list[Any], str]:
    """The WHERE condition, its parameters and the ORDER BY list of a list request."""
    if not 0 <= options.skip <= MAX_SKIP:
        raise QueryError("skip", f"must be between 0 and {MAX_SKIP}")
    if not 1 <= options.top <= MAX_TOP:
        raise QueryError("top", f"must be between 1 and {MAX_TOP}")
    conditions: list[str] = []
    params: list[Any] = []
    if options.filter is not None and options.filter.strip():
        sql, filter_params = compile_filter(options.filter, spec.fields)
        conditions.append(sql)
        params += filter_params
    if options.search is not None and options.search.strip():
        if len(options.search) > 256:
            raise QueryError("search", "is longer than 256 characters")
        needle = options.search.strip().casefold()
        conditions.append(
            "(" + " OR ".join(f"instr(vr_fold({column}), ?) > 0" for column in spec.search) + ")"
        )
        params += [needle] * len(spec.search)
    order = spec.default_order
    if options.orderby is not None and options.orderby.strip():
        order = compile_orderby(options.orderby, spec.fields) + ", " + spec.default_order
    return " AND ".join(conditions) or "1", params, order


RECEPTIONIST_LIST = ListSpec(
    fields={
        "id": Field("r.id"),
        "name": Field("r.name"),
        "extension_number": Field("r.extension_number"),
        "language": Field("json_extract(r.doc, '$.language')"),
        "enabled": Field("json_extract(r.doc, '$.enabled')", "bool"),
        "dtmf_interval": Field("json_extract(r.doc, '$.dtmf_interval')", "int"),
        "enable_pin": Field("json_extract(r.doc, '$.enable_pin')", "bool"),
        "enable_night_mode": Field("json_extract(r.doc, '$.enable_night_mode')", "bool"),
        "exclude_list": Field("json_extract(r.doc, '$.exclude_list')"),
        "prompt_file_id": Field("r.prompt_file_id"),
        "transfer_prompt_file_id": Field("r.transfer_prompt_file_id"),
        "created_at": Field("r.created_at"),
        "updated_at": Field("r.updated_at"),
    },
    search=("r.name", "r.extension_number"),
    default_order="r.rowid ASC",
)

FILE_LIST = ListSpec(
    fields={
        "id": Field("f.id"),
        "name": Field("f.name"),
        "size": Field("f.size", "int"),
        "duration": Field("f.duration", "float"),
        "media_type": Field("f.media_type"),
        "digest": Field("f.digest"),
        "created_at": Field("f.created_at"),
    },
    search=("f.name",),
    default_order="f.rowid ASC",
)

CALL_LIST = ListSpec(
    fields={
        "session_id": Field("c.session_id"),
        "receptionist_id": Field("c.receptionist_id"),
        "receptionist": Field("json_extract(c.doc, '$.receptionist')"),
        "extension_number": Field("c.extension_number"),
        "caller_number": Field("c.caller_number"),
        "caller_name": Field("json_extract(c.doc, '$.caller_name')"),
        "outcome": Field("c.outcome"),
        "reason": Field("json_extract(c.doc, '$.reason')"),
        "transferred_to": Field("json_extract(c.doc, '$.transferred_to')"),
        "transfer_sip_code": Field("json_extract(c.doc, '$.transfer_sip_code')", "int"),
        "started_at": Field("c.started_at"),
        "answered_at": Field("json_extract(c.doc, '$.answered_at')"),
        "ended_at": Field("c.ended_at"),
    },
    search=(
        "c.session_id",
        "c.caller_number",
        "c.extension_number",
        "json_extract(c.doc, '$.receptionist')",
    ),
    default_order="c.seq DESC",
)
