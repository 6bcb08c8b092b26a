"""What redaction hides: header names on a deny list, adjusted by --redact-header / --keep-header."""

from __future__ import annotations

from dataclasses import dataclass, field

MASK = ord("*")
# Header names always hidden, and words that hide any header whose name contains one.
DENY_HEADERS = ("authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key")
DENY_WORDS = ("token", "secret", "password", "session")
# Headers whose value is a URL: its query values and userinfo are masked like a request target's.
URL_HEADERS = ("referer", "location", "content-location", "origin")


@dataclass(frozen=True)
class RedactionPolicy:
    """`redact_headers` extends the deny list, `keep_headers` trims it (names, any case)."""

    redact_headers: frozenset[str] = field(default_factory=frozenset)
    keep_headers: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def make(cls, redact: list[str] | tuple[str, ...] = (), keep: list[str] | tuple[str, ...] = ()) -> RedactionPolicy:
        return cls(frozenset(n.strip().lower() for n in redact if n.strip()),
                   frozenset(n.strip().lower() for n in keep if n.strip()))

    def secret_header(self, name: str) -> bool:
        name = name.lower()
        if name in self.keep_headers:
            return False
        return name in DENY_HEADERS or name in self.redact_headers or any(w in name for w in DENY_WORDS)

    def trigger_words(self) -> list[str]:
        """Lower-case strings one of which appears in every secret header name (the cheap test)."""
        words = {"authorization", "cookie", "x-api-key", *DENY_WORDS, *self.redact_headers}
        return sorted(words)

    def to_manifest(self) -> dict:
        return {"headers": sorted(set(DENY_HEADERS) | self.redact_headers), "header_words": list(DENY_WORDS),
                "kept_headers": sorted(self.keep_headers), "url_query_values": True, "url_userinfo": True,
                "command_lines": True, "http2_literals": True, "mask": chr(MASK), "same_length": True}
