//! Collect formats (spec §3.11): which certificates, in which order, in which encoding.

use cms::{
    cert::CertificateChoices,
    content_info::{CmsVersion, ContentInfo},
    signed_data::{CertificateSet, EncapsulatedContentInfo, SignedData, SignerInfos},
};
use der::{
    Any, Decode as _, Encode as _,
    asn1::{ObjectIdentifier, SetOfVec},
};
use rustls::pki_types::CertificateDer;

use super::{csr::pem_string, error::ScmError};

/// `id-data` (RFC 5652): the content type of the empty encapsulated content.
const ID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
/// `id-signedData` (RFC 5652).
const ID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");

/// A collect `format` value. Names are case-sensitive as written in the docs (inferred, spec
/// §3.11).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Certificate with chain, PEM.
    X509,
    /// Certificate only, PEM.
    X509Co,
    /// Root/intermediate(s) only, PEM.
    X509Io,
    /// Intermediate(s)/root only, PEM (reverse of `x509IO`).
    X509Ior,
    /// Certificate with chain, PEM, reverse order.
    X509R,
    /// Certificate with chain, PEM.
    Pem,
    /// Certificate only, PEM.
    PemCo,
    /// Certificate with its issuer after it, PEM.
    PemIa,
    /// PKCS#7, PEM (`-----BEGIN PKCS7-----`). The default.
    Base64,
    /// PKCS#7, DER.
    Bin,
}

impl Format {
    /// Parses a `format` value; `None` (absent) is the documented default `base64`.
    pub fn parse(value: Option<&str>) -> Result<Self, ScmError> {
        Ok(match value {
            Some("x509") => Self::X509,
            Some("x509CO") => Self::X509Co,
            Some("x509IO") => Self::X509Io,
            Some("x509IOR") => Self::X509Ior,
            Some("x509R") => Self::X509R,
            Some("pem") => Self::Pem,
            Some("pemco") => Self::PemCo,
            Some("pemia") => Self::PemIa,
            None | Some("base64") => Self::Base64,
            Some("bin") => Self::Bin,
            // Inferred (spec §3.11): of -126 and -1450 we chose -126 because its message names
            // SSL certificate downloads specifically.
            Some(other) => return Err(ScmError::UnknownFormat(other.to_owned())),
        })
    }
}

/// The certificates of one collect: the leaf and its chain up to the root.
#[derive(Clone, Copy, Debug)]
pub struct Chain<'a> {
    /// End entity.
    pub leaf: &'a CertificateDer<'static>,
    /// Intermediate.
    pub intermediate: &'a CertificateDer<'static>,
    /// Root.
    pub root: &'a CertificateDer<'static>,
}

/// The collect body for `format`.
pub fn render(format: Format, chain: Chain<'_>) -> Vec<u8> {
    let Chain {
        leaf,
        intermediate,
        root,
    } = chain;
    // The documented example (spec §3.11) lists root → intermediate(s) → leaf: leaf last.
    let pem = |certificates: &[&CertificateDer<'static>]| -> Vec<u8> {
        let mut out = String::new();
        for certificate in certificates {
            out.push_str(&pem_string("CERTIFICATE", certificate));
            out.push('\n');
        }
        out.into_bytes()
    };
    match format {
        // Inferred (spec §3.11): we chose the x509 order for `pem` because the docs describe
        // them identically.
        Format::X509 | Format::Pem => pem(&[root, intermediate, leaf]),
        // Inferred (spec §3.11): we chose leaf first for `x509R` because it is described
        // exactly like `x509` and "R" reads as "reverse", as in x509IO/x509IOR.
        Format::X509R => pem(&[leaf, intermediate, root]),
        Format::X509Co | Format::PemCo => pem(&[leaf]),
        Format::X509Io => pem(&[root, intermediate]),
        Format::X509Ior => pem(&[intermediate, root]),
        // Inferred (spec §3.11): we chose the leaf followed by its issuing intermediate, without
        // the root, because "Certificate (w/ issuer after)" names one issuer after the leaf.
        Format::PemIa => pem(&[leaf, intermediate]),
        Format::Base64 => {
            let mut out = pem_string("PKCS7", &pkcs7_certs_only(&[root, intermediate, leaf]));
            out.push('\n');
            out.into_bytes()
        }
        Format::Bin => pkcs7_certs_only(&[root, intermediate, leaf]),
    }
}

