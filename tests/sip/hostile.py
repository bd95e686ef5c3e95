"""Hostile input generators shared by the hypothesis tests and benchmarks/sip_fuzz.py.

They aim at the classes that broke the SIP core and the SDP parser: digits that ``str.isdigit()``
takes and ``int()`` does not (every Unicode Nd digit, superscripts), lone high bytes, numbers too
large for their field (or for ``int()``/``float()``), quoting and escaping in display names, and
duplicated single-valued headers. Choices go through a :class:`Chooser` (``random.Random`` has
the two methods), so hypothesis can drive them and shrink, and the benchmark can run them fast.
"""

from __future__ import annotations

import re
import sys
from typing import Protocol, TypeVar

T = TypeVar("T")

#: every character ``str.isdigit()`` accepts that is not an ASCII digit (Nd digits, superscripts, ...)
NON_ASCII_DIGITS: tuple[str, ...] = tuple(
    c for c in map(chr, range(sys.maxunicode + 1)) if c.isdigit() and not c.isascii()
)
ODD_NUMBERS = (
    "1e400", "-1e400", "1e-400", "inf", "-inf", "nan", "-1", "+5", "0x10", "1_000", "5.0", " 5", "5 ",
    "", "0", "00000000000000000000000000000000000068", "2147483647", "2147483648", "4294967296",
    "18446744073709551616", "36893488147419103232", "9" * 5000,
)
DISPLAY_PIECES = ("Joe", " ", "\\\\", '\\"', "\\", '"', ",", ";", "<", ">", "é", "\\\x00", "\t", "=", "@", ":")

#: numeric fields of SIP and SDP: (prefix, digits) pairs to replace
NUMERIC_FIELDS = tuple(
    re.compile(p)
    for p in (
        rb"(?im)^((?:Content-Length|l)[ \t]*:[ \t]*)([0-9]+)",
        rb"(?im)^(CSeq[ \t]*:[ \t]*)([0-9]+)",
        rb"(?im)^(Max-Forwards[ \t]*:[ \t]*)([0-9]+)",
        rb"(?im)^(Expires[ \t]*:[ \t]*)([0-9]+)",
        rb"(?im)^(Retry-After[ \t]*:[ \t]*)([0-9]+)",
        rb"(?i)(SIP/2\.0/[A-Z]+ [^;:\r\n]+:)([0-9]+)",
        rb"(?i)(sips?:[^@>;\r\n]*@[^:>;\r\n]+:)([0-9]+)",
        rb"(?m)^(SIP/2\.0 )([0-9]+)",
        rb"(?m)^(m=[a-z]+ )([0-9]+)",
        rb"(?m)^(m=audio [0-9]+ RTP/AVP )([0-9]+)",
        rb"(?m)^(m=audio [0-9]+ RTP/AVP [0-9]+ )([0-9]+)",
        rb"(?m)^(a=rtpmap:)([0-9]+)",
        rb"(?m)^(a=fmtp:)([0-9]+)",
        rb"(?m)^(a=ptime:)([0-9]+)",
        rb"(?m)^(o=\S+ )([0-9]+)",
    )
)
_ADDRESS_RE = re.compile(rb"(?im)^((?:From|To|Contact|f|t|m)[ \t]*:[ \t]*)([^<\r\n]*)(<)")
_HEADER_LINE_RE = re.compile(rb"(?m)^[A-Za-z-]+[ \t]*:[^\r\n]*\r?\n")
TOKENS = (b"\r\n", b" ", b",", b";", b"<", b">", b'"', b":", b"\r\n ", b"\\", b"=", b"%00", b"\x00", b"\t")


class Chooser(Protocol):
    def choice(self, seq: tuple[T, ...] | list[T]) -> T: ...

    def randint(self, a: int, b: int) -> int: ...


