"""Prompt templates stored as files under `prompts/`, with declared and checked variables.

Prompts are data, not code: a user can read and diff them, and their hashes go into every manifest so
a dataset records exactly which wording produced it. A file looks like::

    ---
    variables: [pole_a, pole_b, count]
    system: optional system message, may use {{pole_a}} too
    ---
    The user message, with {{pole_a}} placeholders.

Placeholders are `{{name}}` (not `{name}`) so that prompts can show JSON examples verbatim.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

from autocustom.errors import DataError, UsageError

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def prompts_dir() -> Path:
    """Where the templates live: inside the wheel (`autocustom/_prompts`) or the source tree."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "_prompts", package.parent / "prompts"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("autocustom's prompts/ directory is missing from this installation")


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    variables: tuple[str, ...]
    system: str
    user: str
    sha256: str

    def render(self, **values: object) -> list[dict[str, str]]:
        """Chat messages with every declared variable filled; unknown or missing ones are errors."""
        missing = set(self.variables) - values.keys()
        extra = values.keys() - set(self.variables)
        if missing or extra:
            raise UsageError(
                f"prompt '{self.name}' got variables {sorted(values)}; it declares {list(self.variables)}",
                "pass exactly the declared variables",
            )
        text = {k: str(v) for k, v in values.items()}

        def fill(template: str) -> str:
            return _PLACEHOLDER.sub(lambda m: text[m.group(1)], template)

        messages = []
        if self.system:
            messages.append({"role": "system", "content": fill(self.system)})
        messages.append({"role": "user", "content": fill(self.user)})
        return messages


def parse_template(name: str, raw: str, source: Path) -> PromptTemplate:
    """Parse a template file's text; the placeholders used must equal the variables declared."""
    if not raw.startswith("---\n"):
        raise DataError(source, "a prompt file starts with a '---' header", "see prompts/README.md", line=1)
    header_text, sep, body = raw[4:].partition("\n---\n")
    if not sep:
        raise DataError(source, "the '---' header is not closed", "end the header with a '---' line")
    header = yaml.safe_load(header_text) or {}
    declared = tuple(header.get("variables", []))
    system = str(header.get("system", "") or "").strip()
    user = body.strip()
    used = set(_PLACEHOLDER.findall(user)) | set(_PLACEHOLDER.findall(system))
    if used != set(declared):
        raise DataError(
            source,
            f"placeholders {sorted(used)} do not match declared variables {sorted(declared)}",
            "declare every {{name}} the text uses, and use every declared one",
        )
    digest = hashlib.sha256(raw.encode("utf-8")).hexdigest()
    return PromptTemplate(name, declared, system, user, digest)


@cache
def load_prompt(name: str) -> PromptTemplate:
    """Load `prompts/<name>.md`."""
    path = prompts_dir() / f"{name}.md"
    if not path.is_file():
        raise UsageError(f"no prompt template named '{name}' in {path.parent}", "check the name")
    return parse_template(name, path.read_text(encoding="utf-8"), path)
