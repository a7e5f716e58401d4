//! The TTLV codec (KMIP 1.4 §9.1) and AES key wrap (RFC 3394, RFC 5649) against published
//! material read as data: the §9.1.2 encoding examples and real client captures from
//! `../shared/conformance`, the RFC vectors from `tests/vectors`.  Then proptest round trips,
//! and the malformed-input matrix: every rule the decoder enforces, each asserting the error
//! kind, the offset and the tag it reports.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kmipfast_native::ttlv::{
    self, big_integer_bytes, big_integer_is_minimal, decode_tree, encode_tree, frame_length,
    item_type::*, ErrorKind, Item, Limits, TtlvError, Value,
};
use kmipfast_native::wrap::{Kek, WrapError};
use proptest::prelude::*;
use serde_json::Value as Json;

// ---- a per-thread record of the largest allocation ------------------------------------------
//
// "A declared length allocates nothing" is checked directly: this test binary's allocator
// remembers, per thread (tests run in parallel), the largest single request it has served.

struct Recording;

thread_local! {
    static LARGEST_ALLOC: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST_ALLOC.try_with(|c| c.set(c.get().max(size)));
}

unsafe impl GlobalAlloc for Recording {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Recording = Recording;

/// Runs `f` and returns its result with the largest allocation it made on this thread.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST_ALLOC.with(|c| c.set(0));
    let out = f();
    (out, LARGEST_ALLOC.with(Cell::get))
}

// ---- data files -------------------------------------------------------------------------

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("native/ sits in the repository")
        .to_path_buf()
}

fn conformance(name: &str) -> Json {
    read_json(&repo_root().join("../shared/conformance").join(name))
}

fn read_json(path: &Path) -> Json {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap_or_else(|e| panic!("bad hex {s:?}: {e}"))
}

fn str_field<'a>(v: &'a Json, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("missing string field {key:?} in {v}"))
}

/// Every message of the three captures, named `file:key`.
fn capture_messages() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for file in ["vmware.json", "mongodb.json"] {
        let doc = conformance(&format!("captures/{file}"));
        let map = doc
            .as_object()
            .expect("a capture file is an object of hex messages");
        for (key, hex) in map {
            let hex = hex.as_str().expect("hex string");
            out.push((format!("{file}:{key}"), unhex(hex)));
        }
    }
    let doc = conformance("captures/vcenter-7.0.3-session.json");
    let sessions = doc["sessions"].as_array().expect("sessions");
    for s in sessions {
        let id = str_field(s, "session");
        let exchanges = s["exchanges"].as_array().expect("exchanges");
        for (i, x) in exchanges.iter().enumerate() {
            out.push((
                format!("vcenter:{id}:{i}:request"),
                unhex(str_field(x, "request")),
            ));
            if let Some(r) = x["pykmip_response"].as_str() {
                out.push((format!("vcenter:{id}:{i}:response"), unhex(r)));
            }
        }
    }
    out
}

#[track_caller]
fn assert_error(e: TtlvError, kind: ErrorKind, offset: usize, tag: Option<u32>) {
    assert_eq!((e.kind, e.offset, e.tag), (kind, offset, tag), "got: {e}");
}

#[track_caller]
fn assert_decode_error(
    buf: &[u8],
    limits: &Limits,
    kind: ErrorKind,
    offset: usize,
    tag: Option<u32>,
) {
    match decode_tree(buf, limits) {
        Ok(item) => panic!("decoded {item:?}, expected {kind:?} at {offset}"),
        Err(e) => assert_error(e, kind, offset, tag),
    }
}

fn lim() -> Limits {
    Limits::default()
}

// ---- KMIP 1.4 §9.1.2: the specification's encoding examples -------------------------------

/// Every §9.1.2 example is encoded under tag 0x420020.
const SPEC_TAG: u32 = 0x42_0020;

/// Seconds since the Unix epoch of a UTC civil time (days-from-civil, proleptic Gregorian).
fn unix_time(y: i64, m: i64, d: i64, hh: i64, mm: i64, ss: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe - 719_468) * 86_400 + hh * 3600 + mm * 60 + ss
}

