//! TTLV, the binary encoding of KMIP (KMIP 1.4 §9.1).
//!
//! Every item is `tag (3 bytes) | type (1 byte) | length (4 bytes, big-endian) | value`,
//! and every value is zero-padded to a multiple of eight bytes.  A Structure's value is
//! its children, back to back, and its length is exactly the sum of theirs.
//!
//! Theory of operation: the decoder walks the buffer once and hands each item to a
//! [`Builder`], so the same strict walk feeds the Rust tree used in tests and the
//! Python tree built by `lib.rs` without an intermediate copy.  Nothing is allocated
//! from a declared length: a length is first checked against the bytes that are really
//! there and against the caps in [`Limits`], and only then is the value copied.
//! The encoder is the mirror image, a [`Writer`] that back-patches structure lengths.
//!
//! The encoding is canonical: fixed lengths, zero padding, and Big Integers with the
//! minimal sign extension (§9.1.1.4), so whatever decodes re-encodes byte for byte.
#![forbid(unsafe_code)]

use thiserror::Error;

/// Item types, the fourth byte of the header (KMIP 1.4 §9.1.1.3, 2.0 adds 0x0B).
pub mod item_type {
    pub const STRUCTURE: u8 = 0x01;
    pub const INTEGER: u8 = 0x02;
    pub const LONG_INTEGER: u8 = 0x03;
    pub const BIG_INTEGER: u8 = 0x04;
    pub const ENUMERATION: u8 = 0x05;
    pub const BOOLEAN: u8 = 0x06;
    pub const TEXT_STRING: u8 = 0x07;
    pub const BYTE_STRING: u8 = 0x08;
    pub const DATE_TIME: u8 = 0x09;
    pub const INTERVAL: u8 = 0x0A;
    pub const DATE_TIME_EXTENDED: u8 = 0x0B;
}
use item_type::*;

pub const HEADER_LEN: usize = 8;
/// The spec's own bound is far lower; 64 keeps recursion cheap and shallow.
pub const DEFAULT_MAX_DEPTH: usize = 64;

/// Caps applied to untrusted input before anything is buffered or allocated.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest whole message (header included) accepted.
    pub max_message: usize,
    /// Largest Text String, Byte String or Big Integer value accepted.
    pub max_field: usize,
    /// Deepest nesting of Structures accepted (the top-level item is depth 1).
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message: 16 * 1024 * 1024,
            max_field: 16 * 1024 * 1024,
            max_depth: DEFAULT_MAX_DEPTH,
        }
    }
}

/// What went wrong; `code()` is the stable machine-readable name shown to Python.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    Truncated,
    TrailingBytes,
    InvalidTag,
    UnknownType,
    BadLength,
    NonZeroPadding,
    ChildOverrunsParent,
    LengthMismatch,
    InvalidUtf8,
    InvalidBoolean,
    NonCanonicalBigInteger,
    TooDeep,
    FieldTooLarge,
    MessageTooLarge,
    ValueOutOfRange,
    BadValue,
}

