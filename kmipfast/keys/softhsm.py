"""A SoftHSM2 token under the data dir, for the built-in HSM (`hsm.module = ""`).

Layout, all under `<data_dir>/hsm/`:

    softhsm2.conf   tokendir = <data_dir>/hsm/tokens, file object store, log level ERROR
    tokens/         SoftHSM2's token store
    pin             user PIN (0600), random, made on first use
    so-pin          security officer PIN (0600), random, made on first use

`ensure_token` is idempotent: it creates what is missing and leaves the rest. SoftHSM2 reads
its configuration from the environment variable `SOFTHSM2_CONF` once, when the library is
initialized in a process, so call `activate(settings)` before the first `Hsm.open` of the
process (and before any other code loads libsofthsm2). The variable is process-wide.

The PINs are passed to `softhsm2-util` on its command line (it reads them from a terminal
otherwise), so for the moment the tool runs they are visible in the process list to other
local users; the token is initialised once, at provisioning time.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kmipfast.config import write_pin_file
from kmipfast.errors import HsmError, HsmUnavailable
from kmipfast.pki import write_file_atomic

__all__ = [
    "MODULE_CANDIDATES",
    "HsmSettings",
    "SoftHsmSetupError",
    "activate",
    "ensure_token",
    "existing_token",
    "find_softhsm_module",
]

#: Where distributions install the SoftHSM2 PKCS#11 library, most likely first.
MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",  # Debian, Ubuntu
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",  # Fedora, RHEL
    "/usr/lib/pkcs11/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",  # built from source
    "/opt/homebrew/lib/softhsm/libsofthsm2.so",
)

_PIN_BYTES = 16  # random bytes per PIN, hex-encoded to 32 characters (SoftHSM2 allows 4-255)
_MAX_LABEL = 32  # CK_TOKEN_INFO.label is 32 bytes
_TOOL_TIMEOUT = 60.0
_HEX = b"0123456789abcdef"


class SoftHsmSetupError(HsmError):
    """The SoftHSM2 token could not be provisioned."""


@dataclass(frozen=True)
class HsmSettings:
    """Where the token is and how to open it; holds no secret (the PIN stays in `pin_file`)."""

    module: str
    token_label: str
    pin_file: Path
    conf: Path


def find_softhsm_module() -> str | None:
    """The SoftHSM2 PKCS#11 library in the usual install locations, or None."""
    for candidate in MODULE_CANDIDATES:
        if os.path.isfile(candidate):
            return candidate
    return None


def activate(settings: HsmSettings) -> None:
    """Point SoftHSM2 at `settings.conf` for this process (sets `SOFTHSM2_CONF`).

    Must run before libsofthsm2 is initialized in the process; it has no effect on a library
    already initialized.
    """
    os.environ["SOFTHSM2_CONF"] = str(settings.conf)


def existing_token(data_dir: Path, label: str) -> HsmSettings:
    """The token `ensure_token` provisioned, without creating anything; raises
    `HsmUnavailable` when SoftHSM2 or the token directory is missing."""
    module = find_softhsm_module()
    if module is None:
        raise HsmUnavailable("SoftHSM2 is not installed (apt-get install softhsm2)")
    hsm_dir = Path(data_dir) / "hsm"
    conf, tokens = hsm_dir / "softhsm2.conf", hsm_dir / "tokens"
    if not conf.is_file() or not tokens.is_dir():
        raise HsmUnavailable(f"the SoftHSM2 token under {hsm_dir} is missing")
    return HsmSettings(module=module, token_label=label, pin_file=hsm_dir / "pin", conf=conf)


