"""docs/troubleshooting.md quotes what lelp says: every ``lelp: error:`` (and ``lelp: warning:``) message there
must still be said, by the code or by a test that checks it, so that the page cannot drift from the messages."""

import ast
import re

from helpers import REPO

DOC = REPO / "docs" / "troubleshooting.md"
# what a quoted message may hold that the code fills in: elisions, <placeholders>, 'values', [lists], file names,
# numbers
_FILLED_IN = re.compile(r"…|\.\.\.|<[^>]*>|'[^'\s]*'|\[[^\]]*\]|\S*\.(?:ckpt|pt|csv|yaml|npy|npz)\b|\d+(?:\.\d+)?")
# a quoted message ends at its closing backtick; inside it may quote a command (`lelp fit`)
_QUOTED = re.compile(r"`(lelp: (?:error|warning): (?:[^`]|`lelp \w+`)*)`")
_WORD = re.compile(r"\w[\w'·/=>+-]*")


def quoted_messages() -> list[str]:
    return [" ".join(m.group(1).split()) for m in _QUOTED.finditer(DOC.read_text(encoding="utf-8"))]


def triples(text: str) -> list[tuple[str, ...]]:
    """The runs of three words of ``text`` that no filled-in value (NUL: an f-string's field) interrupts."""
    runs = []
    for part in text.split("\0"):
        words = _WORD.findall(part)
        runs += [tuple(words[i:i + 3]) for i in range(len(words) - 2)]
    return runs


def string_literals(folder) -> list[str]:
    """Every string literal of the ``.py`` files under ``folder``, an f-string's fields as NUL (adjacent literals
    are one string, as Python joins them)."""
    found = []
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.append(node.value)
            elif isinstance(node, ast.JoinedStr):
                found.append("".join(part.value if isinstance(part, ast.Constant) else "\0" for part in node.values))
    return found


def said_share(message: str, said: set[tuple[str, ...]]) -> float | None:
    """The share of ``message``'s words (its filled-in values left out) that are in a run of three words the code
    or the tests say; ``None`` for a message with too few words to tell."""
    text = _FILLED_IN.sub("\0", message.removeprefix("lelp: error: ").removeprefix("lelp: warning: "))
    counted, covered, offset = 0, set(), 0
    for part in text.split("\0"):
        words = _WORD.findall(part)
        counted += len(words) if len(words) >= 3 else 0
        covered |= {offset + i + k for i in range(len(words) - 2) if tuple(words[i:i + 3]) in said for k in range(3)}
        offset += len(words)
    return len(covered) / counted if counted >= 3 else None


def test_the_page_quotes_messages():
    assert len(quoted_messages()) >= 30


def test_every_quoted_message_is_still_said():
    """Most of each message's words (half) are in runs of three words that a string of the code or of the tests
    holds: a reworded or removed message fails, a value the code fills in (a path, a count, a name) does not."""
    said = {run for text in string_literals(REPO / "lelp_lightning") + string_literals(REPO / "tests")
            for run in triples(text)}
    shares = {message: said_share(message, said) for message in quoted_messages()}
    stale = {message: share for message, share in shares.items() if share is not None and share < 0.5}
    assert not stale, "docs/troubleshooting.md quotes messages that neither the code nor a test says:\n" + "\n".join(
        f"  {message}  ({share:.0%} of its words said)" for message, share in stale.items())
