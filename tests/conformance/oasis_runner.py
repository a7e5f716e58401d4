"""Replay the OASIS KMIP 1.x XML test cases against a live kmipfast server.

Theory of operation. A test-case file is a list of (request, expected response)
pairs (:func:`kmipfast.protocol.xmlcase.load_case`). :func:`run_file` sends them in
order on one mTLS session with a fresh list of unique identifiers: each request is
bound (``$UNIQUE_IDENTIFIER_N`` the server returned so far, ``$NOW±n``), sent, the
identifiers the server returns are captured, and the response is compared with the
expected one (:func:`kmipfast.protocol.xmlcase.compare`, lenient on clocks, digests and
messages). A file passes when every message compares clean.

Policies on top of ``compare`` — where the recorded server's answer is one correct
answer among several, and what we check instead:

* **Query**: only Result Status and Result Reason are compared; in addition, when the
  request asked for Query Operations (Query Objects) the listed operations (object
  types) must include every one kmipfast claims (:data:`CLAIMED_OPERATIONS`,
  :data:`CLAIMED_OBJECT_TYPES`, DESIGN §6). Vendor and server information are free.
* **Discover Versions without a list**: the server may support more versions than the
  recorded one: every expected version must be listed, and the list must be in
  descending order (KMIP 1.x §4.26). With a client list the answer is compared exactly.
* **Key material of server-generated keys** (from Create or Re-key in this run on this
  server): the files record the key their server made; ours makes another. Compared by
  length only. Registered key material is compared byte for byte.
* **$NOW in a response** stays a wildcard (the request's send time and the response's
  clock never agree to the second).
* **Get Attribute List**: the names are a set; their order is free.
* **Located Items** (KMIP 1.3+, optional "if the server is able to determine the count"):
  may be sent in a 1.3/1.4 Locate response where the file has none; for 1.0–1.2 it must
  not appear.
* **Response protocol version** is the request's (DESIGN §6). One file of the corpus
  disagrees with its own request (``oasis/v1.4/optional/OMOS-O-1-14.xml`` message 1 records
  a 1.3 answer to a 1.4 request): the request wins.

Servers. The TL-* files are one series (configure, write a key, read it back) that
assumes an otherwise empty server: each series (one per corpus folder) gets a fresh
server, run in order. Everything else shares one server per family group
(:func:`group_of`), so a failed file can leave objects behind only for its own family.

Run ``python -m tests.conformance.oasis_runner --out tests/conformance/oasis-1x-results.md``
from the repository root for the table of the whole 1.x corpus. Diffs never show key
material (``compare`` renders byte strings as length and a short hash).
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kmipfast import _native
from kmipfast.errors import TtlvDecodeError, TtlvEncodeError
from kmipfast.protocol.enums import (
    ObjectType,
    Operation,
    QueryFunction,
    ResultReason,
    ResultStatus,
)
from kmipfast.protocol.tags import ItemType, Tag
from kmipfast.protocol.xmlcase import (
    Node,
    Placeholder,
    bind,
    capture_uids,
    compare,
    load_case,
)
from tests.server.kmipclient import Conn, ConnectionClosed

REPO = Path(__file__).resolve().parents[2]
CONFORMANCE = REPO.parent / "shared" / "conformance"
CORPUS_1X = (
    "oasis/v1.0",
    "oasis/v1.3",
    "oasis/v1.4",
    "oasis-tc/v1.0",
    "oasis-tc/v1.1",
    "oasis-tc/v1.2",
)
SKIPPED_FILE = Path(__file__).with_name("skipped.toml")

# What kmipfast offers (DESIGN §6); a Query answer must list at least these.
CLAIMED_OPERATIONS: frozenset[Operation] = frozenset(
    {
        Operation.DiscoverVersions,
        Operation.Query,
        Operation.Create,
        Operation.Register,
        Operation.Get,
        Operation.GetAttributes,
        Operation.GetAttributeList,
        Operation.AddAttribute,
        Operation.ModifyAttribute,
        Operation.DeleteAttribute,
        Operation.Locate,
        Operation.Activate,
        Operation.Revoke,
        Operation.Destroy,
        Operation.ReKey,
        Operation.Check,
    }
)
CLAIMED_OBJECT_TYPES: frozenset[ObjectType] = frozenset(
    {
        ObjectType.SymmetricKey,
        ObjectType.SecretData,
        ObjectType.OpaqueObject,
        ObjectType.Certificate,
        ObjectType.PublicKey,
        ObjectType.PrivateKey,
    }
)
# Operations whose success hands out a key the server made.
_GENERATING = frozenset({Operation.Create, Operation.ReKey, Operation.CreateKeyPair})

# Family of a file name, first match wins; the group decides which files share a server.
_FAMILIES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern, re.IGNORECASE))
    for name, pattern in (
        ("TC_31x", r"^TC[-_]31\d[-_]"),
        ("TC_32", r"^TC[-_]32[-_]"),
        ("TC_41", r"^TC[-_]41[-_]"),
        ("TC_121", r"^TC[-_]121[-_]"),
        ("TC_122", r"^TC[-_]122[-_]"),
        ("TC_161", r"^TC[-_]161[-_]"),
        ("TC_171", r"^TC[-_]171[-_]"),
        ("TC_71", r"^TC[-_]71[-_]"),
        ("TC_72", r"^TC[-_]72[-_]"),
        ("SKLC", r"^SKLC[-_]"),
        ("SKFF", r"^SKFF[-_]"),
        ("OMOS", r"^OMOS[-_]"),
        ("SASED", r"^SASED[-_]"),
        ("TL", r"^TL[-_]"),
    )
)
# The families the issue requires to pass (every 1.x file, minus skipped.toml).
TARGET_FAMILIES: frozenset[str] = frozenset(
    {
        "TC_31x",
        "TC_41",
        "TC_121",
        "TC_122",
        "TC_161",
        "TC_171",
        "TC_71",
        "TC_72",
        "SKLC",
        "SKFF",
        "OMOS",
        "SASED",
        "TL",
    }
)


# ---------------------------------------------------------------------------
# The corpus


def _natural(text: str) -> list[Any]:
    return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", text)]


def corpus_files(root: Path = CONFORMANCE) -> list[str]:
    """Every 1.x test-case file, as a path relative to ``root``, in a stable order."""
    files = [
        str(p.relative_to(root)) for folder in CORPUS_1X for p in (root / folder).rglob("*.xml")
    ]
    return sorted(files, key=_natural)


def family_of(rel: str) -> str:
    name = Path(rel).name
    for family, pattern in _FAMILIES:
        if pattern.search(name):
            return family
    return re.split(r"[-_]", name, maxsplit=1)[0].upper()


def group_of(rel: str) -> str:
    """Files of one group run on one server: one family of one folder (so each TL
    series gets its own empty server)."""
    # Per folder too: the -10/-11/-12 copies of a case in different folders reuse
    # object names, and Locate by Name must not see another copy's leftovers.
    return f"{family_of(rel)} {Path(rel).parent}"


def is_target(rel: str) -> bool:
    return family_of(rel) in TARGET_FAMILIES


def load_skipped(path: Path = SKIPPED_FILE) -> dict[str, str]:
    """``skipped.toml``: file (relative to the conformance folder) -> reason."""
    with open(path, "rb") as f:
        data = tomllib.load(f)
    return {str(k): str(v) for k, v in data.get("skipped", {}).items()}


def operations_used(rel: str, root: Path = CONFORMANCE) -> set[Operation]:
    ops: set[Operation] = set()
    for request, _ in load_case(root / rel):
        for item in _children(request, Tag.BatchItem):
            op = _value(item, Tag.Operation)
            if op is not None:
                ops.add(Operation(op))
    return ops


# ---------------------------------------------------------------------------
# Tree helpers (the xmlcase trees may hold Placeholders, so no native helpers here)


def _children(node: Node | None, tag: int) -> list[Node]:
    if node is None or not isinstance(node[2], list):
        return []
    return [c for c in node[2] if c[0] == tag]


def _child(node: Node | None, tag: int) -> Node | None:
    found = _children(node, tag)
    return found[0] if found else None


def _value(node: Node | None, tag: int) -> Any:
    child = _child(node, tag)
    return None if child is None else child[2]


def _without(node: Node, tag: int) -> Node:
    assert isinstance(node[2], list)
    return (node[0], node[1], [c for c in node[2] if c[0] != tag])


def _replace_items(message: Node, items: list[Node]) -> Node:
    assert isinstance(message[2], list)
    others = [c for c in message[2] if c[0] != Tag.BatchItem]
    return (message[0], message[1], [*others, *items])


def placeholders_in(node: Node) -> list[Placeholder]:
    value = node[2]
    if isinstance(value, Placeholder):
        return [value]
    if isinstance(value, list):
        return [p for child in value for p in placeholders_in(child)]
    return []


def bind_uids(node: Node, uids: list[str]) -> Node:
    """Bind only ``$UNIQUE_IDENTIFIER_N``: in a response ``$NOW`` stays a wildcard."""
    tag, item_type, value = node
    if isinstance(value, list):
        return (tag, item_type, [bind_uids(c, uids) for c in value])
    if isinstance(value, Placeholder):
        index = value.uid_index
        if index is not None and index < len(uids):
            return (tag, item_type, uids[index])
    return node


def _versions(payload: Node | None) -> list[tuple[int, int]]:
    return [
        (_value(v, Tag.ProtocolVersionMajor), _value(v, Tag.ProtocolVersionMinor))
        for v in _children(payload, Tag.ProtocolVersion)
    ]


# ---------------------------------------------------------------------------
# Policies


@dataclass
class ServerState:
    """What the runner knows about one server across files: identifiers of keys it made."""

    generated: set[str] = field(default_factory=set)


def _query_policy(request_item: Node, expected: Node, actual: Node) -> tuple[Node, Node, list[str]]:
    diffs: list[str] = []
    if _value(actual, Tag.ResultStatus) == ResultStatus.Success:
        request_payload = _child(request_item, Tag.RequestPayload)
        asked = {c[2] for c in _children(request_payload, Tag.QueryFunction)}
        payload = _child(actual, Tag.ResponsePayload)
        if QueryFunction.QueryOperations in asked:
            listed = {c[2] for c in _children(payload, Tag.Operation)}
            missing = sorted(op.name for op in CLAIMED_OPERATIONS if op not in listed)
            if missing:
                diffs.append(f"Query Operations does not list {', '.join(missing)}")
        if QueryFunction.QueryObjects in asked:
            listed = {c[2] for c in _children(payload, Tag.ObjectType)}
            missing = sorted(t.name for t in CLAIMED_OBJECT_TYPES if t not in listed)
            if missing:
                diffs.append(f"Query Objects does not list {', '.join(missing)}")
    return _without(expected, Tag.ResponsePayload), _without(actual, Tag.ResponsePayload), diffs


def _discover_policy(
    request_item: Node, expected: Node, actual: Node
) -> tuple[Node, Node, list[str]]:
    if _children(_child(request_item, Tag.RequestPayload), Tag.ProtocolVersion):
        return expected, actual, []  # a client list: the answer is exact
    if _value(actual, Tag.ResultStatus) != ResultStatus.Success:
        return expected, actual, []
    want = _versions(_child(expected, Tag.ResponsePayload))
    got = _versions(_child(actual, Tag.ResponsePayload))
    diffs = []
    missing = [v for v in want if v not in got]
    if missing:
        diffs.append(f"DiscoverVersions: versions {missing} not listed (got {got})")
    if got != sorted(got, reverse=True):
        diffs.append(f"DiscoverVersions: list not in descending order: {got}")
    return _without(expected, Tag.ResponsePayload), _without(actual, Tag.ResponsePayload), diffs


def _generated_key_policy(expected: Node, actual: Node, state: ServerState) -> Node:
    """Turn the expected Key Material of a server-generated key into a length-checked wildcard."""
    uid = _value(_child(actual, Tag.ResponsePayload), Tag.UniqueIdentifier)
    if uid not in state.generated:
        return expected
    actual_lengths = [len(v) for v in _key_materials(actual)]

    def walk(node: Node) -> Node:
        tag, item_type, value = node
        if isinstance(value, list):
            return (tag, item_type, [walk(c) for c in value])
        if tag == Tag.KeyMaterial and isinstance(value, bytes) and len(value) in actual_lengths:
            return (tag, item_type, Placeholder("GENERATED_KEY_MATERIAL"))
        return node

    return walk(expected)


def _key_materials(node: Node) -> Iterator[bytes]:
    tag, _type, value = node
    if isinstance(value, list):
        for c in value:
            yield from _key_materials(c)
    elif tag == Tag.KeyMaterial and isinstance(value, bytes):
        yield value


def _attribute_list_policy(
    request_item: Node, expected: Node, actual: Node
) -> tuple[Node, Node, list[str]]:
    """Get Attribute List: the names are a set; report what is missing and what is extra."""
    e_payload = _child(expected, Tag.ResponsePayload)
    a_payload = _child(actual, Tag.ResponsePayload)
    if e_payload is None or a_payload is None:
        return expected, actual, []
    want = {str(n[2]) for n in _children(e_payload, Tag.AttributeName)}
    got = {str(n[2]) for n in _children(a_payload, Tag.AttributeName)}
    diffs = []
    if want - got:
        diffs.append(f"Get Attribute List lacks {sorted(want - got)}")
    if got - want:
        diffs.append(f"Get Attribute List has extra {sorted(got - want)}")

    def strip(item: Node, payload: Node) -> Node:
        assert isinstance(item[2], list)
        trimmed = _without(payload, Tag.AttributeName)
        return (item[0], item[1], [trimmed if c is payload else c for c in item[2]])

    return strip(expected, e_payload), strip(actual, a_payload), diffs


def _drop_optional_located_items(expected: Node, actual: Node) -> Node:
    payload = _child(actual, Tag.ResponsePayload)
    if payload is None or _child(payload, Tag.LocatedItems) is None:
        return actual
    if _child(_child(expected, Tag.ResponsePayload), Tag.LocatedItems) is not None:
        return actual
    assert isinstance(actual[2], list)
    trimmed = _without(payload, Tag.LocatedItems)
    return (actual[0], actual[1], [trimmed if c is payload else c for c in actual[2]])


def _with_request_version(expected: Node, version: Node | None) -> Node:
    header = _child(expected, Tag.ResponseHeader)
    if header is None or version is None or _child(header, Tag.ProtocolVersion) is None:
        return expected
    assert isinstance(header[2], list) and isinstance(expected[2], list)
    new_header = (
        header[0],
        header[1],
        [version if c[0] == Tag.ProtocolVersion else c for c in header[2]],
    )
    return (expected[0], expected[1], [new_header if c is header else c for c in expected[2]])


# Attributes whose presence or value is the reference server's own policy, not the
# protocol's: Lease Time (a lease policy this server does not have: absent is
# conforming) and Random Number Generator (optional in 1.3/1.4; each server describes
# its own RNG, so present or absent and any value).
_POLICY_OPTIONAL = frozenset({"Lease Time"})
_POLICY_ANY_VALUE = frozenset({"Random Number Generator"})
_POLICY_MAY_ADD = frozenset({"Random Number Generator"})


def _attribute_name(node: Node) -> str | None:
    name = _value(node, Tag.AttributeName)
    return str(name) if name is not None else None


def _server_policy_attributes(expected: Node, actual: Node) -> tuple[Node, Node]:
    e_payload = _child(expected, Tag.ResponsePayload)
    a_payload = _child(actual, Tag.ResponsePayload)
    if e_payload is None or a_payload is None:
        return expected, actual
    got = {_attribute_name(a): a for a in _children(a_payload, Tag.Attribute)}
    kept = []
    for child in e_payload[2]:
        name = _attribute_name(child) if child[0] == Tag.Attribute else None
        if name in _POLICY_OPTIONAL and name not in got:
            continue
        if name in _POLICY_ANY_VALUE and name in got:
            child = got[name]
        kept.append(child)
    names = {str(n[2]) for n in _children(a_payload, Tag.AttributeName)}
    kept = [
        c
        for c in kept
        if not (c[0] == Tag.AttributeName and c[2] in _POLICY_OPTIONAL and c[2] not in names)
    ]
    new_payload = (e_payload[0], e_payload[1], kept)
    want = {_attribute_name(c) for c in kept if c[0] == Tag.Attribute}
    want |= {str(c[2]) for c in kept if c[0] == Tag.AttributeName}
    a_kept = [
        c
        for c in a_payload[2]
        if not (c[0] == Tag.Attribute and _attribute_name(c) in _POLICY_MAY_ADD - want)
        and not (c[0] == Tag.AttributeName and c[2] in _POLICY_MAY_ADD - want)
    ]
    new_actual = (a_payload[0], a_payload[1], a_kept)
    assert isinstance(expected[2], list) and isinstance(actual[2], list)
    return (
        expected[0],
        expected[1],
        [new_payload if c is e_payload else c for c in expected[2]],
    ), (actual[0], actual[1], [new_actual if c is a_payload else c for c in actual[2]])


_ITEM_POLICIES: dict[int, Callable[[Node, Node, Node], tuple[Node, Node, list[str]]]] = {
    Operation.Query: _query_policy,
    Operation.DiscoverVersions: _discover_policy,
    Operation.GetAttributeList: _attribute_list_policy,
}


def check_response(request: Node, expected: Node, actual: Node, state: ServerState) -> list[str]:
    """Differences between ``expected`` (uids bound) and ``actual``, after the policies."""
    if actual[0] != Tag.ResponseMessage:
        return compare(expected, actual)
    request_version = _child(_child(request, Tag.RequestHeader), Tag.ProtocolVersion)
    expected = _with_request_version(expected, request_version)
    minor = _value(request_version, Tag.ProtocolVersionMinor)
    major = _value(request_version, Tag.ProtocolVersionMajor)
    located_items_defined = (major, minor) >= (1, 3)
    req_items = _children(request, Tag.BatchItem)
    exp_items = _children(expected, Tag.BatchItem)
    act_items = _children(actual, Tag.BatchItem)
    diffs: list[str] = []
    new_exp, new_act = [], []
    for i, (e, a) in enumerate(zip(exp_items, act_items, strict=False)):
        r = req_items[i] if i < len(req_items) else (Tag.BatchItem, ItemType.Structure, [])
        op = _value(e, Tag.Operation) or _value(r, Tag.Operation)
        e, a = _server_policy_attributes(e, a)
        policy = _ITEM_POLICIES.get(op)
        if policy is not None:
            e, a, extra = policy(r, e, a)
            diffs.extend(f"/BatchItem[{i}]: {d}" for d in extra)
        e = _generated_key_policy(e, a, state)
        if op == Operation.Locate and located_items_defined:
            a = _drop_optional_located_items(e, a)
        new_exp.append(e)
        new_act.append(a)
    new_exp.extend(exp_items[len(new_exp) :])
    new_act.extend(act_items[len(new_act) :])
    return diffs + compare(_replace_items(expected, new_exp), _replace_items(actual, new_act))


def note_generated(actual: Node, state: ServerState) -> None:
    for item in _children(actual, Tag.BatchItem):
        if (
            _value(item, Tag.Operation) in _GENERATING
            and _value(item, Tag.ResultStatus) == ResultStatus.Success
        ):
            payload = _child(item, Tag.ResponsePayload)
            for tag in (
                Tag.UniqueIdentifier,
                Tag.PrivateKeyUniqueIdentifier,
                Tag.PublicKeyUniqueIdentifier,
            ):
                uid = _value(payload, tag)
                if isinstance(uid, str):
                    state.generated.add(uid)


# ---------------------------------------------------------------------------
# Running


@dataclass
class FileResult:
    path: str
    passed: bool
    messages: int
    sent: int
    first_difference: str = ""
    differences: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if self.passed:
            return f"{self.path}: pass ({self.messages} messages)"
        more = f" (+{len(self.differences) - 1} more)" if len(self.differences) > 1 else ""
        return f"{self.path}: FAIL at message {self.sent}: {self.first_difference}{more}"


def run_file(
    connect: Callable[[], Conn], rel: str, state: ServerState, root: Path = CONFORMANCE
) -> FileResult:
    pairs = load_case(root / rel)
    uids: list[str] = []
    conn = connect()
    try:
        for index, (request, expected) in enumerate(pairs):
            bound = bind(request, uids, int(time.time()))
            open_values = placeholders_in(bound)
            if open_values:
                names = ", ".join(sorted({str(p) for p in open_values}))
                return FileResult(
                    rel,
                    False,
                    len(pairs),
                    index,
                    f"request needs {names}: never returned by the server, or not reproducible",
                )
            try:
                raw = conn.roundtrip(_native.encode(bound))
            except (ConnectionClosed, OSError) as exc:
                return FileResult(rel, False, len(pairs), index, f"no response: {exc}")
            except TtlvEncodeError as exc:
                return FileResult(rel, False, len(pairs), index, f"request does not encode: {exc}")
            try:
                actual = _native.decode(raw)
            except TtlvDecodeError as exc:
                return FileResult(rel, False, len(pairs), index, f"response does not decode: {exc}")
            capture_uids(expected, actual, uids)
            note_generated(actual, state)  # before comparing: a batch may Create then Get
            diffs = check_response(bound, bind_uids(expected, uids), actual, state)
            if diffs:
                first = diffs[0] + _server_said(actual)
                return FileResult(rel, False, len(pairs), index, first, diffs)
    finally:
        conn.close()
    return FileResult(rel, True, len(pairs), len(pairs))


def _server_said(actual: Node) -> str:
    """The Result Reason and Message of the server's failed batch items, for the report."""
    notes = []
    for item in _children(actual, Tag.BatchItem):
        if _value(item, Tag.ResultStatus) not in (None, ResultStatus.Success):
            reason = _value(item, Tag.ResultReason)
            try:
                reason_name = ResultReason(reason).name
            except ValueError:
                reason_name = str(reason)
            notes.append(f"{reason_name}: {_value(item, Tag.ResultMessage)!r}")
    return f" [server: {'; '.join(notes)}]" if notes else ""