def ensure_token(data_dir: Path, label: str) -> HsmSettings:
    """Provision (if needed) a SoftHSM2 token labelled `label` under `<data_dir>/hsm`.

    Writes the configuration file, creates random user and SO PINs (files of mode 0600) if
    absent, and initialises the token with `softhsm2-util` unless a token with that label
    already exists. Safe to call on every start and from several processes at once (a lock
    file serializes them). Raises `SoftHsmSetupError` when SoftHSM2 is missing or fails, or
    when the token exists but its PIN file is gone.
    """
    raw_label = label.encode()
    if not raw_label or len(raw_label) > _MAX_LABEL or label != label.strip():
        raise ValueError(
            f"a token label is 1-{_MAX_LABEL} bytes without leading or trailing spaces"
        )
    module = find_softhsm_module()
    if module is None:
        raise SoftHsmSetupError(
            "SoftHSM2 is not installed (libsofthsm2.so not found; apt-get install softhsm2)"
        )
    tool = shutil.which("softhsm2-util")
    if tool is None:
        raise SoftHsmSetupError("softhsm2-util is not on PATH (apt-get install softhsm2)")

    hsm_dir = Path(data_dir) / "hsm"
    tokens = hsm_dir / "tokens"
    conf = hsm_dir / "softhsm2.conf"
    pin_file = hsm_dir / "pin"
    so_pin_file = hsm_dir / "so-pin"
    hsm_dir.mkdir(mode=0o700, parents=True, exist_ok=True)

    with _locked(hsm_dir / ".lock"):
        # SoftHSM2 wants the token directory to exist; its objects are encrypted under the
        # PIN, but nobody else needs to list them either.
        tokens.mkdir(mode=0o700, exist_ok=True)
        conf_text = (
            "# Written by kmipfast (kmipfast.keys.softhsm); rewritten on start.\n"
            f"directories.tokendir = {tokens}\n"
            "objectstore.backend = file\n"
            "log.level = ERROR\n"
            "slots.removable = false\n"
        ).encode()
        if not conf.exists() or conf.read_bytes() != conf_text:
            write_file_atomic(conf, conf_text, 0o644)

        env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
        if label in _token_labels(tool, env):
            if not pin_file.exists():
                raise SoftHsmSetupError(
                    f"token {label!r} exists under {tokens} but its PIN file {pin_file} is "
                    "missing; restore the file or delete the token"
                )
        else:
            pin = _read_or_create_pin(pin_file)
            so_pin = _read_or_create_pin(so_pin_file)
            try:
                _init_token(tool, env, label, pin, so_pin)
            finally:
                pin[:] = bytes(len(pin))
                so_pin[:] = bytes(len(so_pin))
    return HsmSettings(module=module, token_label=label, pin_file=pin_file, conf=conf)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _token_labels(tool: str, env: dict[str, str]) -> set[str]:
    """Labels of the initialized tokens, from `softhsm2-util --show-slots`."""
    out = _run(tool, ["--show-slots"], env)
    labels = set()
    initialized = False
    for line in out.splitlines():
        key, _, value = line.strip().partition(":")
        if key == "Initialized":
            initialized = value.strip() == "yes"
        elif key == "Label" and initialized:
            labels.add(value.strip())
    return labels


def _init_token(
    tool: str, env: dict[str, str], label: str, pin: bytearray, so_pin: bytearray
) -> None:
    args = ["--init-token", "--free", "--label", label]
    _run(tool, [*args, "--pin", pin.decode(), "--so-pin", so_pin.decode()], env)


def _run(tool: str, args: list[str], env: dict[str, str]) -> str:
    # Never put `args` in an error: it may hold PINs.
    try:
        done = subprocess.run(
            [tool, *args],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_TOOL_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SoftHsmSetupError(f"softhsm2-util {args[0]} failed: {type(e).__name__}") from None
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise SoftHsmSetupError(
            f"softhsm2-util {args[0]} failed (exit {done.returncode}): "
            f"{detail[-1] if detail else 'no output'}"
        )
    return done.stdout


def _read_or_create_pin(path: Path) -> bytearray:
    """The PIN in `path` (one line), or a new random one written there with mode 0600."""
    if path.exists():
        with open(path, "rb", buffering=0) as fh:
            pin = bytearray(fh.read())
        while pin and pin[-1] in b"\r\n":
            del pin[-1]
        if not pin:
            raise SoftHsmSetupError(f"{path} holds an empty PIN")
        return pin
    raw = bytearray(os.urandom(_PIN_BYTES))
    pin = bytearray(2 * len(raw))
    for i, b in enumerate(raw):
        pin[2 * i] = _HEX[b >> 4]
        pin[2 * i + 1] = _HEX[b & 0x0F]
    raw[:] = bytes(len(raw))
    write_pin_file(path, pin)
    return pin
