"""Replay what real VMware clients sent, against a live server.

``captures/vcenter-7.0.3-session.json`` — a whole vCenter 7.0.3 session log (58
connections) — is replayed exactly as its ``how_to_replay`` says: one new mTLS
connection per session, in order; a session without exchanges is a connection opened
and closed without a message; every Unique Identifier a captured Create response
returned is mapped to the one our server returns and substituted (it is a Text String
in the requests) before the request is re-encoded. ``captures/vmware.json`` (Cosmian's
``vmware.rs``) is replayed the same way, in the order vCenter sends those requests.

The captured ``pykmip_response`` of a PyKMIP 0.10 server is kept only for reference:
it fails every AddAttribute batch, which a correct server answers with success.
Request and response bytes are data from the capture files, never copied into this
file (STYLE, Tests). Key material is checked by length only and never printed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from kmipfast import _native
from kmipfast.protocol.enums import (
    CryptographicAlgorithm,
    KeyFormatType,
    ObjectType,
    Operation,
    ResultStatus,
    State,
)
from kmipfast.protocol.tags import ItemType, Tag
from kmipfast.protocol.ttlv import Item, find, find_all, text, value
from tests.conformance.oasis_runner import CONFORMANCE
from tests.server.harness import KmipServer
from tests.server.kmipclient import (
    Conn,
    attributes_of,
    batch_results,
    request_message,
    response_version,
)

pytestmark = pytest.mark.server

CAPTURES = CONFORMANCE / "captures"
VCENTER = CAPTURES / "vcenter-7.0.3-session.json"
VMWARE = CAPTURES / "vmware.json"
# vmware.json is a dict of named messages; this is the order vCenter sends them in.
VMWARE_ORDER = (
    "discover_versions_1",
    "discover_versions_2",
    "query",
    "create",
    "get_attributes",
    "add_attribute",
    "get",
)
CAPTURE_VERSION = (1, 1)


@dataclass
class Exchange:
    label: str
    request: Item  # as sent (identifiers substituted)
    response: Item | None = None
    error: str = ""

    @property
    def operations(self) -> list[int]:
        return [value(item, Tag.Operation) for item in find_all(self.request, Tag.BatchItem)]

    def payloads(self) -> list[Item | None]:
        return [find(item, Tag.RequestPayload) for item in find_all(self.request, Tag.BatchItem)]


@dataclass
class Replay:
    """Sends captured requests, mapping captured identifiers to ours."""

    server: KmipServer
    uid_map: dict[str, str] = field(default_factory=dict)
    exchanges: list[Exchange] = field(default_factory=list)
    connections: int = 0

    def substitute(self, tree: Item, label: str) -> Item:
        tag, typ, val = tree
        if typ == ItemType.Structure:
            return (tag, typ, [self.substitute(c, label) for c in val])
        if tag == Tag.UniqueIdentifier and typ == ItemType.TextString:
            if val not in self.uid_map:
                raise AssertionError(
                    f"{label}: request names identifier {val!r} no Create returned"
                )
            return (tag, typ, self.uid_map[val])
        return tree

    def send(self, conn: Conn, label: str, request_hex: str, captured_hex: str | None) -> Exchange:
        captured_request = bytes.fromhex(request_hex)
        tree = _native.decode(captured_request)
        # The codec is canonical: what a real client sent re-encodes byte for byte.
        assert _native.encode(tree) == captured_request, f"{label}: codec round trip differs"
        exchange = Exchange(label, self.substitute(tree, label))
        self.exchanges.append(exchange)
        try:
            exchange.response = _native.decode(conn.roundtrip(_native.encode(exchange.request)))
        except Exception as exc:
            exchange.error = f"{type(exc).__name__}: {exc}"
            return exchange
        if captured_hex:
            self._map_created(captured_hex, exchange)
        return exchange

    def _map_created(self, captured_hex: str, exchange: Exchange) -> None:
        assert exchange.response is not None
        captured = batch_results(_native.decode(bytes.fromhex(captured_hex)))
        ours = batch_results(exchange.response)
        for theirs, mine in zip(captured, ours, strict=False):
            if theirs.operation == Operation.Create and theirs.success and mine.success:
                their_uid = value(theirs.payload, Tag.UniqueIdentifier)
                self.uid_map[their_uid] = value(mine.payload, Tag.UniqueIdentifier)

    def connect(self) -> Conn:
        self.connections += 1
        return self.server.connect()


def _get_attribute(conn: Conn, uid: str, name: str) -> Item:
    """A KMIP 1.1 GetAttributes of one attribute, as vCenter asks it; returns the response."""
    message = request_message(
        [
            (
                Operation.GetAttributes,
                [text(Tag.UniqueIdentifier, uid), text(Tag.AttributeName, name)],
            )
        ],
        version=CAPTURE_VERSION,
    )
    return conn.request(message)


def _single(response: Item) -> Any:
    results = batch_results(response)
    assert len(results) == 1, f"expected one batch item, got {len(results)}"
    results[0].expect_success()
    return results[0].payload


@dataclass
class VcenterRun:
    replay: Replay
    sessions: int
    messages: int
    # After the replay: our uid -> {attribute name: values} for every added attribute and State.
    readback: dict[str, dict[str, list[Any]]]
    added: dict[str, dict[str, str]]


@pytest.fixture(scope="module")
def vcenter(kmip_server: KmipServer) -> VcenterRun:
    capture = json.loads(VCENTER.read_text())
    replay = Replay(kmip_server)
    for session in capture["sessions"]:
        with replay.connect() as conn:
            for index, exchange in enumerate(session["exchanges"]):
                label = f"vcenter-7.0.3 session {session['session']} exchange {index}"
                replay.send(conn, label, exchange["request"], exchange.get("pykmip_response"))
    # What the AddAttribute batches added, per key (as our uids).
    added: dict[str, dict[str, str]] = {}
    for ex in replay.exchanges:
        for op, payload in zip(ex.operations, ex.payloads(), strict=True):
            if op == Operation.AddAttribute:
                uid = value(payload, Tag.UniqueIdentifier)
                attr = find(payload, Tag.Attribute)
                added.setdefault(uid, {})[value(attr, Tag.AttributeName)] = value(
                    attr, Tag.AttributeValue
                )
    readback: dict[str, dict[str, list[Any]]] = {}
    with kmip_server.connect() as conn:
        for uid in replay.uid_map.values():
            got: dict[str, list[Any]] = {}
            for name in [*added.get(uid, {}), "State"]:
                payload = _single(_get_attribute(conn, uid, name))
                got.update(attributes_of(payload))
            readback[uid] = got
    messages = sum(len(s["exchanges"]) for s in capture["sessions"])
    return VcenterRun(replay, len(capture["sessions"]), messages, readback, added)


def _by_operation(run: VcenterRun, operation: Operation) -> Iterator[tuple[Exchange, int]]:
    for ex in run.replay.exchanges:
        for i, op in enumerate(ex.operations):
            if op == operation:
                yield ex, i


def test_vcenter_703_replays_all_58_sessions(vcenter: VcenterRun) -> None:
    """Every connection of the capture is made and every request gets a response that decodes."""
    assert vcenter.replay.connections == vcenter.sessions == 58
    errors = [f"{ex.label}: {ex.error}" for ex in vcenter.replay.exchanges if ex.error]
    assert not errors, "\n".join(errors)
    assert len(vcenter.replay.exchanges) == vcenter.messages
    assert len(vcenter.replay.uid_map) == 2, "the capture creates two keys"


def test_vcenter_703_every_batch_item_succeeds(vcenter: VcenterRun) -> None:
    """Including the AddAttribute batches the capture's PyKMIP server failed."""
    failures = []
    for ex in vcenter.replay.exchanges:
        if ex.response is None:
            failures.append(f"{ex.label}: no response ({ex.error})")
            continue
        results = batch_results(ex.response)
        if len(results) != len(ex.operations):
            failures.append(f"{ex.label}: {len(ex.operations)} items sent, {len(results)} answered")
        for i, (op, result) in enumerate(zip(ex.operations, results, strict=False)):
            if result.operation != op:
                failures.append(f"{ex.label} item {i}: operation {result.operation} != {op}")
            if not result.success:
                failures.append(f"{ex.label} item {i} {Operation(op).name}: {result.describe()}")
    assert not failures, "\n".join(failures)