/// The value each §9.1.2 example describes, keyed by the example's type.
fn spec_value(ty: &str) -> Value {
    match ty {
        "Integer" => Value::Integer(8),
        "Long Integer" => Value::LongInteger(123_456_789_000_000_000),
        "Big Integer" => Value::BigInteger(
            1_234_567_890_000_000_000_000_000_000u128
                .to_be_bytes()
                .to_vec(),
        ),
        "Enumeration" => Value::Enumeration(255),
        "Boolean" => Value::Boolean(true),
        "Text String" => Value::TextString("Hello World".into()),
        "Byte String" => Value::ByteString(vec![0x01, 0x02, 0x03]),
        // Friday, March 14, 2008, 11:56:40 GMT
        "Date-Time" => Value::DateTime(unix_time(2008, 3, 14, 11, 56, 40)),
        "Interval" => Value::Interval(10 * 86_400),
        "Structure" => Value::Structure(vec![
            Item {
                tag: 0x42_0004,
                value: Value::Enumeration(254),
            },
            Item {
                tag: 0x42_0005,
                value: Value::Integer(255),
            },
        ]),
        other => panic!("no expected value for §9.1.2 example type {other:?}"),
    }
}

#[test]
fn kmip_9_1_2_spec_examples_decode_to_their_values_and_reencode() {
    let examples = conformance("ttlv-spec-examples.json");
    let examples = examples.as_array().expect("a list of examples");
    assert_eq!(examples.len(), 10);
    for ex in examples {
        let ty = str_field(ex, "type");
        let bytes = unhex(str_field(ex, "hex"));
        assert_eq!(Some(bytes.len() as u64), ex["total_len"].as_u64(), "{ty}");
        let want = Item {
            tag: SPEC_TAG,
            value: spec_value(ty),
        };
        let got = decode_tree(&bytes, &lim()).unwrap_or_else(|e| panic!("{ty}: {e}"));
        assert_eq!(got, want, "{ty}");
        assert_eq!(encode_tree(&want, &lim()).unwrap(), bytes, "{ty}");
    }
}

// ---- captured client traffic -----------------------------------------------------------

#[test]
fn captures_vmware_mongodb_vcenter_decode_and_reencode_byte_for_byte() {
    let messages = capture_messages();
    assert!(
        messages.len() > 100,
        "only {} capture messages found",
        messages.len()
    );
    for (name, bytes) in &messages {
        let item = decode_tree(bytes, &lim()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            matches!(item.value, Value::Structure(_)),
            "{name}: a message is a Structure"
        );
        assert_eq!(&encode_tree(&item, &lim()).unwrap(), bytes, "{name}");
        assert_eq!(
            frame_length(bytes, 1 << 20).unwrap(),
            Some(bytes.len()),
            "{name}"
        );
    }
}

/// KMIP 1.4 §9.1: a message cut anywhere is reported as truncated, at the outermost item
/// (whose declared length is what runs past the input), with its tag once 3 bytes are there.
#[test]
fn kmip_9_1_captures_truncated_at_every_offset_are_truncated() {
    for (name, bytes) in capture_messages() {
        let top = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]);
        for cut in 0..bytes.len() {
            let e = decode_tree(&bytes[..cut], &lim()).expect_err(&name);
            let tag = (cut >= 3).then_some(top);
            assert_eq!(
                (e.kind, e.offset, e.tag),
                (ErrorKind::Truncated, 0, tag),
                "{name} cut at {cut}: {e}"
            );
        }
    }
}

// ---- byte builders for the malformed matrix ---------------------------------------------

const REQUEST_MESSAGE: u32 = 0x42_0078;
const REQUEST_HEADER: u32 = 0x42_0077;
const BATCH_COUNT: u32 = 0x42_000D;
const NAME_VALUE: u32 = 0x42_0055;
const KEY_MATERIAL: u32 = 0x42_0043;

fn header(tag: u32, ty: u8, len: u32) -> Vec<u8> {
    let t = tag.to_be_bytes();
    let mut h = vec![t[1], t[2], t[3], ty];
    h.extend_from_slice(&len.to_be_bytes());
    h
}

/// A well-formed primitive item: header, value, zero padding.
fn prim(tag: u32, ty: u8, value: &[u8]) -> Vec<u8> {
    let mut b = header(tag, ty, value.len() as u32);
    b.extend_from_slice(value);
    b.resize(b.len() + ttlv::padding(value.len()), 0);
    b
}

/// A well-formed Structure around already-encoded children.
fn structure(tag: u32, children: &[&[u8]]) -> Vec<u8> {
    let body = children.concat();
    let mut b = header(tag, STRUCTURE, body.len() as u32);
    b.extend_from_slice(&body);
    b
}

/// Overwrites the length field of the item that starts at `at`.
fn set_length(mut b: Vec<u8>, at: usize, len: u32) -> Vec<u8> {
    b[at + 4..at + 8].copy_from_slice(&len.to_be_bytes());
    b
}

fn batch_count(n: i32) -> Vec<u8> {
    prim(BATCH_COUNT, INTEGER, &n.to_be_bytes())
}

