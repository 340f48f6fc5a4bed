"""Settings and the Temporal connection: worker tuning from CAREPATH_*, envconfig profiles
(the README's Temporal Cloud profiles are read exactly as shown), and one-line errors for
anything that cannot work."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from infra.settings import PROJECT_ROOT, SettingsError, load_settings
from infra.temporal import build_worker, connect_config
from workflows.registry import WORKFLOWS


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No CAREPATH_* or TEMPORAL_* from the caller, and no config file of the user's."""
    for name in list(os.environ):
        if name.startswith(("CAREPATH_", "TEMPORAL_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))  # the default config file's location
    return monkeypatch


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("CAREPATH_MAX_CACHED_WORKFLOWS", "lots", "a whole number of at least 0"),
        ("CAREPATH_MAX_CONCURRENT_ACTIVITIES", "0", "a whole number of at least 1"),
        ("CAREPATH_MAX_CONCURRENT_WORKFLOW_TASKS", "1", "at least 2"),
        ("CAREPATH_SERVER_PORT", "70000", "a port (1-65535)"),
        ("CAREPATH_METRICS_ADDRESS", "9464", "host:port"),
        ("CAREPATH_METRICS_INTERVAL", "-1", "seconds above 0"),
        ("CAREPATH_OTEL", "maybe", "on or off"),
        ("CAREPATH_SDK_TUNING", "fast", "on or off"),
        ("CAREPATH_WORKFLOW_SANDBOX", "sometimes", "on or off"),
        ("CAREPATH_ACTIVITY_THREADS", "few", "on or off"),
        ("CAREPATH_DEADLOCK_TIMEOUT", "0", "seconds above 0"),
        ("CAREPATH_LOG_FORMAT", "xml", "console, json"),
        ("CAREPATH_TASK_QUEUE", " carepath", "without spaces"),
        ("CAREPATH_DATABASE_URL", "mysql://db/carepath", "postgresql+psycopg://"),
    ],
)
def test_a_setting_that_cannot_work_is_refused_in_one_line(
    clean_env: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    clean_env.setenv(name, value)
    with pytest.raises(SettingsError) as refused:
        load_settings()
    text = str(refused.value)
    assert text.startswith(name) and message in text and "\n" not in text


async def test_worker_tuning_comes_from_settings(
    clean_env: pytest.MonkeyPatch, env: WorkflowEnvironment
) -> None:
    clean_env.setenv("CAREPATH_TASK_QUEUE", "carepath-site-north")
    clean_env.setenv("CAREPATH_MAX_CONCURRENT_ACTIVITIES", "6")
    clean_env.setenv("CAREPATH_MAX_CONCURRENT_WORKFLOW_TASKS", "40")
    clean_env.setenv("CAREPATH_MAX_CACHED_WORKFLOWS", "250")
    settings = load_settings()
    with ThreadPoolExecutor(max_workers=settings.max_concurrent_activities) as executor:
        config = build_worker(env.client, settings, WORKFLOWS, [], executor).config()
    assert config["task_queue"] == "carepath-site-north"
    assert config["max_concurrent_activities"] == 6
    assert config["max_concurrent_workflow_tasks"] == 40
    assert config["max_cached_workflows"] == 250
    assert config["interceptors"] == []  # tracing is off unless CAREPATH_OTEL=on


def readme_profiles() -> str:
    """The Temporal config file shown in the README's Production section."""
    readme = (PROJECT_ROOT / "README.md").read_text()
    production = readme[readme.index("## Production") :]
    (toml,) = re.findall(r"```toml\n(.*?)```", production, re.S)
    return str(toml)


def test_the_readme_cloud_profile_is_what_connect_reads(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config_file = tmp_path / "temporal.toml"
    config_file.write_text(readme_profiles())
    clean_env.setenv("TEMPORAL_CONFIG_FILE", str(config_file))
    clean_env.setenv("TEMPORAL_PROFILE", "cloud")
    clean_env.setenv("TEMPORAL_API_KEY", "key-from-a-secret")
    config = connect_config(load_settings())
    assert config == {
        "target_host": "us-east-1.aws.api.temporal.io:7233",
        "namespace": "carepath-prod.a1b2c",
        "api_key": "key-from-a-secret",
        "tls": True,  # an API key implies TLS
    }


def test_the_readme_mtls_profile_reads_its_certificates(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    profiles = readme_profiles()
    config_file = tmp_path / "temporal.toml"
    config_file.write_text(profiles)
    clean_env.setenv("TEMPORAL_CONFIG_FILE", str(config_file))
    clean_env.setenv("TEMPORAL_PROFILE", "cloud-mtls")
    (cert_path,) = re.findall(r'client_cert_path = "([^"]+)"', profiles)
    with pytest.raises(SettingsError, match=f"Temporal TLS file {cert_path}: No such file"):
        connect_config(load_settings())
    # The same profile with the certificate and key where this test put them.
    (key_path,) = re.findall(r'client_key_path = "([^"]+)"', profiles)
    (tmp_path / "client.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    (tmp_path / "client.key").write_text("-----BEGIN PRIVATE KEY-----\n")
    config_file.write_text(
        profiles.replace(cert_path, str(tmp_path / "client.pem")).replace(
            key_path, str(tmp_path / "client.key")
        )
    )
    config = connect_config(load_settings())
    assert config["target_host"] == "carepath-prod.a1b2c.tmprl.cloud:7233"
    assert config["namespace"] == "carepath-prod.a1b2c"
    assert config["tls"].client_cert == b"-----BEGIN CERTIFICATE-----\n"
    assert config["tls"].client_private_key == b"-----BEGIN PRIVATE KEY-----\n"
    assert "api_key" not in config


def test_without_a_profile_the_embedded_server(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("CAREPATH_SERVER_PORT", "7399")
    assert connect_config(load_settings()) == {"target_host": "127.0.0.1:7399"}
    clean_env.setenv("TEMPORAL_ADDRESS", "temporal.internal:7233")
    clean_env.setenv("TEMPORAL_NAMESPACE", "carepath")
    assert connect_config(load_settings()) == {
        "target_host": "temporal.internal:7233",
        "namespace": "carepath",
    }


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TEMPORAL_CONFIG_FILE": "/nonexistent/temporal.toml"}, "does not exist"),
        ({"TEMPORAL_PROFILE": "nope"}, "Profile 'nope' not found"),
    ],
)
def test_a_profile_that_cannot_work_is_refused(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, env: dict[str, str], message: str
) -> None:
    config_file = tmp_path / "temporal.toml"
    config_file.write_text(readme_profiles())
    clean_env.setenv("TEMPORAL_CONFIG_FILE", str(config_file))
    for name, value in env.items():
        clean_env.setenv(name, value)
    with pytest.raises(SettingsError, match=message):
        connect_config(load_settings())


def test_worker_and_cli_exit_2_with_one_line(tmp_path: Path) -> None:
    """Not retried as an unreachable server, not a traceback: one line, exit 2."""
    env = {
        **os.environ,
        "CAREPATH_DATA_DIR": str(tmp_path),
        "TEMPORAL_CONFIG_FILE": str(tmp_path / "missing.toml"),
    }
    cases = [
        (["worker.py"], {}, "TEMPORAL_CONFIG_FILE"),
        (["worker.py"], {"CAREPATH_METRICS_ADDRESS": "localhost"}, "CAREPATH_METRICS_ADDRESS"),
        (["starter.py", "status", "P-7K2M9Q4D"], {}, "TEMPORAL_CONFIG_FILE"),
    ]
    for args, extra, name in cases:
        result = subprocess.run(
            [sys.executable, *args],
            env={**env, **extra},
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.startswith(f"error: {name}"), result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_store_that_does_not_answer_is_one_line_without_its_password(tmp_path: Path) -> None:
    from infra.embedded_server import free_port

    env = {
        **os.environ,
        "CAREPATH_DATA_DIR": str(tmp_path),
        "CAREPATH_DATABASE_URL": f"postgresql+psycopg://carepath:s3cret@127.0.0.1:{free_port()}/cp",
    }
    for args in (["worker.py"], ["starter.py", "tasks"]):
        result = subprocess.run(
            [sys.executable, *args],
            env=env,
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 4, (args, result.stderr)
        assert result.stderr.startswith("error: the care-operations store does not answer")
        assert len(result.stderr.strip().splitlines()) == 1 and "s3cret" not in result.stderr
