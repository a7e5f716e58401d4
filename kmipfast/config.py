"""One typed configuration object, read once and validated at start-up (DESIGN §7).

Sources, later ones winning:
  1. defaults (the dataclass field defaults below),
  2. `<data_dir>/kmipfast.toml`,
  3. the environment: `KMIPFAST_<SECTION>_<KEY>`, e.g. `KMIPFAST_SERVER_LISTEN=0.0.0.0:5696`,
  4. explicit overrides (from the command line), keyed `section.key` or like the environment.

Every setting is declared once, as a dataclass field whose metadata holds its
bounds (or check) and the comment `kmipfast init` writes next to it; loading,
string conversion, validation and the default file are all derived from that
table. A bad value is a `ConfigError` whose one-line message starts with the
key (`limits.max_message_size must be between ...`), so the operator knows
what to fix. Relative paths resolve against the data dir.

No secret is ever part of the configuration: the HSM PIN is read by
`read_pin` from a 0600 file or a named environment variable, into a
`bytearray` the caller wipes.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
import re
import stat
import tomllib
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from kmipfast.pki import write_file_atomic

__all__ = [
    "CONFIG_FILE",
    "SECTIONS",
    "AuditConfig",
    "ClientsConfig",
    "Config",
    "ConfigError",
    "HsmConfig",
    "LimitsConfig",
    "ServerConfig",
    "StoreConfig",
    "data_dir_from",
    "load_config",
    "parse_listen",
    "read_pin",
    "render_config",
    "write_default_config",
    "write_pin_file",
]

CONFIG_FILE = "kmipfast.toml"
ENV_PREFIX = "KMIPFAST_"
DEFAULT_DATA_DIR = "kmipfast-data"
_MAX_PIN_BYTES = 256


class ConfigError(Exception):
    """The configuration is unusable; the one-line message names the key and the fix."""


# --- checks used in the field table --------------------------------------------
# Each returns None when the value is fine, else a phrase completing "<key> ...".

Check = Callable[[Any], str | None]


def _between(lo: float, hi: float) -> Check:
    def check(v: Any) -> str | None:
        return None if lo <= v <= hi else f"must be between {lo} and {hi}"

    return check


def _one_of(*choices: str) -> Check:
    def check(v: Any) -> str | None:
        return None if v in choices else "must be one of " + ", ".join(repr(c) for c in choices)

    return check


def _non_empty(v: Any) -> str | None:
    return None if v.strip() else "must not be empty"


def _listen_check(v: Any) -> str | None:
    try:
        _parse_listen(v)
    except ValueError as e:
        return str(e)
    return None


def _admin_listen_check(v: Any) -> str | None:
    return None if v.strip() in ("", "off") else _listen_check(v)


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _env_name_check(v: Any) -> str | None:
    if v == "" or _ENV_NAME.fullmatch(v):
        return None
    return "must be empty or the name of an environment variable (letters, digits, _)"


def _token_label_check(v: Any) -> str | None:
    # PKCS#11 CK_TOKEN_INFO.label is 32 bytes, blank padded.
    n = len(v.encode())
    return (
        None if 0 < n <= 32 and v == v.rstrip() else "must be 1 to 32 bytes without trailing blanks"
    )


def _store_url_check(v: Any) -> str | None:
    if v.startswith("sqlite:///") and len(v) > len("sqlite:///"):
        return None
    if v.startswith(("postgresql://", "postgres://")):
        return None
    return "must be sqlite:///<path> (relative to the data dir; sqlite:////<absolute path>) or postgresql://..."


def _setting(default: Any, doc: str, check: Check | None = None, *, show: bool = True) -> Any:
    """A field of the settings table: its default, the comment written by `init`, its check."""
    return field(default=default, repr=show, metadata={"doc": doc, "check": check})


# --- the settings ------------------------------------------------------------------


@dataclass(frozen=True)
class ServerConfig:
    listen: str = _setting(
        "127.0.0.1:5696",
        "address and port of the KMIP listener; [::]:5696 for all IPv6",
        _listen_check,
    )
    cert: str = _setting("tls/server.crt", "server certificate chain (PEM, leaf first)", _non_empty)
    key: str = _setting("tls/server.key", "server private key (PEM, mode 0600)", _non_empty)
    ca: str = _setting(
        "tls/ca.crt", "CA certificate(s) trusted for client certificates", _non_empty
    )
    ca_key: str = _setting(
        "tls/ca.key", "CA private key used by sign-csr and client issue", _non_empty
    )
    tls_min_version: str = _setting(
        "1.2",
        "lowest TLS version accepted; 1.0 and 1.1 only for legacy clients, and only on the "
        "openssl engine (auto hands such clients to it)",
        _one_of("1.0", "1.1", "1.2", "1.3"),
    )
    tls_engine: str = _setting(
        "auto",
        "TLS engine: auto (rustls when the ClientHello allows, else OpenSSL), rustls "
        "(native; TLS 1.2/1.3 ECDHE+AEAD only) or openssl (Python's ssl)",
        _one_of("auto", "rustls", "openssl"),
    )
    workers: int = _setting(1, "worker processes", _between(1, 256))
    admin_listen: str = _setting(
        "127.0.0.1:9696",
        "address and port of the admin HTTP listener (/metrics, /healthz, /readyz); "
        "empty or off to disable",
        _admin_listen_check,
    )

    @property
    def host(self) -> str:
        return _parse_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return _parse_listen(self.listen)[1]


@dataclass(frozen=True)
class LimitsConfig:
    max_message_size: int = _setting(
        1048576,
        "largest request accepted, in bytes (checked from the TTLV header)",
        _between(4096, 268435456),
    )
    handshake_timeout: float = _setting(
        10.0, "seconds allowed for the TLS handshake", _between(0.1, 600.0)
    )
    idle_timeout: float = _setting(
        300.0, "seconds a session may stay silent", _between(1.0, 86400.0)
    )
    max_sessions: int = _setting(
        20000, "concurrent sessions; more are refused", _between(1, 1_000_000)
    )
    max_batch_items: int = _setting(64, "batch items per request", _between(1, 65536))
    max_response_size: int = _setting(
        4194304, "largest response sent, in bytes", _between(4096, 1073741824)
    )


@dataclass(frozen=True)
class StoreConfig:
    # repr=False: a PostgreSQL URL may carry a password.
    url: str = _setting(
        "sqlite:///store.sqlite3",
        "sqlite:///<path relative to the data dir> or postgresql://...",
        _store_url_check,
        show=False,
    )
    group_commit_max: int = _setting(
        256, "most writes committed in one transaction", _between(1, 65536)
    )

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite:")


@dataclass(frozen=True)
class HsmConfig:
    module: str = _setting("", "PKCS#11 library; empty = SoftHSM2 provisioned under the data dir")
    token_label: str = _setting("kmipfast", "PKCS#11 token label", _token_label_check)
    pin_file: str = _setting("hsm/pin", "file holding the user PIN (mode 0600)", _non_empty)
    pin_env: str = _setting(
        "", "name of an environment variable holding the PIN instead of pin_file", _env_name_check
    )
    max_sessions: int = _setting(4, "PKCS#11 sessions in the pool", _between(1, 1024))
    software_root: bool = _setting(
        False, "DEVELOPMENT ONLY: root keys in a plain file instead of an HSM. Never for real keys."
    )
    master_key_hold: float = _setting(
        300.0, "seconds an unwrapped tenant master key is held in memory", _between(1.0, 86400.0)
    )


@dataclass(frozen=True)
class AuditConfig:
    path: str = _setting("audit.log", "audit log, one structured line per operation", _non_empty)
    max_bytes: int = _setting(
        104857600,
        "size at which the audit log is rotated (to <path>.1, .2, ...; the hash chain continues)",
        _between(4096, 1 << 40),
    )
    checkpoint_interval: float = _setting(
        60.0,
        "seconds between signed checkpoints of the audit chain head (signed in the HSM)",
        _between(0.2, 86400.0),
    )


@dataclass(frozen=True)
class ClientsConfig:
    reload_interval: float = _setting(
        0.5, "seconds between allow-list reloads", _between(0.05, 60.0)
    )
    expiry_warning_days: int = _setting(
        30,
        "warn (at start and daily) about client and server certificates expiring this soon",
        _between(1, 3650),
    )


# Section name -> its dataclass; the order is the order of the written file.
SECTIONS: dict[str, type[Any]] = {
    "server": ServerConfig,
    "limits": LimitsConfig,
    "store": StoreConfig,
    "hsm": HsmConfig,
    "audit": AuditConfig,
    "clients": ClientsConfig,
}


@dataclass(frozen=True)
class Config:
    """The whole configuration; immutable once loaded."""

    data_dir: Path
    server: ServerConfig = field(default_factory=ServerConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    hsm: HsmConfig = field(default_factory=HsmConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    clients: ClientsConfig = field(default_factory=ClientsConfig)

    def path(self, value: str | os.PathLike[str]) -> Path:
        """`value` resolved against the data dir (absolute paths unchanged, `~` expanded)."""
        return self.data_dir / Path(value).expanduser()

    @property
    def config_file(self) -> Path:
        return self.data_dir / CONFIG_FILE

    @property
    def server_cert_path(self) -> Path:
        return self.path(self.server.cert)

    @property
    def server_key_path(self) -> Path:
        return self.path(self.server.key)

    @property
    def ca_cert_path(self) -> Path:
        return self.path(self.server.ca)

    @property
    def ca_key_path(self) -> Path:
        return self.path(self.server.ca_key)

    @property
    def store_path(self) -> Path | None:
        """The SQLite database file, or None for a server database."""
        if not self.store.is_sqlite:
            return None
        return self.path(self.store.url[len("sqlite:///") :])

    @property
    def hsm_dir(self) -> Path:
        """Where the built-in SoftHSM2 token and its config live."""
        return self.data_dir / "hsm"

    @property
    def hsm_module_path(self) -> Path | None:
        """The PKCS#11 library, or None for SoftHSM2 under the data dir."""
        return self.path(self.hsm.module) if self.hsm.module else None

    @property
    def pin_file_path(self) -> Path:
        return self.path(self.hsm.pin_file)

    @property
    def audit_path(self) -> Path:
        return self.path(self.audit.path)

    def warnings(self) -> list[str]:
        """Things that are allowed but must be shown to the operator at start-up."""
        out = []
        if self.hsm.software_root:
            out.append(
                "hsm.software_root = true: DEVELOPMENT ONLY - tenant root keys are kept in a file "
                "in the data dir, not in an HSM; do not use this for real keys"
            )
            if self.hsm.module:
                out.append("hsm.module is ignored because hsm.software_root = true")
        if self.server.tls_min_version in ("1.0", "1.1"):
            out.append(
                f"server.tls_min_version = {self.server.tls_min_version}: legacy TLS is accepted "
                "(served by the openssl engine); use it only for clients that speak nothing newer"
            )
            if self.server.tls_engine == "rustls":
                out.append(
                    "server.tls_engine = rustls serves TLS 1.2 and 1.3 only: clients of older "
                    "versions will be refused; use tls_engine = auto to serve them"
                )
        return out


