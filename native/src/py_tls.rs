//! Python binding of `tls`: `kmipfast._native.TlsConfig`, `TlsSession`, `peek_client_hello`.
//!
//! One call per `data_received` (`TlsSession.receive`: TLS records in, bytes to write and
//! decoded KMIP requests out) and one per response (`TlsSession.send`: a tree in, encrypted
//! bytes out).  rustls work runs with the GIL released; the TTLV trees are built and read
//! with the same builder and encoder as `decode`/`encode`.  Failures raise
//! `kmipfast.errors.TlsError`, which carries the bytes still to write (an alert).

use std::sync::{Arc, Mutex, MutexGuard};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyList, PyString};
use zeroize::Zeroizing;

use crate::tls::{self, PeerIdentity, ServerSession, Settings, TlsFailure};
use crate::ttlv::{self, Limits, Writer};
use crate::{PyBuilder, PyEncoder, TtlvDecodeError};

pyo3::import_exception!(kmipfast.errors, TlsError);

const DEFAULT_MAX: usize = 16 * 1024 * 1024;
/// Above this many bytes in or out, a session call releases the GIL (see `with_session`).
const DETACH_ABOVE: usize = 64 * 1024;

fn tls_err(py: Python<'_>, f: TlsFailure) -> PyErr {
    let (fp, subject, issuer) = match f.peer {
        Some(p) => {
            let p = *p;
            (Some(p.fingerprint), Some(p.subject), Some(p.issuer))
        }
        None => (None, None, None),
    };
    TlsError::new_err((
        f.reason,
        f.message,
        PyBytes::new(py, &f.to_write).unbind(),
        fp,
        subject,
        issuer,
    ))
}

fn config_err(e: tls::ConfigError) -> PyErr {
    PyValueError::new_err(e.to_string())
}

/// Copies a bytes-like object into a zeroizing buffer (PEM keys, received bytes).
fn owned_bytes(obj: &Bound<'_, PyAny>) -> PyResult<Zeroizing<Vec<u8>>> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(Zeroizing::new(b.as_bytes().to_vec()));
    }
    if let Ok(b) = obj.cast::<PyByteArray>() {
        return Ok(Zeroizing::new(b.to_vec()));
    }
    let buf = pyo3::buffer::PyBuffer::<u8>::get(obj)
        .map_err(|_| PyTypeError::new_err("expected a bytes-like object"))?;
    Ok(Zeroizing::new(buf.to_vec(obj.py())?))
}

/// Certificates, trust and resumption state for the TLS sessions of a server.
#[pyclass(frozen, name = "TlsConfig", module = "kmipfast._native")]
pub struct PyTlsConfig {
    inner: Arc<tls::TlsConfig>,
}

#[pymethods]
impl PyTlsConfig {
    #[new]
    #[pyo3(signature = (
        cert_chain_pem, key_pem, ca_roots_pem, allowed_fingerprints,
        max_message_size = DEFAULT_MAX, *, extra_cert_chain_pem = None, extra_key_pem = None,
        session_cache_size = 8192, tickets = true, min_version = "1.2",
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        cert_chain_pem: &Bound<'_, PyAny>,
        key_pem: &Bound<'_, PyAny>,
        ca_roots_pem: &Bound<'_, PyAny>,
        allowed_fingerprints: Vec<String>,
        max_message_size: usize,
        extra_cert_chain_pem: Option<&Bound<'_, PyAny>>,
        extra_key_pem: Option<&Bound<'_, PyAny>>,
        session_cache_size: usize,
        tickets: bool,
        min_version: &str,
    ) -> PyResult<PyTlsConfig> {
        let mut s = Settings::new(
            &owned_bytes(cert_chain_pem)?,
            &owned_bytes(key_pem)?,
            &owned_bytes(ca_roots_pem)?,
        );
        s.allowed_fingerprints = allowed_fingerprints;
        s.max_message_size = max_message_size;
        s.extra_cert_chain_pem = extra_cert_chain_pem
            .map(|b| owned_bytes(b).map(|z| z.to_vec()))
            .transpose()?;
        s.extra_key_pem = extra_key_pem.map(owned_bytes).transpose()?;
        s.session_cache_size = session_cache_size;
        s.tickets = tickets;
        s.min_version = min_version.to_string();
        let inner = py.detach(|| tls::TlsConfig::new(&s)).map_err(config_err)?;
        Ok(PyTlsConfig { inner })
    }

    /// Replaces CA roots and allowed fingerprints for sessions started from now on; resumed
    /// sessions are checked against the new ones too.
    fn update(
        &self,
        py: Python<'_>,
        ca_roots_pem: &Bound<'_, PyAny>,
        allowed_fingerprints: Vec<String>,
    ) -> PyResult<()> {
        let roots = owned_bytes(ca_roots_pem)?;
        py.detach(|| self.inner.update(&roots, &allowed_fingerprints))
            .map_err(config_err)
    }

    fn is_allowed(&self, fingerprint: &str) -> bool {
        self.inner.is_allowed(fingerprint)
    }

    /// Like the module's `peek_client_hello`, for this config's certificates and versions.
    fn peek_client_hello(&self, data: &[u8]) -> Option<&'static str> {
        self.inner.choose_engine(data).map(|e| e.name())
    }

    #[getter]
    fn max_message_size(&self) -> usize {
        self.inner.max_message_size()
    }

    fn __repr__(&self) -> String {
        format!(
            "<TlsConfig max_message_size={}>",
            self.inner.max_message_size()
        )
    }
}

