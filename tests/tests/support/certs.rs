//! Certificates made by a test with rcgen (no key is committed): a CA and certificates it
//! signs, for the TLS suites (`tls.rs`, `py_amqp.rs`).

use std::path::{Path, PathBuf};

use anyhow::Result;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

pub struct Authority {
    certificate: Certificate,
    key: KeyPair,
}

impl Authority {
    /// The CA's own certificate, PEM.
    pub fn pem(&self) -> String {
        self.certificate.pem()
    }
}

pub fn authority(name: &str) -> Result<Authority> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate()?;
    let certificate = params.self_signed(&key)?;
    Ok(Authority { certificate, key })
}

/// A certificate for `names` signed by `issuer`, written as `<dir>/<stem>.pem` and
/// `<dir>/<stem>.key`; `expired` puts its validity in the past.
pub fn issue(
    dir: &Path,
    stem: &str,
    issuer: &Authority,
    purpose: ExtendedKeyUsagePurpose,
    expired: bool,
) -> Result<(PathBuf, PathBuf)> {
    let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".into()])?;
    params.distinguished_name.push(DnType::CommonName, stem);
    params.extended_key_usages = vec![purpose];
    if expired {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let key = KeyPair::generate()?;
    let certificate = params.signed_by(&key, &issuer.certificate, &issuer.key)?;
    let (cert_path, key_path) = (
        dir.join(format!("{stem}.pem")),
        dir.join(format!("{stem}.key")),
    );
    std::fs::write(&cert_path, certificate.pem())?;
    std::fs::write(&key_path, key.serialize_pem())?;
    Ok((cert_path, key_path))
}
