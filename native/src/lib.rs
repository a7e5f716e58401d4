//! `kmipfast._native`: the only PyO3 file.  The codec, key wrap and HSM logic live in
//! modules that do not import PyO3; this file declares the Python surface, converts
//! between Python objects and Rust values, and maps errors to the exceptions defined
//! in `kmipfast/errors.py`.  The surface is documented in `kmipfast/_native.pyi`.
//!
//! The TTLV tree crosses the boundary as nested tuples `(tag, type, value)`, with a
//! Structure's value a list of such tuples: the cheapest shape for CPython to build
//! and to index, and one call per message in each direction.

pub mod hsm;
mod py_hsm;
mod py_tls;
pub mod tls;
pub mod ttlv;
pub mod wrap;

use std::sync::RwLock;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyBytes, PyInt, PyList, PyString, PyTuple};
use zeroize::Zeroizing;

use ttlv::{item_type as ty, ErrorKind, Limits, Primitive, TtlvError, Writer};
use wrap::{Kek, WrapError};

pyo3::import_exception!(kmipfast.errors, TtlvDecodeError);
pyo3::import_exception!(kmipfast.errors, TtlvEncodeError);
pyo3::import_exception!(kmipfast.errors, InvalidUnwrap);

const DEFAULT_MAX: usize = 16 * 1024 * 1024;

fn ttlv_err(e: TtlvError, encoding: bool) -> PyErr {
    let args = (e.kind.code(), e.offset, e.tag, e.to_string());
    if encoding {
        TtlvEncodeError::new_err(args)
    } else {
        TtlvDecodeError::new_err(args)
    }
}

fn wrap_err(e: WrapError) -> PyErr {
    match e {
        WrapError::IntegrityCheckFailed => InvalidUnwrap::new_err(e.to_string()),
        other => PyValueError::new_err(other.to_string()),
    }
}

/// Python ints for the standard tag range, made once: most tags of every message
/// fall in it, and sharing them saves an allocation per item.
const TAG_BASE: u32 = 0x42_0000;
const TAG_CACHED: u32 = 0x200;
static TAGS: PyOnceLock<Vec<Py<PyInt>>> = PyOnceLock::new();

fn tag_object<'py>(py: Python<'py>, tag: u32) -> Bound<'py, PyAny> {
    let cache = TAGS.get_or_init(py, || {
        (0..TAG_CACHED)
            .map(|i| PyInt::new(py, TAG_BASE + i).unbind())
            .collect()
    });
    match tag.checked_sub(TAG_BASE) {
        Some(i) if i < TAG_CACHED => cache[i as usize].bind(py).clone().into_any(),
        _ => PyInt::new(py, tag).into_any(),
    }
}

pub(crate) struct PyBuilder<'py> {
    pub(crate) py: Python<'py>,
}

impl<'py> PyBuilder<'py> {
    fn node(&self, tag: u32, t: u8, value: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let t = PyInt::new(self.py, t).into_any();
        Ok(PyTuple::new(self.py, [tag_object(self.py, tag), t, value])?.into_any())
    }
}

impl<'py> ttlv::Builder for PyBuilder<'py> {
    type Node = Bound<'py, PyAny>;
    type Error = PyErr;

