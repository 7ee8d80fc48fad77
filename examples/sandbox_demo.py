"""Load a real book into a warm, network-isolated sandbox and explore it with code.

This is what the root model does in a shesha query: it writes Python that runs next to
the documents (`context`), and only what it prints comes back. Here the code is written
by hand; `shesha ask` (with a model) drives the same sandbox.

    python examples/sandbox_demo.py [FILE ...]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from shesha.sandbox import InMemoryCorpus, docker_pool

BOOK = Path(__file__).with_name("data") / "war-and-peace.txt"

STEPS = [
    (
        "How big is the context?",
        "print(len(context), 'document(s):', doc_names)\n"
        "print(f'{sum(map(len, context)):,} characters')",
    ),
    (
        "How many chapters, and which names come up most?",
        "import re, collections\n"
        "text = context[0]\n"
        "chapters = re.findall(r'^CHAPTER [IVXLC]+', text, flags=re.M)\n"
        "who = r'\\b(Pierre|Natasha|Andrew|Nicholas|Mary|Napoleon)\\b'\n"
        "names = collections.Counter(re.findall(who, text))\n"
        "print(len(chapters), 'chapters')\n"
        "names.most_common()",
    ),
    (
        "Where does Napoleon first appear?",
        "i = context[0].find('Napoleon')\n"
        "print(context[0][max(0, i - 200): i + 200].replace('\\n', ' '))",
    ),
    (
        "Finish with an answer.",
        "top = names.most_common(1)[0][0]\n"
        "FINAL(f'{len(chapters)} chapters; the most named character is {top}')",
    ),
]


def main(paths: list[str]) -> int:
    files = [Path(p) for p in paths] or [BOOK]
    docs = [(f.name, f.read_text(encoding="utf-8", errors="replace")) for f in files]
    corpus = InMemoryCorpus(docs)
    started = time.perf_counter()
    with docker_pool(1) as pool:
        print(f"sandbox ready in {time.perf_counter() - started:.2f} s", file=sys.stderr)
        with pool.acquire(corpus) as session:
            print(
                f"loaded {session.document_bytes_sent / 2**20:.1f} MB as `context`",
                file=sys.stderr,
            )
            for question, code in STEPS:
                print(f"\n## {question}\n```python\n{code}\n```")
                result = session.execute(code)
                print(result.output.rstrip() or "(no output)")
                print(f"[{result.status}, {result.wall_s * 1000:.1f} ms]", file=sys.stderr)
                if result.final is not None:
                    print(f"\nFINAL: {result.final}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