impl ErrorKind {
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::Truncated => "truncated",
            ErrorKind::TrailingBytes => "trailing_bytes",
            ErrorKind::InvalidTag => "invalid_tag",
            ErrorKind::UnknownType => "unknown_type",
            ErrorKind::BadLength => "bad_length",
            ErrorKind::NonZeroPadding => "nonzero_padding",
            ErrorKind::ChildOverrunsParent => "child_overruns_parent",
            ErrorKind::LengthMismatch => "length_mismatch",
            ErrorKind::InvalidUtf8 => "invalid_utf8",
            ErrorKind::InvalidBoolean => "invalid_boolean",
            ErrorKind::NonCanonicalBigInteger => "noncanonical_big_integer",
            ErrorKind::TooDeep => "too_deep",
            ErrorKind::FieldTooLarge => "field_too_large",
            ErrorKind::MessageTooLarge => "message_too_large",
            ErrorKind::ValueOutOfRange => "value_out_of_range",
            ErrorKind::BadValue => "bad_value",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            ErrorKind::Truncated => "input ends inside an item",
            ErrorKind::TrailingBytes => "bytes follow the end of the message",
            ErrorKind::InvalidTag => {
                "tag is outside the KMIP (0x42xxxx) and extension (0x54xxxx) ranges"
            }
            ErrorKind::UnknownType => "unknown item type",
            ErrorKind::BadLength => "length is wrong for the item type",
            ErrorKind::NonZeroPadding => "padding bytes are not zero",
            ErrorKind::ChildOverrunsParent => "item is longer than what remains of its parent",
            ErrorKind::LengthMismatch => "structure length differs from the sum of its children",
            ErrorKind::InvalidUtf8 => "text string is not valid UTF-8",
            ErrorKind::InvalidBoolean => "boolean is neither 0 nor 1",
            ErrorKind::NonCanonicalBigInteger => "big integer has more sign extension than needed",
            ErrorKind::TooDeep => "structures nested too deeply",
            ErrorKind::FieldTooLarge => "field is larger than the configured cap",
            ErrorKind::MessageTooLarge => "message is larger than the configured cap",
            ErrorKind::ValueOutOfRange => "value does not fit the item type",
            ErrorKind::BadValue => "value has the wrong form for the item type",
        }
    }
}

/// A decode or encode failure: what, where (byte offset of the offending item or
/// field), and the tag of the item concerned when it is known.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("{}{}", self.kind.describe(), self.location())]
pub struct TtlvError {
    pub kind: ErrorKind,
    pub offset: usize,
    pub tag: Option<u32>,
    pub detail: Option<String>,
}

