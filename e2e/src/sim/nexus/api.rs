//! The certificate operations (spec §6–§8): routing, request decoding, the `{error,msg}`
//! envelope, and each endpoint's behaviour over the [`Store`](super::store::Store).

use std::net::IpAddr;

use base64::{Engine as _, engine::general_purpose::STANDARD};
use hyper::{HeaderMap, Method, StatusCode, header};
use rustls::pki_types::CertificateDer;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;
use x509_parser::{
    certificate::X509Certificate,
    certification_request::X509CertificationRequest,
    extensions::{GeneralName, ParsedExtension},
    oid_registry::OID_PKCS1_RSAENCRYPTION,
    prelude::FromDer as _,
};

use super::{
    BASE_PATH, HttpResponse, NexusReading, NexusSigningMode, NexusSimulatorConfig, Shared, json_response,
    multipart, pem_string, signing,
    store::{HOLD, Status, StoredCertificate, normalize_dn, normalize_serial},
    typed_response,
};
use crate::sim::{LeafSpec, LeafUsage, SubjectName, hex_lower, hex_upper, random_serial};

/// An API operation, named as in counters and fault filters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /certificates`.
    ListCertificates,
    /// `GET /certificates/{certid}/details`.
    Details(String),
    /// `GET /certificates/{certid}/download`.
    Download(String),
    /// `POST /certificates/revoke`.
    Revoke,
    /// `POST /certificates/reinstate`.
    Reinstate,
    /// `POST /certificates/pkcs10`.
    IssuePkcs10,
    /// `GET /procedures`.
    Procedures,
}

impl Endpoint {
    /// The counter and fault-filter name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::ListCertificates => "listCertificates",
            Self::Details(_) => "details",
            Self::Download(_) => "download",
            Self::Revoke => "revoke",
            Self::Reinstate => "reinstate",
            Self::IssuePkcs10 => "issuePkcs10",
            Self::Procedures => "procedures",
        }
    }
}

/// The endpoint for a method and path, or `None` (answered 404 like Tomcat).
pub fn route(method: &Method, path: &str) -> Option<Endpoint> {
    let rest = path.strip_prefix(BASE_PATH)?;
    let segments: Vec<&str> = rest.trim_end_matches('/').split('/').skip(1).collect();
    match (method, segments.as_slice()) {
        (&Method::GET, ["certificates"]) => Some(Endpoint::ListCertificates),
        (&Method::GET, ["certificates", id, "details"]) => Some(Endpoint::Details(decode_segment(id))),
        (&Method::GET, ["certificates", id, "download"]) => Some(Endpoint::Download(decode_segment(id))),
        (&Method::POST, ["certificates", "revoke"]) => Some(Endpoint::Revoke),
        (&Method::POST, ["certificates", "reinstate"]) => Some(Endpoint::Reinstate),
        (&Method::POST, ["certificates", "pkcs10"]) => Some(Endpoint::IssuePkcs10),
        (&Method::GET, ["procedures"]) => Some(Endpoint::Procedures),
        _ => None,
    }
}

fn decode_segment(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .into_owned()
}

/// One request as the handlers see it.
pub struct Call<'a> {
    /// Request headers.
    pub headers: &'a HeaderMap,
    /// Raw query string.
    pub query: &'a str,
    /// Whole body.
    pub body: &'a [u8],
    /// DER of the TLS client certificate (the officer).
    pub officer_leaf: &'a [u8],
}

impl Call<'_> {
    fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// The officer's subject DN, part of every `dataToSign` so one officer cannot sign another's
    /// challenge.
    fn officer(&self) -> String {
        X509Certificate::from_der(self.officer_leaf)
            .map(|(_, certificate)| certificate.subject().to_string())
            .unwrap_or_default()
    }
}

/// A certificate failure in revoke or reinstate (spec §5.2).
#[derive(Clone, Debug)]
pub struct CertFailure {
    certid: String,
    errorcode: i32,
    errormessage: &'static str,
}

