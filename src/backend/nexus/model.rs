//! Wire types of the CM REST API (spec §4, §7–§9), tolerant of the documented inconsistencies:
//! date-times arrive as epoch milliseconds or RFC 3339 strings, and ids as strings or numbers.

use serde::{Deserialize, Deserializer};

/// The envelope every JSON answer carries (spec §4): `error` 0 is success.
#[derive(Deserialize)]
pub struct Envelope {
    /// `ApiResponse_Error`; absent when the JSON is not CM's.
    #[serde(default)]
    pub error: Option<i64>,
    /// Developer text.
    #[serde(default)]
    pub msg: String,
    /// Base64 request blob of the `-19` challenge.
    #[serde(default, rename = "dataToSign")]
    pub data_to_sign: Option<String>,
    /// Per-certificate failures of revoke and reinstate (`ApiErrorResponseWithCertIds`).
    #[serde(default)]
    pub errors: Vec<CertificateError>,
}

impl std::fmt::Debug for Envelope {
    // Hand-written: `dataToSign` must not reach a log line (spec §12).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Envelope")
            .field("error", &self.error)
            .field("msg", &self.msg)
            .field("errors", &self.errors)
            .finish_non_exhaustive()
    }
}

/// One entry of `errors[]` (spec §5.2).
#[derive(Clone, Debug, Deserialize)]
pub struct CertificateError {
    /// The certificate concerned.
    #[serde(default, deserialize_with = "optional_id")]
    pub certid: Option<String>,
    /// 901 already revoked, 907 missing, ...
    pub errorcode: i64,
    /// Short text.
    #[serde(default)]
    pub errormessage: Option<String>,
}

/// `GET /certificates` (spec §7.1).
#[derive(Debug, Deserialize)]
pub struct CertificateList {
    /// Total hits without pagination.
    #[serde(default, rename = "searchHits")]
    pub search_hits: Option<u64>,
    /// This page.
    #[serde(default)]
    pub certificates: Vec<JsonCertificate>,
}

/// `GET /certificates/{certid}/details` (spec §7.3).
#[derive(Debug, Deserialize)]
pub struct CertificateDetails {
    /// The certificate.
    pub certificate: JsonCertificate,
}

/// `JsonCertificate` (spec §9.1); only `certid` and `status` are required.
#[derive(Clone, Debug, Deserialize)]
pub struct JsonCertificate {
    /// CM's id.
    #[serde(deserialize_with = "id")]
    pub certid: String,
    /// `active`, `revoked`, ... (opaque beyond that).
    pub status: String,
    /// Revocation reason, numeric or a name.
    #[serde(default)]
    pub reason: Option<serde_json::Value>,
    /// When it was revoked.
    #[serde(default, deserialize_with = "optional_time")]
    pub revocationtime: Option<jiff::Timestamp>,
    /// notBefore.
    #[serde(default, deserialize_with = "optional_time")]
    pub validfrom: Option<jiff::Timestamp>,
    /// notAfter.
    #[serde(default, deserialize_with = "optional_time")]
    pub validto: Option<jiff::Timestamp>,
    /// X.509 serial, hex.
    #[serde(default)]
    pub certificateserialnumber: Option<String>,
    /// Subject (CM renders values only).
    #[serde(default)]
    pub subject: Option<String>,
    /// Issuer DN.
    #[serde(default)]
    pub issuer: Option<String>,
    /// AKI, hex.
    #[serde(default, rename = "authorityKeyIdentifier")]
    pub authority_key_identifier: Option<String>,
}

/// `GET /procedures` (spec §8).
#[derive(Debug, Deserialize)]
pub struct ProcedureList {
    /// Procedures visible to the officer.
    #[serde(default)]
    pub procedures: Vec<JsonProcedure>,
}

/// One token procedure.
#[derive(Clone, Debug, Deserialize)]
pub struct JsonProcedure {
    /// Key of the registration paths.
    #[serde(default, deserialize_with = "id")]
    pub procid: String,
    /// What `procname` takes.
    #[serde(default)]
    pub name: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum IdForm {
    Text(String),
    Number(i64),
}

fn id<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    Ok(match IdForm::deserialize(deserializer)? {
        IdForm::Text(text) => text,
        IdForm::Number(number) => number.to_string(),
    })
}

fn optional_id<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    Ok(
        Option::<IdForm>::deserialize(deserializer)?.map(|form| match form {
            IdForm::Text(text) => text,
            IdForm::Number(number) => number.to_string(),
        }),
    )
}

#[derive(Deserialize)]
#[serde(untagged)]
enum TimeForm {
    EpochMillis(i64),
    Text(String),
}

/// Spec §4 / §11 item 1: epoch milliseconds (every example) or an RFC 3339 string (the schema);
/// milliseconds in a string are read too. A value that is neither (an empty string) is absent
/// rather than an error, so one odd field cannot hide a whole search page.
fn optional_time<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<jiff::Timestamp>, D::Error> {
    Ok(match Option::<TimeForm>::deserialize(deserializer)? {
        None => None,
        Some(TimeForm::EpochMillis(ms)) => jiff::Timestamp::from_millisecond(ms).ok(),
        Some(TimeForm::Text(text)) => {
            let text = text.trim();
            text.parse::<i64>().map_or_else(
                |_| text.parse().ok(),
                |ms| jiff::Timestamp::from_millisecond(ms).ok(),
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_documented_date_forms_and_id_forms_are_read() {
        let list: CertificateList = serde_json::from_str(
            r#"{"error":0,"msg":"Fetched certificates","searchHits":2,"certificates":[
                {"subject":"Super Officer 1, System, SE","validfrom":1475849262000,"certid":"10003",
                 "certificateserialnumber":"31e96265e40b809cffa3862b073ae98b","subjectType":"EE",
                 "validto":1633615659000,"status":"active"},
                {"certid":10004,"status":"revoked","validto":"2026-05-11T15:30:00Z","reason":5,
                 "validfrom":"1475849262000","revocationtime":""}]}"#,
        )
        .unwrap();
        assert_eq!(list.search_hits, Some(2));
        let [first, second] = list.certificates.as_slice() else {
            panic!("two certificates expected")
        };
        assert_eq!(first.certid, "10003");
        assert_eq!(first.validfrom.unwrap().as_millisecond(), 1_475_849_262_000);
        assert_eq!(second.certid, "10004");
        assert_eq!(second.validto.unwrap().to_string(), "2026-05-11T15:30:00Z");
        assert_eq!(second.validfrom, first.validfrom, "milliseconds in a string");
        assert_eq!(second.revocationtime, None, "an empty time is absent");
    }

    #[test]
    fn the_revocation_error_example_is_read() {
        let envelope: Envelope = serde_json::from_str(
            r#"{"error":-1,"msg":"Error(s) occurred during the revocation","errors":[{"certid":"1",
                "errorcode":907,"errormessage":"The certificate was not found",
                "servererrormessage":"Certificate with certSerNr: 1 is not found."}]}"#,
        )
        .unwrap();
        assert_eq!(envelope.error, Some(-1));
        assert_eq!(envelope.errors[0].errorcode, 907);
        assert_eq!(envelope.errors[0].certid.as_deref(), Some("1"));
        let challenge: Envelope =
            serde_json::from_str(r#"{"error":-19,"msg":"Sign request and send again","dataToSign":"MAA="}"#)
                .unwrap();
        assert_eq!(challenge.data_to_sign.as_deref(), Some("MAA="));
    }
}
