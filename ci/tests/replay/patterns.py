"""Include/exclude filters with the engine's semantics (moby/patternmatcher, used by fsutil).

The engine filters a host directory with the same matcher docker uses for .dockerignore:
patterns are anchored at the directory root, `*` and `?` stop at `/`, `**` crosses
directories, a pattern matching a parent directory matches everything under it, `!`
re-includes, and the last matching pattern wins. `Ignore([...])` on a `DefaultPath`
argument becomes `exclude`; dagger.json's `include` list (with `!` entries) becomes
`include` when the engine loads the module's own source.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class _Pattern:
    regex: re.Pattern[str]
    exclusion: bool


def _compile(pattern: str) -> re.Pattern[str]:
    """moby/patternmatcher's `compile`: the pattern as one anchored regular expression."""
    out = "^"
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            if i + 1 < len(pattern) and pattern[i + 1] == "*":
                i += 1
                if i + 1 < len(pattern) and pattern[i + 1] == "/":
                    i += 1
                out += ".*" if i + 1 >= len(pattern) else "(.*/)?"
            else:
                out += "[^/]*"
        elif ch == "?":
            out += "[^/]"
        elif ch == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        elif ch == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out += re.escape(ch)
            else:
                body = pattern[i + 1 : end].replace("\\", "\\\\")
                out += "[" + ("^" + body[1:] if body.startswith("!") else body) + "]"
                i = end
        else:
            out += re.escape(ch)
        i += 1
    return re.compile(out + "$")


class PatternMatcher:
    """A list of patterns, evaluated in order like moby's `MatchesOrParentMatches`."""

    def __init__(self, patterns: Sequence[str]) -> None:
        self.patterns: list[_Pattern] = []
        for raw in patterns:
            text = raw.strip()
            if not text:
                continue
            exclusion = text.startswith("!")
            if exclusion:
                text = text[1:].strip()
            text = posixpath.normpath(text).lstrip("/")
            if text in ("", "."):
                text = "**"
            self.patterns.append(_Pattern(_compile(text), exclusion))

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def matches(self, path: str) -> bool:
        """True when `path` (relative, `/`-separated) or one of its parent directories matches."""
        parts = path.split("/")
        parents = ["/".join(parts[: i + 1]) for i in range(len(parts) - 1)]
        matched = False
        for pattern in self.patterns:
            if pattern.exclusion != matched:
                continue
            hit = bool(pattern.regex.match(path)) or any(pattern.regex.match(p) for p in parents)
            if hit:
                matched = not pattern.exclusion
        return matched


@dataclass(frozen=True)
class CopyFilter:
    """The engine's CopyFilter: a path is kept when an include admits it and no exclude drops it."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def keeps(self, path: str) -> bool:
        include = PatternMatcher(self.include)
        if include and not include.matches(path):
            return False
        return not PatternMatcher(self.exclude).matches(path)

    def compiled(self) -> tuple[PatternMatcher, PatternMatcher]:
        return PatternMatcher(self.include), PatternMatcher(self.exclude)


def keep(path: str, include: PatternMatcher, exclude: PatternMatcher) -> bool:
    """`CopyFilter.keeps` with the matchers compiled once per walk."""
    if include and not include.matches(path):
        return False
    return not exclude.matches(path)
