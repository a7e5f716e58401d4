"""kmipfast.keys.softhsm against the real softhsm2-util, in tmp_path.

SoftHSM2 reads SOFTHSM2_CONF once per process, so anything that loads the library (the
native `Hsm` round trip) runs in a child process with its own environment.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kmipfast.keys.softhsm import (
    HsmSettings,
    SoftHsmSetupError,
    activate,
    ensure_token,
    find_softhsm_module,
)

pytestmark = pytest.mark.skipif(
    find_softhsm_module() is None or shutil.which("softhsm2-util") is None,
    reason="SoftHSM2 is not installed",
)


def _labels(conf: Path) -> str:
    return subprocess.run(
        ["softhsm2-util", "--show-slots"],
        env={**os.environ, "SOFTHSM2_CONF": str(conf)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def _token_dirs(settings: HsmSettings) -> set[str]:
    return {p.name for p in (settings.conf.parent / "tokens").iterdir()}


def test_find_softhsm_module_returns_an_existing_library() -> None:
    module = find_softhsm_module()
    assert module is not None
    assert os.path.isfile(module)
    assert module.endswith("libsofthsm2.so")


def test_ensure_token_provisions_conf_pins_and_token(tmp_path: Path) -> None:
    settings = ensure_token(tmp_path, "kmipfast")

    hsm_dir = tmp_path / "hsm"
    assert settings == HsmSettings(
        module=find_softhsm_module() or "",
        token_label="kmipfast",
        pin_file=hsm_dir / "pin",
        conf=hsm_dir / "softhsm2.conf",
    )
    conf = settings.conf.read_text()
    assert f"directories.tokendir = {hsm_dir / 'tokens'}\n" in conf
    assert "objectstore.backend = file\n" in conf
    assert "log.level = ERROR\n" in conf
    for name in ("pin", "so-pin"):
        path = hsm_dir / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
        assert len(path.read_bytes().strip()) == 32
    assert (hsm_dir / "pin").read_bytes() != (hsm_dir / "so-pin").read_bytes()
    shown = _labels(settings.conf)
    assert "kmipfast" in shown
    # The settings carry paths only, never a PIN.
    pin = (hsm_dir / "pin").read_text().strip()
    assert pin not in repr(settings)


def test_ensure_token_is_idempotent(tmp_path: Path) -> None:
    first = ensure_token(tmp_path, "tenant-roots")
    pins = ((tmp_path / "hsm" / "pin").read_bytes(), (tmp_path / "hsm" / "so-pin").read_bytes())
    tokens = _token_dirs(first)
    assert len(tokens) == 1

    second = ensure_token(tmp_path, "tenant-roots")

    assert second == first
    assert (
        (tmp_path / "hsm" / "pin").read_bytes(),
        (tmp_path / "hsm" / "so-pin").read_bytes(),
    ) == pins
    assert _token_dirs(second) == tokens  # not re-initialised, no second token


def test_ensure_token_keeps_an_existing_pin_file(tmp_path: Path) -> None:
    hsm_dir = tmp_path / "hsm"
    hsm_dir.mkdir()
    (hsm_dir / "pin").write_bytes(b"operator-chosen-pin\n")
    (hsm_dir / "pin").chmod(0o600)

    settings = ensure_token(tmp_path, "kmipfast")

    assert settings.pin_file.read_bytes() == b"operator-chosen-pin\n"
    assert "kmipfast" in _labels(settings.conf)


def test_second_label_gets_its_own_token(tmp_path: Path) -> None:
    a = ensure_token(tmp_path, "first")
    b = ensure_token(tmp_path, "second")
    assert a.conf == b.conf
    shown = _labels(a.conf)
    assert "first" in shown and "second" in shown
    assert len(_token_dirs(b)) == 2


def test_existing_token_without_pin_file_is_an_error(tmp_path: Path) -> None:
    ensure_token(tmp_path, "kmipfast")
    (tmp_path / "hsm" / "pin").unlink()
    with pytest.raises(SoftHsmSetupError, match="PIN file"):
        ensure_token(tmp_path, "kmipfast")


@pytest.mark.parametrize("label", ["", " padded", "x" * 33])
def test_bad_token_label_is_rejected(tmp_path: Path, label: str) -> None:
    with pytest.raises(ValueError, match="token label"):
        ensure_token(tmp_path, label)
    assert not (tmp_path / "hsm").exists()


def test_activate_sets_softhsm2_conf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOFTHSM2_CONF", "/nonexistent")  # restored after the test
    settings = ensure_token(tmp_path, "kmipfast")
    activate(settings)
    assert os.environ["SOFTHSM2_CONF"] == str(settings.conf)


_ROUND_TRIP = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from kmipfast import _native
    from kmipfast.errors import HsmIntegrityError, HsmKeyNotFound, HsmError
    from kmipfast.keys.softhsm import activate, ensure_token

    settings = ensure_token(Path(sys.argv[1]), "kmipfast")
    activate(settings)
    # First login of the process: a wrong PIN is checked (later ones would find the
    # process already logged in).
    try:
        _native.Hsm.open(settings.module, settings.token_label, "wrong-pin-123456", 1)
        raise SystemExit("wrong PIN accepted")
    except HsmError as e:
        assert type(e) is HsmError and "wrong-pin-123456" not in str(e), repr(e)
    pin = bytearray(settings.pin_file.read_bytes().strip())
    hsm = _native.Hsm.open(settings.module, settings.token_label, pin, 2)
    pin[:] = bytes(len(pin))
    hsm.ping()
    hsm.generate_root_key("crk-acme")
    assert hsm.root_key_exists("crk-acme")
    sealed, key = hsm.new_master_key("crk-acme", b"tenant=acme")
    assert isinstance(sealed, bytes) and len(sealed) == 1 + 12 + 32 + 16
    assert "hidden" in repr(key)
    again = hsm.unseal_master_key("crk-acme", sealed, b"tenant=acme")
    assert type(again) is type(key)
    try:
        hsm.unseal_master_key("crk-acme", sealed, b"tenant=evil")
        raise SystemExit("wrong AAD accepted")
    except HsmIntegrityError:
        pass
    hsm.destroy_root_key("crk-acme")
    try:
        hsm.unseal_master_key("crk-acme", sealed, b"tenant=acme")
        raise SystemExit("destroyed key still usable")
    except HsmKeyNotFound:
        pass
    print("ok")
    """
)


def test_native_hsm_round_trip_on_provisioned_token(tmp_path: Path) -> None:
    from kmipfast import _native

    if not hasattr(_native, "Hsm"):
        pytest.skip("kmipfast._native was built without the Hsm binding; rebuild it")
    done = subprocess.run(
        [sys.executable, "-c", _ROUND_TRIP, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
