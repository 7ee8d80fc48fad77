"""Ask one question of a folder of files, with live progress.

    python examples/ask_directory.py ~/contracts "Which contracts renew automatically?" \\
        --model openai/gpt-4o-mini

The folder is stored as a project named after it (re-running costs only file hashes for
files that did not change), and every step is printed as it happens.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from shesha import Shesha
from shesha.rlm import TraceEvent
from shesha.rlm.events import CodeRun, SubcallRequest


def show(event: TraceEvent) -> None:
    match event:
        case CodeRun(code=code):
            first = (code.strip().splitlines() or [""])[0]
            print(f"  step {event.iteration}: {first[:90]}")
        case SubcallRequest(instruction=instruction):
            print(f"  step {event.iteration}: llm_query({instruction[:60]!r})")
        case _:
            pass  # other steps are not shown


async def main() -> None:
    parser = argparse.ArgumentParser(description="Ask one question of a folder of files.")
    parser.add_argument("folder", type=Path)
    parser.add_argument("question")
    parser.add_argument("--model", help="any LiteLLM model string (else SHESHA_MODEL)")
    parser.add_argument("--api-base", help="an OpenAI-compatible endpoint")
    args = parser.parse_args()

    with Shesha(model=args.model, api_base=args.api_base) as sh:
        project = sh.project(f"dir-{args.folder.resolve().name}")
        report = project.add([args.folder])
        for bad in report.failed:
            print(f"skipped {bad.path}: {bad.error.splitlines()[0]}")
        print(f"{len(project.documents())} documents; asking...")
        result = await project.aquery(args.question, on_event=show)
    if result.status == "error":
        print(f"\nerror: {result.error}")
    print(f"\n{result.answer}\n[{result.status}; trace: {result.trace_path}]")


if __name__ == "__main__":
    asyncio.run(main())
