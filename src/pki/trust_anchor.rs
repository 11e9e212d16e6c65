//! The CA-certificate validation codes of the root-certificate staging API (seed 002): 0 valid,
//! 2001 unparsable, 2003 expired, 2004 not yet valid, 2012 key usage does not fit a CA, 2013
//! the chain does not verify, 2014 an invalid self-signed certificate — computed for each
//! certificate of a CA chain, so Issuer status can list its trust anchors.

use x509_parser::{certificate::X509Certificate, prelude::FromDer as _};

/// One certificate of a CA chain, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnchorCheck {
    /// Subject DN.
    pub subject: String,
    /// Subject key identifier, hex.
    pub subject_key_id: Option<String>,
    /// End of validity, Unix seconds.
    pub not_after: Option<i64>,
    /// The validation code (0 = valid).
    pub code: i32,
    /// The code's message, in the API's words.
    pub message: &'static str,
}

/// Checks each certificate of a CA chain (the leaf's issuer first) at `now` (Unix seconds).
pub fn check_chain(chain_der: &[Vec<u8>], now: i64) -> Vec<AnchorCheck> {
    chain_der
        .iter()
        .enumerate()
        .map(|(i, der)| {
            let Ok((_, cert)) = X509Certificate::from_der(der) else {
                return AnchorCheck {
                    subject: String::new(),
                    subject_key_id: None,
                    not_after: None,
                    code: 2001,
                    message: "Error parsing a certificate.",
                };
            };
            let key_cert_sign = cert
                .key_usage()
                .ok()
                .flatten()
                .is_none_or(|ku| ku.value.key_cert_sign());
            let self_signed = cert.subject() == cert.issuer();
            let issuer = chain_der
                .get(i + 1)
                .and_then(|d| X509Certificate::from_der(d).ok())
                .map(|(_, c)| c);
            let (validation, message) = if cert.validity().not_after.timestamp() < now {
                (2003, "The certificate is expired.")
            } else if cert.validity().not_before.timestamp() > now {
                (2004, "The certificate is not yet valid.")
            } else if !cert.is_ca() || !key_cert_sign {
                (
                    2012,
                    "The certificate's key usage or extended key usage does not match its purpose.",
                )
            } else if self_signed && cert.verify_signature(None).is_err() {
                (2014, "The certificate is an invalid self-signed certificate.")
            } else if let Some(issuer) = issuer.filter(|_| !self_signed) {
                if cert.verify_signature(Some(issuer.public_key())).is_ok() {
                    (0, "Certificate is valid.")
                } else {
                    (2013, "Error validating the full chain of the certificate.")
                }
            } else {
                (0, "Certificate is valid.")
            };
            AnchorCheck {
                subject: cert.subject().to_string(),
                subject_key_id: cert.extensions().iter().find_map(|e| match e.parsed_extension() {
                    x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(id) => {
                        Some(super::chain::hex(id.0))
                    }
                    _ => None,
                }),
                not_after: Some(cert.validity().not_after.timestamp()),
                code: validation,
                message,
            }
        })
        .collect()
}
