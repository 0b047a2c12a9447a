"""``business_logic``: internal hostnames and addresses, collaboration links, cloud account
ids in ARNs and e-mail addresses, replaced by keyed placeholders.

Kept: loopback and documentation addresses, ``example.*`` and no-reply e-mail addresses, and
public hostnames (they are part of the work, not of who did it).
"""

from __future__ import annotations

import ipaddress
import re

from opentraces.security import placeholder
from opentraces.security.base import Match, Rule, Tool

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}"
                    r"(?:\.[A-Za-z0-9-]{1,63}){1,8}(?![\w-])")
_KEEP_EMAIL = re.compile(r"(?i)@(?:[\w-]+\.)*(?:example\.(?:com|org|net)|users\.noreply\."
                         r"github\.com)$|^(?:no-?reply|noreply)@|^git@")
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.])")
_INTERNAL = re.compile(r"(?i)(?<![\w.-])(?:[a-z0-9-]{1,63}\.)+(?:corp|internal|local|lan|"
                       r"intranet|intra)(?![\w-])")
_ARN = re.compile(r"arn:aws[\w-]{0,12}:[\w-]{1,32}:[\w-]{0,32}:(\d{12}):")
_COLLAB = re.compile(r"https?://(?:[\w-]+\.)?(?:slack\.com|notion\.so|atlassian\.net|"
                     r"linear\.app|docs\.google\.com|figma\.com|teams\.microsoft\.com)"
                     r"(/[^\s\"'<>)\]]{1,2000})")


class BusinessLogic(Tool):
    name = "business_logic"
    scope = "row"
    default_enabled = True
    description = ("Internal hostnames and private IP addresses, collaboration links, AWS "
                   "account ids in ARNs and e-mail addresses.")

    def rules(self) -> list[Rule]:
        return [Rule("business.email", "email", "An e-mail address"),
                Rule("business.private_ip", "network", "A private (RFC 1918) IPv4 address"),
                Rule("business.internal_host", "network", "A hostname in an internal domain"),
                Rule("business.arn_account", "cloud_account", "An AWS account id in an ARN"),
                Rule("business.collab_link", "collaboration", "The path of a Slack, Notion, "
                     "Jira, Linear, Google Docs, Figma or Teams link")]

    def scan(self, path: str, text: str) -> list[Match]:
        found: list[Match] = []
        if "@" in text:
            for m in _EMAIL.finditer(text):
                if not _KEEP_EMAIL.search(m.group()):
                    found.append(self._match(m.start(), m.end(), "business.email", "email",
                                             m.group().lower()))
        if "." in text:
            for m in _IPV4.finditer(text):
                try:
                    ip = ipaddress.ip_address(m.group())
                except ValueError:
                    continue
                if ip.is_private and not ip.is_loopback and not ip.is_unspecified \
                        and str(ip) not in ("0.0.0.0",) and not m.group().startswith("169.254"):
                    found.append(self._match(m.start(), m.end(), "business.private_ip",
                                             "network", m.group(), "ip"))
            domains = tuple(self.options.get("internal_domains", []))
            for m in _INTERNAL.finditer(text):
                found.append(self._match(m.start(), m.end(), "business.internal_host",
                                         "network", m.group().lower(), "host"))
            for domain in domains:
                for m in re.finditer(rf"(?i)(?<![\w-])(?:[a-z0-9-]+\.)*{re.escape(domain)}\b",
                                     text):
                    found.append(self._match(m.start(), m.end(), "business.internal_host",
                                             "network", m.group().lower(), "host"))
        if "arn:" in text:
            for m in _ARN.finditer(text):
                found.append(self._match(m.start(1), m.end(1), "business.arn_account",
                                         "cloud_account", m.group(1), "account"))
        if "://" in text:
            for m in _COLLAB.finditer(text):
                found.append(self._match(m.start(1), m.end(1), "business.collab_link",
                                         "collaboration", m.group(1), "link", "/"))
        return found

    def _match(self, start: int, end: int, rule: str, family: str, value: str,
               kind: str | None = None, prefix: str = "") -> Match:
        return Match(start, end, rule, family,
                     prefix + placeholder(self.context, kind or family, value))
