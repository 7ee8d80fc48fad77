"""shesha's Python API in a dozen lines.

    python examples/basic_usage.py --model openai/gpt-4o-mini          # OPENAI_API_KEY set
    python examples/basic_usage.py --model ollama/qwen2.5-coder:7b      # a local Ollama

Stores the example book in a project called "examples", asks it a question, and prints
the answer with what it cost.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from shesha import Shesha

BOOK = Path(__file__).with_name("data") / "war-and-peace.txt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", help="any LiteLLM model string (else SHESHA_MODEL)")
    parser.add_argument("--api-base", help="an OpenAI-compatible endpoint")
    parser.add_argument("--question", default="Who is Pierre's father, and what happens to him?")
    args = parser.parse_args()

    with Shesha(model=args.model, api_base=args.api_base) as sh:
        project = sh.project("examples")
        project.add([BOOK])
        result = project.query(args.question, max_cost_usd=0.50)
    print(result.answer)
    cost = result.usage.total_cost_usd
    print(
        f"[{result.status}: {result.iterations} steps, {result.subcalls} sub-calls, "
        f"{f'${cost:.4f}' if cost is not None else 'cost unknown'}, trace {result.trace_path}]"
    )


if __name__ == "__main__":
    main()
