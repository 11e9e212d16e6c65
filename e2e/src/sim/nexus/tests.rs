//! End-to-end checks of the Nexus simulator over real mutual TLS: issuance, caller signing,
//! search paging, revocation codes and the handshake refusal of foreign certificates.

use std::{fmt::Write as _, sync::Arc};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use bytes::Bytes;
use cms::{
    cert::{CertificateChoices, IssuerAndSerialNumber},
    content_info::{CmsVersion, ContentInfo},
    signed_data::{
        CertificateSet, EncapsulatedContentInfo, SignedAttributes, SignedData, SignerIdentifier, SignerInfo,
        SignerInfos,
    },
};
use der::{
    Any, Decode as _, Encode as _,
    asn1::{ObjectIdentifier, OctetString, SetOfVec},
};
use http_body_util::Full;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use ring::{
    rand::SystemRandom,
    signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair},
};
use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject as _},
};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use x509_cert::{attr::Attribute, spki::AlgorithmIdentifierOwned};

use super::*;
use crate::sim::test_support::{Answer, Client};

const ID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
const ID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const ID_CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
const ID_MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
const ID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");

struct Api {
    sim: NexusSimulator,
    client: Client,
}

impl Api {
    async fn start(config: NexusSimulatorConfig) -> Self {
        let sim = NexusSimulator::start(config).await.unwrap();
        let (chain, key) = sim.officer_identity();
        let client = Client::new(sim.server.local_addr(), &sim.tls_ca_pem(), Some((&chain, &key)));
        Self { sim, client }
    }

    async fn get(&self, path: &str, accept: Option<&str>) -> Answer {
        let mut builder = Request::builder()
            .method(Method::GET)
            .uri(format!("{BASE_PATH}{path}"))
            .header("host", "127.0.0.1");
        if let Some(accept) = accept {
            builder = builder.header("accept", accept);
        }
        self.client
            .send(builder.body(Full::new(Bytes::new())).unwrap())
            .await
            .unwrap()
    }

    async fn issue(&self, csr_der: &[u8], accept: Option<&str>, signature: Option<&str>) -> Answer {
        let mut parts = vec![
            ("pkcs10", STANDARD.encode(csr_der)),
            ("procname", "TLS-Server".to_owned()),
            ("validto", "2030-05-11T15:30:00Z".to_owned()),
        ];
        if let Some(signature) = signature {
            parts.push(("signature", signature.to_owned()));
        }
        let mut body = String::new();
        for (name, value) in parts {
            write!(
                body,
                "--b1\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .unwrap();
        }
        body.push_str("--b1--\r\n");
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(format!("{BASE_PATH}/certificates/pkcs10"))
            .header("host", "127.0.0.1")
            .header("content-type", "multipart/form-data; boundary=b1");
        if let Some(accept) = accept {
            builder = builder.header("accept", accept);
        }
        self.client
            .send(builder.body(Full::new(Bytes::from(body))).unwrap())
            .await
            .unwrap()
    }

    async fn form(&self, path: &str, fields: &[(&str, &str)]) -> Answer {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("{BASE_PATH}{path}"))
            .header("host", "127.0.0.1")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        self.client.send(request).await.unwrap()
    }

    /// The certid of the only certificate with this serial.
    async fn certid_of_serial(&self, serial: &str) -> String {
        let answer = self
            .get(&format!("/certificates?certificateSerialNumber={serial}"), None)
            .await;
        let json = answer.json();
        assert_eq!(json["searchHits"], 1, "{json}");
        json["certificates"][0]["certid"].as_str().unwrap().to_owned()
    }
}

fn csr(common_name: &str) -> Vec<u8> {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![format!("{common_name}.example.com")]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    params.serialize_request(&key).unwrap().der().to_vec()
}

fn pem_ders(body: &[u8]) -> Vec<Vec<u8>> {
    pem::parse_many(body)
        .unwrap()
        .into_iter()
        .map(|block| block.contents().to_vec())
        .collect()
}

