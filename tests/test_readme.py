"""The README's walk-through ("A first session with curl"), run as printed against a live
server, block by block, with each answer checked against the one the README shows. Only
the variables the README asks the reader to fill in (the address and the operator's
credentials that ``make run`` printed) are given their values here."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from partners.demo import history_file, load_demo, load_history

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SECTION = "## A first session with curl"
END_OF_BLOCK = "@@ end of block @@"


def walkthrough_blocks(text: str) -> list[str]:
    """The ``sh`` code blocks of the walk-through section, in order."""
    start = text.index(SECTION)
    following = text.find("\n## ", start + len(SECTION))
    section = text[start:following if following != -1 else len(text)]
    return re.findall(r"^```sh\n(.*?)^```$", section, re.S | re.M)


def expected_answers(block: str) -> list[str]:
    """Each run of full-line comments in a block is the answer printed just above it."""
    answers: list[str] = []
    current: list[str] = []
    for line in block.splitlines():
        if line.startswith("# "):
            current.append(line[2:])
        elif current:
            answers.append("\n".join(current))
            current = []
    if current:
        answers.append("\n".join(current))
    return answers


def pattern(answers: list[str]) -> re.Pattern[str]:
    """The answers, in order, as one pattern: … stands for anything, whitespace is ignored."""
    parts = [".*?".join(re.escape(piece) for piece in re.sub(r"\s+", "", a).split("…"))
             for a in answers]
    return re.compile(".*?".join(parts), re.S)


def fill_in(block: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        block = re.sub(rf"^{name}=\S+.*$", f"{name}={value}", block, flags=re.M)
    return block


def test_the_readme_names_its_blocks():
    blocks = walkthrough_blocks(README.read_text())
    assert len(blocks) >= 15
    assert all(expected_answers(b) for b in blocks[1:]), "every step shows its answer"
    steps = "\n".join(blocks)
    for call in ("/oauth/token", "/v1/members", "/v1/members/activate", "/v1/earn",
                 "Idempotent-Replayed", "/v1/burn", "/v1/holds", "/capture", "/reversals",
                 "/balance", "/v1/transactions?", "/v1/settlement/runs", "/statements/"):
        assert call in steps, call


@pytest.mark.skipif(shutil.which("curl") is None, reason="the walk-through uses curl")
def test_the_walkthrough_runs_as_printed(app, live_server):
    demo = load_demo()
    load_history(history_file().read_text())  # as `make run` loads it
    [operator] = [c for c in demo["clients"] if c["for"] == "operator"]
    values = {"BASE": live_server.url, "OPERATOR_ID": operator["client_id"],
              "OPERATOR_SECRET": operator["client_secret"]}
    blocks = walkthrough_blocks(README.read_text())
    script = "set -eu\n" + "".join(f"{fill_in(block, values)}\necho '{END_OF_BLOCK}'\n"
                                   for block in blocks)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("COALITION_")}
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                            timeout=120, env=environment)
    outputs = result.stdout.split(END_OF_BLOCK + "\n")
    assert result.returncode == 0 and len(outputs) == len(blocks) + 1, \
        f"stopped in block {len(outputs)}:\n{blocks[len(outputs) - 1]}\n{result.stderr}"
    for number, (block, output) in enumerate(zip(blocks, outputs, strict=False), start=1):
        answers = expected_answers(block)
        if answers:
            assert pattern(answers).search(re.sub(r"\s+", "", output)), (
                f"block {number} answered differently from the README:\n{block}\n"
                f"--- it answered:\n{output}")