/// The documented errors (spec §5.1), all answered HTTP 500 with the JSON envelope.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// -7: a required field is absent.
    #[error("Missing field: {0}")]
    MissingField(&'static str),
    /// -8: undecodable input (base64, CSR, body encoding).
    #[error("Encoding error: {0}")]
    Encoding(String),
    /// -14: a field value is refused; the text is the `msg`.
    #[error("{0}")]
    BadFieldValue(String),
    /// -17: the `signature` did not verify.
    #[error("Bad signature")]
    BadSignature,
    /// -18: PGWY lost CM.
    #[error("Connection error")]
    ConnectionError,
    /// -40: rate limited.
    #[error("Too many requests")]
    TooManyRequests,
    /// -1 with `errors[]`.
    #[error("{msg}")]
    PerCertificate {
        /// `msg`.
        msg: &'static str,
        /// The failed certificates.
        errors: Vec<CertFailure>,
    },
    /// -1 "No procedures found".
    #[error("No procedures found")]
    NoProcedures,
}

impl ApiError {
    /// The JSON `error` code.
    pub fn code(&self) -> i32 {
        match self {
            Self::MissingField(_) => -7,
            Self::Encoding(_) => -8,
            Self::BadFieldValue(_) => -14,
            Self::BadSignature => -17,
            Self::ConnectionError => -18,
            Self::TooManyRequests => -40,
            Self::PerCertificate { .. } | Self::NoProcedures => -1,
        }
    }

    /// HTTP 500 with `{error, msg}` (and `errors` for per-certificate failures).
    pub fn into_response(self) -> HttpResponse {
        let mut body = json!({ "error": self.code(), "msg": self.to_string() });
        if let (Self::PerCertificate { errors, .. }, Some(object)) = (&self, body.as_object_mut()) {
            let errors: Vec<Value> = errors
                .iter()
                .map(|failure| {
                    json!({
                        "certid": failure.certid,
                        "errorcode": failure.errorcode,
                        "errormessage": failure.errormessage,
                        "servererrormessage": format!(
                            "Certificate with certSerNr: {}: {}", failure.certid, failure.errormessage
                        ),
                    })
                })
                .collect();
            object.insert("errors".to_owned(), Value::from(errors));
        }
        json_response(StatusCode::INTERNAL_SERVER_ERROR, &body)
    }
}

/// A successful (HTTP 200) answer.
pub enum Reply {
    /// A JSON body with `error: 0`.
    Json(Value),
    /// The `-19` challenge with this blob.
    Challenge(Vec<u8>),
    /// A freshly issued certificate, rendered.
    Issued(Binary),
    /// A downloaded certificate, rendered.
    Download(Binary),
}

/// A binary body with its media type.
pub struct Binary {
    content_type: &'static str,
    body: Vec<u8>,
}

impl Reply {
    /// The HTTP response.
    pub fn into_response(self) -> HttpResponse {
        match self {
            Self::Json(value) => json_response(StatusCode::OK, &value),
            Self::Challenge(blob) => json_response(
                StatusCode::OK,
                &json!({
                    "error": -19,
                    "msg": "Sign request and send again",
                    "dataToSign": STANDARD.encode(blob),
                }),
            ),
            Self::Issued(binary) | Self::Download(binary) => {
                typed_response(StatusCode::OK, binary.content_type, binary.body)
            }
        }
    }
}

/// Runs `endpoint`.
pub fn dispatch(shared: &Shared, endpoint: &Endpoint, call: &Call<'_>) -> Result<Reply, ApiError> {
    match endpoint {
        Endpoint::ListCertificates => list_certificates(shared, call),
        Endpoint::Details(certid) => details(shared, certid),
        Endpoint::Download(certid) => download(shared, certid, call),
        Endpoint::Revoke => revoke(shared, call),
        Endpoint::Reinstate => reinstate(shared, call),
        Endpoint::IssuePkcs10 => issue_pkcs10(shared, call),
        Endpoint::Procedures => procedures(shared),
    }
}

// ---------------------------------------------------------------------------------------------
// Signing gate
// ---------------------------------------------------------------------------------------------

