//! `smartsolar check-config`, the real binary: the layers (file, then environment), nested
//! variables, the short aliases, and that unknown keys and wrong types fail with their names.

use std::process::{Command, Output};

/// `smartsolar [--config file] check-config` with only `vars` in its environment.
fn check_config(file: Option<&str>, vars: &[(&str, &str)]) -> (Output, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_smartsolar"));
    cmd.env_clear().envs(vars.iter().copied());
    if let Some(text) = file {
        let path = dir.path().join("smartsolar.toml");
        std::fs::write(&path, text).unwrap();
        cmd.arg("--config").arg(path);
    }
    (cmd.arg("check-config").output().unwrap(), dir)
}

fn stdout(output: &Output) -> String {
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn failure(output: &Output) -> String {
    assert!(!output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn environment_overrides_the_file_through_nested_names_and_aliases() {
    let file = "data_dir = \"/srv/smartsolar\"\n[control_plane]\nhttp_addr = \"127.0.0.1:9000\"\n[bus]\nkind = \"kafka\"\n";
    let (out, _dir) = check_config(Some(file), &[]);
    let text = stdout(&out);
    assert!(
        text.contains("control_plane.http_addr = 127.0.0.1:9000\n"),
        "{text}"
    );
    assert!(text.contains("bus.kind = kafka\n"), "{text}");
    let (out, _dir) = check_config(
        Some(file),
        &[
            ("SMARTSOLAR_CONTROL_PLANE__HTTP_ADDR", "127.0.0.1:9100"),
            ("SMARTSOLAR_BUS", "memory"),
            ("SMARTSOLAR_GATEWAY_HTTP_ADDR", "off"),
            ("SMARTSOLAR_GATEWAY__TCP_LISTEN", "127.0.0.1:4500"),
            (
                "SMARTSOLAR_DATABASE_URL",
                "postgres://u:s3cret@db/smartsolar",
            ),
            // Other programs' variables are not configuration.
            ("SMARTSOLAR_TEST_POSTGRES_URL", "postgres://x"),
            ("SMARTSOLAR_CLUSTER_DIR", "/tmp/cluster"),
        ],
    );
    let text = stdout(&out);
    for line in [
        "control_plane.http_addr = 127.0.0.1:9100\n",
        "data_dir = /srv/smartsolar\n",
        "bus.kind = memory\n",
        "gateway.http_listen = off\n",
        "gateway.tcp_listen = 127.0.0.1:4500\n",
        "control_plane.database_url = postgres://u:***@db/smartsolar\n",
    ] {
        assert!(text.contains(line), "{line} missing in\n{text}");
    }
    assert!(!text.contains("s3cret"), "{text}");
}

#[test]
fn an_unknown_variable_fails_with_its_name() {
    for name in ["SMARTSOLAR_BUS__DISK__FSYNK", "SMARTSOLAR_DATABSE_URL"] {
        let (out, _dir) = check_config(None, &[(name, "true")]);
        let err = failure(&out);
        assert!(
            err.contains(&format!("environment variable {name}")),
            "{err}"
        );
        assert!(err.contains("unknown field"), "{err}");
    }
}

#[test]
fn a_wrong_type_fails_with_the_variable_name() {
    let (out, _dir) = check_config(None, &[("SMARTSOLAR_BUS__DISK__FSYNC", "maybe")]);
    let err = failure(&out);
    assert!(
        err.contains("environment variable SMARTSOLAR_BUS__DISK__FSYNC")
            && err.contains("expected a boolean"),
        "{err}"
    );
    let (out, _dir) = check_config(None, &[("SMARTSOLAR_BUS__DISK__FSYNC", "false")]);
    stdout(&out);
}

#[test]
fn an_unknown_file_key_fails_with_the_file_and_the_key() {
    let (out, dir) = check_config(Some("[bus.disk]\nfsynk = true\n"), &[]);
    let err = failure(&out);
    let path = dir.path().join("smartsolar.toml");
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("`bus.disk.fsynk`"), "{err}");
}