/// A degenerate ("certs-only") PKCS#7 `SignedData`: no content, no signers, just certificates.
///
/// Certificates we issued always re-decode and encode, so failures are impossible in practice;
/// should one occur the body is empty and the client's parser reports it.
pub fn pkcs7_certs_only(certificates: &[&CertificateDer<'static>]) -> Vec<u8> {
    build_pkcs7(certificates).unwrap_or_else(|error| {
        tracing::error!(%error, "encoding PKCS#7 failed");
        Vec::new()
    })
}

fn build_pkcs7(certificates: &[&CertificateDer<'static>]) -> Result<Vec<u8>, der::Error> {
    let choices = certificates
        .iter()
        .map(|der| x509_cert::Certificate::from_der(der).map(CertificateChoices::Certificate))
        .collect::<Result<Vec<_>, _>>()?;
    let signed = SignedData {
        version: CmsVersion::V1,
        digest_algorithms: SetOfVec::new(),
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: ID_DATA,
            econtent: None,
        },
        certificates: Some(CertificateSet(SetOfVec::try_from(choices)?)),
        crls: None,
        signer_infos: SignerInfos(SetOfVec::new()),
    };
    ContentInfo {
        content_type: ID_SIGNED_DATA,
        content: Any::encode_from(&signed)?,
    }
    .to_der()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::TestCa;

    fn pem_blocks(body: &[u8]) -> Vec<Vec<u8>> {
        pem::parse_many(body)
            .unwrap()
            .into_iter()
            .map(|p| {
                assert_eq!(p.tag(), "CERTIFICATE");
                p.into_contents()
            })
            .collect()
    }

    #[test]
    fn formats_order_and_encode_the_chain() {
        let ca = TestCa::generate("Collect Test").unwrap();
        let (leaf, _) = ca
            .issue_with_new_key(&crate::sim::LeafSpec {
                common_name: Some("leaf.example.com".into()),
                names: vec![crate::sim::SubjectName::Dns("leaf.example.com".into())],
                not_before: time::OffsetDateTime::now_utc(),
                not_after: time::OffsetDateTime::now_utc() + time::Duration::days(1),
                serial: vec![1, 2, 3],
                usage: crate::sim::LeafUsage::Server,
                key_encipherment: false,
            })
            .unwrap();
        let chain = Chain {
            leaf: &leaf,
            intermediate: ca.intermediate_der(),
            root: ca.root_der(),
        };
        let (l, i, r) = (
            leaf.to_vec(),
            ca.intermediate_der().to_vec(),
            ca.root_der().to_vec(),
        );
        let blocks = |f| pem_blocks(&render(Format::parse(Some(f)).unwrap(), chain));
        assert_eq!(blocks("x509"), [r.clone(), i.clone(), l.clone()]);
        assert_eq!(blocks("pem"), [r.clone(), i.clone(), l.clone()]);
        assert_eq!(blocks("x509R"), [l.clone(), i.clone(), r.clone()]);
        assert_eq!(blocks("x509CO"), std::slice::from_ref(&l));
        assert_eq!(blocks("pemco"), std::slice::from_ref(&l));
        assert_eq!(blocks("x509IO"), [r.clone(), i.clone()]);
        assert_eq!(blocks("x509IOR"), [i.clone(), r.clone()]);
        assert_eq!(blocks("pemia"), [l.clone(), i.clone()]);

        // base64 (the default) is a PEM PKCS7 whose SignedData holds the three certificates.
        let base64 = render(Format::parse(None).unwrap(), chain);
        let parsed = pem::parse(&base64).unwrap();
        assert_eq!(parsed.tag(), "PKCS7");
        let bin = render(Format::Bin, chain);
        assert_eq!(parsed.contents(), bin.as_slice());
        let info = ContentInfo::from_der(&bin).unwrap();
        assert_eq!(info.content_type, ID_SIGNED_DATA);
        let signed: SignedData = info.content.decode_as().unwrap();
        let mut inside: Vec<Vec<u8>> = signed
            .certificates
            .unwrap()
            .0
            .iter()
            .map(|choice| match choice {
                CertificateChoices::Certificate(c) => c.to_der().unwrap(),
                CertificateChoices::Other(_) => panic!("unexpected certificate choice"),
            })
            .collect();
        inside.sort();
        let mut expected = vec![l, i, r];
        expected.sort();
        assert_eq!(inside, expected);
        assert!(signed.signer_infos.0.is_empty());

        assert_eq!(Format::parse(Some("X509")).unwrap_err().code(), -126);
    }
}