impl TtlvError {
    pub fn new(kind: ErrorKind, offset: usize, tag: Option<u32>) -> Self {
        TtlvError {
            kind,
            offset,
            tag,
            detail: None,
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    fn location(&self) -> String {
        let mut s = format!(" at offset {}", self.offset);
        if let Some(tag) = self.tag {
            s.push_str(&format!(" (tag 0x{tag:06X})"));
        }
        if let Some(d) = &self.detail {
            s.push_str(": ");
            s.push_str(d);
        }
        s
    }
}

pub type Result<T> = std::result::Result<T, TtlvError>;

/// A decoded primitive value, borrowed from the input where it can be.
#[derive(Debug, Clone, Copy)]
pub enum Primitive<'a> {
    Integer(i32),
    LongInteger(i64),
    /// Two's-complement big-endian bytes, already checked to be canonical.
    BigInteger(&'a [u8]),
    Enumeration(u32),
    Boolean(bool),
    TextString(&'a str),
    ByteString(&'a [u8]),
    DateTime(i64),
    Interval(u32),
    DateTimeExtended(i64),
}

/// Receives the items of a message as the decoder meets them.
pub trait Builder {
    type Node;
    type Error: From<TtlvError>;
    fn primitive(
        &mut self,
        tag: u32,
        value: Primitive<'_>,
    ) -> std::result::Result<Self::Node, Self::Error>;
    fn structure(
        &mut self,
        tag: u32,
        children: Vec<Self::Node>,
    ) -> std::result::Result<Self::Node, Self::Error>;
}

/// The header of one item: tag, type byte and declared value length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub tag: u32,
    pub item_type: u8,
    pub length: u32,
}

/// Reads the 8-byte header at the start of `buf`, without checking the type.
pub fn read_header(buf: &[u8]) -> Option<Header> {
    let h: &[u8; HEADER_LEN] = buf.get(..HEADER_LEN)?.try_into().ok()?;
    Some(Header {
        tag: u32::from_be_bytes([0, h[0], h[1], h[2]]),
        item_type: h[3],
        length: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
    })
}

/// Framing for a stream: the total size (header included) of the message that starts
/// `buf`, `None` while fewer than 8 bytes have arrived.  A message must be a Structure
/// and fit `max_message`, so a server can refuse it before buffering its body.
pub fn frame_length(buf: &[u8], max_message: usize) -> Result<Option<usize>> {
    let Some(h) = read_header(buf) else {
        return Ok(None);
    };
    check_tag(h.tag, 0)?;
    if h.item_type != STRUCTURE {
        return Err(TtlvError::new(ErrorKind::BadValue, 0, Some(h.tag))
            .with_detail("a message must be a Structure"));
    }
    let total = HEADER_LEN as u64 + u64::from(h.length);
    if total > max_message as u64 {
        return Err(TtlvError::new(ErrorKind::MessageTooLarge, 0, Some(h.tag))
            .with_detail(format!("declared {total} bytes, cap {max_message}")));
    }
    Ok(Some(total as usize))
}

fn check_tag(tag: u32, offset: usize) -> Result<()> {
    match tag >> 16 {
        0x42 | 0x54 => Ok(()),
        _ => Err(TtlvError::new(ErrorKind::InvalidTag, offset, Some(tag))),
    }
}

/// Bytes of padding that follow a value of `len` bytes.
#[inline]
pub fn padding(len: usize) -> usize {
    (8 - len % 8) % 8
}

/// Decodes exactly one item spanning the whole of `buf`.
pub fn decode<B: Builder>(
    buf: &[u8],
    limits: &Limits,
    builder: &mut B,
) -> std::result::Result<B::Node, B::Error> {
    if buf.len() > limits.max_message {
        return Err(TtlvError::new(
            ErrorKind::MessageTooLarge,
            0,
            read_header(buf).map(|h| h.tag),
        )
        .with_detail(format!("{} bytes, cap {}", buf.len(), limits.max_message))
        .into());
    }
    let mut dec = Decoder { buf, limits };
    let (node, end) = dec.item(0, buf.len(), 1, builder)?;
    if end != buf.len() {
        return Err(TtlvError::new(ErrorKind::TrailingBytes, end, None).into());
    }
    Ok(node)
}

struct Decoder<'a> {
    buf: &'a [u8],
    limits: &'a Limits,
}

impl<'a> Decoder<'a> {
    /// Decodes the item at `pos`, which must end by `limit`; returns it and its end.
    fn item<B: Builder>(
        &mut self,
        pos: usize,
        limit: usize,
        depth: usize,
        builder: &mut B,
    ) -> std::result::Result<(B::Node, usize), B::Error> {
        let buf = self.buf;
        let overrun = |tag| {
            // Input that simply stops is "truncated"; a child that claims more than its
            // parent holds while the input goes on is the parent's inconsistency.
            if limit == buf.len() {
                TtlvError::new(ErrorKind::Truncated, pos, tag)
            } else {
                TtlvError::new(ErrorKind::ChildOverrunsParent, pos, tag)
            }
        };
        if limit - pos < HEADER_LEN {
            let tag = buf
                .get(pos..pos + 3)
                .map(|t| u32::from_be_bytes([0, t[0], t[1], t[2]]));
            return Err(overrun(tag).into());
        }
        let h = read_header(&buf[pos..limit]).ok_or_else(|| overrun(None))?;
        let tag = Some(h.tag);
        check_tag(h.tag, pos)?;
        let len = h.length as usize;
        let vpos = pos + HEADER_LEN;
        let avail = limit - vpos;
        let padded = len.checked_add(padding(len)).ok_or_else(|| overrun(tag))?;
        if h.item_type == STRUCTURE {
            if len > avail {
                return Err(overrun(tag).into());
            }
            if len % 8 != 0 {
                return Err(TtlvError::new(ErrorKind::BadLength, pos, tag)
                    .with_detail("structure length must be a multiple of 8")
                    .into());
            }
            if depth > self.limits.max_depth {
                return Err(TtlvError::new(ErrorKind::TooDeep, pos, tag)
                    .with_detail(format!("cap {}", self.limits.max_depth))
                    .into());
            }
            let end = vpos + len;
            let mut children = Vec::new();
            let mut at = vpos;
            while at < end {
                let (child, next) = self.item(at, end, depth + 1, builder)?;
                children.push(child);
                at = next;
            }
            return Ok((builder.structure(h.tag, children)?, end));
        }
        let fixed = match h.item_type {
            INTEGER | ENUMERATION | INTERVAL => Some(4),
            LONG_INTEGER | BOOLEAN | DATE_TIME | DATE_TIME_EXTENDED => Some(8),
            BIG_INTEGER | TEXT_STRING | BYTE_STRING => None,
            other => {
                return Err(TtlvError::new(ErrorKind::UnknownType, pos + 3, tag)
                    .with_detail(format!("type byte 0x{other:02X}"))
                    .into())
            }
        };
        match fixed {
            Some(n) if n != len => {
                return Err(TtlvError::new(ErrorKind::BadLength, pos, tag)
                    .with_detail(format!("length {len}, the type requires {n}"))
                    .into())
            }
            None if len > self.limits.max_field => {
                return Err(TtlvError::new(ErrorKind::FieldTooLarge, pos, tag)
                    .with_detail(format!("{len} bytes, cap {}", self.limits.max_field))
                    .into())
            }
            _ => {}
        }
        if padded > avail {
            return Err(overrun(tag).into());
        }
        let v = &buf[vpos..vpos + len];
        if buf[vpos + len..vpos + padded].iter().any(|&b| b != 0) {
            return Err(TtlvError::new(ErrorKind::NonZeroPadding, vpos + len, tag).into());
        }
        let be4 = |v: &[u8]| [v[0], v[1], v[2], v[3]];
        let be8 = |v: &[u8]| [v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]];
        let value = match h.item_type {
            INTEGER => Primitive::Integer(i32::from_be_bytes(be4(v))),
            ENUMERATION => Primitive::Enumeration(u32::from_be_bytes(be4(v))),
            INTERVAL => Primitive::Interval(u32::from_be_bytes(be4(v))),
            LONG_INTEGER => Primitive::LongInteger(i64::from_be_bytes(be8(v))),
            DATE_TIME => Primitive::DateTime(i64::from_be_bytes(be8(v))),
            DATE_TIME_EXTENDED => Primitive::DateTimeExtended(i64::from_be_bytes(be8(v))),
            BOOLEAN => match u64::from_be_bytes(be8(v)) {
                0 => Primitive::Boolean(false),
                1 => Primitive::Boolean(true),
                _ => return Err(TtlvError::new(ErrorKind::InvalidBoolean, vpos, tag).into()),
            },
            TEXT_STRING => match std::str::from_utf8(v) {
                Ok(s) => Primitive::TextString(s),
                Err(e) => {
                    return Err(
                        TtlvError::new(ErrorKind::InvalidUtf8, vpos + e.valid_up_to(), tag).into(),
                    )
                }
            },
            BYTE_STRING => Primitive::ByteString(v),
            BIG_INTEGER => {
                if len == 0 || len % 8 != 0 {
                    return Err(TtlvError::new(ErrorKind::BadLength, pos, tag)
                        .with_detail("big integer length must be a non-zero multiple of 8")
                        .into());
                }
                if !big_integer_is_minimal(v) {
                    return Err(TtlvError::new(ErrorKind::NonCanonicalBigInteger, vpos, tag).into());
                }
                Primitive::BigInteger(v)
            }
            _ => unreachable!("type checked above"),
        };
        Ok((builder.primitive(h.tag, value)?, vpos + padded))
    }
}

/// True when no leading group of eight bytes is pure sign extension (§9.1.1.4).
pub fn big_integer_is_minimal(v: &[u8]) -> bool {
    if v.len() <= 8 {
        return true;
    }
    let sign = if v[8] & 0x80 != 0 { 0xFF } else { 0x00 };
    !v[..8].iter().all(|&b| b == sign)
}

/// Builds a TTLV message front to back; structure lengths are patched on close.
#[derive(Default)]
pub struct Writer {
    pub buf: Vec<u8>,
    open: Vec<usize>,
}

impl Writer {
    pub fn new() -> Self {
        Writer::default()
    }