// ---- KMIP 1.4 §9.1.1.3: fixed lengths per type -------------------------------------------

#[test]
fn kmip_9_1_1_3_wrong_fixed_length_for_each_type_is_bad_length() {
    let fixed = [
        (INTEGER, 4usize),
        (LONG_INTEGER, 8),
        (ENUMERATION, 4),
        (BOOLEAN, 8),
        (DATE_TIME, 8),
        (INTERVAL, 4),
        (DATE_TIME_EXTENDED, 8),
    ];
    for (ty, n) in fixed {
        for wrong in [0usize, 1, 2, 3, 5, 7, 9, 16] {
            if wrong == n {
                continue;
            }
            let bad = prim(BATCH_COUNT, ty, &vec![0u8; wrong]);
            assert_decode_error(&bad, &lim(), ErrorKind::BadLength, 0, Some(BATCH_COUNT));
            // The same item as the second child of a structure: the offset is the item's.
            let msg = structure(REQUEST_HEADER, &[&batch_count(1), &bad]);
            assert_decode_error(&msg, &lim(), ErrorKind::BadLength, 24, Some(BATCH_COUNT));
        }
    }
}

#[test]
fn kmip_9_1_1_4_structure_length_not_a_multiple_of_8_is_bad_length() {
    // The structure claims its child plus 4 bytes; the parent has room for 8 more.
    let inner = structure(REQUEST_HEADER, &[&batch_count(1), &[0u8; 8]]);
    let inner = set_length(inner, 0, 20);
    let msg = structure(REQUEST_MESSAGE, &[&inner]);
    assert_decode_error(&msg, &lim(), ErrorKind::BadLength, 8, Some(REQUEST_HEADER));
}

#[test]
fn kmip_9_1_1_4_big_integer_length_must_be_a_nonzero_multiple_of_8() {
    for len in [0usize, 1, 4, 9, 12] {
        let msg = prim(0x42_0020, BIG_INTEGER, &vec![0x01; len]);
        assert_decode_error(&msg, &lim(), ErrorKind::BadLength, 0, Some(0x42_0020));
    }
}

// ---- KMIP 1.4 §9.1.1.4: zero padding -------------------------------------------------------

#[test]
fn kmip_9_1_1_4_nonzero_padding_is_rejected_at_the_padding() {
    for pad in 0..4 {
        let mut msg = structure(REQUEST_HEADER, &[&batch_count(1), &batch_count(2)]);
        msg[8 + 16 + 12 + pad] = 0x01;
        assert_decode_error(
            &msg,
            &lim(),
            ErrorKind::NonZeroPadding,
            36,
            Some(BATCH_COUNT),
        );
    }
    for pad in 0..5 {
        let mut msg = prim(NAME_VALUE, TEXT_STRING, b"abc");
        msg[11 + pad] = 0x80;
        assert_decode_error(
            &msg,
            &lim(),
            ErrorKind::NonZeroPadding,
            11,
            Some(NAME_VALUE),
        );
    }
    let mut msg = prim(KEY_MATERIAL, BYTE_STRING, &[0xAA; 9]);
    msg[23] = 0xFF;
    assert_decode_error(
        &msg,
        &lim(),
        ErrorKind::NonZeroPadding,
        17,
        Some(KEY_MATERIAL),
    );
}

// ---- KMIP 1.4 §9.1.1.4: structure lengths ------------------------------------------------

#[test]
fn kmip_9_1_1_4_child_longer_than_parent_is_child_overruns_parent() {
    // Request Header says 8 bytes but holds a 16-byte Batch Count; the message goes on.
    let inner = set_length(structure(REQUEST_HEADER, &[&batch_count(1)]), 0, 8);
    let msg = structure(REQUEST_MESSAGE, &[&inner, &batch_count(2)]);
    assert_decode_error(
        &msg,
        &lim(),
        ErrorKind::ChildOverrunsParent,
        16,
        Some(BATCH_COUNT),
    );

    // A Text String whose padded value runs past its parent's end.
    let text = prim(NAME_VALUE, TEXT_STRING, b"twelve bytes");
    let inner = set_length(structure(REQUEST_HEADER, &[&text]), 0, 16);
    let msg = structure(REQUEST_MESSAGE, &[&inner, &batch_count(2)]);
    assert_decode_error(
        &msg,
        &lim(),
        ErrorKind::ChildOverrunsParent,
        16,
        Some(NAME_VALUE),
    );

    // A child structure that claims more than its parent holds, the input going on after it.
    let inner = set_length(structure(REQUEST_HEADER, &[&batch_count(1)]), 0, 24);
    let mut msg = structure(REQUEST_MESSAGE, &[&inner]);
    msg.extend_from_slice(&batch_count(2));
    assert_decode_error(
        &msg,
        &lim(),
        ErrorKind::ChildOverrunsParent,
        8,
        Some(REQUEST_HEADER),
    );
}