/// Decides whether a write request runs: `Ok(None)` to execute, `Ok(Some(challenge))` to answer
/// `-19`, `Err(-17)` for a signature that does not verify.
fn authorize(
    shared: &Shared,
    operation: &str,
    mut fields: Vec<(&str, String)>,
    call: &Call<'_>,
    signature: Option<&str>,
) -> Result<Option<Reply>, ApiError> {
    if shared.config.signing_mode == NexusSigningMode::Vro {
        // Inferred (spec §3.2): the doc does not say what VRO does with a signature; ignored.
        return Ok(None);
    }
    fields.push(("officer", call.officer()));
    let blob = signing::data_to_sign(operation, &fields);
    match signature.filter(|text| !text.trim().is_empty()) {
        None => Ok(Some(Reply::Challenge(blob))),
        Some(signature) => {
            signing::verify(signature, &blob, shared.officer_ca.intermediate_der()).map_err(|error| {
                tracing::debug!(operation, %error, "signature refused");
                ApiError::BadSignature
            })?;
            Ok(None)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Issuance
// ---------------------------------------------------------------------------------------------

/// Which rendering the `Accept` header asks for (spec §7.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Pkcs7,
    PkixCert,
    /// PEM chain; `None` or `Some(0)` is the whole chain, `Some(n)` the first `n` from the leaf.
    PemChain(Option<usize>),
}

fn negotiate(accept: Option<&str>) -> Result<Format, ApiError> {
    // Inferred (spec §4): without Accept the server answers PKCS#7, like the VRO example.
    let Some(accept) = accept.filter(|text| !text.trim().is_empty()) else {
        return Ok(Format::Pkcs7);
    };
    for range in accept.split(',') {
        let mut pieces = range.split(';');
        let media = pieces.next().unwrap_or_default().trim().to_ascii_lowercase();
        let depth = pieces.find_map(|parameter| {
            let (name, value) = parameter.split_once('=')?;
            (name.trim().eq_ignore_ascii_case("depth")).then(|| value.trim().parse::<usize>().ok())?
        });
        match media.as_str() {
            "application/pkcs7-mime" | "*/*" | "application/*" => return Ok(Format::Pkcs7),
            "application/pkix-cert" => return Ok(Format::PkixCert),
            "application/pem-certificate-chain" => return Ok(Format::PemChain(depth)),
            _ => {}
        }
    }
    // Inferred (spec §7.4): we chose -14 over 406 so clients see the usual envelope.
    Err(ApiError::BadFieldValue(format!(
        "Unsupported media type: {accept}"
    )))
}

fn render(format: Format, chain: &[&[u8]]) -> Binary {
    match format {
        Format::PkixCert => Binary {
            content_type: "application/pkix-cert",
            body: chain.first().map(|leaf| leaf.to_vec()).unwrap_or_default(),
        },
        Format::Pkcs7 => Binary {
            content_type: "application/pkcs7-mime",
            body: pkcs7_certs_only(chain),
        },
        Format::PemChain(depth) => {
            let take = match depth {
                None | Some(0) => chain.len(),
                Some(n) => n.min(chain.len()),
            };
            let mut body = String::new();
            for der in &chain[..take] {
                body.push_str(&pem_string("CERTIFICATE", der));
                body.push('\n');
            }
            Binary {
                content_type: "application/pem-certificate-chain",
                body: body.into_bytes(),
            }
        }
    }
}

/// A certs-only PKCS#7 `SignedData`. Certificates we issued always re-encode, so on the
/// impossible failure the body is empty and the client's parser reports it.
fn pkcs7_certs_only(chain: &[&[u8]]) -> Vec<u8> {
    use cms::{
        cert::CertificateChoices,
        content_info::{CmsVersion, ContentInfo},
        signed_data::{CertificateSet, EncapsulatedContentInfo, SignedData, SignerInfos},
    };
    use der::{
        Any, Decode as _, Encode as _,
        asn1::{ObjectIdentifier, SetOfVec},
    };
    let build = || -> Result<Vec<u8>, der::Error> {
        let choices = chain
            .iter()
            .map(|der| x509_cert::Certificate::from_der(der).map(CertificateChoices::Certificate))
            .collect::<Result<Vec<_>, _>>()?;
        let signed = SignedData {
            version: CmsVersion::V1,
            digest_algorithms: SetOfVec::new(),
            encap_content_info: EncapsulatedContentInfo {
                econtent_type: ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1"),
                econtent: None,
            },
            certificates: Some(CertificateSet(SetOfVec::try_from(choices)?)),
            crls: None,
            signer_infos: SignerInfos(SetOfVec::new()),
        };
        ContentInfo {
            content_type: ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2"),
            content: Any::encode_from(&signed)?,
        }
        .to_der()
    };
    build().unwrap_or_else(|error| {
        tracing::error!(%error, "encoding PKCS#7 failed");
        Vec::new()
    })
}

/// The CSR bytes of a `pkcs10` part: raw DER, PEM, or base64 DER (spec §7.7 accepts all three).
fn decode_csr(part: &[u8]) -> Result<Vec<u8>, ApiError> {
    if part.first() == Some(&0x30) {
        return Ok(part.to_vec());
    }
    let text = std::str::from_utf8(part).map_err(|_| ApiError::Encoding("pkcs10".to_owned()))?;
    let body: String = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.starts_with("-----"))
        .flat_map(str::chars)
        .filter(|c| !c.is_whitespace())
        .collect();
    STANDARD
        .decode(body)
        .map_err(|_| ApiError::Encoding("pkcs10".to_owned()))
}

fn parse_time(field: &'static str, text: &str) -> Result<OffsetDateTime, ApiError> {
    let bad = || ApiError::BadFieldValue(format!("Bad field value: {field}"));
    let timestamp: jiff::Timestamp = text.trim().parse().map_err(|_| bad())?;
    OffsetDateTime::from_unix_timestamp(timestamp.as_second()).map_err(|_| bad())
}

fn issue_pkcs10(shared: &Shared, call: &Call<'_>) -> Result<Reply, ApiError> {
    let boundary = call
        .header(header::CONTENT_TYPE)
        .and_then(multipart::boundary)
        .ok_or_else(|| ApiError::Encoding("multipart/form-data expected".to_owned()))?;
    let parts = multipart::parse(call.body, &boundary)
        .ok_or_else(|| ApiError::Encoding("malformed multipart body".to_owned()))?;
    let text = |name: &str| {
        parts
            .get(name)
            .map(|value| String::from_utf8_lossy(value).trim().to_owned())
            .filter(|value| !value.is_empty())
    };
    let csr_part = parts
        .get("pkcs10")
        .filter(|value| !value.is_empty())
        .ok_or(ApiError::MissingField("pkcs10"))?;
    let csr_der = decode_csr(csr_part)?;
    let (rest, request) = X509CertificationRequest::from_der(&csr_der)
        .map_err(|_| ApiError::Encoding("pkcs10 is not a PKCS#10 request".to_owned()))?;
    if !rest.is_empty() || request.verify_signature().is_err() {
        return Err(ApiError::Encoding(
            "pkcs10 is not a valid PKCS#10 request".to_owned(),
        ));
    }
    let procedure = text("procname").unwrap_or_else(|| shared.config.default_procedure.clone());
    if !shared.config.procedures.contains(&procedure) {
        return Err(ApiError::BadFieldValue(
            "Code -14, invalid procedure id".to_owned(),
        ));
    }
    let valid_from_text = text("validfrom");
    let valid_to_text = text("validto");
    let valid_from = valid_from_text
        .as_deref()
        .map(|value| parse_time("validfrom", value))
        .transpose()?;
    let valid_to = valid_to_text
        .as_deref()
        .map(|value| parse_time("validto", value))
        .transpose()?;
    let format = negotiate(call.header(header::ACCEPT))?;
    let csr_sha256 = hex_lower(&Sha256::digest(&csr_der));
    let fields = vec![
        ("pkcs10-sha256", csr_sha256.clone()),
        ("procname", procedure.clone()),
        ("validfrom", valid_from_text.unwrap_or_default()),
        ("validto", valid_to_text.unwrap_or_default()),
    ];
    if let Some(challenge) = authorize(shared, "issuePkcs10", fields, call, text("signature").as_deref())? {
        return Ok(challenge);
    }
    let now = OffsetDateTime::now_utc();
    let not_before = valid_from.unwrap_or(now);
    // Inferred (spec §7.7): the procedure's default validity is undocumented; we chose one year.
    let not_after = valid_to.unwrap_or(not_before + time::Duration::days(365));
    if not_after <= not_before {
        return Err(ApiError::BadFieldValue("Bad field value: validto".to_owned()));
    }
    let info = &request.certification_request_info;
    let common_name = info
        .subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned);
    let spec = LeafSpec {
        common_name: common_name.clone(),
        names: requested_names(&request),
        not_before,
        not_after,
        serial: issued_serial(shared.config.reading),
        usage: LeafUsage::Server,
        key_encipherment: info.subject_pki.algorithm.algorithm == OID_PKCS1_RSAENCRYPTION,
    };
    let leaf = shared
        .issuing
        .issue(info.subject_pki.raw, &spec)
        .map_err(|error| ApiError::BadFieldValue(format!("Code -14, {error}")))?;
    let stored = stored_certificate(shared, &leaf, common_name, &procedure);
    let chain: Vec<&[u8]> = if shared.config.store_chain {
        vec![
            leaf.as_ref(),
            shared.issuing.intermediate_der().as_ref(),
            shared.issuing.root_der().as_ref(),
        ]
    } else {
        vec![leaf.as_ref()]
    };
    let binary = render(format, &chain);
    let mut store = shared.store();
    let mut stored = stored;
    stored.certid = store.allocate_certid();
    tracing::info!(certid = %stored.certid, serial = %stored.serial_hex, %procedure, "certificate issued");
    *store.issuances_per_csr.entry(csr_sha256).or_default() += 1;
    store.certificates.push(stored);
    Ok(Reply::Issued(binary))
}

