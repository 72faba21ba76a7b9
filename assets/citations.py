"""Citations by passage number: how the theme prompt numbers a document's chunks, and how
a model's citations are mapped back to chunk ids.

The prompt shows chunk k (in document order, from 1) after a `[k]` marker and asks for
the bare numbers. Models do not always copy them as asked, so a citation is read
tolerantly: `3`, `"3"`, `"[3]"`, `"#3"`, `"passage 3"`, `"chunk 3"`, `"[chunk:3]"`, an exact
chunk id or `"[chunk:<id>]"`, in any case and with any surrounding whitespace. Anything
else (a number out of range, an id the document does not have, garbage) is unknown: it
costs that one citation, never the theme.
"""

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

_PREFIX = re.compile(r"^(?:passage|chunk|#)\s*[:#]?\s*")


def passage_marker(number: int) -> str:
    """The marker in front of passage `number` (1-based) in the prompt."""
    return f"[{number}]"


def _tokens(citation: object) -> tuple[str, ...]:
    """What a citation may name, lowercased: the text inside its brackets, then that text
    without its `passage`/`chunk`/`#` prefix; nothing for what is not a string or an int."""
    if isinstance(citation, bool) or not isinstance(citation, str | int):
        return ()
    text = str(citation).strip().lower()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1].strip()
    return text, _PREFIX.sub("", text, count=1).strip()


def resolve_citation(citation: object, chunk_ids: Sequence[str]) -> str | None:
    """The chunk id that `citation` names among `chunk_ids` (the document's chunks in
    prompt order), or None if it names none of them."""
    tokens = _tokens(citation)
    by_lower = {c.lower(): c for c in chunk_ids}
    for token in tokens:  # an exact id wins over a number (an id may be all digits)
        if token in by_lower:
            return by_lower[token]
    token = tokens[-1] if tokens else ""
    if token.isascii() and token.isdigit() and len(token) <= 9:  # int() of 5000 digits raises
        number = int(token)
        if 1 <= number <= len(chunk_ids):
            return chunk_ids[number - 1]
    return None


@dataclass(frozen=True)
class Citations:
    """One theme's citations: the chunk ids they name (deduplicated, first citation first)
    and the citations that named none, as given."""

    chunk_ids: list[str]
    unknown: list[str]


def resolve_citations(citations: Iterable[object], chunk_ids: Sequence[str]) -> Citations:
    found: dict[str, None] = {}
    unknown = []
    for citation in citations:
        chunk_id = resolve_citation(citation, chunk_ids)
        if chunk_id is None:
            unknown.append(str(citation))
        else:
            found.setdefault(chunk_id)
    return Citations(list(found), unknown)