#[test]
fn kmip_9_1_1_4_parent_length_not_sum_of_children() {
    // Parent longer than its children: it swallows the next item's header, whose value then
    // lies beyond the parent's end.
    let inner = set_length(structure(REQUEST_HEADER, &[&batch_count(1)]), 0, 24);
    let msg = structure(REQUEST_MESSAGE, &[&inner, &batch_count(2)]);
    assert_decode_error(
        &msg,
        &lim(),
        ErrorKind::ChildOverrunsParent,
        32,
        Some(BATCH_COUNT),
    );

    // The outermost structure shorter than its children: what follows is trailing.
    let msg = structure(REQUEST_MESSAGE, &[&batch_count(1), &batch_count(2)]);
    let msg = set_length(msg, 0, 16);
    assert_decode_error(&msg, &lim(), ErrorKind::TrailingBytes, 24, None);

    // The outermost structure longer than the input holds: truncated.
    let msg = structure(REQUEST_MESSAGE, &[&batch_count(1)]);
    let msg = set_length(msg, 0, 24);
    assert_decode_error(&msg, &lim(), ErrorKind::Truncated, 0, Some(REQUEST_MESSAGE));
}

// ---- KMIP 1.4 §9.1.1.4: value rules ---------------------------------------------------------

#[test]
fn kmip_9_1_1_4_text_string_invalid_utf8_reports_first_bad_byte() {
    let cases: [(&[u8], usize); 5] = [
        (b"ab\xFFcd", 2),
        (b"\xE2\x82", 0),     // cut multi-byte sequence
        (b"ok\xC0\xAF", 2),   // overlong '/'
        (b"\xED\xA0\x80", 0), // UTF-16 surrogate
        (b"abcdefgh\x80", 8), // lone continuation byte, second block
    ];
    for (text, bad) in cases {
        let item = prim(NAME_VALUE, TEXT_STRING, text);
        let msg = structure(REQUEST_HEADER, &[&batch_count(1), &item]);
        assert_decode_error(
            &msg,
            &lim(),
            ErrorKind::InvalidUtf8,
            32 + bad,
            Some(NAME_VALUE),
        );
    }
}

#[test]
fn kmip_9_1_1_4_boolean_other_than_0_or_1_is_invalid_boolean() {
    for v in [2u64, 0xFF, 1 << 8, 1 << 63, u64::MAX] {
        let msg = prim(0x42_0020, BOOLEAN, &v.to_be_bytes());
        assert_decode_error(&msg, &lim(), ErrorKind::InvalidBoolean, 8, Some(0x42_0020));
        let msg = structure(REQUEST_HEADER, &[&msg]);
        assert_decode_error(&msg, &lim(), ErrorKind::InvalidBoolean, 16, Some(0x42_0020));
    }
}

#[test]
fn kmip_9_1_1_3_unknown_type_byte_is_reported_at_the_type_byte() {
    for ty in [0x00u8, 0x0C, 0x0D, 0x80, 0xFF] {
        let msg = prim(0x42_0020, ty, &[0u8; 4]);
        assert_decode_error(&msg, &lim(), ErrorKind::UnknownType, 3, Some(0x42_0020));
        let msg = structure(REQUEST_HEADER, &[&batch_count(1), &msg]);
        assert_decode_error(&msg, &lim(), ErrorKind::UnknownType, 27, Some(0x42_0020));
    }
}

#[test]
fn kmip_9_1_1_1_tag_outside_kmip_and_extension_ranges_is_invalid_tag() {
    for tag in [0x00_0000u32, 0x41_FFFF, 0x43_0000, 0x53_0001, 0xFF_FFFF] {
        let msg = prim(tag, INTEGER, &[0u8; 4]);
        assert_decode_error(&msg, &lim(), ErrorKind::InvalidTag, 0, Some(tag));
    }
    // The extension range (0x54xxxx) is accepted.
    assert!(decode_tree(&prim(0x54_0001, INTEGER, &[0u8; 4]), &lim()).is_ok());
}