/// One server-side TLS connection, owned by the connection's protocol object.
#[pyclass(frozen, name = "TlsSession", module = "kmipfast._native")]
pub struct PyTlsSession {
    inner: Mutex<ServerSession>,
    limits: Limits,
}

impl PyTlsSession {
    fn lock(&self) -> MutexGuard<'_, ServerSession> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` on the session, releasing the GIL only for heavy work.  Taking the GIL
    /// back means waiting whenever another thread (the store or audit writer) took it
    /// meanwhile, which costs far more than the microsecond a small record needs; a
    /// handshake's public-key work or a large run of records is worth it.
    fn with_session<T: Send>(
        &self,
        py: Python<'_>,
        heavy: bool,
        f: impl FnOnce(&mut ServerSession) -> T + Send,
    ) -> T {
        if heavy {
            py.detach(|| f(&mut self.lock()))
        } else {
            f(&mut self.lock())
        }
    }

    fn heavy_receive(&self, len: usize) -> bool {
        len > DETACH_ABOVE || !self.lock().handshake_done()
    }

    fn peer_field(&self, f: impl Fn(&PeerIdentity) -> String) -> Option<String> {
        self.lock().peer().map(f)
    }
}

#[pymethods]
impl PyTlsSession {
    #[new]
    fn new(py: Python<'_>, config: &PyTlsConfig) -> PyResult<PyTlsSession> {
        let session = ServerSession::new(&config.inner).map_err(|f| tls_err(py, f))?;
        let max = config.inner.max_message_size();
        Ok(PyTlsSession {
            inner: Mutex::new(session),
            limits: Limits {
                max_message: max,
                max_field: max,
                max_depth: ttlv::DEFAULT_MAX_DEPTH,
            },
        })
    }

