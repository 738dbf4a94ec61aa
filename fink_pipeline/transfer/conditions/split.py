"""Splitting a textarea into conditions, on the tokens of sqlglot's Spark tokenizer.

A condition ends at a `;` token or at a line break between two tokens; a `;` or a line break
inside a quoted literal (`'a;b'`, `"x<newline>y"`, `` `we;ird` ``) is part of its token. The
same tokens tell the validator where comments, `;` and unterminated quotes are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator, Sequence

from sqlglot.dialects.spark import Spark
from sqlglot.errors import TokenError
from sqlglot.tokens import Token, TokenType

DIALECT = Spark()  # the one sqlglot Spark dialect of the conditions (syntax parses with it)
_BREAKS = "\n\r"
# What a literal that the tokenizer could not close starts with: a prefix (r'...', X'...') and a quote.
_OPEN_QUOTE_RE = re.compile(r"[A-Za-z]*(['\"`])")


class _Tokenizer(Spark.Tokenizer):
    # Spark's tokenizer reads everything after a leading SHOW, EXECUTE... up to the next `;` as
    # one string: here every word stays a token, so a line break after `SHOW x` still ends a condition.
    COMMANDS: set[TokenType] = set()
    # A hex literal X'...' with other characters would stop the tokenizer: it is a prefix and a
    # string here (the parser's own tokens still read it as hex).
    HEX_STRINGS: list[str] = []
    # Spark's lexer reads r'a\' ...' as one literal (a backslash escapes the quote, raw or not).
    STRING_ESCAPES_ALLOWED_IN_RAW_STRINGS = True


# sqlglot reads `{# ... #}` (Jinja) as a comment in every dialect; Spark does not, nor does the
# split: `{#;` is two conditions. (The parser's tokens keep it: a comment there is refused.)
_Tokenizer._COMMENTS = {start: end for start, end in _Tokenizer._COMMENTS.items() if start != "{#"}


@dataclass(frozen=True)
class Lexed:
    """The tokens of a text; `end` is where they stop (its length, or what could not be read)."""

    text: str
    tokens: list[Token]
    end: int

    @property
    def complete(self) -> bool:
        return self.end == len(self.text)

    def gaps(self) -> Iterator[tuple[int, int, Token | None]]:
        """(start, stop) of every stretch between tokens (white space and comments) up to `end`,
        with the token that follows it (None for the last stretch)."""
        start = 0
        for token in self.tokens:
            yield start, token.start, token
            start = token.end + 1
        yield start, self.end, None

    def unclosed_quote(self) -> tuple[int, str] | None:
        """(position, quote) of the literal the tokenizer could not close, if that is why it stopped."""
        if self.complete:
            return None
        match = _OPEN_QUOTE_RE.match(self.text, self.end)
        return (match.start(1), match.group(1)) if match else None


def lex(text: str) -> Lexed:
    """Tokenize `text`; on an error (an unterminated quote), the tokens read before it."""
    tokenizer = _Tokenizer(dialect=DIALECT)
    try:
        tokens = tokenizer.tokenize(text)
    except TokenError:
        tokens = list(tokenizer.tokens)
        # The tokens before the one that failed; it starts after their white space.
        after = tokens[-1].end + 1 if tokens else 0
        stripped = text[after:].lstrip()
        return Lexed(text, tokens, len(text) - len(stripped))
    return Lexed(text, tokens, len(text))


def _cuts(lexed: Lexed) -> Iterator[int]:
    """Positions of the `;` tokens and of the line breaks between tokens, in order."""
    for start, stop, token in lexed.gaps():
        yield from (i for i in range(start, stop) if lexed.text[i] in _BREAKS)
        if token is not None and token.token_type == TokenType.SEMICOLON:
            yield token.start


def split_conditions(text: str | Sequence[str]) -> list[str]:
    """Split a textarea (or several) into single conditions.

    Splits on `;` and newlines outside quoted literals (`'a;b'` stays whole), strips every
    piece and drops empty ones, like the portal does before calling Fink's job. After a quote
    that is never closed nothing is split: the validator reports the quote.
    """
    texts = [text] if isinstance(text, str) else list(text)
    pieces: list[str] = []
    for chunk in texts:
        if not isinstance(chunk, str):
            raise TypeError(f"conditions must be strings, not {type(chunk).__name__}")
        start = 0
        for cut in _cuts(lex(chunk)):
            pieces.append(chunk[start:cut])
            start = cut + 1
        pieces.append(chunk[start:])
    return [p.strip() for p in pieces if p.strip()]
