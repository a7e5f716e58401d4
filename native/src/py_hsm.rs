//! Python binding of `hsm`: `kmipfast._native.Hsm`.
//!
//! Every method releases the GIL for the whole HSM call. Tenant master keys are generated and
//! unsealed here and handed to Python only as `MasterKey` objects: their plaintext never
//! becomes a Python object. Errors map to the exceptions of `kmipfast/errors.py`.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyString};
use zeroize::Zeroizing;

use crate::hsm::{self, HsmConfig, HsmError};
use crate::MasterKey;

use exc::{HsmIntegrityError, HsmKeyNotFound, HsmUnavailable};

/// The Python exception classes; in a module of their own because the base class shares its
/// name with `hsm::HsmError`.
mod exc {
    pyo3::import_exception!(kmipfast.errors, HsmError);
    pyo3::import_exception!(kmipfast.errors, HsmUnavailable);
    pyo3::import_exception!(kmipfast.errors, HsmKeyNotFound);
    pyo3::import_exception!(kmipfast.errors, HsmIntegrityError);
}

/// Length of a tenant master key (AES-256).
const MASTER_KEY_LEN: usize = 32;

fn hsm_err(e: HsmError) -> PyErr {
    let msg = e.to_string();
    match e {
        HsmError::Unavailable(_) | HsmError::ModuleLoad(_) | HsmError::TokenNotFound(_) => {
            HsmUnavailable::new_err(msg)
        }
        HsmError::KeyNotFound(_) => HsmKeyNotFound::new_err(msg),
        HsmError::Integrity => HsmIntegrityError::new_err(msg),
        HsmError::InvalidArgument(_) => PyValueError::new_err(msg),
        HsmError::Login(_) | HsmError::KeyExists(_) | HsmError::Pkcs11(_) => {
            exc::HsmError::new_err(msg)
        }
    }
}

/// The PIN as `str` or `bytearray` (which the caller can wipe afterwards); copied once into a
/// zeroizing buffer. Never echoed in an error.
fn pin_of(pin: &Bound<'_, PyAny>) -> PyResult<Zeroizing<String>> {
    if let Ok(s) = pin.cast::<PyString>() {
        return Ok(Zeroizing::new(s.to_str()?.to_owned()));
    }
    if let Ok(b) = pin.cast::<PyByteArray>() {
        let bytes = Zeroizing::new(b.to_vec());
        return match std::str::from_utf8(&bytes) {
            Ok(s) => Ok(Zeroizing::new(s.to_owned())),
            Err(_) => Err(PyValueError::new_err("the PIN is not valid UTF-8")),
        };
    }
    Err(PyTypeError::new_err("the PIN must be str or bytearray"))
}

/// A PKCS#11 token holding the tenant root keys, with a pool of logged-in sessions.
#[pyclass(frozen, name = "Hsm", module = "kmipfast._native")]
pub struct PyHsm {
    inner: hsm::Hsm,
}

#[pymethods]
impl PyHsm {
    /// Loads `module`, finds the token labelled `token_label` and logs in with `pin`.
    #[staticmethod]
    #[pyo3(signature = (module, token_label, pin, max_sessions = 4))]
    fn open(
        py: Python<'_>,
        module: std::path::PathBuf,
        token_label: String,
        pin: &Bound<'_, PyAny>,
        max_sessions: usize,
    ) -> PyResult<PyHsm> {
        let cfg = HsmConfig {
            module,
            token_label,
            pin: pin_of(pin)?,
            max_sessions,
        };
        let inner = py.detach(|| hsm::Hsm::open(cfg)).map_err(hsm_err)?;
        Ok(PyHsm { inner })
    }

    /// Creates the tenant root key `label` (AES-256, non-extractable) in the token.
    fn generate_root_key(&self, py: Python<'_>, label: &str) -> PyResult<()> {
        py.detach(|| self.inner.generate_root_key(label))
            .map_err(hsm_err)
    }

    fn root_key_exists(&self, py: Python<'_>, label: &str) -> PyResult<bool> {
        py.detach(|| self.inner.root_key_exists(label))
            .map_err(hsm_err)
    }

