"""Compile a pySigma rule, once, into a plain Python predicate over a flow dict.

pySigma parses the YAML, applies the modifiers and resolves the condition (``1 of sel_*``,
``all of them``) into a tree of ``ConditionAND``/``ConditionOR``/``ConditionNOT`` over
``ConditionFieldEqualsValueExpression`` leaves. This module turns that tree into nested closures:
dotted-path getters built at compile time, value tests specialised per type. Nothing in the
returned predicate looks at YAML or pySigma objects again.  ``MatcherSource`` turns the trees of
several rules into the source of one function with the same value tests (the engine generates
one per flow class).

Matching semantics (see docs/rules.md):

- A field is a dotted JSON path (``tls.cipher.kex``); a numeric part indexes a list
  (``tls.certificates.0.key_bits``). A path crossing a list collects the values of every element.
- A list value matches when any element matches.
- Strings compare case-insensitively (Sigma's default); ``*``/``?`` are wildcards;
  ``|cased`` compares case-sensitively. Numbers and booleans compare by type (``true`` never
  matches ``1``).
- ``null`` matches a missing field or ``None``; ``|exists: true`` matches anything else.
- ``|re`` searches (unanchored) with Python's ``re``; ``|cidr`` matches IP strings in a network;
  ``|gt|gte|lt|lte`` compare numbers.
"""

from __future__ import annotations

import ipaddress
import operator
import re
from functools import lru_cache
from itertools import islice
from typing import Any, Callable, Iterable, Optional

from sigma.conditions import (
    ConditionAND,
    ConditionFieldEqualsValueExpression,
    ConditionNOT,
    ConditionOR,
    ConditionValueExpression,
)
from sigma.types import (
    CompareOperators,
    SigmaBool,
    SigmaCIDRExpression,
    SigmaCompareExpression,
    SigmaExists,
    SigmaNull,
    SigmaNumber,
    SigmaRegularExpression,
    SigmaString,
    SpecialChars,
)

try:  # pySigma >= 0.11
    from sigma.types import SigmaCasedString
except ImportError:  # pragma: no cover
    SigmaCasedString = None  # type: ignore[assignment,misc]

Predicate = Callable[[dict], bool]
Getter = Callable[[dict], Any]


class CompileError(ValueError):
    """A rule uses a construct the dotaudit compiler does not support."""


# -- getters ----------------------------------------------------------------------------------


def _walk(value: Any, parts: tuple, start: int) -> Any:
    for i in range(start, len(parts)):
        part = parts[i]
        cls = value.__class__
        if cls is dict:
            value = value.get(part) if part.__class__ is str else value.get(str(part))
        elif cls is list:
            if part.__class__ is int:
                value = value[part] if -len(value) <= part < len(value) else None
            else:
                out: list = []
                for element in value:
                    got = _walk(element, parts, i)
                    if got is None:
                        continue
                    if got.__class__ is list:
                        out.extend(got)
                    else:
                        out.append(got)
                return out or None
        else:
            return None
        if value is None:
            return None
    return value


@lru_cache(maxsize=1024)
def make_getter(path: str) -> Getter:
    """A function returning the value at dotted ``path`` of a dict (None when missing)."""
    if not path or any(not p for p in path.split(".")):
        raise CompileError(f"bad field path {path!r}")
    parts = tuple(int(p) if p.isdigit() else p for p in path.split("."))
    if not all(p.__class__ is str for p in parts) or len(parts) > 3:
        steps = tuple(enumerate(parts))

        def get_n(d: dict) -> Any:
            v = d
            for i, p in steps:
                cls = v.__class__
                if cls is dict:
                    v = v.get(p) if p.__class__ is str else None
                elif cls is list:
                    if p.__class__ is int:
                        v = v[p] if -len(v) <= p < len(v) else None
                    else:
                        return _walk(v, parts, i)
                else:
                    return None
                if v is None:
                    return None
            return v

        return get_n
    if len(parts) == 1:
        (a,) = parts
        return lambda d: d.get(a)
    if len(parts) == 2:
        a, b = parts

        def get2(d: dict) -> Any:
            v = d.get(a)
            if v.__class__ is dict:
                return v.get(b)
            if v.__class__ is list:
                return _walk(v, parts, 1)
            return None

        return get2
    if len(parts) == 3:
        a, b, c = parts

        def get3(d: dict) -> Any:
            v = d.get(a)
            if v.__class__ is dict:
                w = v.get(b)
                if w.__class__ is dict:
                    return w.get(c)
                if w.__class__ is list:
                    return _walk(w, parts, 2)
                return None
            if v.__class__ is list:
                return _walk(v, parts, 1)
            return None

        return get3
    return lambda d: _walk(d, parts, 0)


