"""Strong generated passwords.

`secrets` (the OS's CSPRNG); letters, digits and a few punctuation characters that need no
quoting in SQL string literals, option files or URLs (no quotes, backslash, `%`, `@`, `:`,
`/`, `#`); at least one of each class. 32 characters give about 190 bits.
"""

from __future__ import annotations

import secrets
import string

LOWER = string.ascii_lowercase
UPPER = string.ascii_uppercase
DIGITS = string.digits
PUNCT = "-_.+=^~!"
ALPHABET = LOWER + UPPER + DIGITS + PUNCT


def generate_password(length: int = 32) -> str:
    if length < 16:
        raise ValueError("a generated password has at least 16 characters")
    while True:
        chars = [secrets.choice(ALPHABET) for _ in range(length)]
        if (
            any(c in LOWER for c in chars)
            and any(c in UPPER for c in chars)
            and any(c in DIGITS for c in chars)
            and any(c in PUNCT for c in chars)
        ):
            return "".join(chars)