def run_groups(
    files: list[str],
    start: Callable[[str], Any],
    on_result: Callable[[FileResult], None] = lambda r: None,
) -> list[FileResult]:
    """Run ``files`` with one server per group; ``start(group)`` returns a harness server
    (it must have ``connect()`` and ``stop()``)."""
    results: list[FileResult] = []
    by_group: dict[str, list[str]] = {}
    for rel in files:
        by_group.setdefault(group_of(rel), []).append(rel)
    for group, members in by_group.items():
        server = start(group)
        state = ServerState()
        try:
            for rel in members:
                try:
                    result = run_file(server.connect, rel, state)
                except Exception as exc:  # a harness-level error is this file's failure
                    result = FileResult(rel, False, 0, 0, f"runner error: {exc!r}")
                results.append(result)
                on_result(result)
        finally:
            server.stop()
    return results


def write_table(
    results: list[FileResult], skipped: dict[str, str], out: Path, note: str = ""
) -> str:
    passed = sum(r.passed for r in results)
    targets = [r for r in results if is_target(r.path) and r.path not in skipped]
    target_pass = sum(r.passed for r in targets)
    summary = (
        f"{len(results)} files: {passed} pass, {len(results) - passed} fail. "
        f"Target families: {target_pass}/{len(targets)} pass "
        f"({sum(1 for r in results if is_target(r.path) and r.path in skipped)} skipped)."
    )
    lines = [
        "# OASIS KMIP 1.x test cases against kmipfast",
        "",
        f"Generated by `python -m tests.conformance.oasis_runner` on "
        f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}; "
        "the comparison policies are in `tests/conformance/oasis_runner.py`.",
        "",
        f"**{summary}**",
        "",
        *([note, ""] if note else []),
        "| file | family | target | result | first difference | skipped in pytest because |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        result = "pass" if r.passed else f"FAIL (msg {r.sent}/{r.messages})"
        diff = r.first_difference.replace("|", "\\|").replace("\n", " ")
        skip = skipped.get(r.path, "").replace("|", "\\|")
        lines.append(
            f"| {r.path} | {family_of(r.path)} | {'yes' if is_target(r.path) else ''} "
            f"| {result} | {diff} | {skip} |"
        )
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return summary


def main(argv: list[str] | None = None) -> int:
    from tests.server.harness import server_available, start_server

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("oasis-1x-results.md"))
    parser.add_argument("--only", default="", help="regular expression on the file path")
    parser.add_argument("--note", default="", help="a line to add under the summary")
    args = parser.parse_args(argv)
    if not server_available():
        print("kmipfast.cli does not exist yet: no server to run against", file=sys.stderr)
        return 2
    files = [f for f in corpus_files() if re.search(args.only, f)]
    skipped = load_skipped()
    with tempfile.TemporaryDirectory(prefix="kmipfast-oasis-") as tmp:
        counter = iter(range(1_000_000))

        def start(group: str) -> Any:
            return start_server(Path(tmp) / f"g{next(counter)}")

        results = run_groups(files, start, lambda r: print(r.summary(), flush=True))
    summary = write_table(results, skipped, args.out, args.note)
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
