//! The webhook's serving certificate from PEM files (made with openssl, as a Secret would hold
//! them): loaded, replaced on renewal, and kept when a renewal is unusable; and the flags of
//! `nodetopo webhook` checked before it connects anywhere.

mod common;

use std::{path::Path, process::Command};

use nodetopo::webhook::tls::ReloadingCert;
use rustls::pki_types::{CertificateDer, pem::PemObject};

/// A self-signed certificate and key for `cn` in `dir`, written as `tls.crt` and `tls.key`.
fn make(dir: &Path, cn: &str) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
        ])
        .arg(format!("/CN={cn}"))
        .args(["-keyout", "tls.key.new", "-out", "tls.crt.new"])
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Key first, then certificate, each by rename, as the kubelet swaps a Secret's files.
    std::fs::rename(dir.join("tls.key.new"), dir.join("tls.key")).unwrap();
    std::fs::rename(dir.join("tls.crt.new"), dir.join("tls.crt")).unwrap();
}

fn served_der(c: &ReloadingCert) -> Vec<u8> {
    c.current().cert[0].as_ref().to_vec()
}

fn file_der(dir: &Path) -> Vec<u8> {
    CertificateDer::pem_file_iter(dir.join("tls.crt"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .as_ref()
        .to_vec()
}

#[test]
fn certificate_is_reloaded_when_renewed_and_kept_when_broken() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make(d, "first");
    let cert = ReloadingCert::new(&d.join("tls.crt"), &d.join("tls.key")).unwrap();
    assert_eq!(served_der(&cert), file_der(d));
    assert!(
        !cert.reload_if_changed().unwrap(),
        "unchanged files are not re-read"
    );

    let first = served_der(&cert);
    std::thread::sleep(std::time::Duration::from_millis(20));
    make(d, "second");
    assert!(cert.reload_if_changed().unwrap());
    assert_ne!(served_der(&cert), first);
    assert_eq!(served_der(&cert), file_der(d));

    // A half-written renewal fails and the served certificate stays.
    let second = served_der(&cert);
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(d.join("tls.crt"), "-----BEGIN CERTIFICATE-----\nAAAA\n").unwrap();
    assert!(cert.reload_if_changed().is_err());
    assert_eq!(served_der(&cert), second);

    // Missing files are an error at start.
    let e = ReloadingCert::new(&d.join("nope.crt"), &d.join("tls.key")).unwrap_err();
    assert!(e.to_string().contains("nope.crt"), "{e}");
}

#[test]
fn bad_flags_name_the_flag_before_any_connection() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make(d, "flags");
    let run = |args: &[&str]| {
        common::nodetopo()
            .arg("webhook")
            .args(args)
            .env("KUBECONFIG", d.join("no-kubeconfig"))
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stderr_err()
    };
    let crt = format!("--tls-cert={}", d.join("tls.crt").display());
    let key = format!("--tls-key={}", d.join("tls.key").display());
    let err = run(&[&crt, &key, "--keys", "nvlink.domain,gpu.bogus"]);
    assert!(
        err.contains("--keys") && err.contains("not a nodetopo label"),
        "{err}"
    );
    let err = run(&[&crt, &key, "--pod-label-prefix", "Bad_Prefix"]);
    assert!(
        err.contains("--pod-label-prefix") && err.contains("Bad_Prefix"),
        "{err}"
    );
    let err = run(&[&crt, &key, "--block-label", "a/b/c"]);
    assert!(err.contains("--block-label"), "{err}");
    let err = run(&["--tls-cert=/nonexistent/tls.crt", &key]);
    assert!(
        err.contains("--tls-cert") && err.contains("/nonexistent/tls.crt"),
        "{err}"
    );
    // Valid flags get as far as the Kubernetes client, which has no configuration here.
    let err = run(&[&crt, &key, "--block-label", "network.example.com/leaf=leaf"]);
    assert!(err.contains("Kubernetes API"), "{err}");
}