# --- loading -----------------------------------------------------------------------

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _field_types(cls: type[Any]) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _convert(key: str, typ: Any, value: Any, source: str) -> Any:
    """Check the type of a TOML value, or convert a string from the environment or a choice.

    TOML values are typed, so a TOML string where a number belongs is an
    error; strings from the environment (source set) are converted.
    """
    origin = f" (from {source})" if source else ""
    if isinstance(value, str) and typ is not str and source:
        text = value.strip()
        try:
            if typ is bool:
                if text.lower() in _TRUE:
                    return True
                if text.lower() in _FALSE:
                    return False
                raise ValueError
            if typ is int:
                return int(text, 10)
            if typ is float:
                return float(text)
        except ValueError:
            kind = {bool: "true or false", int: "an integer", float: "a number"}[typ]
            raise ConfigError(f"{key} must be {kind}, got {value!r}{origin}") from None
    if typ is bool:
        ok = isinstance(value, bool)
    elif typ is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif typ is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, str)
    if not ok:
        kind = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[typ]
        raise ConfigError(f"{key} must be {kind}, got {value!r}{origin}")
    return value


def _unknown(what: str, name: str, known: list[str]) -> ConfigError:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return ConfigError(f"{name} is not a known {what}{hint}")


def _all_keys() -> list[str]:
    return [f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)]