    fn primitive(&mut self, tag: u32, value: Primitive<'_>) -> PyResult<Self::Node> {
        let py = self.py;
        let (t, v) = match value {
            Primitive::Integer(v) => (ty::INTEGER, PyInt::new(py, v).into_any()),
            Primitive::LongInteger(v) => (ty::LONG_INTEGER, PyInt::new(py, v).into_any()),
            Primitive::Enumeration(v) => (ty::ENUMERATION, PyInt::new(py, v).into_any()),
            Primitive::Interval(v) => (ty::INTERVAL, PyInt::new(py, v).into_any()),
            Primitive::DateTime(v) => (ty::DATE_TIME, PyInt::new(py, v).into_any()),
            Primitive::DateTimeExtended(v) => {
                (ty::DATE_TIME_EXTENDED, PyInt::new(py, v).into_any())
            }
            Primitive::Boolean(v) => (
                ty::BOOLEAN,
                pyo3::types::PyBool::new(py, v).to_owned().into_any(),
            ),
            Primitive::TextString(v) => (ty::TEXT_STRING, PyString::new(py, v).into_any()),
            Primitive::ByteString(v) => (ty::BYTE_STRING, PyBytes::new(py, v).into_any()),
            Primitive::BigInteger(v) => {
                let int = py
                    .get_type::<PyInt>()
                    .call_method1("from_bytes", (PyBytes::new(py, v), "big"))?;
                // from_bytes(signed=True) via kwargs costs a dict; negate by hand.
                let int = if v[0] & 0x80 != 0 {
                    let bits = 8 * v.len();
                    int.sub(PyInt::new(py, 1u8).lshift(bits)?)?
                } else {
                    int
                };
                (ty::BIG_INTEGER, int)
            }
        };
        self.node(tag, t, v)
    }

    fn structure(&mut self, tag: u32, children: Vec<Self::Node>) -> PyResult<Self::Node> {
        let list = PyList::new(self.py, children)?.into_any();
        self.node(tag, ty::STRUCTURE, list)
    }
}

impl From<TtlvError> for PyErr {
    fn from(e: TtlvError) -> PyErr {
        ttlv_err(e, false)
    }
}

fn limits(max_message_size: usize, max_field_size: usize, max_depth: usize) -> Limits {
    Limits {
        max_message: max_message_size,
        max_field: max_field_size,
        max_depth,
    }
}

/// Decodes one TTLV item spanning the whole buffer into a `(tag, type, value)` tree.
#[pyfunction]
#[pyo3(signature = (buf, *, max_message_size = DEFAULT_MAX, max_field_size = DEFAULT_MAX, max_depth = ttlv::DEFAULT_MAX_DEPTH))]
fn decode<'py>(
    py: Python<'py>,
    buf: &Bound<'py, PyAny>,
    max_message_size: usize,
    max_field_size: usize,
    max_depth: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let lim = limits(max_message_size, max_field_size, max_depth);
    let mut b = PyBuilder { py };
    if let Ok(bytes) = buf.cast::<PyBytes>() {
        return ttlv::decode(bytes.as_bytes(), &lim, &mut b);
    }
    let owned = buffer_bytes(buf)?;
    ttlv::decode(&owned, &lim, &mut b)
}

/// Copies a bytes-like object that is not `bytes` (bytearray, memoryview).
fn buffer_bytes(obj: &Bound<'_, PyAny>) -> PyResult<Zeroizing<Vec<u8>>> {
    if let Ok(ba) = obj.cast::<PyByteArray>() {
        return Ok(Zeroizing::new(ba.to_vec()));
    }
    let buf = pyo3::buffer::PyBuffer::<u8>::get(obj)
        .map_err(|_| PyTypeError::new_err("expected a bytes-like object"))?;
    Ok(Zeroizing::new(buf.to_vec(obj.py())?))
}

/// Runs `f` on the bytes of a bytes-like object without copying `bytes`.
fn with_bytes<T>(obj: &Bound<'_, PyAny>, f: impl FnOnce(&[u8]) -> T) -> PyResult<T> {
    if let Ok(bytes) = obj.cast::<PyBytes>() {
        return Ok(f(bytes.as_bytes()));
    }
    let owned = buffer_bytes(obj)?;
    Ok(f(&owned))
}

/// The header of the item at the start of `buf`: `(tag, type, length)`, or None while
/// fewer than 8 bytes are there.
#[pyfunction]
fn read_header(buf: &Bound<'_, PyAny>) -> PyResult<Option<(u32, u8, u32)>> {
    with_bytes(buf, |b| {
        ttlv::read_header(b).map(|h| (h.tag, h.item_type, h.length))
    })
}