/// A fresh serial; in the strict reading its first byte has the high bit set, so the DER integer
/// carries a leading `00` ([`NexusReading`] item 1). In the common reading its first byte is
/// 0x10..=0x7f, so both spellings coincide and a client's lookup is one search, which the
/// index-lag knob counts.
fn issued_serial(reading: NexusReading) -> Vec<u8> {
    let mut random = random_serial();
    match reading {
        NexusReading::Common => {
            random[0] |= 0x10;
            random.to_vec()
        }
        NexusReading::Strict => {
            let mut serial = vec![0];
            serial.extend_from_slice(&random);
            serial[1] |= 0x80;
            serial
        }
    }
}

fn stored_certificate(
    shared: &Shared,
    leaf: &CertificateDer<'static>,
    common_name: Option<String>,
    procedure: &str,
) -> StoredCertificate {
    let parsed = X509Certificate::from_der(leaf)
        .ok()
        .map(|(_, certificate)| certificate);
    let mut ski = None;
    let mut aki = None;
    let mut serial_hex = String::new();
    let mut serial_der_hex = String::new();
    let mut not_before = OffsetDateTime::now_utc();
    let mut not_after = not_before;
    if let Some(certificate) = &parsed {
        serial_hex = normalize_serial(&hex_lower(certificate.raw_serial()));
        serial_der_hex = hex_upper(certificate.raw_serial());
        not_before = certificate.validity().not_before.to_datetime();
        not_after = certificate.validity().not_after.to_datetime();
        for extension in certificate.extensions() {
            match extension.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(id) => ski = Some(hex_upper(id.0)),
                ParsedExtension::AuthorityKeyIdentifier(id) => {
                    aki = id.key_identifier.as_ref().map(|id| hex_upper(id.0));
                }
                _ => {}
            }
        }
    }
    StoredCertificate {
        certid: String::new(),
        serial_hex,
        serial_der_hex,
        der: leaf.to_vec(),
        subject: common_name.clone().unwrap_or_default(),
        common_name,
        issuer: rfc1779(shared.issuing.intermediate_subject()),
        not_before,
        not_after,
        status: Status::Active,
        procedure: procedure.to_owned(),
        ski,
        aki,
        unindexed_searches: shared.config.index_lag_searches,
    }
}

