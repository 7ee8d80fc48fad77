"""Test your own pipeline with no model server and no API key: a FunctionModel answers
every model call from plain Python, while the code it writes runs in the real sandbox.

    python examples/function_model.py            # Docker sandboxes (make setup first)
    python examples/function_model.py --no-docker  # the runner as a local process

A FunctionModel is handed the messages shesha would send a provider; return the reply.
Here the "root model" looks at the documents, asks a sub-call to read each one, and
answers; the sub-calls are answered by the same function.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from shesha import Shesha
from shesha.llm.types import Message
from shesha.testing import FunctionModel, process_sandboxes

SUBCALL = "You follow one instruction"
STEPS = [
    # Step 1: look at what is there.
    "```repl\nprint(doc_names, [len(t) for t in context])\n```",
    # Step 2: have a sub-model read every document, in parallel.
    "```repl\nverdicts = llm_query_batched('Does this renew automatically? yes or no', context)\n"
    "print(list(zip(doc_names, verdicts)))\n```",
    # Step 3: answer from what the output showed.
    "```repl\nFINAL(', '.join(n for n, v in zip(doc_names, verdicts) if v == 'yes'))\n```",
]


def model(messages: list[Message], model: str) -> str:
    if messages[0]["content"].startswith(SUBCALL):  # a sub-call: read one document
        document = messages[-1]["content"].partition("<untrusted_document_content")[2]
        return "yes" if "renew" in document else "no"
    step = sum(1 for m in messages if m["role"] == "assistant")
    return STEPS[min(step, len(STEPS) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-docker", action="store_true", help="run the sandbox locally")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        docs = Path(home) / "contracts"
        docs.mkdir()
        (docs / "lease.txt").write_text("This lease will renew every year.")
        (docs / "supply.txt").write_text("The supply contract ends in 2027.")
        fn = FunctionModel(model)
        local = process_sandboxes() if args.no_docker else None
        try:
            with Shesha(home=home, llm=fn, sandboxes=local, pool_size=1) as sh:
                p = sh.project("contracts")
                p.add([docs])
                r = p.query("Which contracts renew automatically?")
        finally:
            if local is not None:
                local.close()
        print(r.answer, "·", r.status, "·", r.subcalls, "sub-calls ·", len(fn.calls), "calls")


if __name__ == "__main__":
    main()