/// Total size of the message that starts `buf` (header included), None while fewer
/// than 8 bytes are there; raises TtlvDecodeError if it is no Structure or exceeds the cap.
#[pyfunction]
#[pyo3(signature = (buf, max_message_size = DEFAULT_MAX))]
fn frame_length(buf: &Bound<'_, PyAny>, max_message_size: usize) -> PyResult<Option<usize>> {
    with_bytes(buf, |b| ttlv::frame_length(b, max_message_size))?.map_err(|e| ttlv_err(e, false))
}

pub(crate) struct PyEncoder<'py> {
    pub(crate) py: Python<'py>,
    pub(crate) w: Writer,
    pub(crate) max_field: usize,
}

fn enc_err(kind: ErrorKind, tag: Option<u32>, at: usize, detail: String) -> PyErr {
    ttlv_err(TtlvError::new(kind, at, tag).with_detail(detail), true)
}

impl<'py> PyEncoder<'py> {
    pub(crate) fn item(&mut self, obj: &Bound<'py, PyAny>) -> PyResult<()> {
        let at = self.w.buf.len();
        let tuple = obj.cast::<PyTuple>().map_err(|_| {
            enc_err(
                ErrorKind::BadValue,
                None,
                at,
                "an item must be a (tag, type, value) tuple".into(),
            )
        })?;
        if tuple.len() != 3 {
            return Err(enc_err(
                ErrorKind::BadValue,
                None,
                at,
                "an item must be a (tag, type, value) tuple".into(),
            ));
        }
        let tag: u32 = tuple
            .get_borrowed_item(0)?
            .extract()
            .map_err(|_| enc_err(ErrorKind::InvalidTag, None, at, "tag must be an int".into()))?;
        let t: u8 = tuple.get_borrowed_item(1)?.extract().map_err(|_| {
            enc_err(
                ErrorKind::UnknownType,
                Some(tag),
                at,
                "type must be an int".into(),
            )
        })?;
        let value = tuple.get_borrowed_item(2)?;
        if let Ok(sealed) = value.cast::<SealedKey>() {
            if sealed.get().item {
                return sealed.get().write_into(&mut self.w, tag);
            }
        }
        let range =
            |what: &str| enc_err(ErrorKind::ValueOutOfRange, Some(tag), at, what.to_string());
        let wrong = |what: &str| enc_err(ErrorKind::BadValue, Some(tag), at, what.to_string());
        let w = &mut self.w;
        let r = match t {
            ty::STRUCTURE => {
                let list = value
                    .cast::<PyList>()
                    .map_err(|_| wrong("a Structure's value must be a list"))?;
                if w.depth() >= ttlv::DEFAULT_MAX_DEPTH {
                    return Err(enc_err(ErrorKind::TooDeep, Some(tag), at, String::new()));
                }
                w.begin_structure(tag).map_err(|e| ttlv_err(e, true))?;
                for child in list.iter() {
                    self.item(&child)?;
                }
                self.w.end_structure()
            }
            ty::INTEGER => w.integer(
                tag,
                value
                    .extract()
                    .map_err(|_| range("Integer must be a 32-bit signed int"))?,
            ),
            ty::LONG_INTEGER => w.long_integer(
                tag,
                value
                    .extract()
                    .map_err(|_| range("Long Integer must be a 64-bit signed int"))?,
            ),
            ty::ENUMERATION => w.enumeration(
                tag,
                value
                    .extract()
                    .map_err(|_| range("Enumeration must be a 32-bit unsigned int"))?,
            ),
            ty::INTERVAL => w.interval(
                tag,
                value
                    .extract()
                    .map_err(|_| range("Interval must be a 32-bit unsigned int"))?,
            ),
            ty::DATE_TIME => w.date_time(
                tag,
                value
                    .extract()
                    .map_err(|_| range("Date-Time must be a 64-bit signed int"))?,
            ),
            ty::DATE_TIME_EXTENDED => w.date_time_extended(
                tag,
                value
                    .extract()
                    .map_err(|_| range("Date-Time Extended must be a 64-bit signed int"))?,
            ),
            ty::BOOLEAN => {
                let b = value
                    .cast::<pyo3::types::PyBool>()
                    .map_err(|_| wrong("Boolean must be a bool"))?;
                w.boolean(tag, b.is_true())
            }
            ty::TEXT_STRING => {
                let s = value
                    .cast::<PyString>()
                    .map_err(|_| wrong("Text String must be a str"))?;
                let text = s
                    .to_str()
                    .map_err(|_| wrong("Text String must be valid Unicode"))?;
                w.text_string(tag, text, self.max_field)
            }
            ty::BYTE_STRING => {
                if let Ok(b) = value.cast::<PyBytes>() {
                    w.byte_string(tag, b.as_bytes(), self.max_field)
                } else if let Ok(sealed) = value.cast::<SealedKey>() {
                    return sealed.get().write_into(w, tag);
                } else if value.cast::<PyByteArray>().is_ok()
                    || value.cast::<pyo3::types::PyMemoryView>().is_ok()
                {
                    let owned = buffer_bytes(&value)?;
                    w.byte_string(tag, &owned, self.max_field)
                } else {
                    return Err(wrong("Byte String must be bytes-like or a SealedKey"));
                }
            }
            ty::BIG_INTEGER => {
                let int = value
                    .cast::<PyInt>()
                    .map_err(|_| wrong("Big Integer must be an int"))?;
                let bytes = big_int_bytes(self.py, &int.to_owned())?;
                w.big_integer(tag, &bytes, self.max_field)
            }
            other => Err(TtlvError::new(ErrorKind::UnknownType, at, Some(tag))
                .with_detail(format!("type 0x{other:02X}"))),
        };
        r.map_err(|e| ttlv_err(e, true))
    }
}

