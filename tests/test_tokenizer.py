"""Token counting works with the network off and falls back cleanly."""

import json
import subprocess
import sys

from resources.tokenizer import APPROX_NAME, OFFLINE_ENCODING, get_tokenizer

PROBE = """
import json, socket
def refuse(*a, **k):
    raise OSError("network disabled for this test")
socket.socket.connect = refuse          # any download attempt fails loudly
socket.create_connection = refuse
from resources.tokenizer import get_tokenizer
tok = get_tokenizer()
print(json.dumps({"name": tok.name, "n": tok.count("Lumen Ledger double-charged Acme."),
                  "special": tok.count("<|endoftext|>")}))
"""


def test_offline_encoding_loads_with_no_network(tmp_path):
    env = {"TIKTOKEN_CACHE_DIR": str(tmp_path / "empty-cache"), "PATH": "/usr/bin:/bin",
           "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    )
    result = json.loads(out.stdout)
    assert result["name"] == OFFLINE_ENCODING
    # the real cl100k BPE, not an approximation: these counts are fixed by the vocabulary
    assert result["n"] == get_tokenizer().count("Lumen Ledger double-charged Acme.")
    assert result["special"] > 1  # special-token text is counted as ordinary text, no raise


def test_cl100k_counts_match_known_values():
    tok = get_tokenizer()
    assert tok.count("hello world") == 2
    assert tok.count("") == 0


def test_unknown_encoding_falls_back_to_the_approximation(caplog):
    tok = get_tokenizer("no_such_encoding")
    assert tok.name == APPROX_NAME
    assert tok.count("Priya Raman closed 12345 tickets.") >= 6
    assert "no_such_encoding" in caplog.text
