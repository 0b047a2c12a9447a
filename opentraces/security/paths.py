"""``path_anonymizer``: this machine's own identifiers first, then other users' home folders.

The capture machine knows who it is: its login name, home folder, hostname and git identity.
Exact replacement of those is the highest-recall step (a dataset-level scrubber cannot do it),
so it runs first, in every path form (``/Users/u``, ``/home/u``, ``C:\\Users\\u``,
``C:/Users/u``, ``/mnt/c/Users/u``, Claude Code's ``-Users-u-proj`` folder names). Then
other users' home folders are generalised; system accounts (``root``, ``runner``…) are kept,
because they identify nobody and CI logs are full of them. Replacements are keyed
placeholders (:func:`opentraces.security.placeholder`).
"""

from __future__ import annotations

import re

from opentraces.security import placeholder
from opentraces.security.base import Match, Rule, Tool

SYSTEM_USERS = frozenset({"root", "runner", "admin", "ubuntu", "user", "users", "shared",
                          "public", "default", "guest", "nobody", "vagrant", "ec2-user",
                          "node", "app", "runneradmin", "administrator", "all users"})
_SEP = r"(?:\\\\|\\|/)"
_HOMES = re.compile(rf"(?:(?<![\w.-])/Users/|(?<![\w.-])/home/|[A-Za-z]:{_SEP}Users{_SEP}"
                    r"|-Users-|-home-)([A-Za-z0-9_][A-Za-z0-9_.]{0,63})")
#: names too short to replace as free words without damaging other text
SHORT = 3


class PathAnonymizer(Tool):
    name = "path_anonymizer"
    scope = "row"
    default_enabled = True
    description = ("This machine's login, home folder, hostname and git identity, then other "
                   "users' home folders, replaced by keyed placeholders.")

    def __init__(self, context: object = None) -> None:
        super().__init__(context)  # type: ignore[arg-type]
        ids = self.context.identifiers
        own: list[tuple[str, str, str]] = []  # (text, rule, placeholder kind)
        for key, kind in (("home", "home"), ("git_email", "email"), ("git_name", "name"),
                          ("hostname", "host"), ("login", "user")):
            value = ids.get(key)
            if isinstance(value, str) and len(value) >= SHORT and value.lower() not in \
                    SYSTEM_USERS and not (key == "home" and value in ("/", "/root")):
                own.append((value, f"identity.{key}", kind))
        own += [(v, "identity.extra", "id") for v in ids.get("extra", []) if len(v) >= SHORT]
        own.sort(key=lambda o: -len(o[0]))
        self._own = own
        self._own_re = re.compile("|".join(
            rf"(?<![\w]){re.escape(t)}(?![\w])" if t[0].isalnum() and t[-1].isalnum()
            else re.escape(t) for t, _, _ in own), re.IGNORECASE) if own else None
        self._kinds = {t.lower(): (rule, kind) for t, rule, kind in own}
        self._login = str(ids.get("login", "")).lower()

    def rules(self) -> list[Rule]:
        return [Rule("identity.home", "path", "This machine's home folder"),
                Rule("identity.login", "identity", "This machine's login name"),
                Rule("identity.hostname", "identity", "This machine's hostname"),
                Rule("identity.git_name", "identity", "The git user.name of this machine"),
                Rule("identity.git_email", "identity", "The git user.email of this machine"),
                Rule("identity.extra", "identity", "Identifiers configured in "
                     "security.options.path_anonymizer.extra_identifiers"),
                Rule("path.other_home", "path", "Another user's home folder name")]

    def scan(self, path: str, text: str) -> list[Match]:
        found: list[Match] = []
        if self._own_re is not None:
            for m in self._own_re.finditer(text):
                rule, kind = self._kinds[m.group().lower()]
                value = m.group()
                if kind == "home":  # keep the folder's shape: /Users/<user-…>
                    cut = value.rstrip("/\\").replace("\\", "/").rfind("/") + 1
                    name = value[cut:].rstrip("/\\").lower() or self._login
                    replacement = value[:cut] + placeholder(self.context, "user", name)
                else:
                    replacement = placeholder(self.context, kind, value.lower())
                found.append(Match(m.start(), m.end(), rule,
                                   "path" if kind == "home" else "identity", replacement))
        if "Users" in text or "home" in text:
            for m in _HOMES.finditer(text):
                name = m.group(1)
                if name.lower() in SYSTEM_USERS or name.startswith("<"):
                    continue
                found.append(Match(m.start(1), m.end(1), "path.other_home", "path",
                                   placeholder(self.context, "user", name.lower())))
        return found