/// Canonical Big Integer bytes of a Python int.
fn big_int_bytes(py: Python<'_>, int: &Bound<'_, PyInt>) -> PyResult<Vec<u8>> {
    // For a negative value the two's complement needs the bits of its one's
    // complement (e.g. -2^63 fits 64 bits, though bit_length() says 64 + sign).
    let negative = int.lt(0)?;
    let magnitude = if negative {
        int.call_method0("__invert__")?
    } else {
        int.clone().into_any()
    };
    let bits: usize = magnitude.call_method0("bit_length")?.extract()?;
    let n = (bits + 1).div_ceil(8).max(1); // +1: room for the sign bit
    let n = n.div_ceil(8) * 8;
    let kwargs = pyo3::types::PyDict::new(py);
    kwargs.set_item("signed", true)?;
    let b = int.call_method("to_bytes", (n, "big"), Some(&kwargs))?;
    let b = b.cast::<PyBytes>()?;
    Ok(b.as_bytes().to_vec())
}

/// Encodes a `(tag, type, value)` tree.  A Byte String may hold a `SealedKey`: its key
/// is unwrapped straight into the output, whose scratch buffer is wiped after the copy.
#[pyfunction]
#[pyo3(signature = (item, *, max_field_size = DEFAULT_MAX))]
fn encode<'py>(
    py: Python<'py>,
    item: &Bound<'py, PyAny>,
    max_field_size: usize,
) -> PyResult<Bound<'py, PyBytes>> {
    let mut enc = PyEncoder {
        py,
        w: Writer::with_capacity(256),
        max_field: max_field_size,
    };
    let result = enc.item(item);
    let buf = Zeroizing::new(std::mem::take(&mut enc.w.buf));
    result?;
    Ok(PyBytes::new(py, &buf))
}

// ---- AES key wrap -------------------------------------------------------------------

fn kek_of(key: &Bound<'_, PyAny>) -> PyResult<Kek> {
    with_bytes(key, Kek::new)?.map_err(wrap_err)
}