    pub fn with_capacity(n: usize) -> Self {
        Writer {
            buf: Vec::with_capacity(n),
            open: Vec::new(),
        }
    }

    pub fn depth(&self) -> usize {
        self.open.len()
    }

    fn header(&mut self, tag: u32, ty: u8, len: u32) -> Result<()> {
        check_tag(tag, self.buf.len())?;
        let t = tag.to_be_bytes();
        self.buf.extend_from_slice(&[t[1], t[2], t[3], ty]);
        self.buf.extend_from_slice(&len.to_be_bytes());
        Ok(())
    }

    pub fn begin_structure(&mut self, tag: u32) -> Result<()> {
        self.open.push(self.buf.len());
        self.header(tag, STRUCTURE, 0)
    }

    pub fn end_structure(&mut self) -> Result<()> {
        let start = self.open.pop().ok_or_else(|| {
            TtlvError::new(ErrorKind::BadValue, self.buf.len(), None)
                .with_detail("no open structure")
        })?;
        let len = self.buf.len() - start - HEADER_LEN;
        let len = u32::try_from(len).map_err(|_| {
            TtlvError::new(ErrorKind::MessageTooLarge, start, None)
                .with_detail("structure over 4 GiB")
        })?;
        self.buf[start + 4..start + 8].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }

