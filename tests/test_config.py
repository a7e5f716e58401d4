"""kmipfast.config: TOML + environment into one validated Config (DESIGN §7)."""

from __future__ import annotations

import dataclasses
import stat
from pathlib import Path

import pytest

from kmipfast.config import (
    Config,
    ConfigError,
    data_dir_from,
    load_config,
    parse_listen,
    read_pin,
    write_default_config,
    write_pin_file,
)

NO_ENV: dict[str, str] = {}


def _with_toml(data_dir: Path, text: str) -> Path:
    (data_dir / "kmipfast.toml").write_text(text)
    return data_dir


def test_missing_file_gives_documented_defaults(tmp_path: Path) -> None:
    c = load_config(tmp_path, environ=NO_ENV)
    assert c.data_dir == tmp_path.resolve()
    assert (c.server.listen, c.server.host, c.server.port) == ("127.0.0.1:5696", "127.0.0.1", 5696)
    assert (c.server.tls_min_version, c.server.workers) == ("1.2", 1)
    assert c.limits.max_message_size == 1048576
    assert (c.limits.handshake_timeout, c.limits.idle_timeout) == (10.0, 300.0)
    assert (c.limits.max_sessions, c.limits.max_batch_items) == (20000, 64)
    assert c.limits.max_response_size == 4194304
    assert (c.store.url, c.store.group_commit_max) == ("sqlite:///store.sqlite3", 256)
    assert (c.hsm.module, c.hsm.token_label, c.hsm.pin_env) == ("", "kmipfast", "")
    assert (c.hsm.max_sessions, c.hsm.software_root, c.hsm.master_key_hold) == (4, False, 300.0)
    assert c.clients.reload_interval == 0.5
    assert c.warnings() == []


def test_relative_paths_resolve_against_data_dir_absolute_ones_stay(tmp_path: Path) -> None:
    _with_toml(tmp_path, '[server]\nca = "/etc/pki/ca.pem"\n[hsm]\nmodule = "/usr/lib/p11.so"\n')
    c = load_config(tmp_path, environ=NO_ENV)
    d = tmp_path.resolve()
    assert c.server_cert_path == d / "tls/server.crt"
    assert c.server_key_path == d / "tls/server.key"
    assert c.ca_key_path == d / "tls/ca.key"
    assert c.ca_cert_path == Path("/etc/pki/ca.pem")
    assert c.store_path == d / "store.sqlite3"
    assert c.pin_file_path == d / "hsm/pin"
    assert c.audit_path == d / "audit.log"
    assert c.hsm_module_path == Path("/usr/lib/p11.so")
    assert c.config_file == d / "kmipfast.toml"


def test_store_url_sqlite_absolute_and_postgresql_paths(tmp_path: Path) -> None:
    c = load_config(tmp_path, {"store.url": "sqlite:////var/lib/k.db"}, environ=NO_ENV)
    assert c.store_path == Path("/var/lib/k.db")
    c = load_config(tmp_path, {"store.url": "postgresql://kms:s3cret@db/kms"}, environ=NO_ENV)
    assert c.store_path is None and not c.store.is_sqlite
    assert "s3cret" not in repr(c)  # a database URL may carry a password


def test_toml_file_values_are_loaded(tmp_path: Path) -> None:
    _with_toml(
        tmp_path,
        '[server]\nlisten = "[::]:15696"\nworkers = 2\n'
        "[limits]\nhandshake_timeout = 5\n[hsm]\nsoftware_root = true\n",
    )
    c = load_config(tmp_path, environ=NO_ENV)
    assert (c.server.host, c.server.port, c.server.workers) == ("::", 15696, 2)
    assert c.limits.handshake_timeout == 5.0 and isinstance(c.limits.handshake_timeout, float)
    assert c.hsm.software_root
    assert any("DEVELOPMENT ONLY" in w for w in c.warnings())


def test_env_overrides_file_and_are_converted_to_field_types(tmp_path: Path) -> None:
    _with_toml(tmp_path, '[server]\nlisten = "127.0.0.1:1"\n')
    env = {
        "KMIPFAST_SERVER_LISTEN": "0.0.0.0:5696",
        "KMIPFAST_LIMITS_MAX_MESSAGE_SIZE": "2097152",
        "KMIPFAST_LIMITS_IDLE_TIMEOUT": "60",
        "KMIPFAST_HSM_SOFTWARE_ROOT": "yes",
        "KMIPFAST_DATA_DIR": "/elsewhere",  # not a setting: ignored here
        "PATH": "/usr/bin",
    }
    c = load_config(tmp_path, environ=env)
    assert c.server.listen == "0.0.0.0:5696"
    assert c.limits.max_message_size == 2097152
    assert c.limits.idle_timeout == 60.0
    assert c.hsm.software_root is True


