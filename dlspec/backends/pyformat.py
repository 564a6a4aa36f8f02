"""Line layout for generated Python: the statements dlspec writes, laid out as `ruff format`
(and black) lay them out under their default settings, so generated files pass `ruff format
--check` unchanged.

Generated statements are simple — an assignment, an expression or a `return` of one call, name,
or literal collection — so the layout needs only the formatter's main rule: a statement that
does not fit in `LINE_LENGTH` columns is split at its last bracket pair, the contents on one
indented line if they fit there, else one element per line with a trailing comma, each element
split the same way when it is still too long. A sole element that is itself a bracketed call or
collection is split inside its own brackets rather than given a line of its own. Text is kept as
written (quotes, numbers), only re-broken.
"""

from __future__ import annotations

import ast

LINE_LENGTH = 88
INDENT = "    "


def _segment(src: str, node: ast.AST) -> str:
    seg = ast.get_source_segment(src, node)
    assert seg is not None
    return seg


def _brackets(src: str, node: ast.expr) -> tuple[str, list[str], str] | None:
    """(head up to and including the opening bracket, the elements, the closing bracket) for a
    call or a list, tuple or dict display written with brackets; None for anything else."""
    if isinstance(node, ast.Call):
        head = _segment(src, node.func) + "("
        elems = [_segment(src, a) for a in node.args]
        for kw in node.keywords:
            value = _segment(src, kw.value)
            elems.append(f"{kw.arg}={value}" if kw.arg else f"**{value}")
        return head, elems, ")"
    text = _segment(src, node)
    if isinstance(node, ast.List):
        return "[", [_segment(src, e) for e in node.elts], "]"
    if isinstance(node, ast.Tuple) and text.startswith("(") and len(node.elts) != 1:
        return "(", [_segment(src, e) for e in node.elts], ")"
    if isinstance(node, ast.Dict):
        elems = []
        for k, v in zip(node.keys, node.values):
            elems.append(f"{_segment(src, k)}: {_segment(src, v)}" if k is not None else f"**{_segment(src, v)}")
        return "{", elems, "}"
    return None


def _candidates(src: str, node: ast.expr) -> list[tuple[str, list[str], str]]:
    """The bracket pairs a statement may split at, last first: (head, elements, tail)."""
    out = []
    tail = ""
    while True:
        parts = _brackets(src, node)
        if parts is None:
            return out
        head, elems, close = parts
        out.append((head, elems, close + tail))
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Call):
            return out
        func_text = _segment(src, node.func)
        tail = _segment(src, node)[len(func_text):] + tail
        node = node.func


def _expr_node(text: str) -> ast.expr | None:
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        return None
    return tree.body


def layout(prefix: str, expr: str, suffix: str = "", depth: int = 0) -> list[str]:
    """The lines of `prefix + expr + suffix` at `depth` levels of indentation, where `expr` is a
    Python expression and `prefix` what stands before it on the line (`x = `, `return `)."""
    pad = INDENT * depth
    flat = f"{pad}{prefix}{expr}{suffix}"
    if len(flat) <= LINE_LENGTH:
        return [flat]
    node = _expr_node(expr)
    parts = _brackets(expr, node) if node is not None else None
    if parts is None:
        return [flat]
    head, elems, close = parts
    # a call of a call (`layers.Dense(...)(x)`): split at the last brackets whose opening line
    # fits, trying from the last pair towards the first, as the formatter does
    for cand in _candidates(expr, node):
        if len(f"{pad}{prefix}{cand[0]}") <= LINE_LENGTH:
            head, elems, close = cand
            break
    if not elems:
        return [flat]
    inner = INDENT * (depth + 1)
    joined = ", ".join(elems)
    if len(inner + joined) <= LINE_LENGTH and (len(elems) > 1 or _expr_node(elems[0]) is None
                                               or _brackets(elems[0], _expr_node(elems[0])) is None):
        return [f"{pad}{prefix}{head}", f"{inner}{joined}", f"{pad}{close}{suffix}"]
    lines = [f"{pad}{prefix}{head}"]
    if len(elems) == 1:
        sole = _expr_node(elems[0])
        if sole is not None and _brackets(elems[0], sole) is not None:
            if len(inner + elems[0]) <= LINE_LENGTH:
                lines.append(inner + elems[0])
            else:
                lines.extend(layout("", elems[0], "", depth + 1))
            lines.append(f"{pad}{close}{suffix}")
            return lines
    for e in elems:
        lines.extend(_element(e, depth + 1))
    lines.append(f"{pad}{close}{suffix}")
    return lines


def _element(elem: str, depth: int) -> list[str]:
    """One element of a split collection or call, with its trailing comma: `key: value` of a
    dict and `name=value` of a call are split inside the value."""
    pad = INDENT * depth
    if len(pad + elem) + 1 <= LINE_LENGTH:
        return [f"{pad}{elem},"]
    node = _expr_node(elem)
    if node is not None:
        return layout("", elem, ",", depth)
    # `name=value` or `key: value`: split inside the value
    key, found, value = elem.partition("=")
    if found and key.isidentifier() and _expr_node(value) is not None:
        return layout(key + "=", value, ",", depth)
    key, found, value = elem.partition(": ")
    if found and _expr_node(key) is not None and _expr_node(value) is not None:
        return layout(key + ": ", value, ",", depth)
    return [f"{pad}{elem},"]