fn plain_out<'py>(py: Python<'py>, plain: &[u8]) -> Bound<'py, PyByteArray> {
    PyByteArray::new(py, plain)
}

/// RFC 3394 AES Key Wrap.
#[pyfunction]
fn aes_key_wrap<'py>(
    py: Python<'py>,
    wrapping_key: &Bound<'py, PyAny>,
    key_to_wrap: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyBytes>> {
    let kek = kek_of(wrapping_key)?;
    let out = with_bytes(key_to_wrap, |k| kek.wrap(k))?.map_err(wrap_err)?;
    Ok(PyBytes::new(py, &out))
}

/// RFC 3394 AES Key Unwrap; the key comes back as a bytearray the caller can wipe.
#[pyfunction]
fn aes_key_unwrap<'py>(
    py: Python<'py>,
    wrapping_key: &Bound<'py, PyAny>,
    wrapped_key: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyByteArray>> {
    let kek = kek_of(wrapping_key)?;
    let plain = with_bytes(wrapped_key, |w| kek.unwrap(w))?.map_err(wrap_err)?;
    Ok(plain_out(py, &plain))
}

/// RFC 5649 AES Key Wrap with Padding.
#[pyfunction]
fn aes_key_wrap_with_padding<'py>(
    py: Python<'py>,
    wrapping_key: &Bound<'py, PyAny>,
    key_to_wrap: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyBytes>> {
    let kek = kek_of(wrapping_key)?;
    let out = with_bytes(key_to_wrap, |k| kek.wrap_with_padding(k))?.map_err(wrap_err)?;
    Ok(PyBytes::new(py, &out))
}

/// RFC 5649 AES Key Unwrap with Padding; returns a bytearray the caller can wipe.
#[pyfunction]
fn aes_key_unwrap_with_padding<'py>(
    py: Python<'py>,
    wrapping_key: &Bound<'py, PyAny>,
    wrapped_key: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyByteArray>> {
    let kek = kek_of(wrapping_key)?;
    let plain = with_bytes(wrapped_key, |w| kek.unwrap_with_padding(w))?.map_err(wrap_err)?;
    Ok(plain_out(py, &plain))
}

// ---- tenant master keys ----------------------------------------------------------------

/// A tenant master key (AES-256) held only in native memory, zeroized when dropped or
/// wiped.  It seals object keys bound to their object and opens them into responses.
#[pyclass(frozen, module = "kmipfast._native")]
pub struct MasterKey {
    kek: RwLock<Option<Held>>,
}

struct Held {
    kek: Kek,
    secret: Zeroizing<Vec<u8>>,
}

impl MasterKey {
    /// Takes ownership of a secret produced in Rust (e.g. by the HSM module).
    pub fn from_secret(secret: Zeroizing<Vec<u8>>) -> PyResult<MasterKey> {
        if secret.len() != 32 {
            return Err(PyValueError::new_err("a master key is 32 bytes"));
        }
        Ok(MasterKey {
            kek: RwLock::new(Some(Held {
                kek: Kek::new(&secret).map_err(wrap_err)?,
                secret,
            })),
        })
    }

    fn with_kek<T>(&self, f: impl FnOnce(&Kek) -> PyResult<T>) -> PyResult<T> {
        let guard = self
            .kek
            .read()
            .map_err(|_| PyValueError::new_err("master key lock poisoned"))?;
        match guard.as_ref() {
            Some(h) => f(&h.kek),
            None => Err(InvalidUnwrap::new_err("master key has been wiped")),
        }
    }
}

fn random_secret(n: usize) -> PyResult<Zeroizing<Vec<u8>>> {
    let mut s = Zeroizing::new(vec![0u8; n]);
    getrandom::fill(&mut s)
        .map_err(|e| PyValueError::new_err(format!("system RNG failed: {e}")))?;
    Ok(s)
}