def test_vcenter_703_response_header_is_kmip_1_1(vcenter: VcenterRun) -> None:
    """The server answers in the request's protocol version, with the right Batch Count."""
    wrong = []
    for ex in vcenter.replay.exchanges:
        if ex.response is None:
            continue
        if response_version(ex.response) != CAPTURE_VERSION:
            wrong.append(f"{ex.label}: version {response_version(ex.response)}")
        header = find(ex.response, Tag.ResponseHeader)
        if value(header, Tag.BatchCount) != len(ex.operations):
            wrong.append(f"{ex.label}: Batch Count {value(header, Tag.BatchCount)}")
        if value(header, Tag.TimeStamp) is None:
            wrong.append(f"{ex.label}: no Time Stamp")
    assert not wrong, "\n".join(wrong)


def test_vcenter_703_discover_versions_lists_1_1(vcenter: VcenterRun) -> None:
    for ex, i in _by_operation(vcenter, Operation.DiscoverVersions):
        payload = batch_results(ex.response)[i].payload if ex.response else None
        versions = [
            (value(v, Tag.ProtocolVersionMajor), value(v, Tag.ProtocolVersionMinor))
            for v in find_all(payload, Tag.ProtocolVersion)
        ]
        assert (1, 1) in versions, f"{ex.label}: {versions}"
        assert versions == sorted(versions, reverse=True), f"{ex.label}: {versions}"


