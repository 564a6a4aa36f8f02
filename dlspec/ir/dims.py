"""Symbolic dimensions: integers, symbols (`batch`, `seq`) and polynomials over them.

A dimension is a plain `int` when it is known, else a `Sym` — a normalized polynomial with
integer coefficients over symbols and floor-division atoms. Arithmetic with `+ - * //` works on
both and folds back to `int` whenever the result is constant, so shape rules are written once:

    >>> h = Sym.symbol("h")
    >>> str((h + 2 * 1 - 3) // 1 + 1)
    'h'
    >>> str((h - 2) // 2 + 1)
    'h // 2'
    >>> str((h - 1) // 2 + 1)
    '(h + 1) // 2'
    >>> str(((h - 2) // 2 - 2) // 2 + 1)
    'h // 4'

Every floor division is put in one normal form, so that equal sizes compare equal and read
the way a person writes them. Each rewrite is an identity over all integers, whatever the
symbols' values (`tests/test_dims.py` checks them against numeric evaluation):

* multiples of the divisor leave the division: `(k*a + b) // k == a + b // k` (the constant
  left inside lies in `[0, k)`, so `(h - 2) // 2 + 1` is `h // 2`), which is also how a size
  declared as a multiple (`16 * h`) stays exact through every pooling;
* a common factor cancels: `(2*h + 2) // 4 == (h + 1) // 2`;
* nested divisions merge: `(x // a + p) // b == (x + a*p) // (a*b)` for an integer polynomial
  `p` (so `(h // 2) // 2` is `h // 4`);
* a negative divisor moves to the numerator: `x // -k == (-x) // k`.
"""

from __future__ import annotations

import math
import re
from typing import Union

Dim = Union[int, "Sym"]

_Atom = Union[str, "FloorDiv"]
_Monomial = tuple  # sorted tuple of atoms (with repetition)


def _atom_key(a: _Atom) -> str:
    return a if isinstance(a, str) else "~" + str(a)


class FloorDiv:
    """The atom `num // den` where num is a polynomial that does not divide evenly."""

    __slots__ = ("num", "den", "_h")

    def __init__(self, num: Sym, den: int):
        self.num = num
        self.den = den
        self._h = hash(("//", num, den))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FloorDiv) and self.den == other.den and self.num == other.num

    def __hash__(self) -> int:
        return self._h

    def __str__(self) -> str:
        return f"{_operand(self.num)} // {self.den}"

    def subs(self, env: dict[str, int]) -> Dim:
        n = self.num.subs(env)
        return n // self.den


def _norm(terms: dict) -> Dim:
    terms = {m: c for m, c in terms.items() if c != 0}
    if not terms:
        return 0
    if len(terms) == 1 and () in terms:
        return terms[()]
    s = Sym.__new__(Sym)
    s.terms = tuple(sorted(terms.items(), key=lambda mc: (not mc[0], -len(mc[0]), [_atom_key(a) for a in mc[0]])))
    s._h = hash(s.terms)
    return s


def _terms(d: Dim) -> dict:
    if isinstance(d, Sym):
        return dict(d.terms)
    return {(): int(d)} if d else {}


class Sym:
    """A polynomial dimension. Instances are immutable and hashable; equality is structural."""

    __slots__ = ("terms", "_h")

    @staticmethod
    def symbol(name: str) -> Sym:
        return _norm({(name,): 1})  # type: ignore[return-value]

    # arithmetic --------------------------------------------------------------------------------
    def __add__(self, other: Dim) -> Dim:
        if not isinstance(other, (int, Sym)):
            return NotImplemented
        t = _terms(self)
        for m, c in _terms(other).items():
            t[m] = t.get(m, 0) + c
        return _norm(t)

    __radd__ = __add__

    def __neg__(self) -> Dim:
        return _norm({m: -c for m, c in self.terms})

    def __sub__(self, other: Dim) -> Dim:
        if not isinstance(other, (int, Sym)):
            return NotImplemented
        return self + (-other)

    def __rsub__(self, other: Dim) -> Dim:
        return (-self) + other

    def __mul__(self, other: Dim) -> Dim:
        if not isinstance(other, (int, Sym)):
            return NotImplemented
        out: dict = {}
        for m1, c1 in self.terms:
            for m2, c2 in _terms(other).items():
                m = tuple(sorted(m1 + m2, key=_atom_key))
                out[m] = out.get(m, 0) + c1 * c2
        return _norm(out)

    __rmul__ = __mul__

    def __floordiv__(self, other: Dim) -> Dim:
        if isinstance(other, Sym):
            raise TypeError("division by a symbolic dimension")
        return _floordiv(self, int(other))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sym) and self.terms == other.terms

    def __hash__(self) -> int:
        return self._h

    # inspection --------------------------------------------------------------------------------
    @property
    def symbols(self) -> set[str]:
        out: set[str] = set()
        for m, _ in self.terms:
            for a in m:
                out |= {a} if isinstance(a, str) else a.num.symbols
        return out

    def subs(self, env: dict[str, int]) -> Dim:
        total: Dim = 0
        for m, c in self.terms:
            term: Dim = c
            for a in m:
                v = env.get(a, Sym.symbol(a)) if isinstance(a, str) else a.subs(env)
                term = term * v
            total = total + term
        return total

    def __str__(self) -> str:
        parts: list[str] = []
        for m, c in self.terms:
            # `-(h // 2)` must not print as `-h // 2`, which reads back as `(-h) // 2`
            wrap = len(m) > 1 or abs(c) != 1 or (not parts and c < 0)
            body = " * ".join(f"({a})" if wrap and isinstance(a, FloorDiv) else str(a) for a in m)
            if not m:
                s = str(abs(c))
            elif abs(c) == 1:
                s = body
            else:
                s = f"{abs(c)} * {body}"
            if not parts:
                parts.append(s if c > 0 else "-" + s)
            else:
                parts.append(("+ " if c > 0 else "- ") + s)
        return " ".join(parts)

    def __repr__(self) -> str:
        return f"Sym({str(self)!r})"


