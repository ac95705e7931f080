"""A subset of XPath 1.0 compiled to Python: the attribute tests trafilatura runs on every
element of a page, without a call from libxml2 back into Python for each regex.

trafilatura prunes a page with expressions such as
``.//*[self::div or self::p][re:test(@class, 'nav|menu') or contains(@style, 'border')]``.
lxml evaluates ``re:test`` (EXSLT) by calling Python once per element and test, and
converts the attribute to a Python string each time: on real pages about half of
trafilatura's time went into such expressions. :func:`compile_xpath` turns an expression of
the subset below into one Python loop over the context's descendants that reads each
attribute once; expressions outside the subset raise :class:`Unsupported` and stay with
lxml.

The subset, with XPath 1.0's meaning kept exactly:

- a union (``A | B``) of descendant steps ``.//NAME`` or ``.//*``, each with predicates;
  ``(STEP)[1]`` for the first match in document order;
- in a predicate: ``or``, ``and``, ``not(...)``, parentheses, ``self::NAME``, ``.//NAME``
  (a descendant exists), ``@a`` (the attribute exists), ``@a = 'x'``,
  ``contains(S, 'x')``, ``starts-with(S, 'x')`` and EXSLT's ``re:test(S, 'regex'[, 'i'])``;
- ``S`` is ``@a``, a union of attributes ``@a|@b`` (its string value is the attribute that
  comes first on the element, as XPath takes the first node in document order; ``''``
  when none is there) or ``translate(@a, 'AB', 'ab')``.

``re:test`` is compiled with Python's ``re`` as lxml does (``re.IGNORECASE`` for the
``i`` flag): the same regex engine on the same string. The prefix ``re`` is taken to name
EXSLT's regular expressions, as in trafilatura (the source of an ``etree.XPath`` does not
say which namespace a prefix had). Equality against a union is true
when any of its attributes equals the literal, as in XPath.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from lxml import etree

__all__ = ["Unsupported", "compile_xpath", "CompiledXPath"]


class Unsupported(ValueError):
    """The expression uses something outside the subset: keep lxml for it."""


_TOKEN = re.compile(r"""\s*(?:
    (?P<op>\.//|//|::|!=|<=|>=|[()\[\]|=,@*<>/.$+-])
  | '(?P<sq>[^']*)'
  | "(?P<dq>[^"]*)"
  | (?P<num>\d+(?:\.\d*)?)
  | (?P<name>[A-Za-z_][\w.-]*(?::[A-Za-z_][\w.-]*)?)
)""", re.X)


def _tokens(source: str) -> list[tuple[str, str]]:
    out, pos, source = [], 0, source.strip()
    while pos < len(source):
        m = _TOKEN.match(source, pos)
        if not m or m.end() == pos:
            raise Unsupported(f"cannot read the expression at {source[pos:pos + 20]!r}")
        pos = m.end()
        kind = m.lastgroup
        if kind in ("sq", "dq"):
            out.append(("lit", m.group(kind)))
        else:
            out.append((kind, m.group(kind)))
    return out


class _Parser:
    """Recursive descent over the tokens; builds a small tree of tuples."""

    def __init__(self, source: str):
        self.toks, self.i = _tokens(source), 0

    def peek(self, k: int = 0) -> tuple[str, str] | None:
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else None

    def take(self, value: str | None = None, kind: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (value is not None and tok[1] != value) or (kind is not None and tok[0] != kind):
            raise Unsupported(f"expected {value or kind}, found {tok[1] if tok else 'the end'}")
        self.i += 1
        return tok[1]

    def at(self, value: str) -> bool:
        tok = self.peek()
        return tok is not None and tok[0] != "lit" and tok[1] == value

    # ---- paths ----
    def union(self) -> list[tuple]:
        paths = [self.path()]
        while self.at("|"):
            self.take("|")
            paths.append(self.path())
        if self.peek() is not None:
            raise Unsupported(f"unexpected {self.peek()[1]!r}")
        return paths

    def path(self) -> tuple:
        if self.at("("):
            self.take("(")
            step = self.step()
            self.take(")")
            self.take("[")
            if self.take(kind="num") != "1":
                raise Unsupported("only (path)[1] is supported")
            self.take("]")
            return step + (True,)
        return self.step() + (False,)

    def step(self) -> tuple:
        self.take(".//")
        name = self.take("*") if self.at("*") else self.take(kind="name")
        if ":" in name:
            raise Unsupported("prefixed element names")
        preds = []
        while self.at("["):
            self.take("[")
            if self.peek() and self.peek()[0] == "num":
                raise Unsupported("positional predicates")
            preds.append(self.or_())
            self.take("]")
        return (name, preds)

    # ---- predicates ----
    def or_(self) -> tuple:
        return self.joined("or", self.and_)

    def and_(self) -> tuple:
        return self.joined("and", self.unary)

    def joined(self, word: str, term: Callable[[], tuple]) -> tuple:
        """``term (word term)*``: one term alone, or (word, [terms])."""
        terms = [term()]
        while self.at(word):
            self.take(word)
            terms.append(term())
        return terms[0] if len(terms) == 1 else (word, terms)

    def unary(self) -> tuple:
        tok = self.peek()
        if tok is None:
            raise Unsupported("unexpected end")
        if tok == ("op", "("):
            self.take("(")
            inner = self.or_()
            self.take(")")
            return inner
        if tok == ("name", "not") and self.peek(1) == ("op", "("):
            self.take("not")
            self.take("(")
            inner = self.or_()
            self.take(")")
            return ("not", inner)
        if tok == ("name", "self") and self.peek(1) == ("op", "::"):
            self.take("self")
            self.take("::")
            name = self.take(kind="name")
            if ":" in name:
                raise Unsupported("prefixed element names")
            return ("self", name)
        if tok == ("op", ".//"):
            self.take(".//")
            name = self.take(kind="name")
            if ":" in name or self.at("[") or self.at("/"):
                raise Unsupported("only .//NAME tests for a descendant")
            return ("desc", name)
        if tok == ("op", "@"):
            attrs = self.attrs()
            if self.at("="):
                self.take("=")
                return ("eq", attrs, self.take(kind="lit"))
            return ("has", attrs)
        if tok[0] == "name" and self.peek(1) == ("op", "("):
            return self.call()
        raise Unsupported(f"unsupported term {tok[1]!r}")

    def attrs(self) -> tuple[str, ...]:
        names = [self.attr()]
        while self.at("|") and self.peek(1) == ("op", "@"):
            self.take("|")
            names.append(self.attr())
        return tuple(names)

    def attr(self) -> str:
        self.take("@")
        name = self.take(kind="name")
        if ":" in name:
            raise Unsupported("prefixed attribute names")
        return name

    def string(self) -> tuple:
        if self.at("@"):
            return ("attr", self.attrs())
        if self.peek() == ("name", "translate"):
            self.take("translate")
            self.take("(")
            attrs = self.attrs()
            self.take(",")
            src = self.take(kind="lit")
            self.take(",")
            dst = self.take(kind="lit")
            self.take(")")
            return ("translate", attrs, src, dst)
        raise Unsupported("a string argument must be attributes or translate() of them")

    def call(self) -> tuple:
        fn = self.take(kind="name")
        self.take("(")
        if fn in ("contains", "starts-with"):
            s = self.string()
            self.take(",")
            lit = self.take(kind="lit")
            self.take(")")
            return (fn, s, lit)
        if fn == "re:test":
            s = self.string()
            self.take(",")
            pattern = self.take(kind="lit")
            flags = ""
            if self.at(","):
                self.take(",")
                flags = self.take(kind="lit")
            self.take(")")
            if set(flags) - set("gi"):
                raise Unsupported(f"re:test flags {flags!r}")
            return ("re", s, pattern, flags)
        raise Unsupported(f"function {fn}()")


# ---- code generation ------------------------------------------------------------------

def _first_of(el, names: tuple[str, ...]) -> str:
    """The string value of ``@a|@b|...`` on ``el``: the value of the one that comes first
    on the element (document order of attributes), or '' when none is there."""
    hit = None
    for name in names:
        value = el.get(name)
        if value is not None:
            if hit is not None:  # two or more present: their order on the element decides
                for key, v in el.items():
                    if key in names:
                        return v
            hit = value
    return hit if hit is not None else ""


def _translate_table(src: str, dst: str) -> dict[int, int | None]:
    table: dict[int, int | None] = {}
    for i, ch in enumerate(src):
        if ord(ch) not in table:  # XPath: the first occurrence of a character decides
            table[ord(ch)] = ord(dst[i]) if i < len(dst) else None
    return table


class _Gen:
    """Python source for a predicate. Each attribute is read once per element, into a
    local (``a0``, ``a1``, ...: None when absent) made before the test."""

    def __init__(self):
        self.consts: dict[str, Any] = {"_first_of": _first_of}
        self.attrs: dict[str, str] = {}

    def const(self, value: Any, prefix: str) -> str:
        name = f"{prefix}{len(self.consts)}"
        self.consts[name] = value
        return name

    def var(self, attr: str) -> str:
        return self.attrs.setdefault(attr, f"a{len(self.attrs)}")

    def reads(self) -> str:
        """The statements that read the attributes, one per line."""
        return "".join(f"        {v} = g({a!r})\n" for a, v in self.attrs.items())

    def string(self, node: tuple) -> str:
        if node[0] == "attr":
            attrs = node[1]
            if len(attrs) == 1:
                return f"({self.var(attrs[0])} or '')"
            if len(attrs) == 2:  # one of them there: its value; both: their order decides
                x, y = self.var(attrs[0]), self.var(attrs[1])
                return (f"(({x} if {x} is not None else {y} if {y} is not None else '') "
                        f"if {x} is None or {y} is None else _first_of(el, {attrs!r}))")
            return f"_first_of(el, {attrs!r})"
        _, attrs, src, dst = node
        table = self.const(_translate_table(src, dst), "T")
        return f"{self.string(('attr', attrs))}.translate({table})"

    def pred(self, node: tuple) -> str:
        kind = node[0]
        if kind == "or":
            return "(" + " or ".join(self.pred(t) for t in node[1]) + ")"
        if kind == "and":
            return "(" + " and ".join(self.pred(t) for t in node[1]) + ")"
        if kind == "not":
            return f"(not {self.pred(node[1])})"
        if kind == "self":
            return f"(el.tag == {node[1]!r})"
        if kind == "desc":
            return f"(next(el.iterdescendants({node[1]!r}), None) is not None)"
        if kind == "has":
            return "(" + " or ".join(f"{self.var(a)} is not None" for a in node[1]) + ")"
        if kind == "eq":
            return "(" + " or ".join(f"{self.var(a)} == {node[2]!r}" for a in node[1]) + ")"
        if kind == "contains":
            return f"({node[2]!r} in {self.string(node[1])})"
        if kind == "starts-with":
            return f"{self.string(node[1])}.startswith({node[2]!r})"
        if kind == "re":
            _, s, pattern, flags = node
            search = self.const(re.compile(pattern, re.IGNORECASE if "i" in flags else 0).search, "R")
            return f"({search}({self.string(s)}) is not None)"
        raise Unsupported(kind)  # pragma: no cover - the parser makes no other kinds

    def step_test(self, name: str, preds: list[tuple], with_tag: bool) -> str:
        parts = [f"el.tag == {name!r}"] if with_tag and name != "*" else []
        parts += [self.pred(p) for p in preds]
        return " and ".join(parts) or "True"


def _tag_filter(name: str, preds: list[tuple]) -> tuple[tuple[str, ...] | None, list[tuple]]:
    """The element names a step can match, for lxml to filter on in C: ``.//NAME``, or
    ``.//*`` whose first predicate is only ``self::`` tests (then that predicate goes)."""
    if name != "*":
        return (name,), preds
    if preds:
        first = preds[0]
        terms = first[1] if first[0] == "or" else [first]
        if all(t[0] == "self" for t in terms):
            return tuple(t[1] for t in terms), preds[1:]
    return None, preds