def test_overrides_beat_environment_and_accept_both_key_styles(tmp_path: Path) -> None:
    env = {"KMIPFAST_SERVER_WORKERS": "2", "KMIPFAST_HSM_MAX_SESSIONS": "8"}
    c = load_config(
        tmp_path,
        {"server.workers": "3", "KMIPFAST_HSM_MAX_SESSIONS": "9", "unrelated": "x"},
        environ=env,
    )
    assert (c.server.workers, c.hsm.max_sessions) == (3, 9)


def test_config_is_frozen(tmp_path: Path) -> None:
    c = load_config(tmp_path, environ=NO_ENV)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.limits.max_sessions = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            "[limits]\nmax_message_size = 100\n",
            "limits.max_message_size must be between 4096 and 268435456 (got 100)",
        ),
        (
            '[server]\ntls_min_version = "0.9"\n',
            "server.tls_min_version must be one of '1.0', '1.1', '1.2', '1.3'",
        ),
        ('[server]\nworkers = "4"\n', "server.workers must be an integer, got '4'"),
        ("[server]\nworkers = true\n", "server.workers must be an integer"),
        ("[limits]\nidle_timeout = 0\n", "limits.idle_timeout must be between 1.0 and 86400.0"),
        ('[hsm]\nsoftware_root = "yes"\n', "hsm.software_root must be true or false"),
        ('[hsm]\ntoken_label = "' + "x" * 33 + '"\n', "hsm.token_label must be 1 to 32 bytes"),
        ('[hsm]\npin_env = "MY PIN"\n', "hsm.pin_env must be empty or the name of an environment"),
        ('[server]\nlisten = "::1:5696"\n', "server.listen must put an IPv6 address in brackets"),
        ('[server]\nlisten = "localhost"\n', "server.listen must be host:port"),
        ('[server]\nlisten = "localhost:99999"\n', "server.listen has an invalid port '99999'"),
        ('[server]\ncert = ""\n', "server.cert must not be empty"),
        ("[clients]\nreload_interval = 0.0\n", "clients.reload_interval must be between"),
        (
            '[server]\nlistn = "x"\n',
            "server.listn is not a known setting (did you mean server.listen?)",
        ),
        ("[limit]\nmax_sessions = 1\n", "limit is not a known section (did you mean limits?)"),
        ("server = 1\n", "server must be a table"),
    ],
)
def test_bad_file_value_gives_config_error_naming_the_key(
    tmp_path: Path, toml: str, message: str
) -> None:
    _with_toml(tmp_path, toml)
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path, environ=NO_ENV)
    assert str(err.value).startswith(message), str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"KMIPFAST_LIMITS_MAX_MESSAGE_SIZE": "1MiB"},
            "limits.max_message_size must be an integer, got '1MiB' "
            "(from KMIPFAST_LIMITS_MAX_MESSAGE_SIZE)",
        ),
        (
            {"KMIPFAST_LIMITS_MAX_BATCH_ITEMS": "0"},
            "limits.max_batch_items must be between 1 and 65536 (got 0 from "
            "KMIPFAST_LIMITS_MAX_BATCH_ITEMS)",
        ),
        ({"KMIPFAST_HSM_SOFTWARE_ROOT": "maybe"}, "hsm.software_root must be true or false"),
        ({"KMIPFAST_SERVER_LISTN": "x:1"}, "server.listn is not a known setting"),
    ],
)
def test_bad_environment_value_gives_config_error_naming_key_and_variable(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path, environ=env)
    assert str(err.value).startswith(message), str(err.value)


