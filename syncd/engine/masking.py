"""Masking personal data on the way to the target (SPEC §4 "Collection policy").

Each masked value is replaced by a fake one derived from HMAC-SHA256 of the value under
the masking key, so:

- it is deterministic: the same value gives the same result in every collection and run
  (a user's e-mail in `users` and in `hr_employees` still match after masking);
- distinct values stay distinct, so unique indexes on masked fields hold: `email` and
  `name` carry 64 and about 49 bits of the HMAC, and `digits` is a keyed permutation of
  the digit strings of each length (a Feistel network with the HMAC as round function),
  which is one to one by construction;
- without the key, the original cannot be found from the result (nor tried against it).

Documents are changed as raw BSON: only the elements a mask path reaches are rewritten;
every other byte, field order and type stays as it was. A path goes through embedded
documents and arrays (each element of an array; a number picks one element), as in a
MongoDB query. `email`, `digits`, `name` and `redact` apply to strings (other values
become null); `hash` to any value; `null` makes any value null.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import bson

from syncd.config.model import MaskExcept
from syncd.mongo.rawbson import document, elements

_INT32 = struct.Struct("<i")
STRING, DOCUMENT, ARRAY, NULL = 0x02, 0x03, 0x04, 0x0A
DIGITS = "0123456789"
FEISTEL_ROUNDS = 10
BLOCK = 64  # SHA-256's block size, for HMAC
FINGERPRINT_MESSAGE = b"syncd masking key fingerprint"

FIRST_NAMES = (
    "Ana", "Benjamin", "Camila", "Diego", "Elena", "Felipe", "Gabriela", "Hugo",
    "Isabel", "Joaquin", "Karina", "Lucas", "Martina", "Nicolas", "Olivia", "Pablo",
    "Renata", "Sebastian", "Sofia", "Tomas", "Valentina", "Vicente", "Ximena", "Agustin",
    "Beatriz", "Cristobal", "Daniela", "Emilio", "Florencia", "Gonzalo", "Josefa", "Matias",
)  # fmt: skip
LAST_NAMES = (
    "Aguilar", "Alvarez", "Araya", "Bravo", "Cardenas", "Carrasco", "Castillo", "Castro",
    "Contreras", "Cortes", "Diaz", "Espinoza", "Figueroa", "Flores", "Fuentes", "Gallardo",
    "Garcia", "Gomez", "Gonzalez", "Gutierrez", "Herrera", "Jara", "Lopez", "Martinez",
    "Medina", "Morales", "Munoz", "Navarro", "Nunez", "Olivares", "Ortiz", "Pena",
    "Perez", "Pizarro", "Quezada", "Ramirez", "Reyes", "Riquelme", "Rios", "Rivera",
    "Rodriguez", "Rojas", "Saavedra", "Salazar", "Sanchez", "Sandoval", "Sepulveda", "Silva",
    "Soto", "Tapia", "Toro", "Torres", "Valdes", "Valenzuela", "Vargas", "Vega",
    "Vergara", "Vidal", "Yanez", "Zamora", "Zuniga", "Orellana", "Palma", "Leiva",
)  # fmt: skip
CONSONANTS = "bcdfglmnprstvz"
VOWELS = "aeiou"
SYLLABLES = 6  # of the made-up second surname: 14*5 = 70 per syllable, ~37 bits


@dataclass
class _Node:
    """The mask paths below one level, by field name (array indexes are names too)."""

    rules: dict[bytes, str] = field(default_factory=dict)
    children: dict[bytes, _Node] = field(default_factory=dict)
    _named: _Node | None = None

    @property
    def empty(self) -> bool:
        return not self.rules and not self.children

    @property
    def named(self) -> _Node:
        """The part that applies to every element of an array (no index names)."""
        if self._named is None:
            self._named = _Node(
                {k: v for k, v in self.rules.items() if not k.isdigit()},
                {k: v for k, v in self.children.items() if not k.isdigit()},
            )
        return self._named


def _tree(rules: Iterable[tuple[str, str]]) -> _Node:
    root = _Node()
    for path, rule in rules:
        node = root
        *parents, leaf = [part.encode() for part in path.split(".")]
        for part in parents:
            node = node.children.setdefault(part, _Node())
        node.rules[leaf] = rule
    return root


class Masker:
    """Masks raw BSON documents under one key. The key never leaves this object."""

    def __init__(
        self, key: bytes, rules: Iterable[tuple[str, str]], exempt: MaskExcept | None = None
    ) -> None:
        # HMAC-SHA256 (RFC 2104) with the key's inner and outer states computed once: a
        # value costs two hash copies, a third of `hmac.digest`'s cost per call.
        block = hashlib.sha256(key).digest() if len(key) > BLOCK else key
        block = block.ljust(BLOCK, b"\x00")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))
        self._tree = _tree(rules)
        self._exempt_path = [p.encode() for p in exempt.field.split(".")] if exempt else []
        self._exempt_values = list(exempt.values) if exempt else []
        ranked = sorted(range(10), key=lambda d: self._mac(b"digits|1|" + str(d).encode()))
        self._one_digit = {str(d): str(ranked[d]) for d in range(10)}

    def fingerprint(self) -> str:
        """Names the key without revealing it (an HMAC of a constant), for the memory."""
        return self._mac(FINGERPRINT_MESSAGE)[:8].hex()

    def __call__(self, raw: bytes) -> bytes:
        if self._exempt_path and self._exempt(raw):
            return raw
        return self._document(raw, self._tree)

    # -- walking documents -------------------------------------------------------------

    def _document(self, raw: bytes, node: _Node) -> bytes:
        """`raw` with the elements `node` names masked; untouched bytes are copied as they are."""
        parts: list[bytes] = []
        copied = 4  # raw[4:copied] is in parts already
        for etype, name, start, value, end in elements(raw):
            rule, child = node.rules.get(name), node.children.get(name)
            if rule is None and child is None:
                continue
            parts += [raw[copied:start], self._element(etype, name, raw[value:end], rule, child)]
            copied = end
        if not parts:
            return raw
        parts.append(raw[copied:-1])
        return document(parts)

    def _array(self, raw: bytes, node: _Node) -> bytes:
        """Each element: first the paths naming its index, then those naming fields."""
        named = node.named
        parts = []
        for etype, name, _, start, end in elements(raw):
            value = raw[start:end]
            rule, child = node.rules.get(name), node.children.get(name)
            if rule is not None or child is not None:
                element = self._element(etype, name, value, rule, child)
                etype, value = element[0], element[len(name) + 2 :]
            if not named.empty and etype in (DOCUMENT, ARRAY):
                parts.append(self._element(etype, name, value, None, named))
            else:
                parts.append(bytes([etype]) + name + b"\x00" + value)
        return document(parts)

    def _element(
        self, etype: int, name: bytes, value: bytes, rule: str | None, child: _Node | None
    ) -> bytes:
        """The element `name` with its value masked by `rule`, or by the paths below it."""
        head = name + b"\x00"
        if rule is not None:
            if etype == ARRAY and rule != "null":
                return bytes([ARRAY]) + head + self._every(value, rule)
            new_type, new_value = self._rule(rule, etype, value)
            return bytes([new_type]) + head + new_value
        assert child is not None  # noqa: S101 - a rule or the paths below
        if etype == DOCUMENT:
            return bytes([DOCUMENT]) + head + self._document(value, child)
        if etype == ARRAY:
            return bytes([ARRAY]) + head + self._array(value, child)
        return bytes([etype]) + head + value  # the path goes nowhere here

    def _every(self, array: bytes, rule: str) -> bytes:
        """A rule on an array applies to each element (arrays in arrays too)."""
        parts = []
        for etype, name, _, value, end in elements(array):
            parts.append(self._element(etype, name, array[value:end], rule, None))
        return document(parts)

    # -- the rules ---------------------------------------------------------------------

    def _rule(self, rule: str, etype: int, value: bytes) -> tuple[int, bytes]:
        if rule == "null" or (etype != STRING and rule != "hash"):
            return NULL, b""
        text = value[4:-1] if etype == STRING else value
        mac = self._mac(bytes([etype]) + text)
        if rule == "hash":
            return STRING, _string(mac.hex())
        if rule == "email":
            return STRING, _string(f"user.{mac[:8].hex()}@example.invalid")
        if rule == "name":
            return STRING, _string(_name(mac, words=len(text.split())))
        if rule == "redact":
            return STRING, _string("***")
        if rule == "digits":
            return STRING, _string(self._digits(text.decode("utf-8", "replace")))
        raise ValueError(f"unknown mask rule {rule!r}")

    def _digits(self, text: str) -> str:
        """Every ASCII digit replaced, everything else kept: a keyed permutation of the
        digit strings of one length (so distinct inputs give distinct outputs)."""
        places = [i for i, ch in enumerate(text) if ch in DIGITS]
        if not places:
            return text
        digits = "".join(text[i] for i in places)
        masked = self._permute(digits)
        chars = list(text)
        for place, digit in zip(places, masked, strict=True):
            chars[place] = digit
        return "".join(chars)

    def _permute(self, digits: str) -> str:
        size = len(digits)
        if size == 1:
            return self._one_digit[digits]
        left, right = size // 2, size - size // 2
        a, b = int(digits[:left]), int(digits[left:])
        for step in range(FEISTEL_ROUNDS):
            if step % 2 == 0:
                a = (a + self._round(step, size, b)) % 10**left
            else:
                b = (b + self._round(step, size, a)) % 10**right
        return f"{a:0{left}d}{b:0{right}d}"

    def _round(self, step: int, size: int, half: int) -> int:
        return int.from_bytes(self._mac(b"digits|%d|%d|%d" % (size, step, half))[:16])

    def _mac(self, message: bytes) -> bytes:
        inner, outer = self._inner.copy(), self._outer.copy()
        inner.update(message)
        outer.update(inner.digest())
        return outer.digest()

    # -- mask_except -------------------------------------------------------------------

    def _exempt(self, raw: bytes) -> bool:
        return any(v in self._exempt_values for v in _values_at(raw, self._exempt_path))


def _values_at(raw: bytes, path: list[bytes]) -> list[Any]:
    """The values at a dotted path (through arrays), decoded."""
    for etype, name, _, value, end in elements(raw):
        if name != path[0]:
            continue
        element = raw[value:end]
        if len(path) > 1:
            if etype == DOCUMENT:
                return _values_at(element, path[1:])
            if etype == ARRAY:
                found = []
                for t, _, _, v, e in elements(element):
                    if t == DOCUMENT:
                        found += _values_at(element[v:e], path[1:])
                return found
            return []
        decoded = bson.decode(document([bytes([etype]) + b"v\x00" + element]))["v"]
        return list(decoded) if isinstance(decoded, list) else [decoded]
    return []


def _string(text: str) -> bytes:
    data = text.encode() + b"\x00"
    return _INT32.pack(len(data)) + data


def _name(mac: bytes, *, words: int) -> str:
    """A first name, a surname (for a value of two words or more) and a made-up surname
    that carries enough of the HMAC to keep distinct names distinct (about 49 bits)."""
    first = FIRST_NAMES[mac[8] % len(FIRST_NAMES)]
    last = LAST_NAMES[mac[9] % len(LAST_NAMES)]
    bits = int.from_bytes(mac[10:18])
    made_up = ""
    for _ in range(SYLLABLES + (words < 2)):  # one more syllable instead of the surname
        bits, pick = divmod(bits, len(CONSONANTS) * len(VOWELS))
        made_up += CONSONANTS[pick // len(VOWELS)] + VOWELS[pick % len(VOWELS)]
    return (
        f"{first} {made_up.capitalize()}" if words < 2 else f"{first} {last} {made_up.capitalize()}"
    )