def compile_xpath(source: str) -> Callable[[etree._Element], list]:
    """A function ``f(element) -> list`` giving what ``etree.XPath(source)(element)`` gives
    for an expression of the subset (module docstring); :class:`Unsupported` otherwise."""
    paths = _Parser(source).union()
    gen = _Gen()
    if len(paths) == 1:
        name, preds, first = paths[0]
        tags, preds = _tag_filter(name, preds)
        tag_args = ", ".join(repr(t) for t in tags) if tags else "_ELEMENT"
        test = gen.step_test(name, preds, with_tag=False)
    else:
        if any(first for _, _, first in paths):
            raise Unsupported("(path)[1] inside a union")
        first = False
        tag_args = "_ELEMENT"
        test = " or ".join(f"({gen.step_test(n, p, with_tag=True)})" for n, p, _ in paths)
    hit = "return [el]" if first else "append(el)"
    code = (
        "def run(node):\n"
        "    out = []\n"
        "    append = out.append\n"
        f"    for el in node.iterdescendants({tag_args}):\n"
        "        g = el.get\n"
        + gen.reads() +
        f"        if {test}:\n"
        f"            {hit}\n"
        "    return out\n")
    scope = dict(gen.consts, _ELEMENT=etree.Element)
    exec(compile(code, f"<xpath {source[:60]!r}>", "exec"), scope)
    return scope["run"]


class CompiledXPath:
    """Stands in for an ``etree.XPath`` object: called with an element, it runs the
    compiled function; anything else (a document, keyword variables) goes to lxml."""

    def __init__(self, original: etree.XPath):
        self.original = original
        self.path = original.path
        self._run = compile_xpath(original.path)

    def __call__(self, node, **variables):
        if variables or not isinstance(node, etree._Element):
            return self.original(node, **variables)
        return self._run(node)

    def __repr__(self) -> str:
        return f"CompiledXPath({' '.join(self.path.split())[:80]!r})"
