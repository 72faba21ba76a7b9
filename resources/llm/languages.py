"""Language names, codes and regions to ISO 639-1, from pycountry's offline ISO 639 data.

`English`, `english`, `EN`, `en-US`, `en_GB`, `eng`, `US English`, `Français` -> `en`/`fr`;
anything the data cannot place (or a language with no two-letter code) -> `und`, the
ISO 639-2 code for "undetermined".

Each language's name in its own language comes from pycountry's gettext catalogues, but
parsing the 79 of them takes ~1.2 s, which every enrichment process paid at its first
normalised answer, with the event loop (and so every LLM slot) waiting. So those names are
read once into own_language_names.json, shipped with the code
(`write_own_language_names()` writes it again; tests/llm/test_normalise.py checks it
matches the installed pycountry).
"""

import functools
import gettext
import json
import re
import unicodedata
from pathlib import Path

import pycountry

OWN_NAMES = Path(__file__).with_name("own_language_names.json")

UNDETERMINED = "und"
# Codes ISO 639 withdrew that Java and Android locales still write.
WITHDRAWN = {"iw": "he", "in": "id", "ji": "yi", "jw": "jv", "mo": "ro"}
# Words that make a language name another language ("Old English" is not English).
QUALIFIERS = {"old", "middle", "ancient", "classical", "proto", "archaic"}


def _plain(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c)).strip()


@functools.cache
def _tables() -> tuple[dict[str, str], dict[str, str]]:
    """(names -> code, codes -> code) for every language that has a two-letter code.
    Names include each language's name in its own language (pycountry's translations)."""
    names: dict[str, str] = {}
    codes: dict[str, str] = {UNDETERMINED: UNDETERMINED, **WITHDRAWN}
    own_names = json.loads(OWN_NAMES.read_text(encoding="utf-8"))
    for lang in pycountry.languages:
        code = getattr(lang, "alpha_2", None)
        if not code:
            continue
        for alias in ("alpha_2", "alpha_3", "bibliographic"):
            if value := getattr(lang, alias, None):
                codes[value.lower()] = code
        spelled = [lang.name, getattr(lang, "common_name", "") or "", own_names.get(code, "")]
        for name in spelled:
            for part in re.split(r"[;,]", name):
                part = _plain(re.sub(r"\(.*?\)", "", part))
                if part:
                    names.setdefault(part, code)
                    names.setdefault(part.removeprefix("modern "), code)  # Modern Greek
    return names, codes


def own_language_names() -> dict[str, str]:
    """{two-letter code: the language's name in that language} from pycountry's gettext
    catalogues, for the languages that have one."""
    names = {}
    for lang in pycountry.languages:
        code = getattr(lang, "alpha_2", None)
        if not code:
            continue
        try:
            own = gettext.translation("iso639-3", pycountry.LOCALES_DIR, languages=[code])
        except OSError:  # no catalogue for it
            continue
        names[code] = own.gettext(lang.name)
    return dict(sorted(names.items()))


def language_code(text: str) -> str:
    """The ISO 639-1 code for `text`, or `und`."""
    names, codes = _tables()
    plain = _plain(text)
    if plain in codes and len(plain) == 2 or plain == UNDETERMINED:
        return codes[plain]
    if plain in names:
        return names[plain]
    tokens = [t for t in re.split(r"[\s\-_/(),.;:]+", plain) if t]
    if QUALIFIERS & set(tokens):  # "Old English", "Ancient Greek": no two-letter code
        return UNDETERMINED
    for token in tokens:  # "US English", "Chinese (Simplified)"
        if token in names and len(token) > 3:
            return names[token]
    if tokens and tokens[0] in codes:  # "en-US", "EN_gb", "eng"
        return codes[tokens[0]]
    return UNDETERMINED


def write_own_language_names() -> None:
    """Write own_language_names.json again (after a pycountry upgrade)."""
    OWN_NAMES.write_text(json.dumps(own_language_names(), ensure_ascii=False, indent=1) + "\n",
                         encoding="utf-8")