/// `CN=a,O=b,C=US` in the lower-case attribute style of `JsonIssuer.subjectDn` (spec §9.2).
fn rfc1779(dn: &str) -> String {
    dn.split(',')
        .map(|rdn| match rdn.split_once('=') {
            Some((name, value)) => format!("{}={value}", name.to_ascii_lowercase()),
            None => rdn.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn requested_names(request: &X509CertificationRequest<'_>) -> Vec<SubjectName> {
    let Some(extensions) = request.requested_extensions() else {
        return Vec::new();
    };
    let mut names = Vec::new();
    for extension in extensions {
        let ParsedExtension::SubjectAlternativeName(san) = extension else {
            continue;
        };
        for name in &san.general_names {
            match name {
                GeneralName::DNSName(text) => names.push(SubjectName::Dns((*text).to_owned())),
                GeneralName::RFC822Name(text) => names.push(SubjectName::Email((*text).to_owned())),
                GeneralName::URI(text) => names.push(SubjectName::Uri((*text).to_owned())),
                GeneralName::IPAddress(bytes) => {
                    let ip = match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes).ok().map(IpAddr::from),
                        16 => <[u8; 16]>::try_from(*bytes).ok().map(IpAddr::from),
                        _ => None,
                    };
                    names.extend(ip.map(SubjectName::Ip));
                }
                _ => {}
            }
        }
    }
    names
}

// ---------------------------------------------------------------------------------------------
// Reads
// ---------------------------------------------------------------------------------------------

fn no_certificate() -> ApiError {
    ApiError::BadFieldValue("No certificate found".to_owned())
}

fn details(shared: &Shared, certid: &str) -> Result<Reply, ApiError> {
    let store = shared.store();
    let certificate = store.find(certid).ok_or_else(no_certificate)?;
    Ok(Reply::Json(json!({
        "error": 0,
        "msg": "Fetched certificate",
        "certificate": certificate.to_json(
            shared.config.rfc3339_dates,
            shared.config.reading == NexusReading::Strict
        ),
    })))
}

fn download(shared: &Shared, certid: &str, call: &Call<'_>) -> Result<Reply, ApiError> {
    let format = negotiate(call.header(header::ACCEPT))?;
    let store = shared.store();
    let certificate = store.find(certid).ok_or_else(no_certificate)?;
    // Inferred (spec §7.4): "full chain" includes the root, since CM holds it.
    let chain = [
        certificate.der.as_slice(),
        shared.issuing.intermediate_der().as_ref(),
        shared.issuing.root_der().as_ref(),
    ];
    Ok(Reply::Download(render(format, &chain)))
}

fn procedures(shared: &Shared) -> Result<Reply, ApiError> {
    if shared.config.procedures.is_empty() {
        return Err(ApiError::NoProcedures);
    }
    let procedures: Vec<Value> = shared
        .config
        .procedures
        .iter()
        .map(|name| json!({ "procid": procid(name), "name": name }))
        .collect();
    Ok(Reply::Json(json!({
        "error": 0,
        "msg": "Fetched procedures",
        "procedures": procedures,
    })))
}

/// Inferred (spec §8): a `procid` in the example's style, `t-` plus the lower-cased name with
/// dashes.
fn procid(name: &str) -> String {
    let slug: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    format!("t-{slug}")
}

fn query_pairs(query: &str) -> Vec<(String, String)> {
    // `+` is a literal plus in RFC 1779 issuer filters sent with `%20` for spaces (spec §4), but
    // form decoding would turn it into a space; protect it first.
    form_urlencoded::parse(query.replace('+', "%2B").as_bytes())
        .into_owned()
        .collect()
}

fn list_certificates(shared: &Shared, call: &Call<'_>) -> Result<Reply, ApiError> {
    let pairs = query_pairs(call.query);
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
            .filter(|value| !value.is_empty())
    };
    let number = |name: &'static str| {
        get(name)
            .map(|value| {
                value
                    .parse::<u32>()
                    .map_err(|_| ApiError::BadFieldValue(format!("Bad field value: {name}")))
            })
            .transpose()
    };
    let time = |name: &'static str| get(name).map(|value| parse_time(name, value)).transpose();
    let flag = |name: &str| get(name).is_some_and(|value| value.eq_ignore_ascii_case("true"));
    let limit = number("searchLimit")?;
    let offset = number("searchOffset")?.unwrap_or(0);
    let serial = get("certificateSerialNumber");
    let common_name = get("subjectCommonName");
    let issuer = get("issuer").map(normalize_dn);
    let ski = get("subjectKeyIdentifier").map(str::to_ascii_uppercase);
    let aki = get("authorityKeyIdentifier").map(str::to_ascii_uppercase);
    let reasons: Option<Vec<u8>> = get("revocationReason")
        .map(|value| {
            value
                .split(',')
                .map(|reason| reason.trim().parse::<u8>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| ApiError::BadFieldValue("Bad field value: revocationReason".to_owned()))
        })
        .transpose()?;
    // Every simulated certificate is an end entity; `subjectType` defaults to EE (spec §7.1).
    let wants_ee = get("subjectType").is_none_or(|value| {
        value
            .split(',')
            .any(|kind| kind.trim().eq_ignore_ascii_case("EE"))
    });
    let valid_from_from = time("validFromTimeFrom")?;
    let valid_from_to = time("validFromTimeTo")?;
    let valid_to_from = time("validToTimeFrom")?;
    let valid_to_to = time("validToTimeTo")?;
    let revoked_from = time("revocationTimeFrom")?;
    let revoked_to = time("revocationTimeTo")?;
    let not_revoked = flag("isNotRevoked");
    let expired = flag("isExpired");
    let not_yet_valid = flag("isNotYetValid");
    let now = OffsetDateTime::now_utc();
    // Inferred (spec §7.1): "after"/"before" read as exclusive bounds.
    let within = |at: OffsetDateTime, from: Option<OffsetDateTime>, to: Option<OffsetDateTime>| {
        from.is_none_or(|from| at > from) && to.is_none_or(|to| at < to)
    };
    let mut store = shared.store();
    let indexed = store.searchable();
    let hits: Vec<&StoredCertificate> = store
        .certificates
        .iter()
        .zip(indexed)
        .filter(|(_, indexed)| *indexed)
        .map(|(certificate, _)| certificate)
        .filter(|_| wants_ee)
        .filter(|c| {
            serial.is_none_or(|serial| match shared.config.reading {
                NexusReading::Common => c.serial_hex == normalize_serial(serial),
                // NexusReading item 1: a text column compared ignoring case only.
                NexusReading::Strict => c.serial_der_hex.eq_ignore_ascii_case(serial.trim()),
            })
        })
        .filter(|c| common_name.is_none_or(|cn| c.common_name.as_deref() == Some(cn)))
        .filter(|c| {
            issuer
                .as_ref()
                .is_none_or(|issuer| &normalize_dn(&c.issuer) == issuer)
        })
        .filter(|c| ski.as_ref().is_none_or(|ski| c.ski.as_ref() == Some(ski)))
        .filter(|c| aki.as_ref().is_none_or(|aki| c.aki.as_ref() == Some(aki)))
        .filter(|c| within(c.not_before, valid_from_from, valid_from_to))
        .filter(|c| within(c.not_after, valid_to_from, valid_to_to))
        .filter(|c| !not_revoked || c.status == Status::Active)
        .filter(|c| !expired || c.not_after < now)
        .filter(|c| !not_yet_valid || c.not_before > now)
        .filter(|c| match c.status {
            Status::Active => reasons.is_none() && revoked_from.is_none() && revoked_to.is_none(),
            Status::Revoked { reason, at } => {
                reasons.as_ref().is_none_or(|reasons| reasons.contains(&reason))
                    && within(at, revoked_from, revoked_to)
            }
        })
        .collect();
    page(&hits, limit, offset, &shared.config)
}