    fn fixed(&mut self, tag: u32, ty: u8, bytes: &[u8]) -> Result<()> {
        self.header(tag, ty, bytes.len() as u32)?;
        self.buf.extend_from_slice(bytes);
        self.buf.resize(self.buf.len() + padding(bytes.len()), 0);
        Ok(())
    }

    pub fn integer(&mut self, tag: u32, v: i32) -> Result<()> {
        self.fixed(tag, INTEGER, &v.to_be_bytes())
    }
    pub fn long_integer(&mut self, tag: u32, v: i64) -> Result<()> {
        self.fixed(tag, LONG_INTEGER, &v.to_be_bytes())
    }
    pub fn enumeration(&mut self, tag: u32, v: u32) -> Result<()> {
        self.fixed(tag, ENUMERATION, &v.to_be_bytes())
    }
    pub fn interval(&mut self, tag: u32, v: u32) -> Result<()> {
        self.fixed(tag, INTERVAL, &v.to_be_bytes())
    }
    pub fn boolean(&mut self, tag: u32, v: bool) -> Result<()> {
        self.fixed(tag, BOOLEAN, &u64::from(v).to_be_bytes())
    }
    pub fn date_time(&mut self, tag: u32, v: i64) -> Result<()> {
        self.fixed(tag, DATE_TIME, &v.to_be_bytes())
    }
    pub fn date_time_extended(&mut self, tag: u32, v: i64) -> Result<()> {
        self.fixed(tag, DATE_TIME_EXTENDED, &v.to_be_bytes())
    }

    fn variable(&mut self, tag: u32, ty: u8, v: &[u8], max_field: usize) -> Result<()> {
        if v.len() > max_field || u32::try_from(v.len()).is_err() {
            return Err(
                TtlvError::new(ErrorKind::FieldTooLarge, self.buf.len(), Some(tag))
                    .with_detail(format!("{} bytes, cap {max_field}", v.len())),
            );
        }
        self.fixed(tag, ty, v)
    }

    pub fn text_string(&mut self, tag: u32, v: &str, max_field: usize) -> Result<()> {
        self.variable(tag, TEXT_STRING, v.as_bytes(), max_field)
    }
    pub fn byte_string(&mut self, tag: u32, v: &[u8], max_field: usize) -> Result<()> {
        self.variable(tag, BYTE_STRING, v, max_field)
    }