#[test]
fn kmip_9_1_1_4_noncanonical_big_integer_is_rejected() {
    let mut positive = vec![0u8; 8];
    positive.extend_from_slice(&[0x7F, 0, 0, 0, 0, 0, 0, 1]);
    let mut negative = vec![0xFFu8; 8];
    negative.extend_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0]);
    let zero = vec![0u8; 16];
    let minus_one = vec![0xFFu8; 24];
    for v in [&positive, &negative, &zero, &minus_one] {
        let msg = prim(0x42_0020, BIG_INTEGER, v);
        assert_decode_error(
            &msg,
            &lim(),
            ErrorKind::NonCanonicalBigInteger,
            8,
            Some(0x42_0020),
        );
        let bad = Item {
            tag: 0x42_0020,
            value: Value::BigInteger(v.clone()),
        };
        let e = encode_tree(&bad, &lim()).unwrap_err();
        assert_error(e, ErrorKind::NonCanonicalBigInteger, 0, Some(0x42_0020));
    }
    // The sign extension that is needed is canonical: 2^63 and -2^63 - 1 take 16 bytes.
    let mut two_63 = vec![0u8; 8];
    two_63.extend_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0]);
    let mut minus = vec![0xFFu8; 8];
    minus.extend_from_slice(&[0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
    for v in [two_63, minus] {
        let msg = prim(0x42_0020, BIG_INTEGER, &v);
        let item = decode_tree(&msg, &lim()).unwrap();
        assert_eq!(item.value, Value::BigInteger(v));
        assert_eq!(encode_tree(&item, &lim()).unwrap(), msg);
    }
}

// ---- nesting and size caps -----------------------------------------------------------------

/// `depth` structures, each the only child of the one before, the innermost empty.
fn nested(depth: usize) -> Vec<u8> {
    let mut b = Vec::with_capacity(depth * 8);
    for level in 0..depth {
        let len = ((depth - level - 1) * 8) as u32;
        b.extend_from_slice(&header(REQUEST_HEADER, STRUCTURE, len));
    }
    b
}

#[test]
fn nesting_64_deep_decodes_65_and_1000_deep_are_too_deep() {
    let ok = decode_tree(&nested(64), &lim()).unwrap();
    assert_eq!(encode_tree(&ok, &lim()).unwrap(), nested(64));
    for depth in [65, 1000] {
        let start = Instant::now();
        assert_decode_error(
            &nested(depth),
            &lim(),
            ErrorKind::TooDeep,
            64 * 8,
            Some(REQUEST_HEADER),
        );
        assert!(start.elapsed() < Duration::from_secs(1));
    }
    let shallow = Limits {
        max_depth: 3,
        ..lim()
    };
    assert_decode_error(
        &nested(4),
        &shallow,
        ErrorKind::TooDeep,
        24,
        Some(REQUEST_HEADER),
    );
    assert!(decode_tree(&nested(3), &shallow).is_ok());
}

#[test]
fn encoding_65_deep_is_too_deep() {
    let mut item = Item {
        tag: REQUEST_HEADER,
        value: Value::Structure(vec![]),
    };
    for _ in 1..64 {
        item = Item {
            tag: REQUEST_HEADER,
            value: Value::Structure(vec![item]),
        };
    }
    assert_eq!(encode_tree(&item, &lim()).unwrap(), nested(64));
    let too_deep = Item {
        tag: REQUEST_MESSAGE,
        value: Value::Structure(vec![item]),
    };
    let e = encode_tree(&too_deep, &lim()).unwrap_err();
    assert_error(e, ErrorKind::TooDeep, 64 * 8, Some(REQUEST_HEADER));
}

#[test]
fn field_over_cap_is_field_too_large() {
    let capped = Limits {
        max_field: 16,
        ..lim()
    };
    for ty in [TEXT_STRING, BYTE_STRING] {
        assert!(decode_tree(&prim(NAME_VALUE, ty, b"sixteen bytes..."), &capped).is_ok());
        let msg = structure(
            REQUEST_HEADER,
            &[&batch_count(1), &prim(NAME_VALUE, ty, b"seventeen bytes..")],
        );
        assert_decode_error(
            &msg,
            &capped,
            ErrorKind::FieldTooLarge,
            24,
            Some(NAME_VALUE),
        );
    }
    let big = prim(0x42_0020, BIG_INTEGER, &[0x01; 24]);
    assert_decode_error(&big, &capped, ErrorKind::FieldTooLarge, 0, Some(0x42_0020));
    let long = Item {
        tag: KEY_MATERIAL,
        value: Value::ByteString(vec![0; 17]),
    };
    let e = encode_tree(&long, &capped).unwrap_err();
    assert_error(e, ErrorKind::FieldTooLarge, 0, Some(KEY_MATERIAL));
}

#[test]
fn message_over_cap_is_message_too_large() {
    let msg = structure(REQUEST_MESSAGE, &[&batch_count(1), &batch_count(2)]);
    let capped = Limits {
        max_message: 39,
        ..lim()
    };
    assert_decode_error(
        &msg,
        &capped,
        ErrorKind::MessageTooLarge,
        0,
        Some(REQUEST_MESSAGE),
    );
    assert!(decode_tree(
        &msg,
        &Limits {
            max_message: 40,
            ..lim()
        }
    )
    .is_ok());
    assert_error(
        frame_length(&msg, 39).unwrap_err(),
        ErrorKind::MessageTooLarge,
        0,
        Some(REQUEST_MESSAGE),
    );
    assert_eq!(frame_length(&msg, 40).unwrap(), Some(40));
}

#[test]
fn declared_2_gib_on_a_small_buffer_errors_fast_without_allocating() {
    let two_gib = 0x8000_0000u32;
    let everything = Limits {
        max_message: usize::MAX,
        max_field: usize::MAX,
        max_depth: 64,
    };
    let check = |buf: Vec<u8>, limits: Limits, kind, offset, tag| {
        let start = Instant::now();
        let (result, largest) = largest_allocation(|| decode_tree(&buf, &limits));
        assert_error(result.unwrap_err(), kind, offset, tag);
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "took {:?}",
            start.elapsed()
        );
        assert!(
            largest < 4096,
            "allocated {largest} bytes for a {}-byte input",
            buf.len()
        );
    };
    let (rm, km) = (Some(REQUEST_MESSAGE), Some(KEY_MATERIAL));
    check(
        header(REQUEST_MESSAGE, STRUCTURE, two_gib),
        lim(),
        ErrorKind::Truncated,
        0,
        rm,
    );
    check(
        header(REQUEST_MESSAGE, STRUCTURE, 0xFFFF_FFF8),
        lim(),
        ErrorKind::Truncated,
        0,
        rm,
    );
    check(
        header(KEY_MATERIAL, BYTE_STRING, two_gib),
        everything,
        ErrorKind::Truncated,
        0,
        km,
    );
    check(
        header(KEY_MATERIAL, BYTE_STRING, u32::MAX),
        everything,
        ErrorKind::Truncated,
        0,
        km,
    );
    let text = header(NAME_VALUE, TEXT_STRING, two_gib);
    check(text, lim(), ErrorKind::FieldTooLarge, 0, Some(NAME_VALUE));
    let big = header(0x42_0020, BIG_INTEGER, two_gib);
    check(big, everything, ErrorKind::Truncated, 0, Some(0x42_0020));
    let nested = structure(
        REQUEST_MESSAGE,
        &[&header(KEY_MATERIAL, BYTE_STRING, two_gib)],
    );
    check(nested, everything, ErrorKind::Truncated, 8, km);

    // The recorder sees what decoding really copies: a 64 KiB value shows up.
    let real = prim(KEY_MATERIAL, BYTE_STRING, &vec![0x5A; 64 * 1024]);
    let (decoded, largest) = largest_allocation(|| decode_tree(&real, &lim()));
    assert!(decoded.is_ok());
    assert!(largest >= 64 * 1024, "recorder saw only {largest} bytes");
    let e = frame_length(&header(REQUEST_MESSAGE, STRUCTURE, two_gib), 16 << 20).unwrap_err();
    assert_error(e, ErrorKind::MessageTooLarge, 0, Some(REQUEST_MESSAGE));
}