#[pymethods]
impl MasterKey {
    /// A fresh random master key from the operating system's RNG.
    #[staticmethod]
    fn generate() -> PyResult<MasterKey> {
        MasterKey::from_secret(random_secret(32)?)
    }

    /// Copies a 32-byte key given by Python (the caller wipes its own bytearray).
    #[staticmethod]
    fn from_bytes(key: &Bound<'_, PyAny>) -> PyResult<MasterKey> {
        let secret = with_bytes(key, |k| Zeroizing::new(k.to_vec()))?;
        MasterKey::from_secret(secret)
    }

    /// Seals `key` bound to `binding` (RFC 5649 over `len || binding || key`).
    fn seal<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        binding: &[u8],
    ) -> PyResult<Bound<'py, PyBytes>> {
        let blob = self
            .with_kek(|kek| with_bytes(key, |k| kek.seal_bound(k, binding))?.map_err(wrap_err))?;
        Ok(PyBytes::new(py, &blob))
    }

    /// Generates a random key of `length` bytes inside native code and returns it only
    /// sealed: the plaintext never exists in Python.
    fn seal_random<'py>(
        &self,
        py: Python<'py>,
        length: usize,
        binding: &[u8],
    ) -> PyResult<Bound<'py, PyBytes>> {
        if length == 0 || length > 1024 {
            return Err(PyValueError::new_err(
                "random key length must be 1..1024 bytes",
            ));
        }
        let secret = random_secret(length)?;
        let blob = self.with_kek(|kek| kek.seal_bound(&secret, binding).map_err(wrap_err))?;
        Ok(PyBytes::new(py, &blob))
    }

    /// Opens a sealed key into a bytearray the caller must wipe.  Prefer `SealedKey`,
    /// which unwraps straight into an encoded response.
    fn open<'py>(
        &self,
        py: Python<'py>,
        blob: &[u8],
        binding: &[u8],
    ) -> PyResult<Bound<'py, PyByteArray>> {
        self.with_kek(|kek| {
            kek.open_bound_into(blob, binding, |k| Ok(plain_out(py, k)))
                .map_err(wrap_err)
        })
    }

    /// SHA-256 of the key sealed in `blob` (the Digest attribute, KMIP 1.4 §3.17),
    /// computed without the key leaving native code.
    fn digest<'py>(
        &self,
        py: Python<'py>,
        blob: &[u8],
        binding: &[u8],
    ) -> PyResult<Bound<'py, PyBytes>> {
        use sha2::Digest;
        let d = self.with_kek(|kek| {
            kek.open_bound_into(blob, binding, |k| Ok(sha2::Sha256::digest(k)))
                .map_err(wrap_err)
        })?;
        Ok(PyBytes::new(py, &d))
    }

    /// Length of the key sealed in `blob`, checking integrity and binding.
    fn sealed_length(&self, blob: &[u8], binding: &[u8]) -> PyResult<usize> {
        self.with_kek(|kek| {
            kek.open_bound_into(blob, binding, |k| Ok(k.len()))
                .map_err(wrap_err)
        })
    }

    /// Moves a sealed key from this master key to `target` (rotation, re-encryption)
    /// without the plaintext leaving native code.
    fn reseal<'py>(
        &self,
        py: Python<'py>,
        blob: &[u8],
        binding: &[u8],
        target: &MasterKey,
        new_binding: &[u8],
    ) -> PyResult<Bound<'py, PyBytes>> {
        let out = self.with_kek(|kek| {
            kek.open_bound_into(blob, binding, |k| {
                target
                    .with_kek(|t| t.seal_bound(k, new_binding).map_err(wrap_err))
                    .map_err(|_| WrapError::IntegrityCheckFailed)
            })
            .map_err(wrap_err)
        })?;
        Ok(PyBytes::new(py, &out))
    }

    /// Seals another master key under this one (software root, development only).
    fn seal_master<'py>(
        &self,
        py: Python<'py>,
        other: &MasterKey,
        binding: &[u8],
    ) -> PyResult<Bound<'py, PyBytes>> {
        let secret = other.export_secret()?;
        let blob = self.with_kek(|kek| kek.seal_bound(&secret, binding).map_err(wrap_err))?;
        Ok(PyBytes::new(py, &blob))
    }

    /// Opens a master key sealed by `seal_master`.
    fn open_master(&self, blob: &[u8], binding: &[u8]) -> PyResult<MasterKey> {
        let secret = self.with_kek(|kek| kek.open_bound(blob, binding).map_err(wrap_err))?;
        MasterKey::from_secret(secret)
    }

    /// Drops the key schedule now (crypto-shredding); later use raises InvalidUnwrap.
    fn wipe(&self) -> PyResult<()> {
        let mut guard = self
            .kek
            .write()
            .map_err(|_| PyValueError::new_err("master key lock poisoned"))?;
        *guard = None;
        Ok(())
    }

    #[getter]
    fn wiped(&self) -> PyResult<bool> {
        Ok(self
            .kek
            .read()
            .map_err(|_| PyValueError::new_err("master key lock poisoned"))?
            .is_none())
    }

    fn __repr__(&self) -> &'static str {
        "<MasterKey (hidden)>"
    }
}

