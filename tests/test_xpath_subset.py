"""The XPath subset compiled to Python gives what lxml gives, element for element."""

import itertools
import random

import pytest
from lxml import etree, html as lxml_html

from skypile.text.xpath_subset import CompiledXPath, Unsupported, compile_xpath

RE = {"re": "http://exslt.org/regular-expressions"}

EXPRESSIONS = [
    ".//*[self::div or self::p][re:test(@class, 'nav|menu') or contains(@style, 'border')]",
    ".//*[starts-with(@id|@class, 'reply-') or re:test(@id|@style, 'hid')]",
    ".//*[@class='x' or @data-k or @id|@class='y']",
    ".//*[contains(translate(@id, 'TN', 'tn'), 'tnav') or contains(translate(@class, 'AAB', 'xyz'), 'xz')]",
    ".//div[not(.//h1) or re:test(@class, '^a')][not(self::ol or self::ul)]",
    ".//*[re:test(@class, 'NAV', 'i')]",
    ".//*[re:test(@class, 'a?')]",  # matches the empty string: elements without a class too
    "(.//*[self::div or self::section][@id='y' or contains(@class, 'b')])[1]",
    "(.//span)[1]",
    ".//aside|.//div[contains(@class|@id, 'a')]|.//*[re:test(@id, 'x')]",
    ".//*[(@id and not(@class)) or (@class and @style and not(contains(@class, 'a')))]",
    ".//p",
]

NAMES = ["div", "p", "span", "section", "ol", "ul", "aside", "h1", "item"]
VALUES = ["", "a", "nav x", "reply-1", "Menu", "hidden", "b y", "x", "y", "tNav", "AB", "border:1"]


def random_page(rng: random.Random, n: int = 120) -> str:
    """Nested elements whose id / class / style / data-k come in every order, or not at all,
    with comments between them."""
    out, depth = ["<html><body>"], []
    for _ in range(n):
        if depth and rng.random() < 0.35:
            out.append(f"</{depth.pop()}>")
            continue
        name = rng.choice(NAMES)
        attrs = [a for a in ("id", "class", "style", "data-k") if rng.random() < 0.45]
        rng.shuffle(attrs)
        out.append(f"<{name}" + "".join(f' {a}="{rng.choice(VALUES)}"' for a in attrs) + ">")
        out.append(rng.choice(["", "text", "<!-- c -->", "more text"]))
        depth.append(name)
    out += [f"</{d}>" for d in reversed(depth)] + ["</body></html>"]
    return "".join(out)


@pytest.mark.parametrize("source", EXPRESSIONS)
def test_same_elements_in_the_same_order_as_lxml(source):
    rng = random.Random(7)
    lx, py = etree.XPath(source, namespaces=RE), compile_xpath(source)
    matched = 0
    for _ in range(60):
        root = lxml_html.fromstring(random_page(rng))
        for node in itertools.islice(root.iter(etree.Element), 0, None, 17):  # several contexts
            want = lx(node)
            assert py(node) == want, source
            matched += len(want)
    assert matched > 0, f"{source} matched nothing: the comparison showed nothing"


def test_attribute_order_decides_the_string_value_of_a_union():
    first_id = lxml_html.fromstring('<div><p id="reply-1" class="z">a</p></div>')
    first_class = lxml_html.fromstring('<div><p class="z" id="reply-1">a</p></div>')
    source = ".//*[starts-with(@id|@class, 'reply-')]"
    run = compile_xpath(source)
    assert [e.tag for e in run(first_id)] == ["p"] == [e.tag for e in etree.XPath(source)(first_id)]
    assert run(first_class) == [] == etree.XPath(source)(first_class)


@pytest.mark.parametrize("source", [
    ".//*[@id!='x']", ".//*[local-name()='a']", ".//*[1]", ".//*[self::div][2]",
    "//div[@id]", ".//div/p", ".//*[re:test(@id, 'x', 'm')]", ".//*[count(.//p) > 1]",
    "(.//a)[1]|(.//b)[1]", ".//*[rel='me']", ".//*[contains(text(), 'x')]",
])
def test_expressions_outside_the_subset_are_refused(source):
    with pytest.raises(Unsupported):
        compile_xpath(source)


def test_the_stand_in_hands_a_whole_document_to_lxml():
    page = lxml_html.fromstring("<div><p class='a'>x</p></div>")
    x = CompiledXPath(etree.XPath(".//*[@class='a']"))
    assert [e.tag for e in x(page)] == ["p"]
    assert [e.tag for e in x(page.getroottree())] == ["p"]  # an ElementTree: lxml answers