/// KMIP 1.4 §9.1.1.1: the encoder must not write a tag the decoder refuses, or the server
/// could emit a message that no strict client (and not its own decoder) accepts.
#[test]
fn kmip_9_1_1_1_encoder_refuses_tags_outside_kmip_and_extension_ranges() {
    for tag in [
        0x00_0000u32,
        0x00_0001,
        0x41_FFFF,
        0x43_0000,
        0xFF_FFFF,
        0x0100_0000,
    ] {
        let item = Item {
            tag,
            value: Value::Integer(1),
        };
        match encode_tree(&item, &lim()) {
            Ok(bytes) => panic!("tag 0x{tag:06X} encoded as {}", hex::encode(bytes)),
            Err(e) => assert_error(e, ErrorKind::InvalidTag, 0, Some(tag)),
        }
    }
}

#[test]
fn trailing_bytes_after_the_message_are_rejected() {
    let msg = structure(REQUEST_MESSAGE, &[&batch_count(1)]);
    for extra in [1usize, 7, 8, 24] {
        let mut buf = msg.clone();
        buf.resize(msg.len() + extra, 0);
        assert_decode_error(&buf, &lim(), ErrorKind::TrailingBytes, 24, None);
    }
    let mut two = msg.clone();
    two.extend_from_slice(&msg);
    assert_decode_error(&two, &lim(), ErrorKind::TrailingBytes, 24, None);
}