/// One page of search hits with their total: the `listCertificates` answer.
fn page(
    hits: &[&StoredCertificate],
    limit: Option<u32>,
    offset: u32,
    config: &NexusSimulatorConfig,
) -> Result<Reply, ApiError> {
    let max = config.max_search_hits;
    let total = u32::try_from(hits.len()).unwrap_or(u32::MAX);
    // Inferred (spec §7.1, §12): an explicit searchLimit above certsearch.maxhits is capped; a
    // search without searchLimit whose hits exceed maxhits is refused with -14 "Too many hits",
    // the documented answer a client narrows its search on.
    let limit = match limit {
        Some(limit) => limit.min(max),
        None if total > max => return Err(ApiError::BadFieldValue("Too many hits".to_owned())),
        None => max,
    };
    let page: Vec<Value> = hits
        .iter()
        .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        .take(usize::try_from(limit).unwrap_or(usize::MAX))
        .map(|c| c.to_json(config.rfc3339_dates, config.reading == NexusReading::Strict))
        .collect();
    Ok(Reply::Json(json!({
        "error": 0,
        "msg": "Fetched certificates",
        "searchHits": total,
        "certificates": page,
    })))
}

// ---------------------------------------------------------------------------------------------
// Revoke and reinstate
// ---------------------------------------------------------------------------------------------