def _operand(num: Sym) -> str:
    """`num` as the left operand of `//`: bare when it is one symbol or a product of symbols
    with a positive coefficient (`h // 2`, `2 * h * w // 3`), else in parentheses."""
    if len(num.terms) == 1:
        m, c = num.terms[0]
        if c > 0 and m and all(isinstance(a, str) for a in m):
            return str(num)
    return f"({num})"


def _trunc_div(c: int, k: int) -> int:
    """`c / k` rounded toward zero (k > 0)."""
    return c // k if c >= 0 else -((-c) // k)


def _floordiv(num: Sym, k: int) -> Dim:
    """`num // k` in the normal form described in the module docstring."""
    if k == 0:
        raise ZeroDivisionError("integer division by zero")
    if k < 0:
        return _floordiv_any(-num, -k)
    if k == 1:
        return num
    # multiples of k leave the division; the constant keeps its remainder in [0, k), every other
    # coefficient its remainder toward zero (so `-h // 2` stays as written)
    outside: dict = {}
    inside: dict = {}
    for m, c in num.terms:
        q = c // k if m == () else _trunc_div(c, k)
        if q:
            outside[m] = q
        if c - q * k:
            inside[m] = c - q * k
    rest = _norm(inside)
    if outside:
        return _norm(outside) + _floordiv_any(rest, k)
    if isinstance(rest, int):
        return rest // k
    # a common factor of every coefficient and k cancels
    g = k
    for _, c in rest.terms:
        g = math.gcd(g, c)
    if g > 1:
        return _floordiv_any(_norm({m: c // g for m, c in rest.terms}), k // g)
    # (x // a + p) // k == (x + a*p) // (a*k) when p is an integer polynomial without divisions
    inner = [(m, c) for m, c in rest.terms if any(isinstance(a, FloorDiv) for a in m)]
    if len(inner) == 1 and inner[0][1] == 1 and len(inner[0][0]) == 1:
        fd = inner[0][0][0]
        p = _norm({m: c for m, c in rest.terms if m != inner[0][0]})
        return _floordiv_any(fd.num + fd.den * p, fd.den * k)
    return _norm({(FloorDiv(rest, k),): 1})


def _floordiv_any(num: Dim, k: int) -> Dim:
    return num // k if isinstance(num, int) else _floordiv(num, k)


def is_static(d: Dim) -> bool:
    return isinstance(d, int)


def dim_str(d: Dim) -> str:
    return str(d)


def subs(d: Dim, env: dict[str, int]) -> Dim:
    return d.subs(env) if isinstance(d, Sym) else d


def symbols_of(d: Dim) -> set[str]:
    return d.symbols if isinstance(d, Sym) else set()


_TOKEN = re.compile(r"\s*(?:(\d+)|([A-Za-z_][A-Za-z0-9_]*)|(//|[-+*()]))")


def parse_dim(text: str | int) -> Dim:
    """Read back a dimension written by `str()` (used when an IR is loaded from JSON)."""
    if isinstance(text, int):
        return text
    tokens: list[str] = []
    pos = 0
    text = text.strip()
    if len(text) > 1000:
        raise ValueError("cannot read a dimension written in more than 1,000 characters")
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ValueError(f"cannot read dimension {text!r}")
        tokens.append(m.group(1) or m.group(2) or m.group(3))
        pos = m.end()
    depth = max_depth = 0
    for t in tokens:
        depth += {"(": 1, ")": -1}.get(t, 0)
        max_depth = max(max_depth, depth)
    if max_depth > 32:
        raise ValueError("cannot read a dimension nested more than 32 parentheses deep")
    i = 0

    def peek() -> str | None:
        return tokens[i] if i < len(tokens) else None

    def take() -> str:
        nonlocal i
        if i >= len(tokens):
            raise ValueError(f"cannot read dimension {text!r}: it ends too early")
        i += 1
        return tokens[i - 1]

    def expr() -> Dim:
        v = term()
        while peek() in ("+", "-"):
            v = v + term() if take() == "+" else v - term()
        return v

    def term() -> Dim:
        v = unary()
        while peek() in ("*", "//"):
            op = take()
            rhs = unary()
            if op == "//" and rhs == 0:
                raise ValueError(f"cannot read dimension {text!r}: it divides by zero")
            v = v * rhs if op == "*" else v // rhs
        return v

    def unary() -> Dim:
        if peek() == "-":
            take()
            return -unary()
        t = take()
        if t == "(":
            v = expr()
            if take() != ")":
                raise ValueError(f"cannot read dimension {text!r}: a parenthesis is not closed")
            return v
        if t.isdigit():
            return int(t)
        if not t.isidentifier():
            raise ValueError(f"cannot read dimension {text!r}: `{t}` where a size or a name belongs")
        return Sym.symbol(t)

    result = expr()
    if i != len(tokens):
        raise ValueError(f"cannot read dimension {text!r}")
    return result