#[test]
fn empty_and_short_input_is_truncated() {
    assert_decode_error(&[], &lim(), ErrorKind::Truncated, 0, None);
    assert_decode_error(&[0x42, 0x00], &lim(), ErrorKind::Truncated, 0, None);
    assert_decode_error(
        &[0x42, 0x00, 0x78, 0x01],
        &lim(),
        ErrorKind::Truncated,
        0,
        Some(REQUEST_MESSAGE),
    );
}

// ---- proptest round trips ---------------------------------------------------------------

fn any_tag() -> impl Strategy<Value = u32> {
    prop_oneof![0x42_0000u32..=0x42_FFFF, 0x54_0000u32..=0x54_FFFF]
}

/// Canonical Big Integer bytes for an arbitrary two's-complement value.
fn any_big_integer() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 1..40).prop_map(|twos| {
        let mut v = big_integer_bytes(&twos);
        while !big_integer_is_minimal(&v) {
            v.drain(..8);
        }
        v
    })
}

fn any_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i32>().prop_map(Value::Integer),
        any::<i64>().prop_map(Value::LongInteger),
        any_big_integer().prop_map(Value::BigInteger),
        any::<u32>().prop_map(Value::Enumeration),
        any::<bool>().prop_map(Value::Boolean),
        any::<String>().prop_map(Value::TextString),
        proptest::collection::vec(any::<u8>(), 0..48).prop_map(Value::ByteString),
        any::<i64>().prop_map(Value::DateTime),
        any::<u32>().prop_map(Value::Interval),
        any::<i64>().prop_map(Value::DateTimeExtended),
    ]
}

/// Trees up to six levels deep.
fn any_item() -> impl Strategy<Value = Item> {
    let leaf = (any_tag(), any_leaf()).prop_map(|(tag, value)| Item { tag, value });
    leaf.prop_recursive(5, 128, 8, |inner| {
        (any_tag(), proptest::collection::vec(inner, 0..8)).prop_map(|(tag, children)| Item {
            tag,
            value: Value::Structure(children),
        })
    })
}

/// Whatever decodes re-encodes to the same bytes; whatever fails points inside the input.
fn check_canonical(buf: &[u8]) -> std::result::Result<(), TestCaseError> {
    match decode_tree(buf, &lim()) {
        Ok(item) => prop_assert_eq!(encode_tree(&item, &lim()).unwrap(), buf.to_vec()),
        Err(e) => prop_assert!(
            e.offset <= buf.len(),
            "offset {} past {} bytes",
            e.offset,
            buf.len()
        ),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn proptest_tree_encode_decode_round_trip(item in any_item()) {
        let bytes = encode_tree(&item, &lim()).unwrap();
        prop_assert_eq!(bytes.len() % 8, 0);
        let framed = matches!(item.value, Value::Structure(_)).then_some(Some(bytes.len()));
        prop_assert_eq!(frame_length(&bytes, usize::MAX).ok(), framed);
        let back = decode_tree(&bytes, &lim()).unwrap();
        prop_assert_eq!(&back, &item);
        prop_assert_eq!(encode_tree(&back, &lim()).unwrap(), bytes);
    }

    #[test]
    fn proptest_arbitrary_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..256)) {
        check_canonical(&buf)?;
    }

    #[test]
    fn proptest_arbitrary_bytes_behind_a_valid_header_never_panic(
        tag in any_tag(),
        ty in 0u8..=0x0C,
        body in proptest::collection::vec(any::<u8>(), 0..128),
    ) {
        let mut buf = header(tag, ty, body.len() as u32);
        buf.extend_from_slice(&body);
        check_canonical(&buf)?;
    }

    #[test]
    fn proptest_mutated_encodings_never_panic_and_reencode_identically(
        item in any_item(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut buf = encode_tree(&item, &lim()).unwrap();
        for (at, byte) in edits {
            let at = at.index(buf.len());
            buf[at] = byte;
        }
        if truncate {
            buf.truncate(cut.index(buf.len() + 1));
        }
        check_canonical(&buf)?;
    }
}

// ---- RFC 3394 and RFC 5649 vectors ----------------------------------------------------------

fn vectors(file: &str) -> Vec<Json> {
    let doc = read_json(&repo_root().join("tests/vectors").join(file));
    doc["vectors"].as_array().expect("vectors").clone()
}