fn serial_of(der: &[u8]) -> String {
    let (_, certificate) = X509Certificate::from_der(der).unwrap();
    store::normalize_serial(&crate::sim::hex_lower(certificate.raw_serial()))
}

use x509_parser::{certificate::X509Certificate, prelude::FromDer as _};

/// Builds `base64(DER(ContentInfo(SignedData)))` over `content`, attached, signed by the P-256
/// `key_pem` and naming `cert_chain_pem`'s first certificate as signer.
fn sign_cms(content: &[u8], cert_chain_pem: &str, key_pem: &str, with_attributes: bool) -> String {
    let cert_der = pem_ders(cert_chain_pem.as_bytes()).remove(0);
    let certificate = x509_cert::Certificate::from_der(&cert_der).unwrap();
    let key_der = pem::parse(key_pem).unwrap().contents().to_vec();
    let rng = SystemRandom::new();
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &key_der, &rng).unwrap();
    let (signed_attrs, message) = if with_attributes {
        let attribute = |oid, value: Any| Attribute {
            oid,
            values: SetOfVec::try_from(vec![value]).unwrap(),
        };
        let digest = OctetString::new(Sha256::digest(content).to_vec()).unwrap();
        let attributes: SignedAttributes = SetOfVec::try_from(vec![
            attribute(ID_CONTENT_TYPE, Any::encode_from(&ID_DATA).unwrap()),
            attribute(ID_MESSAGE_DIGEST, Any::encode_from(&digest).unwrap()),
        ])
        .unwrap();
        let message = attributes.to_der().unwrap();
        (Some(attributes), message)
    } else {
        (None, content.to_vec())
    };
    let signature = key.sign(&rng, &message).unwrap();
    let algorithm = |oid| AlgorithmIdentifierOwned {
        oid,
        parameters: None,
    };
    let signer = SignerInfo {
        version: CmsVersion::V1,
        sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer: certificate.tbs_certificate.issuer.clone(),
            serial_number: certificate.tbs_certificate.serial_number.clone(),
        }),
        digest_alg: algorithm(ID_SHA256),
        signed_attrs,
        signature_algorithm: algorithm(ECDSA_WITH_SHA256),
        signature: OctetString::new(signature.as_ref().to_vec()).unwrap(),
        unsigned_attrs: None,
    };
    let signed = SignedData {
        version: CmsVersion::V1,
        digest_algorithms: SetOfVec::try_from(vec![algorithm(ID_SHA256)]).unwrap(),
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: ID_DATA,
            econtent: Some(Any::encode_from(&OctetString::new(content.to_vec()).unwrap()).unwrap()),
        },
        certificates: Some(CertificateSet(
            SetOfVec::try_from(vec![CertificateChoices::Certificate(certificate)]).unwrap(),
        )),
        crls: None,
        signer_infos: SignerInfos(SetOfVec::try_from(vec![signer]).unwrap()),
    };
    let info = ContentInfo {
        content_type: ID_SIGNED_DATA,
        content: Any::encode_from(&signed).unwrap(),
    };
    STANDARD.encode(info.to_der().unwrap())
}

fn challenge_blob(answer: &Answer) -> Vec<u8> {
    assert_eq!(answer.status, StatusCode::OK);
    let json = answer.json();
    assert_eq!(json["error"], -19, "{json}");
    assert_eq!(json["msg"], "Sign request and send again");
    STANDARD.decode(json["dataToSign"].as_str().unwrap()).unwrap()
}

fn vro() -> NexusSimulatorConfig {
    NexusSimulatorConfig {
        signing_mode: NexusSigningMode::Vro,
        ..NexusSimulatorConfig::default()
    }
}