# -- value tests (on one scalar) --------------------------------------------------------------


@lru_cache(maxsize=8192)
def _ip(text: str):
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


_NUM = (int, float)
MEMO_SIZE = 4096
"""Strings whose answer a ``contains`` test keeps (then it starts over)."""


def _as_text(x: Any) -> Optional[str]:
    cls = x.__class__
    if cls is str:
        return x
    if cls is int or cls is float:
        return str(x)
    return None


def _string_test(value: SigmaString, cased: bool) -> Callable[[Any], bool]:
    parts = value.s
    W = SpecialChars.WILDCARD_MULTI
    plain_parts = [p for p in parts if isinstance(p, str)]
    specials = [p for p in parts if not isinstance(p, str)]
    fold = (lambda s: s) if cased else str.lower

    def text_test(test: Callable[[str], bool]) -> Callable[[Any], bool]:
        def t(x: Any) -> bool:
            s = _as_text(x)
            return s is not None and test(fold(s))

        return t

    if not specials:
        want = fold("".join(plain_parts))
        exact = "".join(plain_parts)
        if cased:
            return lambda x: x == exact
        return lambda x: x == exact or (x.__class__ is str and x.lower() == want) or (
            x.__class__ in _NUM and x.__class__ is not bool and str(x) == want)
    if len(parts) == 3 and parts[0] is W and parts[2] is W and isinstance(parts[1], str):
        needle = fold(parts[1])
        return text_test(lambda s: needle in s)
    if len(parts) == 2 and parts[1] is W and isinstance(parts[0], str):
        prefix = fold(parts[0])
        return text_test(lambda s: s.startswith(prefix))
    if len(parts) == 2 and parts[0] is W and isinstance(parts[1], str):
        suffix = fold(parts[1])
        return text_test(lambda s: s.endswith(suffix))
    pattern = "".join(
        re.escape(p) if isinstance(p, str) else (".*" if p is W else ".") for p in parts
    )
    rx = re.compile(pattern, re.DOTALL | (0 if cased else re.IGNORECASE))
    return text_test(lambda s: rx.fullmatch(s) is not None)


_COMPARE = {
    CompareOperators.LT: operator.lt,
    CompareOperators.LTE: operator.le,
    CompareOperators.GT: operator.gt,
    CompareOperators.GTE: operator.ge,
}


def _scalar_test(value: Any) -> Callable[[Any], bool]:
    if SigmaCasedString is not None and isinstance(value, SigmaCasedString):
        return _string_test(value, cased=True)
    if isinstance(value, SigmaString):
        return _string_test(value, cased=False)
    if isinstance(value, SigmaBool):
        want = bool(value.boolean)
        return (lambda x: x is True) if want else (lambda x: x is False)
    if isinstance(value, SigmaNumber):
        n = value.number
        return lambda x: (x.__class__ is int or x.__class__ is float) and x == n
    if isinstance(value, SigmaCompareExpression):
        op = _COMPARE[value.op]
        n = value.number.number
        return lambda x: (x.__class__ is int or x.__class__ is float) and op(x, n)
    if isinstance(value, SigmaRegularExpression):
        try:
            rx = value.compile()
        except Exception:  # noqa: BLE001 - older pySigma
            rx = re.compile(value.to_plain())
        if not isinstance(rx, re.Pattern):
            rx = re.compile(value.to_plain())
        return lambda x: (s := _as_text(x)) is not None and rx.search(s) is not None
    if isinstance(value, SigmaCIDRExpression):
        net = value.network

        def in_net(x: Any) -> bool:
            if x.__class__ is not str:
                return False
            ip = _ip(x)
            return ip is not None and ip.version == net.version and ip in net

        return in_net
    raise CompileError(f"unsupported value {type(value).__name__} ({value!r})")