def hostile_number(c: Chooser) -> str:
    kind = c.randint(0, 6)
    if kind == 0:
        return c.choice(NON_ASCII_DIGITS)
    if kind == 1:  # an ASCII number with one non-ASCII digit in it
        digits = str(c.randint(0, 99999))
        pos = c.randint(0, len(digits))
        return digits[:pos] + c.choice(NON_ASCII_DIGITS) + digits[pos:]
    if kind == 2:  # leading zeros: legal
        return "0" * c.randint(1, 12) + str(c.randint(0, 99999))
    if kind == 3:
        return str(c.randint(2**31 - 2, 2**70))
    if kind == 4:
        return "".join(c.choice(NON_ASCII_DIGITS) for _ in range(c.randint(2, 6)))
    if kind == 5:
        return c.choice(ODD_NUMBERS)
    return str(c.randint(0, 70000))


def display_name(c: Chooser) -> str:
    body = "".join(c.choice(DISPLAY_PIECES) for _ in range(c.randint(0, 6)))
    form = c.randint(0, 3)
    if form == 0:
        return f'"{body}" '
    if form == 1:
        return f'"{body}'  # unterminated
    if form == 2:
        return f'"{body}\\\\" '  # ends in an escaped backslash: valid
    return body.replace('"', "") + " "


def mutate(data: bytes, c: Chooser, rounds: int | None = None) -> bytes:
    """A few random edits, plain (flip, cut, insert) or aimed at the classes above."""
    out = bytearray(data)
    for _ in range(rounds if rounds is not None else c.randint(1, 6)):
        op = c.randint(0, 11)
        pos = c.randint(0, max(0, len(out) - 1))
        if op == 0 and out:
            out[pos] = c.randint(0, 255)
        elif op == 1:
            del out[pos : pos + c.randint(1, 40)]
        elif op == 2:
            out[pos:pos] = c.choice(TOKENS)
        elif op == 3:
            out = out[: pos + 1]
        elif op == 4:  # a lone high byte (not UTF-8)
            out[pos:pos] = bytes([c.randint(0x80, 0xFF)])
        elif op in (5, 6, 7):
            out = bytearray(replace_number(bytes(out), c))
        elif op == 8:
            out = bytearray(replace_display_name(bytes(out), c))
        elif op == 9:
            out = bytearray(duplicate_header(bytes(out), c))
        elif op == 10:
            out = bytearray(swap_headers(bytes(out), c))
        else:
            text = c.choice(NON_ASCII_DIGITS).encode()
            out[pos:pos] = text
    return bytes(out)


def replace_number(data: bytes, c: Chooser) -> bytes:
    pattern = c.choice(NUMERIC_FIELDS)
    matches = list(pattern.finditer(data))
    if not matches:
        return data
    m = c.choice(matches)
    return data[: m.start(2)] + hostile_number(c).encode() + data[m.end(2) :]


def replace_display_name(data: bytes, c: Chooser) -> bytes:
    matches = list(_ADDRESS_RE.finditer(data))
    if not matches:
        return data
    m = c.choice(matches)
    return data[: m.start(2)] + display_name(c).encode("utf-8", "surrogatepass") + data[m.end(2) :]


def duplicate_header(data: bytes, c: Chooser) -> bytes:
    lines = list(_HEADER_LINE_RE.finditer(data.split(b"\r\n\r\n", 1)[0] + b"\r\n"))
    if not lines:
        return data
    m = c.choice(lines)
    copy = m.group(0)
    if c.randint(0, 1):  # same name, another value
        name, _, _ = copy.partition(b":")
        copy = name + b": " + hostile_number(c).encode() + b" x\r\n"
    at = c.choice(lines).end()
    return data[:at] + copy + data[at:]


def swap_headers(data: bytes, c: Chooser) -> bytes:
    lines = list(_HEADER_LINE_RE.finditer(data.split(b"\r\n\r\n", 1)[0] + b"\r\n"))
    if len(lines) < 2:
        return data
    a, b = sorted((c.choice(lines), c.choice(lines)), key=lambda m: m.start())
    if a.start() == b.start():
        return data
    name_a, _, value_a = a.group(0).partition(b":")
    name_b, _, value_b = b.group(0).partition(b":")
    return (
        data[: a.start()] + name_a + b":" + value_b + data[a.end() : b.start()] + name_b + b":" + value_a
        + data[b.end() :]
    )
