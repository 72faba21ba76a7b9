"""A corpus of public texts that ship with the machine, plus three bad files.

Licence texts from Debian's base-files (/usr/share/common-licenses), sections of Python's
own reference documentation (`pydoc_data.topics`, written as markdown), one of them as a
PDF, and the sample corpus beside them: documents that look nothing like our samples,
for tests that must not agree with the simulator by construction.
"""

import pydoc_data.topics
from pathlib import Path

from tests.pdfgen import make_pdf

LICENCES = Path("/usr/share/common-licenses")
LICENCE_NAMES = ("Apache-2.0", "BSD", "Artistic", "CC0-1.0", "MPL-2.0", "LGPL-3")
PYDOC_TOPICS = ("assert", "assignment", "async", "class", "exceptions", "import")
BAD_FILES = {"empty.txt": b"", "junk.txt": bytes(range(256)) * 8,
             "broken.pdf": b"%PDF-1.4\nthis is not a pdf body"}


def write_public_corpus(folder: Path) -> tuple[list[Path], list[Path]]:
    """Write the corpus into `folder`; (good files, bad files)."""
    folder.mkdir(parents=True, exist_ok=True)
    good = []
    for name in LICENCE_NAMES:
        path = folder / f"licence-{name}.txt"
        path.write_text((LICENCES / name).read_text(encoding="utf-8", errors="replace"))
        good.append(path)
    for topic in PYDOC_TOPICS:
        path = folder / f"python-{topic}.md"
        path.write_text(f"# {topic}\n\n{pydoc_data.topics.topics[topic]}")
        good.append(path)
    pdf = folder / "python-operators.pdf"
    pdf.write_bytes(make_pdf(pydoc_data.topics.topics["binary"], title="Binary operations"))
    good.append(pdf)
    bad = []
    for name, content in BAD_FILES.items():
        (folder / name).write_bytes(content)
        bad.append(folder / name)
    return good, bad