def _any_test(v: list, test: Callable[[Any], bool]) -> bool:
    for e in v:
        if test(e):
            return True
    return False


def _any_tests(v: Any, tests: tuple) -> bool:
    if v is None:
        return False
    for e in (v if v.__class__ is list else (v,)):
        for test in tests:
            if test(e):
                return True
    return False


def _has(v: list, want: bool) -> bool:
    return any(e is want for e in v)


def _field_predicate(field: str, tests: list[Callable[[Any], bool]]) -> Predicate:
    get = make_getter(field)
    if len(tests) == 1:
        (test,) = tests

        def match(d: dict) -> bool:
            v = get(d)
            if v.__class__ is list:
                return _any_test(v, test)
            return v is not None and test(v)

        return match

    tests_t = tuple(tests)
    return lambda d: _any_tests(get(d), tests_t)


def _bool_predicate(get: Getter, want: bool) -> Predicate:
    def match(d: dict) -> bool:
        v = get(d)
        return v is want or (v.__class__ is list and _has(v, want))

    return match


def _leaf(node: ConditionFieldEqualsValueExpression) -> Predicate:
    field, value = node.field, node.value
    if field is None:
        raise CompileError("keyword (field-less) detections are not supported")
    if isinstance(value, SigmaNull):
        get = make_getter(field)
        return lambda d: get(d) is None
    if isinstance(value, SigmaExists):
        get = make_getter(field)
        if value.exists:
            return lambda d: get(d) is not None
        return lambda d: get(d) is None
    if isinstance(value, SigmaBool):
        return _bool_predicate(make_getter(field), bool(value.boolean))
    return _field_predicate(field, [_scalar_test(value)])


def _groupable(node: Any) -> bool:
    return (isinstance(node, ConditionFieldEqualsValueExpression) and node.field is not None
            and not isinstance(node.value, (SigmaNull, SigmaExists)))


def _plain_string(node: Any) -> Optional[str]:
    if isinstance(node, ConditionFieldEqualsValueExpression) and type(node.value) is SigmaString:
        if not node.value.contains_special():
            return str(node.value)
    return None


def _pure_class_test(node: Any, field: str = "class") -> bool:
    if _plain_string(node) is not None:
        return node.field == field
    return isinstance(node, ConditionOR) and bool(node.args) and all(_pure_class_test(a, field) for a in node.args)


def _and_args(node: Any, implied: Optional[frozenset[str]]) -> list:
    """An AND's arguments, without a pure ``class`` test that admits all the ``implied`` classes."""
    if implied is None:
        return list(node.args)
    return [a for a in node.args if not (_pure_class_test(a) and implied <= (required_classes(a) or frozenset()))]


def compile_condition(node: Any, implied: Optional[frozenset[str]] = None) -> Predicate:
    """Turn a pySigma condition tree into a predicate.

    ``implied``: the flow classes the caller guarantees (the engine's class index). A pure
    ``class`` test that is a necessary conjunct and admits all of them is dropped."""
    if isinstance(node, ConditionFieldEqualsValueExpression):
        return _leaf(node)
    if isinstance(node, ConditionValueExpression):
        raise CompileError("keyword (field-less) detections are not supported")
    if isinstance(node, ConditionNOT):
        inner = compile_condition(node.args[0])
        return lambda d: not inner(d)
    if isinstance(node, ConditionAND):
        preds = [compile_condition(a, implied) for a in _and_args(node, implied)]
        if not preds:
            return lambda d: True
        if len(preds) == 1:
            return preds[0]
        if len(preds) == 2:
            p, q = preds
            return lambda d: p(d) and q(d)
        if len(preds) == 3:
            p, q, r = preds
            return lambda d: p(d) and q(d) and r(d)
        preds_t = tuple(preds)
        return lambda d: all(p(d) for p in preds_t)
    if isinstance(node, ConditionOR):
        preds = _compile_or(node.args)
        if len(preds) == 1:
            return preds[0]
        if len(preds) == 2:
            p, q = preds
            return lambda d: p(d) or q(d)
        preds_t = tuple(preds)
        return lambda d: any(p(d) for p in preds_t)
    raise CompileError(f"unsupported condition element {type(node).__name__}")