/// Reasons `reason` accepts (spec §5.3).
const REVOCATION_REASONS: [u8; 7] = [0, 1, 3, 4, 5, 6, 9];

struct FormRequest {
    certids: Vec<String>,
    fields: Vec<(String, String)>,
}

impl FormRequest {
    fn parse(call: &Call<'_>) -> Result<Self, ApiError> {
        let fields: Vec<(String, String)> = form_urlencoded::parse(call.body).into_owned().collect();
        // Inferred (spec §4): repeated `certid` keys (OpenAPI form/explode); a comma-separated
        // value is accepted too, as clients differ on array encoding.
        let certids: Vec<String> = fields
            .iter()
            .filter(|(key, _)| key == "certid")
            .flat_map(|(_, value)| value.split(','))
            .map(|value| value.trim().to_owned())
            .filter(|value| !value.is_empty())
            .collect();
        if certids.is_empty() {
            return Err(ApiError::MissingField("certid"));
        }
        Ok(Self { certids, fields })
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
            .filter(|value| !value.trim().is_empty())
    }

    /// The certids sorted and joined, so the order they were sent in does not change the blob.
    fn canonical_certids(&self) -> String {
        let mut sorted = self.certids.clone();
        sorted.sort();
        sorted.join(",")
    }
}

fn revoke(shared: &Shared, call: &Call<'_>) -> Result<Reply, ApiError> {
    let form = FormRequest::parse(call)?;
    let reason = form.get("reason").ok_or(ApiError::MissingField("reason"))?;
    let reason = reason
        .trim()
        .parse::<u8>()
        .ok()
        .filter(|reason| REVOCATION_REASONS.contains(reason))
        .ok_or_else(|| ApiError::BadFieldValue("Bad field value: reason".to_owned()))?;
    let fields = vec![
        ("certid", form.canonical_certids()),
        ("reason", reason.to_string()),
    ];
    if let Some(challenge) = authorize(shared, "revoke", fields, call, form.get("signature"))? {
        return Ok(challenge);
    }
    let now = OffsetDateTime::now_utc();
    let mut store = shared.store();
    let mut done = 0_usize;
    let mut errors = Vec::new();
    for certid in &form.certids {
        let failure = |errorcode, errormessage| CertFailure {
            certid: certid.clone(),
            errorcode,
            errormessage,
        };
        match store.find_mut(certid) {
            None => errors.push(failure(907, "The certificate was not found")),
            // Inferred (spec §5.2): a hold on a held certificate is 906; a certificate on hold
            // may be revoked for good with another reason.
            Some(c) if matches!(c.status, Status::Revoked { reason: HOLD, .. }) && reason == HOLD => {
                errors.push(failure(906, "Already on hold"));
            }
            Some(c) if matches!(c.status, Status::Revoked { reason, .. } if reason != HOLD) => {
                errors.push(failure(901, "Already Revoked"));
            }
            Some(c) => {
                c.status = Status::Revoked { reason, at: now };
                done += 1;
            }
        }
    }
    tracing::info!(revoked = done, failed = errors.len(), reason, "revoke");
    if errors.is_empty() {
        Ok(Reply::Json(json!({
            "error": 0,
            "msg": format!("{done} certificate(s) has been revoked"),
        })))
    } else {
        Err(ApiError::PerCertificate {
            msg: "Error(s) occurred during the revocation",
            errors,
        })
    }
}

fn reinstate(shared: &Shared, call: &Call<'_>) -> Result<Reply, ApiError> {
    let form = FormRequest::parse(call)?;
    let fields = vec![("certid", form.canonical_certids())];
    if let Some(challenge) = authorize(shared, "reinstate", fields, call, form.get("signature"))? {
        return Ok(challenge);
    }
    let mut store = shared.store();
    let mut done = 0_usize;
    let mut errors = Vec::new();
    for certid in &form.certids {
        let failure = |errorcode, errormessage| CertFailure {
            certid: certid.clone(),
            errorcode,
            errormessage,
        };
        match store.find_mut(certid) {
            None => errors.push(failure(907, "The certificate was not found")),
            Some(c) if matches!(c.status, Status::Revoked { reason: HOLD, .. }) => {
                c.status = Status::Active;
                done += 1;
            }
            Some(_) => errors.push(failure(910, "Not on hold")),
        }
    }
    if errors.is_empty() {
        Ok(Reply::Json(json!({
            "error": 0,
            "msg": format!("{done} certificate(s) has been reinstated"),
        })))
    } else {
        Err(ApiError::PerCertificate {
            msg: "Error(s) occurred during the reinstatement",
            errors,
        })
    }
}