#[tokio::test]
async fn vro_issuance_round_trip() {
    let api = Api::start(vro()).await;
    let csr = csr("app");
    let answer = api
        .issue(&csr, Some("application/pem-certificate-chain"), None)
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(
        answer.headers["content-type"],
        "application/pem-certificate-chain"
    );
    let chain = pem_ders(&answer.body);
    assert_eq!(chain.len(), 3, "store all: leaf, intermediate, root");
    let (_, leaf) = X509Certificate::from_der(&chain[0]).unwrap();
    assert_eq!(
        leaf.subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap(),
        "app"
    );
    assert_eq!(leaf.validity().not_after.timestamp(), 1_904_743_800);

    let certid = api.certid_of_serial(&serial_of(&chain[0])).await;
    let details = api
        .get(&format!("/certificates/{certid}/details"), None)
        .await
        .json();
    assert_eq!(details["certificate"]["status"], "active");
    assert_eq!(details["certificate"]["subjectType"], "EE");
    let download = api
        .get(
            &format!("/certificates/{certid}/download"),
            Some("application/pem-certificate-chain;depth=1"),
        )
        .await;
    assert_eq!(pem_ders(&download.body), vec![chain[0].clone()]);
    let der = api
        .get(
            &format!("/certificates/{certid}/download"),
            Some("application/pkix-cert"),
        )
        .await;
    assert_eq!(der.body.as_ref(), chain[0].as_slice());
    let missing = api.get("/certificates/1/details", None).await;
    assert_eq!(missing.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(missing.json()["error"], -14);

    let procedures = api.get("/procedures", None).await.json();
    assert_eq!(procedures["procedures"][0]["name"], "TLS-Server");
    let stats = api.sim.stats();
    assert_eq!(
        stats.issuances_per_csr.values().copied().collect::<Vec<_>>(),
        vec![1]
    );
    assert_eq!(stats.requests["issuePkcs10"], 1);
    api.sim.shutdown().await;
}

#[tokio::test]
async fn caller_signing_round_trip_for_issuance_and_revocation() {
    let api = Api::start(NexusSimulatorConfig::default()).await;
    let (chain, key) = api.sim.officer_identity();
    let csr = csr("signed");
    let blob = challenge_blob(&api.issue(&csr, None, None).await);
    assert!(
        api.sim.stats().certificates.is_empty(),
        "the challenge issues nothing"
    );
    // The blob is deterministic: asking again gives the same bytes.
    assert_eq!(challenge_blob(&api.issue(&csr, None, None).await), blob);

    let signature = sign_cms(&blob, &chain, &key, true);
    let answer = api.issue(&csr, None, Some(&signature)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.headers["content-type"], "application/pkcs7-mime");
    let info = ContentInfo::from_der(&answer.body).unwrap();
    let signed: SignedData = info.content.decode_as().unwrap();
    assert_eq!(signed.certificates.unwrap().0.len(), 3);

    let certid = api.sim.stats().certificates[0].certid.clone();
    let unsigned = [("certid", certid.as_str()), ("reason", "5")];
    let blob = challenge_blob(&api.form("/certificates/revoke", &unsigned).await);
    // Without signed attributes this time, as .NET's SignedCms may send.
    let signature = sign_cms(&blob, &chain, &key, false);
    let signed_form = [unsigned[0], unsigned[1], ("signature", signature.as_str())];
    let answer = api.form("/certificates/revoke", &signed_form).await;
    assert_eq!(answer.json()["error"], 0, "{}", answer.text());
    assert_eq!(api.sim.stats().certificates[0].status, "revoked");
    api.sim.shutdown().await;
}

#[tokio::test]
async fn a_signature_by_the_wrong_key_or_over_other_data_gets_17() {
    let api = Api::start(NexusSimulatorConfig::default()).await;
    let (chain, _) = api.sim.officer_identity();
    let stranger = rcgen::KeyPair::generate().unwrap().serialize_pem();
    let csr = csr("wrong");
    let blob = challenge_blob(&api.issue(&csr, None, None).await);
    let officer_key = api.sim.officer_identity().1;
    for signature in [
        sign_cms(&blob, &chain, &stranger, true),
        sign_cms(b"something else", &chain, &officer_key, true),
        "not base64 CMS".to_owned(),
    ] {
        let answer = api.issue(&csr, None, Some(&signature)).await;
        assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(answer.json()["error"], -17, "{}", answer.text());
    }
    assert!(api.sim.stats().certificates.is_empty());
    api.sim.shutdown().await;
}

#[tokio::test]
async fn a_foreign_client_certificate_fails_the_handshake() {
    let api = Api::start(vro()).await;
    let (chain_pem, key_pem) = api.sim.foreign_identity();
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(api.sim.tls_ca_pem().as_bytes()) {
        roots.add(certificate.unwrap()).unwrap();
    }
    let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let config = ClientConfig::builder_with_provider(rustls::crypto::ring::default_provider().into())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(api.sim.server.local_addr())
        .await
        .unwrap();
    // With TLS 1.3 the client finishes its side before the server checks the certificate, so
    // the refusal shows either in `connect` or as the first request failing.
    let refused = match connector
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
    {
        Err(_) => true,
        Ok(tls) => match hyper::client::conn::http1::handshake(TokioIo::new(tls)).await {
            Err(_) => true,
            Ok((mut sender, connection)) => {
                tokio::spawn(connection);
                let request = Request::builder()
                    .uri(format!("{BASE_PATH}/procedures"))
                    .header("host", "127.0.0.1")
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                sender.send_request(request).await.is_err()
            }
        },
    };
    assert!(refused, "a foreign certificate must not get an answer");
    assert!(api.sim.stats().requests.is_empty());
    api.sim.shutdown().await;
}

#[tokio::test]
async fn search_pages_are_capped_by_maxhits() {
    let api = Api::start(NexusSimulatorConfig {
        max_search_hits: 3,
        ..vro()
    })
    .await;
    for index in 0..5 {
        let answer = api.issue(&csr(&format!("page{index}")), None, None).await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    let too_many = api.get("/certificates", None).await;
    assert_eq!(too_many.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(too_many.json()["msg"], "Too many hits");

    let mut seen = Vec::new();
    let mut offset = 0;
    loop {
        let json = api
            .get(
                &format!("/certificates?searchLimit=2&searchOffset={offset}"),
                None,
            )
            .await
            .json();
        assert_eq!(json["searchHits"], 5);
        let page = json["certificates"].as_array().unwrap().clone();
        seen.extend(page.iter().map(|c| c["certid"].as_str().unwrap().to_owned()));
        offset += 2;
        if offset >= 5 {
            break;
        }
    }
    seen.dedup();
    assert_eq!(seen.len(), 5);
    let capped = api.get("/certificates?searchLimit=50", None).await.json();
    assert_eq!(capped["certificates"].as_array().unwrap().len(), 3);
    let by_cn = api
        .get("/certificates?subjectCommonName=page3", None)
        .await
        .json();
    assert_eq!(by_cn["searchHits"], 1);
    api.sim.shutdown().await;
}

#[tokio::test]
async fn revoking_twice_gives_901_and_holds_can_be_reinstated() {
    let api = Api::start(vro()).await;
    for name in ["first", "second"] {
        api.issue(&csr(name), None, None).await;
    }
    let ids: Vec<String> = api
        .sim
        .stats()
        .certificates
        .into_iter()
        .map(|c| c.certid)
        .collect();
    let revoke = |reason: &'static str, id: &str| {
        let fields = [("certid", id.to_owned()), ("reason", reason.to_owned())];
        let api = &api;
        async move {
            let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            api.form("/certificates/revoke", &fields).await
        }
    };
    let first = revoke("4", &ids[0]).await;
    assert_eq!(first.json()["msg"], "1 certificate(s) has been revoked");
    let again = revoke("4", &ids[0]).await;
    assert_eq!(again.status, StatusCode::INTERNAL_SERVER_ERROR);
    let json: Value = again.json();
    assert_eq!(json["error"], -1);
    assert_eq!(json["errors"][0]["errorcode"], 901);
    assert_eq!(revoke("5", "999").await.json()["errors"][0]["errorcode"], 907);
    assert_eq!(revoke("2", &ids[1]).await.json()["error"], -14);

    assert_eq!(revoke("6", &ids[1]).await.json()["error"], 0);
    let reinstate = |id: &str| {
        let id = id.to_owned();
        let api = &api;
        async move {
            api.form("/certificates/reinstate", &[("certid", id.as_str())])
                .await
        }
    };
    assert_eq!(reinstate(&ids[1]).await.json()["error"], 0);
    assert_eq!(reinstate(&ids[1]).await.json()["errors"][0]["errorcode"], 910);
    let active = api.get("/certificates?isNotRevoked=true", None).await.json();
    assert_eq!(active["searchHits"], 1);
    api.sim.shutdown().await;
}

#[tokio::test]
async fn no_certificate_fails_the_handshake_and_the_officer_reads_the_control_endpoints() {
    let api = Api::start(vro()).await;
    let anonymous = Client::new(api.sim.server.local_addr(), &api.sim.tls_ca_pem(), None);
    let request = |path: &str| {
        Request::builder()
            .uri(path)
            .header("host", "127.0.0.1")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    assert!(anonymous.send(request("/pgwy/api/procedures")).await.is_err());
    assert!(anonymous.send(request("/__simulator/stats")).await.is_err());
    let stats = api.client.send(request("/__simulator/stats")).await.unwrap();
    assert_eq!(stats.status, StatusCode::OK);
    assert!(stats.json()["requests"].as_object().unwrap().is_empty());
    api.sim.shutdown().await;
}

#[tokio::test]
async fn rate_limit_faults_answer_40() {
    let api = Api::start(vro()).await;
    api.sim.set_faults(Faults {
        rate_limit: Some(crate::sim::RateLimitFault {
            retry_after_secs: 1,
            count: 1,
        }),
        endpoints: Some(vec!["procedures".to_owned()]),
        ..Faults::default()
    });
    let limited = api.get("/procedures", None).await;
    assert_eq!(limited.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(limited.json()["error"], -40);
    assert_eq!(api.get("/procedures", None).await.json()["error"], 0);
    assert_eq!(api.sim.stats().requests["procedures"], 2);
    api.sim.shutdown().await;
}

/// The strict reading (`NexusReading`): serials rendered as upper-case DER bytes with their
/// leading `00`, and the serial filter matching that spelling ignoring case only.
#[tokio::test]
async fn strict_reading_spells_serials_as_der_bytes() {
    let api = Api::start(NexusSimulatorConfig {
        reading: NexusReading::Strict,
        ..vro()
    })
    .await;
    let answer = api
        .issue(&csr("strict"), Some("application/pem-certificate-chain"), None)
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let leaf = pem_ders(&answer.body).remove(0);
    let minimal = serial_of(&leaf);
    let (_, parsed) = X509Certificate::from_der(&leaf).unwrap();
    let der_upper = crate::sim::hex_upper(parsed.raw_serial());
    assert!(der_upper.starts_with("00"), "{der_upper}");
    assert_eq!(der_upper.trim_start_matches('0').to_ascii_lowercase(), minimal);
    let by_minimal = api
        .get(&format!("/certificates?certificateSerialNumber={minimal}"), None)
        .await
        .json();
    assert_eq!(by_minimal["searchHits"], 0, "{by_minimal}");
    let certid = api.certid_of_serial(&der_upper.to_ascii_lowercase()).await;
    let details = api
        .get(&format!("/certificates/{certid}/details"), None)
        .await
        .json();
    assert_eq!(details["certificate"]["certificateserialnumber"], der_upper);
    api.sim.shutdown().await;
}