def test_vcenter_703_create_returns_a_uid(vcenter: VcenterRun) -> None:
    creates = list(_by_operation(vcenter, Operation.Create))
    assert len(creates) == 2
    uids = []
    for ex, i in creates:
        assert ex.response is not None, ex.label
        payload = batch_results(ex.response)[i].payload
        assert value(payload, Tag.ObjectType) == ObjectType.SymmetricKey, ex.label
        uid = value(payload, Tag.UniqueIdentifier)
        assert isinstance(uid, str) and uid, ex.label
        uids.append(uid)
    assert len(set(uids)) == 2


def test_vcenter_703_missing_x_attribute_is_success_without_attribute(vcenter: VcenterRun) -> None:
    """GetAttributes of an x- attribute not (yet) set: Success, the uid, and no Attribute."""
    seen = 0
    for ex, i in _by_operation(vcenter, Operation.GetAttributes):
        name = value(ex.payloads()[i], Tag.AttributeName)
        if not name.startswith("x-"):
            continue
        seen += 1
        assert ex.response is not None, ex.label
        result = batch_results(ex.response)[i]
        result.expect_success()
        assert value(result.payload, Tag.UniqueIdentifier) == value(
            ex.payloads()[i], Tag.UniqueIdentifier
        ), ex.label
        assert find(result.payload, Tag.Attribute) is None, f"{ex.label}: {name} has a value"
    assert seen == 12


def test_vcenter_703_add_attribute_answers_with_the_attribute(vcenter: VcenterRun) -> None:
    """Add Attribute's response carries the uid and the attribute added (KMIP 1.1 §4.13)."""
    seen = 0
    for ex, i in _by_operation(vcenter, Operation.AddAttribute):
        seen += 1
        assert ex.response is not None, ex.label
        result = batch_results(ex.response)[i]
        result.expect_success()
        sent = find(ex.payloads()[i], Tag.Attribute)
        assert value(result.payload, Tag.UniqueIdentifier) == value(
            ex.payloads()[i], Tag.UniqueIdentifier
        )
        got = find(result.payload, Tag.Attribute)
        assert got is not None, f"{ex.label} item {i}: no Attribute in the response"
        assert value(got, Tag.AttributeName) == value(sent, Tag.AttributeName)
        assert value(got, Tag.AttributeValue) == value(sent, Tag.AttributeValue)
    assert seen == 12


def test_vcenter_703_added_attributes_read_back(vcenter: VcenterRun) -> None:
    """After the AddAttribute batches, GetAttributes returns each value vCenter added."""
    assert len(vcenter.added) == 2
    for uid, attrs in vcenter.added.items():
        assert len(attrs) == 6, attrs.keys()
        for name, added in attrs.items():
            assert vcenter.readback[uid].get(name) == [added], f"{uid} {name}"


