"""PII from models: a local model you install (``privacy_filter``) or an LLM endpoint you run
(``llm_pii``). opentraces ships neither, so both are unavailable until configured in
``~/.opentraces/config.json`` under ``security.options.<tool>``; asking for one that is not
configured fails with ``tool_unavailable`` rather than doing nothing.

- ``privacy_filter``: ``options.model`` names a Python module (installed, or a ``.py`` file)
  with ``detect(texts: list[str]) -> list[list[{"start", "end", "label"}]]``.
- ``llm_pii``: ``options.endpoint`` is an OpenAI-compatible chat-completions URL (``model``,
  ``api_key_env``, ``timeout`` optional). The text it is sent is unsanitized, so only a
  loopback endpoint is accepted unless ``allow_remote`` is true. A model can invent spans, so
  only spans whose text occurs verbatim in the string are kept.

Both replace a span with a keyed placeholder (``<person-1a2b3c4d>``), like identities.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, ClassVar

from opentraces.security.base import Item, Match, Tool
from opentraces.security.external import ToolFailed

#: characters of text per request, so one request stays well inside a model's context
BATCH_CHARS = 12_000
PROMPT = (
    "Find personal data in each string: names of people, e-mail addresses, phone numbers, "
    "postal addresses, government or account ids. Answer with JSON only: "
    '{"findings": [{"id": <string id>, "text": <the exact characters>, "label": <kind>}]}. '
    "Copy text exactly as it appears; report nothing that is not in the string.")


def _family(label: Any) -> str:
    return re.sub(r"[^a-z0-9]+", "_", str(label).lower()).strip("_")[:24] or "pii"


class _ModelTool(Tool):
    kind: ClassVar[str] = "model"

    def _matches(self, text: str, found: list[tuple[str, str]]) -> list[Match]:
        """Every verbatim occurrence of each (text, label) found in ``text``."""
        from opentraces.security import placeholder

        out = {}
        for value, label in found:
            family = _family(label)
            for m in re.finditer(re.escape(value), text) if value.strip() else ():
                out[Match(m.start(), m.end(), f"{self.name}.{family}", family,
                          placeholder(self.context, family, value))] = None
        return list(out)


class PrivacyFilter(_ModelTool):
    name: ClassVar[str] = "privacy_filter"
    scope: ClassVar[str] = "row"
    description: ClassVar[str] = (
        "PII spans from a local model you install; set security.options.privacy_filter.model "
        "to a module with detect(texts) in ~/.opentraces/config.json")
    setup_command: ClassVar[str | None] = "opentraces security tools info privacy_filter"

    def _module_spec(self) -> Any:
        model = str(self.options.get("model") or "")
        if model.endswith(".py"):
            return importlib.util.spec_from_file_location("_opentraces_pii_model", model) \
                if Path(model).is_file() else None
        try:
            return importlib.util.find_spec(model) if model else None
        except (ImportError, ValueError):
            return None

    def unavailable(self) -> str | None:
        model = self.options.get("model")
        if not model:
            return ("no local PII model is configured (opentraces ships none): set "
                    "security.options.privacy_filter.model in ~/.opentraces/config.json")
        if self._module_spec() is None:
            return f"the configured model {model!r} is neither an installed module nor a file"
        return None

    def scan_many(self, items: list[Item]) -> list[list[Match]]:
        if not hasattr(self, "_module"):  # a model loads once per tool
            spec = self._module_spec()
            if spec is None or spec.loader is None:
                raise ToolFailed(f"privacy_filter: {self.unavailable()}")
            self._module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(self._module)
        results = self._module.detect([text for _, text in items])
        if len(results) != len(items):
            raise ToolFailed(f"privacy_filter: the model answered for {len(results)} of "
                             f"{len(items)} strings")
        out = []
        for (_, text), spans in zip(items, results, strict=True):
            # a span's own text is checked against the string, as for the LLM
            found = [(text[s["start"]:s["end"]], s.get("label", "pii")) for s in spans
                     if 0 <= s["start"] < s["end"] <= len(text)]
            out.append(self._matches(text, found))
        return out


class LlmPii(_ModelTool):
    name: ClassVar[str] = "llm_pii"
    scope: ClassVar[str] = "record"
    description: ClassVar[str] = (
        "PII spans from an OpenAI-compatible LLM endpoint you run; set "
        "security.options.llm_pii.endpoint in ~/.opentraces/config.json. Only spans found "
        "verbatim in the text are kept")
    setup_command: ClassVar[str | None] = "opentraces security tools info llm_pii"

    def unavailable(self) -> str | None:
        endpoint = self.options.get("endpoint")
        if not endpoint:
            return ("no LLM endpoint is configured: set security.options.llm_pii.endpoint "
                    "(an OpenAI-compatible /v1/chat/completions URL) in "
                    "~/.opentraces/config.json")
        url = urllib.parse.urlsplit(str(endpoint))
        if url.scheme not in ("http", "https") or not url.hostname:
            return f"the endpoint {endpoint!r} is not an http(s) URL"
        if not _loopback(url.hostname) and not self.options.get("allow_remote"):
            return (f"{url.hostname} is not this machine, and llm_pii sends unsanitized text: "
                    "set security.options.llm_pii.allow_remote to true to allow it")
        return None

    def scan_many(self, items: list[Item]) -> list[list[Match]]:
        found: list[list[tuple[str, str]]] = [[] for _ in items]
        batch: list[int] = []
        size = 0
        for i, (_, text) in enumerate([*items, ("", "")]):
            last = i == len(items)
            if batch and (last or size + len(text) > BATCH_CHARS):
                for f in self._ask({n: items[n][1] for n in batch}):
                    n = f.get("id")
                    n = int(n) if isinstance(n, int | str) and str(n).isdigit() else -1
                    if n in batch and isinstance(f.get("text"), str):
                        found[n].append((f["text"], f.get("label", "pii")))
                batch, size = [], 0
            if not last and text.strip():
                batch.append(i)
                size += len(text)
        return [self._matches(text, f) for (_, text), f in zip(items, found, strict=True)]

    def _ask(self, texts: dict[int, str]) -> list[dict[str, Any]]:
        endpoint = str(self.options["endpoint"])
        strings = [{"id": i, "text": t} for i, t in texts.items()]
        body = {"model": self.options.get("model", "default"), "temperature": 0,
                "messages": [{"role": "system", "content": PROMPT},
                             {"role": "user", "content": json.dumps({"strings": strings})}]}
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(str(self.options.get("api_key_env", "")), "")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(endpoint, json.dumps(body).encode(), headers)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy hop
        try:
            with opener.open(request, timeout=float(self.options.get("timeout", 120))) as r:
                content = json.loads(r.read())["choices"][0]["message"]["content"]
            start, end = content.index("{"), content.rindex("}") + 1  # tolerate ``` fences
            findings = json.loads(content[start:end]).get("findings", [])
        except (OSError, urllib.error.URLError) as e:
            raise ToolFailed(f"llm_pii: {endpoint} failed: {e}") from e
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
            raise ToolFailed(f"llm_pii: {endpoint} gave an answer that is not the expected "
                             f"JSON ({type(e).__name__}: {e})") from e
        if not isinstance(findings, list):
            raise ToolFailed(f"llm_pii: {endpoint} gave findings that are not a list")
        return [f for f in findings if isinstance(f, dict)]


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
