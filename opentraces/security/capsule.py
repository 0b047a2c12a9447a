"""``capsule_scope``: blank the field paths the configuration names.

``security.options.capsule_scope.fields`` is a list of glob patterns over the pipeline's field
paths (``metadata.cwd``, ``steps[*].tool_input.*``); a string at a matching path is emptied.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from opentraces.security.base import Match, Rule, Tool


class CapsuleScope(Tool):
    name = "capsule_scope"
    scope = "record"
    description = "Empties the fields whose paths match security.options.capsule_scope.fields."

    def rules(self) -> list[Rule]:
        return [Rule("capsule.field", "configured_field", "A field path the configuration "
                     "keeps out of anything that leaves")]

    def scan(self, path: str, text: str) -> list[Match]:
        # "[*]" is any list index here, not fnmatch's character class of "*"
        patterns = [p.replace("[*]", "[[]*[]]") for p in self.options.get("fields", [])]
        if text and not path.endswith("#key") and any(fnmatchcase(path, p) for p in patterns):
            return [Match(0, len(text), "capsule.field", "configured_field", "")]
        return []