def test_vcenter_703_get_returns_aes_256_while_pre_active(vcenter: VcenterRun) -> None:
    gets = list(_by_operation(vcenter, Operation.Get))
    assert len(gets) == 2
    for ex, i in gets:
        assert ex.response is not None, ex.label
        result = batch_results(ex.response)[i]
        result.expect_success()
        assert value(result.payload, Tag.ObjectType) == ObjectType.SymmetricKey
        block = find(find(result.payload, Tag.SymmetricKey), Tag.KeyBlock)
        assert value(block, Tag.KeyFormatType) == KeyFormatType.Raw
        assert value(block, Tag.CryptographicAlgorithm) == CryptographicAlgorithm.AES
        assert value(block, Tag.CryptographicLength) == 256
        material = value(find(block, Tag.KeyValue), Tag.KeyMaterial)
        assert isinstance(material, bytes) and len(material) == 32, f"{ex.label}: not 32 bytes"


def test_vcenter_703_state_pre_active_then_active(vcenter: VcenterRun) -> None:
    """GetAttributes(State) before Activate (in the capture) is PreActive; after, Active."""
    before = []
    for ex, i in _by_operation(vcenter, Operation.GetAttributes):
        if value(ex.payloads()[i], Tag.AttributeName) == "State":
            assert ex.response is not None, ex.label
            result = batch_results(ex.response)[i]
            result.expect_success()
            before.append(attributes_of(result.payload).get("State"))
    assert before == [[State.PreActive], [State.PreActive]]
    for uid in vcenter.replay.uid_map.values():
        assert vcenter.readback[uid]["State"] == [State.Active], uid


def test_vcenter_703_activate_succeeds_once_per_key(vcenter: VcenterRun) -> None:
    activated = [
        value(ex.payloads()[i], Tag.UniqueIdentifier)
        for ex, i in _by_operation(vcenter, Operation.Activate)
    ]
    assert sorted(activated) == sorted(vcenter.replay.uid_map.values())


# ---------------------------------------------------------------------------
# captures/vmware.json


def test_vmware_capture_replay(kmip_server: KmipServer) -> None:
    """Cosmian's vmware.rs capture: DiscoverVersions ×2, Query, Create, GetAttributes,
    an AddAttribute batch, Get — each on a new connection, all answered with success
    in KMIP 1.1. Its Get names a key (``2``) made outside the capture: like every
    identifier the capture uses, it gets a key of ours made with the capture's Create."""
    capture = json.loads(VMWARE.read_text())
    requests = {k for k in capture if not k.endswith("_response")}
    assert requests == set(VMWARE_ORDER), "vmware.json gained or lost a request"
    replay = Replay(kmip_server)
    create_hex = capture["create"]
    for name in VMWARE_ORDER:
        tree = _native.decode(bytes.fromhex(capture[name]))
        for uid in _uids_in(tree):
            if uid not in replay.uid_map:
                with replay.connect() as conn:
                    made = replay.send(conn, f"vmware.json create for {uid!r}", create_hex, None)
                    replay.uid_map[uid] = value(_single(made.response), Tag.UniqueIdentifier)
        with replay.connect() as conn:
            ex = replay.send(
                conn, f"vmware.json {name}", capture[name], capture.get(f"{name}_response")
            )
        assert ex.response is not None, f"{ex.label}: {ex.error}"
        assert response_version(ex.response) == CAPTURE_VERSION, ex.label
        results = batch_results(ex.response)
        assert len(results) == len(ex.operations), ex.label
        for result in results:
            assert result.status == ResultStatus.Success, f"{ex.label}: {result.describe()}"
        if name == "get":
            block = find(find(results[0].payload, Tag.SymmetricKey), Tag.KeyBlock)
            material = value(find(block, Tag.KeyValue), Tag.KeyMaterial)
            assert isinstance(material, bytes) and len(material) == 32
        if name == "get_attributes":
            assert find(results[0].payload, Tag.Attribute) is None
    # The batch's three x- attributes read back.
    key = replay.uid_map["1"]
    with kmip_server.connect() as conn:
        for ex in replay.exchanges:
            if ex.label.endswith("add_attribute"):
                for payload in ex.payloads():
                    attr = find(payload, Tag.Attribute)
                    got = attributes_of(
                        _single(_get_attribute(conn, key, value(attr, Tag.AttributeName)))
                    )
                    assert got == {
                        value(attr, Tag.AttributeName): [value(attr, Tag.AttributeValue)]
                    }


def _uids_in(tree: Item) -> list[str]:
    tag, typ, val = tree
    if typ == ItemType.Structure:
        return [u for c in val for u in _uids_in(c)]
    return [val] if tag == Tag.UniqueIdentifier and typ == ItemType.TextString else []