def _set_test(strings: list[str]) -> Callable[[Any], bool]:
    exact = frozenset(strings)
    folded = frozenset(s.lower() for s in strings)

    def member(x: Any) -> bool:
        cls = x.__class__
        if cls is str:
            return x in exact or x.lower() in folded
        if cls is int or cls is float:
            return str(x) in folded
        return False

    return member


def _or_groups(args: Iterable[Any]) -> list[tuple]:
    """How an OR's arguments are evaluated: ("leaf", node) alone, ("tests", field, tests) for
    several leaves on one field (plain strings become one set lookup, several ``contains``
    needles one scan), ("node", node) for the rest."""
    by_field: dict[str, list[Any]] = {}
    rest: list[Any] = []
    for a in args:
        if _groupable(a):
            by_field.setdefault(a.field, []).append(a)
        else:
            rest.append(a)
    groups: list[tuple] = []
    for field, leaves in by_field.items():
        if len(leaves) == 1:
            groups.append(("leaf", leaves[0]))
            continue
        strings = [s for s in (_plain_string(a) for a in leaves) if s is not None]
        others = [a for a in leaves if _plain_string(a) is None]
        tests: list[Callable[[Any], bool]] = []
        if strings:
            tests.append(_set_test(strings) if len(strings) > 1 else _string_test(SigmaString(strings[0]), False))
        needles = []
        for a in others:
            v = a.value
            parts = v.s if type(v) is SigmaString else None
            if (parts is not None and len(parts) == 3 and parts[0] is SpecialChars.WILDCARD_MULTI
                    and parts[2] is SpecialChars.WILDCARD_MULTI and isinstance(parts[1], str)):
                needles.append(parts[1].lower())
            else:
                tests.append(_scalar_test(v))
        if needles:
            needles_t = tuple(needles)
            seen: dict[str, bool] = {}   # a string's answer: list fields repeat (offered suites)

            def contains_any(x: Any, needles_t=needles_t, seen=seen) -> bool:
                hit = seen.get(x) if x.__class__ is str else None
                if hit is not None:
                    return hit
                s = _as_text(x)
                if s is None:
                    return False
                s = s.lower()
                hit = False
                for n in needles_t:
                    if n in s:
                        hit = True
                        break
                if x.__class__ is str:
                    if len(seen) >= MEMO_SIZE:
                        seen.clear()
                    seen[x] = hit
                return hit

            tests.append(contains_any)
        groups.append(("tests", field, tests))
    groups.extend(("node", a) for a in rest)
    return groups


def _compile_or(args: Iterable[Any]) -> list[Predicate]:
    preds: list[Predicate] = []
    for group in _or_groups(args):
        if group[0] == "leaf":
            preds.append(_leaf(group[1]))
        elif group[0] == "tests":
            preds.append(_field_predicate(group[1], group[2]))
        else:
            preds.append(compile_condition(group[1]))
    return preds


# -- generated matchers -----------------------------------------------------------------------