    /// Destroys the root key `label`: every master key sealed under it becomes unrecoverable.
    fn destroy_root_key(&self, py: Python<'_>, label: &str) -> PyResult<()> {
        py.detach(|| self.inner.destroy_root_key(label))
            .map_err(hsm_err)
    }

    /// Destroys the root key `label` and asks the token again afterwards. Returns
    /// `(handles, handles_still_found, label_still_found)`: the key's handles before the
    /// destroy, those that still name it after, and how many keys the label still finds.
    fn shred_root_key(&self, py: Python<'_>, label: &str) -> PyResult<(Vec<u64>, Vec<u64>, usize)> {
        let proof = py
            .detach(|| self.inner.shred_root_key(label))
            .map_err(hsm_err)?;
        Ok((
            proof.handles,
            proof.handles_still_found,
            proof.label_still_found,
        ))
    }

    /// The uncompressed P-256 point (65 bytes) of the signing key pair `label`, generated in
    /// the token (private key non-extractable) the first time it is asked for.
    fn signing_public_key<'py>(
        &self,
        py: Python<'py>,
        label: &str,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let point = py
            .detach(|| self.inner.signing_public_key(label))
            .map_err(hsm_err)?;
        Ok(PyBytes::new(py, &point))
    }

    /// ECDSA P-256 over a SHA-256 `digest` (32 bytes) with the private key `label`, in the
    /// token; returns `r || s` (64 bytes).
    fn sign_digest<'py>(
        &self,
        py: Python<'py>,
        label: &str,
        digest: &[u8],
    ) -> PyResult<Bound<'py, PyBytes>> {
        let sig = py
            .detach(|| self.inner.sign_digest(label, digest))
            .map_err(hsm_err)?;
        Ok(PyBytes::new(py, &sig))
    }

    /// Raises `HsmUnavailable` unless a logged-in session can be had.
    fn ping(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.inner.ping()).map_err(hsm_err)
    }

    /// A fresh master key from the HSM's RNG, sealed under root key `label` with `aad` bound
    /// in. Returns `(sealed, key)`; store `sealed`, keep `key`.
    fn new_master_key<'py>(
        &self,
        py: Python<'py>,
        label: &str,
        aad: &[u8],
    ) -> PyResult<(Bound<'py, PyBytes>, MasterKey)> {
        let (sealed, secret) = py
            .detach(|| {
                let secret = self.inner.random(MASTER_KEY_LEN)?;
                let sealed = self.inner.seal(label, &secret, aad)?;
                Ok((sealed, secret))
            })
            .map_err(hsm_err)?;
        Ok((PyBytes::new(py, &sealed), MasterKey::from_secret(secret)?))
    }

    /// Seals an existing master key under root key `label` (root rotation: the same
    /// master key, a new root key), without the key leaving native code.
    fn seal_master_key<'py>(
        &self,
        py: Python<'py>,
        label: &str,
        master: &MasterKey,
        aad: &[u8],
    ) -> PyResult<Bound<'py, PyBytes>> {
        let secret = master.export_secret()?;
        let sealed = py
            .detach(|| self.inner.seal(label, &secret, aad))
            .map_err(hsm_err)?;
        Ok(PyBytes::new(py, &sealed))
    }

    /// Re-initializes the PKCS#11 library and finds the token again (a token that went
    /// away and came back); `HsmUnavailable` while it is still away.
    fn reinitialize(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.inner.reinitialize()).map_err(hsm_err)
    }

    /// Opens a blob made by `new_master_key` with the same `label` and `aad`.
    fn unseal_master_key(
        &self,
        py: Python<'_>,
        label: &str,
        sealed: &[u8],
        aad: &[u8],
    ) -> PyResult<MasterKey> {
        let secret = py
            .detach(|| self.inner.unseal(label, sealed, aad))
            .map_err(hsm_err)?;
        MasterKey::from_secret(secret)
    }

    fn __repr__(&self) -> String {
        format!("<Hsm {:?}>", self.inner)
    }
}

/// Adds `Hsm` to the native module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyHsm>()
}