    /// Writes a Byte String whose value is produced in place by `fill` (used to unwrap
    /// key material straight into the message buffer).
    pub fn byte_string_with(
        &mut self,
        tag: u32,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> std::result::Result<(), String>,
    ) -> Result<()> {
        let len32 = u32::try_from(len)
            .map_err(|_| TtlvError::new(ErrorKind::FieldTooLarge, self.buf.len(), Some(tag)))?;
        let at = self.buf.len();
        self.header(tag, BYTE_STRING, len32)?;
        let start = self.buf.len();
        self.buf.resize(start + len + padding(len), 0);
        fill(&mut self.buf[start..start + len])
            .map_err(|m| TtlvError::new(ErrorKind::BadValue, at, Some(tag)).with_detail(m))
    }

    /// Appends an already-encoded item, after checking that it is one whole, well-formed
    /// item with the expected tag (it was encoded by this codec before it was sealed).
    pub fn raw_item(&mut self, tag: u32, encoded: &[u8]) -> Result<()> {
        let at = self.buf.len();
        let limits = Limits {
            max_message: encoded.len(),
            max_field: encoded.len(),
            max_depth: DEFAULT_MAX_DEPTH.saturating_sub(self.depth()),
        };
        let item = decode_tree(encoded, &limits).map_err(|mut e| {
            e.offset += at;
            e
        })?;
        if item.tag != tag {
            return Err(TtlvError::new(ErrorKind::BadValue, at, Some(tag))
                .with_detail(format!("sealed item has tag 0x{:06X}", item.tag)));
        }
        self.buf.extend_from_slice(encoded);
        Ok(())
    }

    /// `v` must be canonical two's complement (see [`big_integer_bytes`]).
    pub fn big_integer(&mut self, tag: u32, v: &[u8], max_field: usize) -> Result<()> {
        if v.is_empty() || v.len() % 8 != 0 || !big_integer_is_minimal(v) {
            return Err(TtlvError::new(
                ErrorKind::NonCanonicalBigInteger,
                self.buf.len(),
                Some(tag),
            ));
        }
        self.variable(tag, BIG_INTEGER, v, max_field)
    }