def test_bad_store_url_error_does_not_echo_the_url(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^store\.url must be sqlite") as err:
        load_config(tmp_path, {"store.url": "mysql://u:hunter2@db/k"}, environ=NO_ENV)
    assert "hunter2" not in str(err.value)


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    _with_toml(tmp_path, "[server\n")
    with pytest.raises(ConfigError, match=r"kmipfast\.toml"):
        load_config(tmp_path, environ=NO_ENV)


def test_missing_data_dir_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope", environ=NO_ENV)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:5696", ("127.0.0.1", 5696)),
        ("[::1]:5696", ("::1", 5696)),
        ("[::]:0", ("::", 0)),
        ("kms.example.com:443", ("kms.example.com", 443)),
    ],
)
def test_parse_listen_handles_ipv4_bracketed_ipv6_and_names(
    text: str, expected: tuple[str, int]
) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["::1:5696", "[::1]", "[nothost]:1", ":5696", "h:x", "h:-1"])
def test_parse_listen_rejects_ambiguous_or_invalid(text: str) -> None:
    with pytest.raises(ConfigError, match="listen address"):
        parse_listen(text)


def test_data_dir_from_prefers_argument_then_env_then_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = tmp_path.resolve()
    env = {"KMIPFAST_DATA_DIR": str(base / "env")}
    assert data_dir_from(str(base / "arg"), env) == base / "arg"
    assert data_dir_from(None, env) == base / "env"
    monkeypatch.chdir(base)
    assert data_dir_from(None, {}) == base / "kmipfast-data"


def test_write_default_config_round_trips_with_choices(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    path = write_default_config(
        data_dir, listen="0.0.0.0:5696", hsm_max_sessions=8, software_root=True
    )
    assert path == data_dir / "kmipfast.toml"
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    text = path.read_text()
    assert "DEVELOPMENT ONLY" in text and "[limits]" in text
    c = load_config(data_dir, environ=NO_ENV)
    expected = Config(data_dir=data_dir)
    expected = dataclasses.replace(
        expected,
        server=dataclasses.replace(expected.server, listen="0.0.0.0:5696"),
        hsm=dataclasses.replace(expected.hsm, max_sessions=8, software_root=True),
    )
    assert c == expected


def test_write_default_config_refuses_overwrite_ambiguous_and_invalid_choices(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError, match="max_sessions is ambiguous"):
        write_default_config(tmp_path / "a", max_sessions=3)
    with pytest.raises(ConfigError, match=r"^limits\.max_message_size must be between"):
        write_default_config(tmp_path / "b", max_message_size=1)
    assert not (tmp_path / "b").exists()  # validated before anything is written
    write_default_config(tmp_path / "c")
    with pytest.raises(ConfigError, match="already exists"):
        write_default_config(tmp_path / "c")
    write_default_config(tmp_path / "c", overwrite=True, workers=2)
    assert load_config(tmp_path / "c", environ=NO_ENV).server.workers == 2


def test_read_pin_from_file_strips_newline_and_returns_bytearray(tmp_path: Path) -> None:
    c = load_config(tmp_path, environ=NO_ENV)
    write_pin_file(c.pin_file_path, b"1234-abcd")
    assert stat.S_IMODE(c.pin_file_path.stat().st_mode) == 0o600
    pin = read_pin(c, environ=NO_ENV)
    assert isinstance(pin, bytearray) and pin == bytearray(b"1234-abcd")


def test_read_pin_refuses_file_readable_by_others(tmp_path: Path) -> None:
    c = load_config(tmp_path, environ=NO_ENV)
    c.pin_file_path.parent.mkdir()
    c.pin_file_path.write_bytes(b"1234\n")
    c.pin_file_path.chmod(0o644)
    with pytest.raises(ConfigError, match=r"^hsm\.pin_file .* accessible by group or others") as e:
        read_pin(c, environ=NO_ENV)
    assert "1234" not in str(e.value)


def test_read_pin_missing_or_empty_file_is_a_config_error(tmp_path: Path) -> None:
    c = load_config(tmp_path, environ=NO_ENV)
    with pytest.raises(ConfigError, match="does not exist"):
        read_pin(c, environ=NO_ENV)
    c.pin_file_path.parent.mkdir()
    c.pin_file_path.write_bytes(b"\n")
    c.pin_file_path.chmod(0o600)
    with pytest.raises(ConfigError, match="empty PIN"):
        read_pin(c, environ=NO_ENV)


def test_read_pin_from_named_environment_variable(tmp_path: Path) -> None:
    c = load_config(tmp_path, {"hsm.pin_env": "KMS_PIN"}, environ=NO_ENV)
    assert read_pin(c, environ={"KMS_PIN": "9876\n"}) == bytearray(b"9876")
    with pytest.raises(ConfigError, match=r"hsm\.pin_env names KMS_PIN, which is not set"):
        read_pin(c, environ=NO_ENV)