    /// Feeds bytes from the network.  Returns `(to_write, items)`: each item is a decoded
    /// request tree, or a `TtlvDecodeError` instance for a frame that is not valid TTLV.
    /// Raises `TlsError` (with `.to_write`) when the session must end.
    fn receive<'py>(
        &self,
        py: Python<'py>,
        data: &Bound<'py, PyAny>,
    ) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyList>)> {
        let got = if let Ok(b) = data.cast::<PyBytes>() {
            let bytes = b.as_bytes();
            let heavy = self.heavy_receive(bytes.len());
            self.with_session(py, heavy, |s| s.receive(bytes))
        } else {
            let owned = owned_bytes(data)?;
            let heavy = self.heavy_receive(owned.len());
            self.with_session(py, heavy, |s| s.receive(&owned))
        };
        let got = got.map_err(|f| tls_err(py, f))?;
        let items = PyList::empty(py);
        for frame in &got.frames {
            let mut b = PyBuilder { py };
            match ttlv::decode(frame, &self.limits, &mut b) {
                Ok(tree) => items.append(tree)?,
                Err(e) if e.is_instance_of::<TtlvDecodeError>(py) => {
                    items.append(e.into_value(py))?
                }
                Err(e) => return Err(e),
            }
        }
        Ok((PyBytes::new(py, &got.to_write), items))
    }

    /// Encodes a response tree (SealedKey values opened straight into the buffer, which is
    /// wiped) and encrypts it.
    fn send<'py>(
        &self,
        py: Python<'py>,
        tree: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let mut enc = PyEncoder {
            py,
            w: Writer::with_capacity(256),
            max_field: self.limits.max_field,
        };
        let result = enc.item(tree);
        let plain = Zeroizing::new(std::mem::take(&mut enc.w.buf));
        result?;
        let out = self
            .with_session(py, plain.len() > DETACH_ABOVE, |s| s.send(&plain))
            .map_err(|f| tls_err(py, f))?;
        Ok(PyBytes::new(py, &out))
    }

    /// Encrypts an already encoded message.
    fn send_encoded<'py>(
        &self,
        py: Python<'py>,
        data: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let plain = owned_bytes(data)?;
        let out = self
            .with_session(py, plain.len() > DETACH_ABOVE, |s| s.send(&plain))
            .map_err(|f| tls_err(py, f))?;
        Ok(PyBytes::new(py, &out))
    }

    /// close_notify: write these bytes, then close the transport.
    fn close<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let out = self.lock().close();
        PyBytes::new(py, &out)
    }

    #[getter]
    fn handshake_done(&self) -> bool {
        self.lock().handshake_done()
    }

    #[getter]
    fn resumed(&self) -> bool {
        self.lock().resumed()
    }

    /// The peer sent close_notify.
    #[getter]
    fn peer_closed(&self) -> bool {
        self.lock().peer_closed()
    }

    #[getter]
    fn peer_fingerprint(&self) -> Option<String> {
        self.peer_field(|p| p.fingerprint.clone())
    }

    #[getter]
    fn peer_subject(&self) -> Option<String> {
        self.peer_field(|p| p.subject.clone())
    }

    #[getter]
    fn peer_issuer(&self) -> Option<String> {
        self.peer_field(|p| p.issuer.clone())
    }

    /// DER of the client certificate: the verified one, or the one that was refused.
    #[getter]
    fn peer_certificate<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        let der = self.lock().peer_certificate()?;
        Some(PyBytes::new(py, &der))
    }

    #[getter]
    fn peer_not_after(&self) -> Option<i64> {
        self.lock().peer().map(|p| p.not_after)
    }

    #[getter]
    fn protocol_version(&self) -> Option<&'static str> {
        self.lock().protocol_version()
    }

    #[getter]
    fn cipher_suite(&self) -> Option<&'static str> {
        self.lock().cipher_suite()
    }

    /// The reason code of the failure that ended the session, if any.
    #[getter]
    fn error(&self) -> Option<&'static str> {
        self.lock().error().map(|(reason, _)| reason)
    }

    fn __repr__(&self) -> String {
        let s = self.lock();
        match s.peer() {
            Some(p) => format!("<TlsSession peer={}>", p.fingerprint),
            None => "<TlsSession>".to_string(),
        }
    }
}

/// `None` until the ClientHello is complete, then `"rustls"` or `"openssl"` (legacy
/// clients: only TLS < 1.2, or no ECDHE + AEAD suite rustls serves).  Assumes a server
/// with an ECDSA P-256 and an RSA certificate; `TlsConfig.peek_client_hello` knows better.
#[pyfunction]
fn peek_client_hello(data: &Bound<'_, PyAny>) -> PyResult<Option<&'static str>> {
    if let Ok(s) = data.cast::<PyString>() {
        return Err(PyTypeError::new_err(format!(
            "expected bytes, got str {:?}",
            s.to_str().unwrap_or("")
        )));
    }
    let owned = owned_bytes(data)?;
    Ok(tls::peek_client_hello(&owned).map(|e| e.name()))
}

/// Adds `TlsConfig`, `TlsSession` and `peek_client_hello` to the native module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyTlsConfig>()?;
    m.add_class::<PyTlsSession>()?;
    m.add_function(wrap_pyfunction!(peek_client_hello, m)?)
}