class MatcherSource:
    """Python source for several conditions over one flow ``d``, evaluated in one generated
    function: each field the conditions read is looked up once (the lines of ``fetch``), each
    condition is one expression (``condition``).  The closures of ``compile_condition`` call
    a function per node; a generated matcher of a class's rules does the same tests in a
    fraction of the time.  ``env`` holds the tests and constants the source names."""

    def __init__(self) -> None:
        self.env: dict[str, Any] = {"_walk": _walk, "_any_test": _any_test, "_any_tests": _any_tests,
                                    "_has": _has}
        self.fetch: list[str] = []
        self.fields: dict[str, str] = {}
        self.firsts: dict[str, str] = {}

    def const(self, obj: Any) -> str:
        name = f"c{len(self.env)}"
        self.env[name] = obj
        return name

    def field(self, path: str) -> str:
        var = self.fields.get(path)
        if var is not None:
            return var
        var = self.fields[path] = f"v{len(self.fields)}"
        get = make_getter(path)   # the same errors as the closures
        parts = path.split(".")
        if len(parts) > 3 or any(p.isdigit() for p in parts):
            self.fetch.append(f"{var} = {self.const(get)}(d)")
            return var
        if len(parts) == 1:
            self.fetch.append(f"{var} = d.get({parts[0]!r})")
            return var
        first = self.firsts.get(parts[0])
        if first is None:
            first = self.firsts[parts[0]] = f"f{len(self.firsts)}"
            self.fetch.append(f"{first} = d.get({parts[0]!r})")
        consts = self.const(tuple(parts))
        if len(parts) == 2:
            self.fetch.append(f"{var} = {first}.get({parts[1]!r}) if {first}.__class__ is dict else "
                              f"(_walk({first}, {consts}, 1) if {first}.__class__ is list else None)")
        else:
            self.fetch += [f"if {first}.__class__ is dict:",
                           f"    w = {first}.get({parts[1]!r})",
                           f"    {var} = w.get({parts[2]!r}) if w.__class__ is dict else "
                           f"(_walk(w, {consts}, 2) if w.__class__ is list else None)",
                           f"else:",
                           f"    {var} = _walk({first}, {consts}, 1) if {first}.__class__ is list else None"]
        return var

    def _tests(self, field: str, tests: list) -> str:
        v = self.field(field)
        if len(tests) == 1:
            t = self.const(tests[0])
            return f"(_any_test({v}, {t}) if {v}.__class__ is list else ({v} is not None and {t}({v})))"
        return f"_any_tests({v}, {self.const(tuple(tests))})"

    def _leaf(self, node: ConditionFieldEqualsValueExpression) -> str:
        field, value = node.field, node.value
        if field is None:
            raise CompileError("keyword (field-less) detections are not supported")
        if isinstance(value, SigmaNull):
            return f"({self.field(field)} is None)"
        if isinstance(value, SigmaExists):
            return f"({self.field(field)} is {'not ' if value.exists else ''}None)"
        if isinstance(value, SigmaBool):
            v, want = self.field(field), bool(value.boolean)
            return f"({v} is {want} or ({v}.__class__ is list and _has({v}, {want})))"
        return self._tests(field, [_scalar_test(value)])

    def condition(self, node: Any, implied: Optional[frozenset[str]] = None) -> str:
        """The expression of ``compile_condition(node, implied)``."""
        if isinstance(node, ConditionFieldEqualsValueExpression):
            return self._leaf(node)
        if isinstance(node, ConditionValueExpression):
            raise CompileError("keyword (field-less) detections are not supported")
        if isinstance(node, ConditionNOT):
            return f"(not {self.condition(node.args[0])})"
        if isinstance(node, ConditionAND):
            args = _and_args(node, implied)
            if not args:
                return "True"
            return "(" + " and ".join(self.condition(a, implied) for a in args) + ")"
        if isinstance(node, ConditionOR):
            parts = []
            for group in _or_groups(node.args):
                if group[0] == "leaf":
                    parts.append(self._leaf(group[1]))
                elif group[0] == "tests":
                    parts.append(self._tests(group[1], group[2]))
                else:
                    parts.append(self.condition(group[1]))
            return "(" + " or ".join(parts) + ")"
        raise CompileError(f"unsupported condition element {type(node).__name__}")

    def indexed(self, tree: Any, classes: Optional[frozenset[str]]) -> str:
        """The expression of a rule's ``match_indexed`` (``compile_tree``)."""
        if classes is None:
            return self.condition(tree)
        if _pure_class_test(tree):
            return "True"
        return self.condition(tree, classes)

    def function(self, name: str, body: list[str]) -> Callable:
        """Compile ``def name(d)``: the fetch lines, then ``body``."""
        src = f"def {name}(d):\n" + "".join(f"    {line}\n" for line in self.fetch + body)
        exec(compile(src, f"<dotaudit matcher {name}>", "exec"), self.env)
        return self.env[name]


