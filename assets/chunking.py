"""Token-aware chunking over character spans.

A chunk is a span `text[start:end]` of the normalised document, so "chunks cover the text
in order" is checkable. The text is cut into units no longer than `max_tokens`: paragraphs,
else sentences, else lines, else words, else hard cuts. Units are packed greedily; a chunk
that would end mid-paragraph backs off to the last paragraph break if that keeps it at
least half full. Each chunk after the first starts with whole trailing units of the
previous one, up to `overlap_tokens`. Unit token counts are summed as an estimate and
every chunk is counted exactly before it is accepted, so the limit always holds.
"""

import bisect
import hashlib
import re
from dataclasses import dataclass

from resources.tokenizer import Tokenizer

_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
# The break is the whitespace (group 1) after terminal punctuation and any closing quote
# or bracket, which stay with their sentence.
# CJK full stops end a sentence even with no space after them.
_SENTENCE_BREAK = re.compile(r"[.!?…][\"'”’)\]]*(\s+)|[。！？][」』”’)\]]*(\s*)")
_LINE_BREAK = re.compile(r"\n")
_WORD_BREAK = re.compile(r"\s+")
_LEVELS = (_PARAGRAPH_BREAK, _SENTENCE_BREAK, _LINE_BREAK, _WORD_BREAK)
# No token is longer than this many characters in practice; it bounds hard-cut searches.
_MAX_CHARS_PER_TOKEN = 32


@dataclass(frozen=True)
class Unit:
    start: int
    end: int
    tokens: int
    paragraph_end: bool


@dataclass(frozen=True)
class Chunk:
    index: int
    start: int
    end: int
    text: str
    n_tokens: int


def _pieces(text: str, start: int, end: int, pattern: re.Pattern) -> list[tuple[int, int]]:
    """Non-blank sub-spans of text[start:end] between matches of `pattern` (of the group
    that matched, if it has groups), trimmed."""
    spans, cursor = [], start
    for match in pattern.finditer(text, start, end):
        group = match.lastindex or 0
        spans.append((cursor, match.start(group)))
        cursor = match.end(group)
    spans.append((cursor, end))
    trimmed = []
    for a, b in spans:
        piece = text[a:b]
        stripped = piece.strip()
        if stripped:
            a += len(piece) - len(piece.lstrip())
            trimmed.append((a, a + len(stripped)))
    return trimmed


def _hard_cut(text: str, start: int, end: int, max_tokens: int, tok: Tokenizer) -> int:
    """Largest cut in (start, end] (within a bounded window) whose prefix fits."""
    hi = min(end, start + max_tokens * _MAX_CHARS_PER_TOKEN)
    if tok.count(text[start:hi]) <= max_tokens:
        return hi
    lo = start + 1  # one character always fits: guarantees progress
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if tok.count(text[start:mid]) <= max_tokens:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _units(text: str, start: int, end: int, level: int, max_tokens: int, tok: Tokenizer):
    tokens = tok.count(text[start:end])
    if tokens <= max_tokens:
        yield Unit(start, end, tokens, False)
        return
    if level < len(_LEVELS):
        pieces = _pieces(text, start, end, _LEVELS[level])
        if len(pieces) > 1:
            for a, b in pieces:
                yield from _units(text, a, b, level + 1, max_tokens, tok)
            return
        yield from _units(text, start, end, level + 1, max_tokens, tok)
        return
    while start < end:
        cut = _hard_cut(text, start, end, max_tokens, tok)
        yield Unit(start, cut, tok.count(text[start:cut]), False)
        start = cut


def split_units(text: str, max_tokens: int, tok: Tokenizer) -> list[Unit]:
    units = []
    for a, b in _pieces(text, 0, len(text), _PARAGRAPH_BREAK):
        paragraph = list(_units(text, a, b, 1, max_tokens, tok))
        last = paragraph[-1]
        paragraph[-1] = Unit(last.start, last.end, last.tokens, True)
        units.extend(paragraph)
    return units


def validate_limits(max_tokens: int, overlap_tokens: int) -> None:
    if max_tokens < 8:
        raise ValueError(f"max_tokens must be at least 8, got {max_tokens}")
    if not 0 <= overlap_tokens <= max_tokens // 2:
        raise ValueError(
            f"overlap_tokens must be between 0 and max_tokens/2 ({max_tokens // 2}), "
            f"got {overlap_tokens}"
        )


def chunk_text(
    text: str, max_tokens: int, overlap_tokens: int, tok: Tokenizer
) -> list[Chunk]:
    validate_limits(max_tokens, overlap_tokens)
    units = split_units(text, max_tokens, tok)
    # prefix[i] = estimated tokens of units[:i], for O(log n) window sums
    prefix = [0]
    for unit in units:
        prefix.append(prefix[-1] + unit.tokens)

    def fit(first: int, covered: int) -> tuple[int, str, int] | None:
        """The chunk starting at unit `first`, or None if it would add nothing new."""
        last = _pack(prefix, first, max_tokens)
        last = _prefer_paragraph_end(units, prefix, first, last, covered, max_tokens)
        while last > covered:
            body = text[units[first].start : units[last - 1].end]
            n_tokens = tok.count(body)
            if n_tokens <= max_tokens:
                return last, body, n_tokens
            last -= 1  # the estimate was low: give back a unit
        return None

    chunks: list[Chunk] = []
    first, covered = 0, 0  # first unit of the next chunk; units before `covered` are emitted
    while covered < len(units):
        # With overlap the chunk may have no room for new content: then start fresh.
        fitted = fit(first, covered) if first < covered else None
        if fitted is None:
            first = covered
            fitted = fit(first, covered)
        last, body, n_tokens = fitted
        start = units[first].start
        chunks.append(Chunk(len(chunks), start, start + len(body), body, n_tokens))
        covered = last
        first = _overlap_start(prefix, first, last, overlap_tokens)
    return chunks


def _pack(prefix: list[int], first: int, max_tokens: int) -> int:
    """End (exclusive) of the longest run from `first` whose estimated tokens fit."""
    last = bisect.bisect_right(prefix, prefix[first] + max_tokens) - 1
    return max(last, first + 1)


def _prefer_paragraph_end(units, prefix, first, last, covered, max_tokens) -> int:
    if last >= len(units) or units[last - 1].paragraph_end:
        return last
    for end in range(last - 1, max(first, covered), -1):
        if units[end - 1].paragraph_end:
            if prefix[end] - prefix[first] >= max_tokens // 2:
                return end
            break
    return last


def _overlap_start(prefix: list[int], first: int, last: int, overlap_tokens: int) -> int:
    """Earliest unit after `first` such that units[it:last] fit in the overlap."""
    start = last
    while start - 1 > first and prefix[last] - prefix[start - 1] <= overlap_tokens:
        start -= 1
    return start


def chunk_id(document_key: str, index: int, text: str) -> str:
    """Stable across runs and machines: same document, position and content, same id."""
    content = hashlib.sha256(text.encode()).hexdigest()
    return hashlib.sha256(f"{document_key}\x1f{index}\x1f{content}".encode()).hexdigest()[:32]