    /// The finished message; fails if a structure was left open.
    pub fn finish(self) -> Result<Vec<u8>> {
        if !self.open.is_empty() {
            return Err(TtlvError::new(ErrorKind::BadValue, self.buf.len(), None)
                .with_detail("unclosed structure"));
        }
        Ok(self.buf)
    }
}

/// Canonical Big Integer bytes for a value given as minimal two's complement bytes of
/// any length: sign-extends to the next multiple of eight (at least eight).
pub fn big_integer_bytes(twos: &[u8]) -> Vec<u8> {
    let negative = twos.first().is_some_and(|b| b & 0x80 != 0);
    let fill = if negative { 0xFF } else { 0x00 };
    let n = twos.len().max(1);
    let total = n.div_ceil(8) * 8;
    let mut out = vec![fill; total - twos.len()];
    out.extend_from_slice(twos);
    out
}

/// A plain Rust tree, for tests and Rust-side tools.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Structure(Vec<Item>),
    Integer(i32),
    LongInteger(i64),
    BigInteger(Vec<u8>),
    Enumeration(u32),
    Boolean(bool),
    TextString(String),
    ByteString(Vec<u8>),
    DateTime(i64),
    Interval(u32),
    DateTimeExtended(i64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub tag: u32,
    pub value: Value,
}

/// Builds [`Item`] trees.
pub struct TreeBuilder;

impl Builder for TreeBuilder {
    type Node = Item;
    type Error = TtlvError;
    fn primitive(&mut self, tag: u32, value: Primitive<'_>) -> Result<Item> {
        let value = match value {
            Primitive::Integer(v) => Value::Integer(v),
            Primitive::LongInteger(v) => Value::LongInteger(v),
            Primitive::BigInteger(v) => Value::BigInteger(v.to_vec()),
            Primitive::Enumeration(v) => Value::Enumeration(v),
            Primitive::Boolean(v) => Value::Boolean(v),
            Primitive::TextString(v) => Value::TextString(v.to_owned()),
            Primitive::ByteString(v) => Value::ByteString(v.to_vec()),
            Primitive::DateTime(v) => Value::DateTime(v),
            Primitive::Interval(v) => Value::Interval(v),
            Primitive::DateTimeExtended(v) => Value::DateTimeExtended(v),
        };
        Ok(Item { tag, value })
    }
    fn structure(&mut self, tag: u32, children: Vec<Item>) -> Result<Item> {
        Ok(Item {
            tag,
            value: Value::Structure(children),
        })
    }
}

/// Decodes into a Rust tree.
pub fn decode_tree(buf: &[u8], limits: &Limits) -> Result<Item> {
    decode(buf, limits, &mut TreeBuilder)
}

/// Encodes a Rust tree.
pub fn encode_tree(item: &Item, limits: &Limits) -> Result<Vec<u8>> {
    let mut w = Writer::new();
    write_item(&mut w, item, limits)?;
    w.finish()
}

fn write_item(w: &mut Writer, item: &Item, limits: &Limits) -> Result<()> {
    let tag = item.tag;
    match &item.value {
        Value::Structure(children) => {
            if w.depth() >= limits.max_depth {
                return Err(TtlvError::new(ErrorKind::TooDeep, w.buf.len(), Some(tag)));
            }
            w.begin_structure(tag)?;
            for c in children {
                write_item(w, c, limits)?;
            }
            w.end_structure()
        }
        Value::Integer(v) => w.integer(tag, *v),
        Value::LongInteger(v) => w.long_integer(tag, *v),
        Value::BigInteger(v) => w.big_integer(tag, v, limits.max_field),
        Value::Enumeration(v) => w.enumeration(tag, *v),
        Value::Boolean(v) => w.boolean(tag, *v),
        Value::TextString(v) => w.text_string(tag, v, limits.max_field),
        Value::ByteString(v) => w.byte_string(tag, v, limits.max_field),
        Value::DateTime(v) => w.date_time(tag, *v),
        Value::Interval(v) => w.interval(tag, *v),
        Value::DateTimeExtended(v) => w.date_time_extended(tag, *v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        hex::decode(s.replace([' ', '|'], "")).expect("test hex")
    }

    #[test]
    fn integer_example_from_spec_9_1_2() {
        let b = hex("42 00 20 | 02 | 00 00 00 04 | 00 00 00 08 00 00 00 00");
        let item = decode_tree(&b, &Limits::default()).unwrap();
        assert_eq!(
            item,
            Item {
                tag: 0x420020,
                value: Value::Integer(8)
            }
        );
        assert_eq!(encode_tree(&item, &Limits::default()).unwrap(), b);
    }

    #[test]
    fn nonzero_padding_is_rejected() {
        let b = hex("42002002000000040000000800000001");
        let e = decode_tree(&b, &Limits::default()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NonZeroPadding);
        assert_eq!(e.offset, 12);
        assert_eq!(e.tag, Some(0x420020));
    }

    #[test]
    fn big_integer_canonical_form() {
        assert!(big_integer_is_minimal(&[0; 8]));
        assert!(!big_integer_is_minimal(&[0; 16]));
        let mut v = vec![0; 8];
        v.extend_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0]);
        assert!(big_integer_is_minimal(&v));
        assert_eq!(
            big_integer_bytes(&[0x80]),
            vec![0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x80]
        );
        assert_eq!(big_integer_bytes(&[]), vec![0; 8]);
    }

    #[test]
    fn frame_length_refuses_oversized_before_body() {
        let b = hex("42007801 7FFFFFFF");
        let e = frame_length(&b, 1 << 20).unwrap_err();
        assert_eq!(e.kind, ErrorKind::MessageTooLarge);
        assert_eq!(frame_length(&b[..7], 1 << 20).unwrap(), None);
        assert_eq!(
            frame_length(&hex("4200780100000010"), 1 << 20).unwrap(),
            Some(24)
        );
    }
}