#[test]
fn rfc3394_section_4_vectors() {
    let all = vectors("rfc3394.json");
    assert_eq!(
        all.iter().filter(|v| v["result"] == "pass").count(),
        6,
        "§4.1-4.6"
    );
    for v in &all {
        let id = str_field(v, "id");
        let kek = Kek::new(&unhex(str_field(v, "kek"))).unwrap();
        let ct = unhex(str_field(v, "ciphertext"));
        match str_field(v, "result") {
            "pass" => {
                let pt = unhex(str_field(v, "plaintext"));
                assert_eq!(kek.wrap(&pt).unwrap(), ct, "{id}");
                assert_eq!(&kek.unwrap(&ct).unwrap()[..], &pt[..], "{id}");
            }
            "fail" => assert_eq!(
                kek.unwrap(&ct).unwrap_err(),
                WrapError::IntegrityCheckFailed,
                "{id}"
            ),
            other => panic!("{id}: result {other:?}"),
        }
    }
}

#[test]
fn rfc5649_section_6_vectors() {
    let all = vectors("rfc5649.json");
    assert_eq!(
        all.iter().filter(|v| v["result"] == "pass").count(),
        2,
        "both §6 examples"
    );
    for v in &all {
        let id = str_field(v, "id");
        let kek = Kek::new(&unhex(str_field(v, "kek"))).unwrap();
        let ct = unhex(str_field(v, "ciphertext"));
        match str_field(v, "result") {
            "pass" => {
                let pt = unhex(str_field(v, "plaintext"));
                assert_eq!(kek.wrap_with_padding(&pt).unwrap(), ct, "{id}");
                assert_eq!(&kek.unwrap_with_padding(&ct).unwrap()[..], &pt[..], "{id}");
            }
            "fail" => {
                let e = kek.unwrap_with_padding(&ct).unwrap_err();
                assert_eq!(e, WrapError::IntegrityCheckFailed, "{id}");
            }
            other => panic!("{id}: result {other:?}"),
        }
    }
}

#[test]
fn rfc3394_2_2_and_rfc5649_4_input_length_rules() {
    let kek = Kek::new(&[7u8; 32]).unwrap();
    for n in [0usize, 8, 15, 17, 23] {
        assert!(
            matches!(kek.wrap(&vec![1; n]), Err(WrapError::InvalidInputLength(_))),
            "wrap {n}"
        );
    }
    for n in [0usize, 8, 16, 23, 25] {
        assert!(
            matches!(
                kek.unwrap(&vec![1; n]),
                Err(WrapError::InvalidInputLength(_))
            ),
            "unwrap {n}"
        );
    }
    assert!(matches!(
        kek.wrap_with_padding(&[]),
        Err(WrapError::InvalidInputLength(_))
    ));
    for n in [0usize, 8, 15, 17] {
        let r = kek.unwrap_with_padding(&vec![1; n]);
        assert!(
            matches!(r, Err(WrapError::InvalidInputLength(_))),
            "unwrap_with_padding {n}"
        );
    }
    // A KW blob is no KWP blob: the alternative initial value differs (RFC 5649 §3).
    let kw = kek.wrap(&[9u8; 16]).unwrap();
    assert_eq!(
        kek.unwrap_with_padding(&kw).unwrap_err(),
        WrapError::IntegrityCheckFailed
    );
    for n in 1..=33usize {
        let pt: Vec<u8> = (0..n as u8).collect();
        let ct = kek.wrap_with_padding(&pt).unwrap();
        assert_eq!(ct.len(), n.div_ceil(8) * 8 + 8);
        assert_eq!(&kek.unwrap_with_padding(&ct).unwrap()[..], &pt[..]);
    }
}

#[test]
fn seal_bound_refuses_other_binding_and_tampering() {
    let kek = Kek::new(&[3u8; 32]).unwrap();
    let blob = kek.seal_bound(&[0x5A; 32], b"tenant-a/uid-1").unwrap();
    assert_eq!(
        &kek.open_bound(&blob, b"tenant-a/uid-1").unwrap()[..],
        &[0x5A; 32]
    );
    for other in [
        &b"tenant-a/uid-2"[..],
        b"tenant-a/uid-",
        b"",
        b"tenant-a/uid-10",
    ] {
        assert_eq!(
            kek.open_bound(&blob, other).unwrap_err(),
            WrapError::IntegrityCheckFailed
        );
    }
    let mut tampered = blob.clone();
    tampered[20] ^= 1;
    assert_eq!(
        kek.open_bound(&tampered, b"tenant-a/uid-1").unwrap_err(),
        WrapError::IntegrityCheckFailed
    );
    let other = Kek::new(&[4u8; 32]).unwrap();
    assert_eq!(
        other.open_bound(&blob, b"tenant-a/uid-1").unwrap_err(),
        WrapError::IntegrityCheckFailed
    );
}