impl MasterKey {
    /// A copy of the raw key, for sealing it under a root key (HSM or software root).
    pub fn export_secret(&self) -> PyResult<Zeroizing<Vec<u8>>> {
        let guard = self
            .kek
            .read()
            .map_err(|_| PyValueError::new_err("master key lock poisoned"))?;
        match guard.as_ref() {
            Some(h) => Ok(h.secret.clone()),
            None => Err(InvalidUnwrap::new_err("master key has been wiped")),
        }
    }
}

/// A sealed object key on its way into a response: encode() unwraps it into the output.
#[pyclass(frozen, module = "kmipfast._native")]
pub struct SealedKey {
    master: Py<MasterKey>,
    blob: Vec<u8>,
    binding: Vec<u8>,
    /// The sealed bytes are a whole encoded TTLV item, written verbatim in place of
    /// the item that holds this SealedKey (objects stored as items, e.g. certificates).
    item: bool,
}

impl SealedKey {
    fn write_into(&self, w: &mut Writer, tag: u32) -> PyResult<()> {
        let master = self.master.get();
        master.with_kek(|kek| {
            let mut result = Ok(());
            kek.open_bound_into(&self.blob, &self.binding, |k| {
                result = if self.item {
                    w.raw_item(tag, k)
                } else {
                    w.byte_string_with(tag, k.len(), |out| {
                        out.copy_from_slice(k);
                        Ok(())
                    })
                };
                Ok(())
            })
            .map_err(wrap_err)?;
            result.map_err(|e| ttlv_err(e, true))
        })
    }
}

#[pymethods]
impl SealedKey {
    #[new]
    #[pyo3(signature = (master, blob, binding, *, item = false))]
    fn new(master: Py<MasterKey>, blob: Vec<u8>, binding: Vec<u8>, item: bool) -> SealedKey {
        SealedKey {
            master,
            blob,
            binding,
            item,
        }
    }

    fn __repr__(&self) -> &'static str {
        "<SealedKey (hidden)>"
    }
}

#[pymodule(gil_used = false)]
mod _native {
    #[pymodule_export]
    use super::{
        aes_key_unwrap, aes_key_unwrap_with_padding, aes_key_wrap, aes_key_wrap_with_padding,
        decode, encode, frame_length, read_header, MasterKey, SealedKey,
    };

    #[pymodule_init]
    fn init(m: &pyo3::Bound<'_, pyo3::types::PyModule>) -> pyo3::PyResult<()> {
        use pyo3::types::PyModuleMethods;
        m.add("__version__", env!("CARGO_PKG_VERSION"))?;
        super::py_tls::register(m)?;
        super::py_hsm::register(m)
    }
}
