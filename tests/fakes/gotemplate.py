"""A small Go ``text/template`` for the templates of ``deploy/nomad``: what Nomad's
``template`` block (consul-template) would render from them, given sample values.

Nomad cannot be installed here, nor consul-template (neither is in the package registries this
project reaches), so the tests render the jobs' templates with this, built from Go's
``text/template`` documentation and consul-template's function list. It knows what the job files
use and refuses anything else, so a template that grows past it fails loudly rather than being
rendered wrongly:

- actions ``{{ PIPELINE }}``, ``{{ $x := PIPELINE }}``, ``{{ with }}``, ``{{ if }}``,
  ``{{ range PIPELINE }}``, ``{{ range $i, $v := PIPELINE }}``, ``{{ end }}``; the trim markers
  ``{{- `` and `` -}}`` (all white space before or after the action goes);
- operands: string literals, ``.``, ``.Field.Field``, ``$var``, ``$var.Field``; pipes ``|``;
- functions (:data:`FUNCTIONS`, plus those given): ``env``, ``nomadVar``, ``nomadService``,
  ``index``, ``toJSON``, ``parseJSON``.

A Nomad Variable's items are :class:`VarItem` (consul-template's ``NomadVarItem``: prints as its
value, ``.Value`` is the string); a field or key that does not exist is an error here (Go would
print nothing, which in a password is worse than an error).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|\||:=|,|[^\s|,]+')


class TemplateError(Exception):
    """The template uses something this renderer does not know, or a value is missing."""


@dataclass(frozen=True)
class VarItem:
    """One item of a Nomad Variable, as consul-template hands it to a template."""

    Key: str
    Value: str

    def __str__(self) -> str:
        return self.Value


def nomad_var(items: Mapping[str, str]) -> dict[str, VarItem]:
    """What ``nomadVar "path"`` returns for a Variable with ``items``."""
    return {k: VarItem(k, v) for k, v in items.items()}


def _to_json(value: Any) -> str:
    if isinstance(value, VarItem):
        value = value.Value
    # Go's encoding/json escapes <, > and & in strings; consul-template keeps that.
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _index(collection: Any, *keys: Any) -> Any:
    for key in keys:
        try:
            collection = collection[key]
        except (KeyError, IndexError, TypeError) as exc:
            raise TemplateError(f"index: no {key!r} in {collection!r}") from exc
    return collection


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "index": _index,
    "toJSON": _to_json,
    "parseJSON": lambda text: json.loads(str(text)),
}


@dataclass
class _Node:
    kind: str  # text, output, set, with, if, range
    text: str = ""
    words: tuple[str, ...] = ()
    body: list[_Node] | None = None
    names: tuple[str, ...] = ()


def _parse(source: str) -> list[_Node]:
    pieces: list[tuple[str, str]] = []
    pos = 0
    for match in _ACTION.finditer(source):
        text = source[pos : match.start()]
        if match.group(1):
            text = text.rstrip()
        if pieces and pieces[-1][0] == "trim-next":
            pieces.pop()
            text = text.lstrip()
        pieces.append(("text", text))
        pieces.append(("action", match.group(2).strip()))
        if match.group(3):
            pieces.append(("trim-next", ""))
        pos = match.end()
    tail = source[pos:]
    if pieces and pieces[-1][0] == "trim-next":
        pieces.pop()
        tail = tail.lstrip()
    pieces.append(("text", tail))
    root: list[_Node] = []
    stack = [root]
    for kind, body in pieces:
        if kind == "text":
            if body:
                stack[-1].append(_Node("text", text=body))
            continue
        words = tuple(_TOKEN.findall(body))
        head = words[0] if words else ""
        if head == "end":
            if len(stack) == 1:
                raise TemplateError("{{ end }} without a block")
            stack.pop()
        elif head in ("with", "if", "range"):
            rest, names = words[1:], ()
            if ":=" in rest:
                cut = rest.index(":=")
                names = tuple(w for w in rest[:cut] if w != ",")
                rest = rest[cut + 1 :]
            node = _Node(head, words=rest, body=[], names=names)
            stack[-1].append(node)
            assert node.body is not None
            stack.append(node.body)
        elif len(words) > 2 and words[1] == ":=":
            stack[-1].append(_Node("set", words=words[2:], names=(words[0],)))
        elif head in ("else", "define", "template", "block") or head.startswith("/*"):
            raise TemplateError(f"{{{{ {body} }}}} is not supported by this renderer")
        else:
            stack[-1].append(_Node("output", words=words))
    if len(stack) != 1:
        raise TemplateError("a block has no {{ end }}")
    return root


def _truth(value: Any) -> bool:
    if value is None or value is False:
        return False
    if isinstance(value, (int, float, str, list, tuple, dict)):
        return bool(value)
    return True  # a struct


def _show(value: Any) -> str:
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class _Scope:
    def __init__(self, funcs: Mapping[str, Callable[..., Any]]) -> None:
        self.funcs = funcs

    def field(self, value: Any, path: list[str]) -> Any:
        for name in path:
            if isinstance(value, Mapping):
                if name not in value:
                    raise TemplateError(f"no key {name!r} (keys: {sorted(value)})")
                value = value[name]
            elif hasattr(value, name) and not name.startswith("_"):
                value = getattr(value, name)
            else:
                raise TemplateError(f"no field {name!r} in {value!r}")
        return value

    def operand(self, word: str, dot: Any, env: dict[str, Any]) -> Any:
        if word.startswith('"'):
            return json.loads(word)
        if word.isdigit():
            return int(word)
        if word == ".":
            return dot
        if word.startswith("."):
            return self.field(dot, word[1:].split("."))
        if word.startswith("$"):
            name, *path = word.split(".")
            if name not in env:
                raise TemplateError(f"undefined variable {name}")
            return self.field(env[name], path)
        raise TemplateError(f"not an operand: {word!r}")

    def pipeline(self, words: tuple[str, ...], dot: Any, env: dict[str, Any]) -> Any:
        commands: list[list[str]] = [[]]
        for word in words:
            if word == "|":
                commands.append([])
            else:
                commands[-1].append(word)
        value: Any = None
        for i, command in enumerate(commands):
            if not command:
                raise TemplateError(f"empty command in {' '.join(words)}")
            head, *args = command
            if head in self.funcs:
                values = [self.operand(a, dot, env) for a in args]
                if i > 0:
                    values.append(value)
                value = self.funcs[head](*values)
            elif head[0] in '".$' or head.isdigit():
                if args or i > 0:
                    raise TemplateError(f"{head} takes no arguments")
                value = self.operand(head, dot, env)
            else:
                raise TemplateError(f"function {head!r} is not known to this renderer")
        return value

    def run(self, nodes: list[_Node], dot: Any, env: dict[str, Any], out: list[str]) -> None:
        for node in nodes:
            if node.kind == "text":
                out.append(node.text)
            elif node.kind == "output":
                out.append(_show(self.pipeline(node.words, dot, env)))
            elif node.kind == "set":
                env[node.names[0]] = self.pipeline(node.words, dot, env)
            else:
                value = self.pipeline(node.words, dot, env)
                assert node.body is not None
                if node.kind == "range":
                    items = (
                        list(value.items())
                        if isinstance(value, dict)
                        else list(enumerate(value or []))
                    )
                    for key, item in items:
                        inner = dict(env)
                        if len(node.names) == 2:
                            inner[node.names[0]], inner[node.names[1]] = key, item
                        elif node.names:
                            inner[node.names[0]] = item
                        self.run(node.body, item, inner, out)
                elif _truth(value):
                    inner = dict(env)
                    if node.names:
                        inner[node.names[0]] = value
                    self.run(node.body, value if node.kind == "with" else dot, inner, out)


def render(
    source: str,
    *,
    env: Mapping[str, str] | None = None,
    variables: Mapping[str, Mapping[str, str]] | None = None,
    services: Mapping[str, list[dict[str, Any]]] | None = None,
) -> str:
    """``source`` rendered as Nomad would: ``env`` for ``env``, ``variables`` (path -> items)
    for ``nomadVar``, ``services`` (name -> ``[{"Address", "Port"}]``) for ``nomadService``."""
    known_vars = variables or {}
    known_services = services or {}

    def var(path: str) -> dict[str, VarItem]:
        if path not in known_vars:
            raise TemplateError(f"no Nomad Variable {path!r} (Nomad would wait for it)")
        return nomad_var(known_vars[path])

    def service(name: str) -> list[dict[str, Any]]:
        if name not in known_services:
            raise TemplateError(f"no service {name!r} in the sample")
        return known_services[name]

    funcs = {
        **FUNCTIONS,
        "env": lambda name: (env or {})[name],
        "nomadVar": var,
        "nomadService": service,
    }
    out: list[str] = []
    _Scope(funcs).run(_parse(source), None, {"$": None}, out)
    return "".join(out)