# -- class prefilter --------------------------------------------------------------------------


def required_classes(node: Any, field: str = "class") -> Optional[frozenset[str]]:
    """The values of ``field`` a condition requires (plain string equality under AND), or None."""
    s = _plain_string(node)
    if s is not None and node.field == field:
        return frozenset({s, s.lower()})
    if isinstance(node, ConditionAND):
        found = None
        for a in node.args:
            got = required_classes(a, field)
            if got is not None:
                found = got if found is None else found & got
        return found
    if isinstance(node, ConditionOR):
        union: set[str] = set()
        for a in node.args:
            got = required_classes(a, field)
            if got is None:
                return None
            union |= got
        return frozenset(union)
    return None


def compile_conditions(parsed: list[Any]) -> tuple[Predicate, Optional[frozenset[str]], Predicate]:
    """Compile a rule's conditions (several conditions are OR-ed, as Sigma says).

    Returns the full predicate, the classes the rule requires (or None), and the predicate to
    use when the caller has already checked the flow's class against those classes."""
    return compile_trees([c.parse() for c in parsed])


def combine_trees(trees: list[Any]) -> Any:
    """One tree for a rule's parsed conditions (several are OR-ed)."""
    return trees[0] if len(trees) == 1 else ConditionOR(args=trees)


def compile_trees(trees: list[Any]) -> tuple[Predicate, Optional[frozenset[str]], Predicate]:
    """``compile_conditions`` of the parsed conditions (``SigmaCondition.parse()``)."""
    return compile_tree(combine_trees(trees))


def compile_tree(tree: Any) -> tuple[Predicate, Optional[frozenset[str]], Predicate]:
    """``compile_trees`` of the tree ``combine_trees`` made."""
    classes = required_classes(tree)
    full = compile_condition(tree)
    if classes is None:
        return full, None, full
    if _pure_class_test(tree):
        return full, classes, (lambda d: True)
    return full, classes, compile_condition(tree, classes)


# -- message templates ------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")


def format_value(value: Any, limit: int = 10) -> str:
    cls = value.__class__
    if cls is str:
        return value
    if cls is int:
        return str(value)
    if value is None:
        return "none"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".")
    if isinstance(value, (list, tuple, set, frozenset)):
        if not value:
            return "none"
        n = len(value)
        items = [format_value(v) for v in islice(value, limit)]
        return ", ".join(items) + (f" (+{n - limit} more)" if n > limit else "")
    if isinstance(value, dict):
        return ", ".join(f"{k}={format_value(v)}" for k, v in value.items())
    return str(value)


def compile_template(text: str) -> tuple[Callable[[Callable[[str], Any]], str], list[str]]:
    """Split a message template once; render later with a ``lookup(placeholder)`` function.

    Returns the renderer and the placeholders it uses (for lint)."""
    pieces = _PLACEHOLDER.split(text)
    literals = tuple(pieces[0::2])
    keys = tuple(pieces[1::2])

    def render(lookup: Callable[[str], Any]) -> str:
        out = [literals[0]]
        for key, lit in zip(keys, literals[1:]):
            out.append(format_value(lookup(key)))
            out.append(lit)
        return "".join(out)

    render.literals = literals   # type: ignore[attr-defined]  # for engine.draft_finding
    render.keys = keys           # type: ignore[attr-defined]
    return render, list(keys)