def _env_key(name: str) -> str | None:
    """`KMIPFAST_LIMITS_MAX_MESSAGE_SIZE` -> `limits.max_message_size`; None if not a setting."""
    if not name.startswith(ENV_PREFIX):
        return None
    section, _, key = name[len(ENV_PREFIX) :].partition("_")
    if section.lower() not in SECTIONS or not key:
        return None  # e.g. KMIPFAST_DATA_DIR: not a config setting
    return f"{section.lower()}.{key.lower()}"


def _build(data_dir: Path, raw: Mapping[str, tuple[Any, str]]) -> Config:
    """Settings keyed `section.key` -> (value, source) into a validated Config."""
    known = _all_keys()
    for key in raw:
        if key not in known:
            raise _unknown("setting", key, known)
    sections: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        types = _field_types(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            key = f"{name}.{f.name}"
            if key not in raw:
                continue
            value, source = raw[key]
            value = _convert(key, types[f.name], value, source)
            check: Check | None = f.metadata.get("check")
            problem = check(value) if check else None
            if problem:
                origin = f" from {source}" if source else ""
                # The store URL may hold a password: never echo it.
                shown = "" if f.repr is False else f" (got {value!r}{origin})"
                raise ConfigError(f"{key} {problem}{shown}")
            values[f.name] = value
        sections[name] = cls(**values)
    return Config(data_dir=data_dir, **sections)


def load_config(
    data_dir: Path | str,
    overrides: Mapping[str, str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Read `<data_dir>/kmipfast.toml`, apply `KMIPFAST_<SECTION>_<KEY>` variables and overrides.

    `environ` defaults to `os.environ`. `overrides` are applied last; their keys
    are `section.key` or environment-style names (other names are ignored, so
    passing an environment mapping works too). A missing config file means
    all defaults; a missing data dir is an error.
    """
    data_dir = Path(data_dir).expanduser().resolve()
    if not data_dir.is_dir():
        raise ConfigError(f"data directory {data_dir} does not exist (run `kmipfast init` first)")
    raw: dict[str, tuple[Any, str]] = {}
    path = data_dir / CONFIG_FILE
    try:
        with path.open("rb") as fh:
            doc = tomllib.load(fh)
    except FileNotFoundError:
        doc = {}
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from None
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None
    for section, table in doc.items():
        if section not in SECTIONS:
            raise _unknown("section", section, list(SECTIONS))
        if not isinstance(table, dict):
            raise ConfigError(f"{section} must be a table ([{section}])")
        for key, value in table.items():
            raw[f"{section}.{key}"] = (value, "")
    for name, value in (os.environ if environ is None else environ).items():
        key = _env_key(name)
        if key is not None:
            raw[key] = (value, name)
    for name, value in (overrides or {}).items():
        key = _env_key(name) or (name if "." in name else None)
        if key is not None:
            raw[key] = (value, f"override {name}")
    return _build(data_dir, raw)


def _parse_listen(listen: str) -> tuple[str, int]:
    text = listen.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError("must be [ipv6]:port, e.g. [::1]:5696")
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address") from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ValueError("must be host:port, e.g. 127.0.0.1:5696 or [::]:5696")
        if ":" in host:
            raise ValueError("must put an IPv6 address in brackets, e.g. [::1]:5696")
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            labels = host.rstrip(".").split(".")
            if not all(
                0 < len(lb) <= 63 and all(c.isalnum() or c == "-" for c in lb) for lb in labels
            ):
                raise ValueError(f"has an invalid host {host!r}") from None
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"has an invalid port {port_text!r} (0-65535)")
    return host, int(port_text)


def parse_listen(listen: str) -> tuple[str, int]:
    """`host:port`, `1.2.3.4:5696` or `[::1]:5696` -> (host without brackets, port)."""
    try:
        return _parse_listen(listen)
    except ValueError as e:
        raise ConfigError(f"listen address {listen!r} {e}") from None


def data_dir_from(
    arg: str | os.PathLike[str] | None, environ: Mapping[str, str] | None = None
) -> Path:
    """The data dir: the command-line argument, else $KMIPFAST_DATA_DIR, else ./kmipfast-data."""
    env = os.environ if environ is None else environ
    chosen = arg if arg else env.get(ENV_PREFIX + "DATA_DIR") or DEFAULT_DATA_DIR
    return Path(chosen).expanduser().resolve()


# --- writing the default file ------------------------------------------------------------


def _choice_key(name: str) -> str:
    """`server_listen`, `server.listen` or `listen` (bare names if unique) -> `server.listen`."""
    known = _all_keys()
    if "." in name and name in known:
        return name
    section, _, rest = name.partition("_")
    if section in SECTIONS and f"{section}.{rest}" in known:
        return f"{section}.{rest}"
    matches = [k for k in known if k.split(".", 1)[1] == name]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise ConfigError(
            f"{name} is ambiguous: use one of " + ", ".join(m.replace(".", "_") for m in matches)
        )
    raise _unknown("setting", name, known)


def render_config(config: Config) -> str:
    """The TOML text of `config`, every setting present and commented."""
    parts = [
        "# kmipfast configuration. Relative paths are relative to this directory.\n"
        "# Any setting can be overridden by the environment: KMIPFAST_<SECTION>_<KEY>.\n"
    ]
    for name in SECTIONS:
        section = getattr(config, name)
        parts.append(f"\n[{name}]\n")
        for f in dataclasses.fields(section):
            parts.append(f"# {f.metadata['doc']}\n")
            parts.append(tomli_w.dumps({f.name: getattr(section, f.name)}))
    return "".join(parts)


def write_default_config(data_dir: Path | str, *, overwrite: bool = False, **choices: Any) -> Path:
    """Create the data dir (0700) and write a full, commented `kmipfast.toml`; return its path.

    `choices` override defaults, named `section_key` (`server_listen=...`), or
    just `key` where that is unambiguous (`listen=...`, `software_root=True`).
    They are validated like the file itself. An existing file is kept unless
    `overwrite`.
    """
    data_dir = Path(data_dir).expanduser().resolve()
    path = data_dir / CONFIG_FILE
    if path.exists() and not overwrite:
        raise ConfigError(f"{path} already exists")
    raw = {_choice_key(name): (value, f"choice {name}") for name, value in choices.items()}
    config = _build(data_dir, raw)
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Owner-only: it may hold a store URL with a password.
    write_file_atomic(path, render_config(config).encode(), 0o600)
    return path


# --- the HSM PIN ---------------------------------------------------------------------------


def read_pin(config: Config, environ: Mapping[str, str] | None = None) -> bytearray:
    """The HSM user PIN from `hsm.pin_env` (if set) or `hsm.pin_file`, trailing newline stripped.

    Returned as a bytearray: wipe it (`pin[:] = bytes(len(pin))`) once the
    HSM login is done. The PIN file must not be readable by group or others.
    """
    if config.hsm.pin_env:
        env = os.environ if environ is None else environ
        value = env.get(config.hsm.pin_env)
        if not value:
            raise ConfigError(f"hsm.pin_env names {config.hsm.pin_env}, which is not set or empty")
        pin = bytearray(value.encode())
    else:
        pin = _read_pin_file(config.pin_file_path)
    while pin and pin[-1] in b"\r\n":
        del pin[-1]
    if not pin:
        raise ConfigError(
            "hsm.pin_file holds an empty PIN"
            if not config.hsm.pin_env
            else "hsm.pin_env: empty PIN"
        )
    return pin


def _read_pin_file(path: Path) -> bytearray:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise ConfigError(f"hsm.pin_file {path} does not exist") from None
    except OSError as e:
        raise ConfigError(f"hsm.pin_file {path} cannot be opened: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"hsm.pin_file {path} is not a regular file")
        if st.st_mode & 0o077:
            raise ConfigError(
                f"hsm.pin_file {path} is accessible by group or others "
                f"(mode {stat.S_IMODE(st.st_mode):04o}); run chmod 600 on it"
            )
        if st.st_size > _MAX_PIN_BYTES:
            raise ConfigError(f"hsm.pin_file {path} is too large for a PIN ({st.st_size} bytes)")
        pin = bytearray(_MAX_PIN_BYTES + 1)
        with os.fdopen(os.dup(fd), "rb", buffering=0) as fh:
            n = fh.readinto(pin) or 0
        del pin[n:]
        return pin
    finally:
        os.close(fd)


def write_pin_file(path: Path | str, pin: bytes | bytearray) -> None:
    """Write a PIN file (mode 0600, atomically) for `read_pin`; used when provisioning SoftHSM2."""
    if not pin or b"\n" in pin or b"\r" in pin:
        raise ConfigError("a PIN must be non-empty and on one line")
    data = bytearray(pin) + b"\n"
    try:
        write_file_atomic(path, data, 0o600)
    finally:
        data[:] = bytes(len(data))
