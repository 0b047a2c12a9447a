"""``classifier``: flags what a person should read before publishing; it never edits.

Flags: credential files read or printed by a tool (``.env``, ``id_rsa``, ``.npmrc``,
``credentials``), large encoded blobs, and prose that says the content is confidential.
"""

from __future__ import annotations

import re

from opentraces.security.base import Match, Rule, Tool

_RULES = [
    ("classifier.credential_file", "credential_file",
     re.compile(r"(?:^|[\s/\"'])(\.env(?:\.\w{1,20})?|id_(?:rsa|ed25519|ecdsa)|\.npmrc|\.pypirc|"
                r"\.netrc|\.pgpass|credentials(?:\.json)?|\.git-credentials)(?=$|[\s\"'])")),
    ("classifier.confidential", "confidential",
     re.compile(r"(?i)\b(confidential|do not share|internal only|under nda|proprietary)\b")),
    ("classifier.encoded_blob", "encoded_blob", re.compile(r"[A-Za-z0-9+/]{4096,}={0,2}")),
]
_DESCRIPTIONS = {
    "classifier.credential_file": "A credential file named in a tool call or output",
    "classifier.confidential": "Prose that marks the content as confidential",
    "classifier.encoded_blob": "A base64 blob of 4 KB or more (what it holds is unread)",
}


class Classifier(Tool):
    name = "classifier"
    scope = "record"
    description = "Flags (never edits) credential files, large encoded blobs and "\
        "confidentiality markers for a person to review."

    def rules(self) -> list[Rule]:
        return [Rule(rule_id, family, _DESCRIPTIONS[rule_id]) for rule_id, family, _ in _RULES]

    def scan(self, path: str, text: str) -> list[Match]:
        return [Match(m.start(m.lastindex or 0), m.end(m.lastindex or 0), rule_id, family, None)
                for rule_id, family, pattern in _RULES for m in pattern.finditer(text)]
