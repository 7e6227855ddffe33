"""The object store of the embedded API server: resource types, objects, event log.

Everything here is synchronous and runs on the server's event loop thread only;
with no ``await`` inside an operation, each operation is atomic with respect to
the others (the same guarantee etcd's transactions give the real API server).
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import re
from typing import Any, Iterable

Obj = dict[str, Any]
Key = tuple[str, str]  # (group, plural)
Where = tuple[Key, tuple[str, str]]  # (group, plural), (namespace, name)


def clone(value: Any) -> Any:
    """A deep copy of a JSON tree (dicts, lists, scalars): what copy.deepcopy gives for
    these, several times faster (no memo, no dispatch). Stored objects are JSON trees."""
    if isinstance(value, dict):
        return {k: clone(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clone(v) for v in value]
    return value


class ApiError(Exception):
    """An error answered as a Kubernetes ``Status`` object."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> Obj:
        body: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def not_found(rtype: "ResourceType | None", name: str | None = None) -> ApiError:
    if rtype is None or name is None:
        return ApiError(404, "NotFound", "the server could not find the requested resource")
    return ApiError(404, "NotFound", f'{rtype.group_resource} "{name}" not found',
                    {"name": name, "group": rtype.group, "kind": rtype.plural})


@dataclasses.dataclass
class ResourceType:
    """What the discovery documents say about one resource (one group/plural)."""

    group: str
    versions: list[str]  # served versions; the first is the preferred/storage one
    plural: str
    singular: str
    kind: str
    namespaced: bool = True
    short_names: list[str] = dataclasses.field(default_factory=list)
    categories: list[str] = dataclasses.field(default_factory=list)
    status: bool = False  # has the status subresource
    list_kind: str = ""
    # Per version: the openAPIV3Schema (CRDs only) and additionalPrinterColumns.
    schemas: dict[str, Obj] = dataclasses.field(default_factory=dict)
    printer_columns: dict[str, list[Obj]] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self.list_kind = self.list_kind or f"{self.kind}List"

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)

    @property
    def group_resource(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def group_kind(self) -> str:
        return f"{self.kind}.{self.group}" if self.group else self.kind

    def api_version(self, version: str | None = None) -> str:
        version = version or self.versions[0]
        return f"{self.group}/{version}" if self.group else version


@dataclasses.dataclass(frozen=True)
class Event:
    rv: int
    key: tuple[str, str]  # (group, plural)
    type: str  # ADDED, MODIFIED, DELETED
    obj: Obj  # a snapshot; never mutated after being logged


class Watcher:
    """One live watch stream: receives the events of one resource type."""

    def __init__(self, key: tuple[str, str]) -> None:
        self.key = key
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue()


class Store:
    """Objects by resource type, a global resourceVersion, and a bounded event log."""

    def __init__(self, log_size: int = 100_000) -> None:
        self.types: dict[tuple[str, str], ResourceType] = {}
        self.objects: dict[tuple[str, str], dict[tuple[str, str], Obj]] = collections.defaultdict(dict)
        self.rv = 1
        self.log: collections.deque[Event] = collections.deque(maxlen=log_size)
        self.watchers: set[Watcher] = set()
        # Indexes kept by put/remove, so deletion cascades never scan every object.
        self.by_uid: dict[str, Where] = {}
        self.dependents: dict[str, set[Where]] = collections.defaultdict(set)  # owner uid -> dependents

    # --- resource types ---------------------------------------------------------------------

    def register(self, rtype: ResourceType) -> None:
        self.types[rtype.key] = rtype

    def unregister(self, key: tuple[str, str]) -> None:
        self.types.pop(key, None)
        for obj in self.objects.pop(key, {}).values():
            self._unindex(key, obj)

    def find_type(self, group: str, version: str, plural: str) -> ResourceType | None:
        rtype = self.types.get((group, plural))
        if rtype is None or version not in rtype.versions:
            return None
        return rtype

    # --- objects ----------------------------------------------------------------------------

    def get(self, key: tuple[str, str], namespace: str, name: str) -> Obj | None:
        return self.objects[key].get((namespace, name))

    def items(self, key: tuple[str, str], namespace: str | None = None) -> list[Obj]:
        objs = self.objects.get(key, {})
        return [obj for (ns, _), obj in sorted(objs.items()) if namespace is None or ns == namespace]

    def all_in_namespace(self, namespace: str) -> Iterable[tuple[tuple[str, str], Obj]]:
        for key, objs in list(self.objects.items()):
            for (ns, _), obj in list(objs.items()):
                if ns == namespace:
                    yield key, obj

    def uid_exists(self, uid: str | None) -> bool:
        return uid is not None and uid in self.by_uid

    def dependents_of(self, uid: str) -> list[tuple[Key, Obj]]:
        """The stored objects with an ownerReference to ``uid``."""
        return [(key, self.objects[key][loc]) for key, loc in sorted(self.dependents.get(uid, ()))]

    @staticmethod
    def _owner_uids(obj: Obj) -> list[str]:
        refs = obj["metadata"].get("ownerReferences")
        if not isinstance(refs, list):
            return []
        return [ref["uid"] for ref in refs if isinstance(ref, dict) and isinstance(ref.get("uid"), str)]

    def _index(self, key: Key, obj: Obj) -> None:
        meta = obj["metadata"]
        where = (key, (meta.get("namespace") or "", meta["name"]))
        if meta.get("uid"):
            self.by_uid[meta["uid"]] = where
        for owner in self._owner_uids(obj):
            self.dependents[owner].add(where)

    def _unindex(self, key: Key, obj: Obj) -> None:
        meta = obj["metadata"]
        where = (key, (meta.get("namespace") or "", meta["name"]))
        if meta.get("uid") and self.by_uid.get(meta["uid"]) == where:
            del self.by_uid[meta["uid"]]
        for owner in self._owner_uids(obj):
            dependents = self.dependents.get(owner)
            if dependents is not None:
                dependents.discard(where)
                if not dependents:
                    del self.dependents[owner]

    def next_rv(self) -> int:
        self.rv += 1
        return self.rv

    def put(self, key: tuple[str, str], obj: Obj, event_type: str) -> Obj:
        """Store a new state of an object (ADDED or MODIFIED), bumping the resourceVersion.

        The store keeps its own copy; ``obj`` (with its new resourceVersion) is returned."""
        meta = obj["metadata"]
        rv = self.next_rv()
        meta["resourceVersion"] = str(rv)
        stored = clone(obj)
        loc = (meta.get("namespace") or "", meta["name"])
        previous = self.objects[key].get(loc)
        if previous is not None:
            self._unindex(key, previous)
        self.objects[key][loc] = stored
        self._index(key, stored)
        self._emit(Event(rv, key, event_type, stored))
        return obj

    def remove(self, key: tuple[str, str], obj: Obj) -> Obj:
        meta = obj["metadata"]
        previous = self.objects[key].pop((meta.get("namespace") or "", meta["name"]), None)
        if previous is not None:
            self._unindex(key, previous)
        rv = self.next_rv()
        gone = clone(obj)
        gone["metadata"]["resourceVersion"] = str(rv)
        self._emit(Event(rv, key, "DELETED", gone))
        return clone(gone)

    # --- watching -----------------------------------------------------------------------------

    def _emit(self, event: Event) -> None:
        self.log.append(event)
        for watcher in self.watchers:
            if watcher.key == event.key:
                watcher.queue.put_nowait(event)

    def history_since(self, key: tuple[str, str], rv: int) -> list[Event] | None:
        """Events of a type after ``rv``; None if the log no longer reaches back that far (410)."""
        if self.log and rv < self.log[0].rv - 1 and len(self.log) == self.log.maxlen:
            return None
        return [event for event in self.log if event.rv > rv and event.key == key]

    def subscribe(self, key: tuple[str, str]) -> Watcher:
        watcher = Watcher(key)
        self.watchers.add(watcher)
        return watcher

    def unsubscribe(self, watcher: Watcher) -> None:
        self.watchers.discard(watcher)

    def close_watchers(self) -> None:
        for watcher in self.watchers:
            watcher.queue.put_nowait(None)


# --- selectors ------------------------------------------------------------------------------

_SET_RE = re.compile(r"^\s*([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split_selector(selector: str) -> list[str]:
    # Commas separate requirements, except inside "in (a,b)" sets.
    parts, depth, current = [], 0, ""
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [part.strip() for part in parts if part.strip()]


def parse_label_selector(selector: str) -> list[tuple[str, str, list[str]]]:
    """Parse ``a=b,c!=d,e,!f,g in (x,y)`` into (key, op, values) requirements."""
    requirements = []
    for part in _split_selector(selector):
        if m := _SET_RE.match(part):
            requirements.append((m.group(1), m.group(2), [v.strip() for v in m.group(3).split(",") if v.strip()]))
        elif "!=" in part:
            key, value = part.split("!=", 1)
            requirements.append((key.strip(), "!=", [value.strip()]))
        elif "==" in part:
            key, value = part.split("==", 1)
            requirements.append((key.strip(), "=", [value.strip()]))
        elif "=" in part:
            key, value = part.split("=", 1)
            requirements.append((key.strip(), "=", [value.strip()]))
        elif part.startswith("!"):
            requirements.append((part[1:].strip(), "!exists", []))
        else:
            requirements.append((part, "exists", []))
    return requirements


def match_labels(labels: dict[str, str], requirements: list[tuple[str, str, list[str]]]) -> bool:
    for key, op, values in requirements:
        present = key in labels
        value = labels.get(key)
        if op == "=" and value != values[0]:
            return False
        if op == "!=" and value == values[0]:
            return False
        if op == "exists" and not present:
            return False
        if op == "!exists" and present:
            return False
        if op == "in" and value not in values:
            return False
        if op == "notin" and present and value in values:
            return False
    return True


def parse_field_selector(selector: str) -> list[tuple[str, str, str]]:
    requirements = []
    for part in _split_selector(selector):
        if "!=" in part:
            path, value = part.split("!=", 1)
            requirements.append((path.strip(), "!=", value.strip()))
        elif "=" in part:
            path, value = part.replace("==", "=").split("=", 1)
            requirements.append((path.strip(), "=", value.strip()))
        else:
            raise ApiError(400, "BadRequest", f"invalid selector: '{selector}'; can't understand '{part}'")
    return requirements


def match_fields(obj: Obj, requirements: list[tuple[str, str, str]]) -> bool:
    for path, op, expected in requirements:
        node: Any = obj
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        # Field selectors compare strings; a missing field is an empty string.
        actual = "" if node is None else str(node).lower() if isinstance(node, bool) else str(node)
        if (op == "=") != (actual == expected):
            return False
    return True
