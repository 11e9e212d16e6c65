//! Request and response bodies of the SCM SSL API, spelled as the vendor spells them
//! (`shared/spec/scm-ssl.md`). Responses are lenient: every field is optional and unknown fields
//! are ignored, because SCM omits nulls and adds fields between versions (spec §7 items 9-10).

use serde::{Deserialize, Deserializer, Serialize};

/// Error body of every response with status >= 400 (spec §1.4).
#[derive(Debug, Default, Deserialize)]
pub struct ErrorBody {
    /// SCM error code (negative; `0` is seen for "Being processed by Sectigo").
    #[serde(default)]
    pub code: i64,
    /// Message.
    #[serde(default)]
    pub description: Option<String>,
}

/// A certificate profile (`GET /types`, spec §1.9). InCommon documents `id` as a String.
#[derive(Debug, Deserialize)]
pub struct ProfileDto {
    /// Profile id.
    #[serde(deserialize_with = "number_or_string")]
    pub id: String,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Terms in days.
    #[serde(default)]
    pub terms: Vec<u32>,
}

/// `POST /enroll` body (spec §3.9; InCommon §5 adds `numberServers` and `serverType`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EnrollBody {
    /// Organization id.
    pub org_id: i64,
    /// PEM CSR.
    pub csr: String,
    /// Comma-separated SANs.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub subj_alt_names: String,
    /// Profile id.
    pub cert_type: i64,
    /// Term in days.
    pub term: u32,
    /// Comment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comments: Option<String>,
    /// Custom fields.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub custom_fields: Vec<CustomField>,
    /// Notified requester emails.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_requester: Option<String>,
    /// InCommon: server licences.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub number_servers: Option<u32>,
    /// InCommon: server type (-1 = OTHER).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_type: Option<i32>,
    /// Per-order DCV method (accounts without DCV pre-validation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dcv_mode: Option<&'static str>,
    /// Approver address for `dcvMode` `EMAIL`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dcv_email: Option<String>,
}

/// A custom field value.
#[derive(Debug, Serialize, Deserialize, Clone)]
pub struct CustomField {
    /// Field name.
    pub name: String,
    /// Value.
    pub value: String,
}

/// `POST /enroll` response.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnrollResponse {
    /// Order id.
    pub ssl_id: i64,
    /// Renew id (20 characters).
    #[serde(default)]
    pub renew_id: Option<String>,
}

/// `POST /renewById/{sslId}` body.
#[derive(Debug, Serialize)]
pub struct RenewByIdBody {
    /// New PEM CSR.
    pub csr: String,
    /// Per-order DCV method (accounts without DCV pre-validation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dcv_mode: Option<&'static str>,
    /// Approver address for `dcvMode` `EMAIL`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dcv_email: Option<String>,
}

/// `POST /renewById/{sslId}` response: the new order.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RenewByIdResponse {
    /// New order id.
    pub ssl_id: i64,
}

/// `POST /replace/{sslId}` body (spec §3.22).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplaceBody {
    /// New PEM CSR.
    pub csr: String,
    /// Why (1..512 characters).
    pub reason: String,
    /// Common name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub common_name: Option<String>,
    /// SANs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subject_alternative_names: Vec<String>,
}

/// `POST /revoke/...` body (spec §3.16; InCommon documents only `reason`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RevokeBody {
    /// RFC 5280 reason code (0, 1, 3-5).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<u8>,
    /// Message, 1..512 characters.
    pub reason: String,
}

/// One item of `GET /api/ssl/v1` (spec §3.4).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListItem {
    /// Order id.
    pub ssl_id: i64,
}

/// The parts of `GET /api/ssl/v1/{sslId}` we use (spec §3.6).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Details {
    /// Status (spec §1.8).
    #[serde(default)]
    pub status: Option<String>,
    /// When the order was placed, `MM/dd/yyyy` without time or zone (spec §3.6, §7 item 11).
    #[serde(default)]
    pub requested: Option<String>,
    /// CSR hashes (`csrDetails`).
    #[serde(default, rename = "csrDetails")]
    pub csr: Option<CsrDetails>,
}

impl Details {
    /// The day the order was placed, when `requested` is in the documented `MM/dd/yyyy` form.
    pub fn requested_date(&self) -> Option<jiff::civil::Date> {
        let text = self.requested.as_deref()?.trim();
        let mut parts = text.split('/');
        let month: i8 = parts.next()?.parse().ok()?;
        let day: i8 = parts.next()?.parse().ok()?;
        let year: i16 = parts.next()?.parse().ok()?;
        if parts.next().is_some() {
            return None;
        }
        jiff::civil::Date::new(year, month, day).ok()
    }
}

/// `csrDetails` of the details response: upper-case hex hashes of the DER CSR.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CsrDetails {
    /// SHA-256 of the DER CSR.
    #[serde(default)]
    pub sha256_hash: Option<String>,
}

fn number_or_string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumberOrString {
        Number(i64),
        String(String),
    }
    Ok(match NumberOrString::deserialize(deserializer)? {
        NumberOrString::Number(n) => n.to_string(),
        NumberOrString::String(s) => s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_ids_may_be_numbers_or_strings() {
        let sectigo: Vec<ProfileDto> = serde_json::from_str(
            r#"[{"id":5170,"name":"SSL","description":"d","terms":[365],"keyTypes":{"RSA":["2048"]},"useSecondaryOrgName":false}]"#,
        )
        .unwrap();
        assert_eq!(sectigo[0].id, "5170");
        let incommon: Vec<ProfileDto> =
            serde_json::from_str(r#"[{"id":"2018","name":"InCommon SSL","terms":[365]}]"#).unwrap();
        assert_eq!(incommon[0].id, "2018");
    }

    #[test]
    fn details_tolerate_missing_and_unknown_fields() {
        let details: Details = serde_json::from_str(r#"{"status":"Issued","somethingNew":1}"#).unwrap();
        assert_eq!(details.status.as_deref(), Some("Issued"));
        assert!(details.csr.is_none());
    }

    #[test]
    fn requested_dates_are_read_in_the_documented_form_only() {
        let details = |requested: &str| Details {
            requested: Some(requested.into()),
            ..Details::default()
        };
        assert_eq!(
            details("12/04/2025").requested_date(),
            Some(jiff::civil::date(2025, 12, 4))
        );
        assert_eq!(details("2025-12-04").requested_date(), None);
        assert_eq!(details("13/04/2025").requested_date(), None);
        assert_eq!(Details::default().requested_date(), None);
    }

    #[test]
    fn enroll_body_uses_the_vendor_spelling() {
        let body = EnrollBody {
            org_id: 1,
            csr: "CSR".into(),
            subj_alt_names: "a.example.com,b.example.com".into(),
            cert_type: 2,
            term: 365,
            comments: None,
            custom_fields: vec![],
            external_requester: None,
            number_servers: None,
            server_type: None,
            dcv_mode: None,
            dcv_email: None,
        };
        let json = serde_json::to_value(&body).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"orgId": 1, "csr": "CSR", "subjAltNames": "a.example.com,b.example.com", "certType": 2, "term": 365})
        );
        // Per-order DCV (pre-validation disabled, `scm-dcv-domains.md` §4).
        let body = EnrollBody {
            dcv_mode: Some("EMAIL"),
            dcv_email: Some("admin@example.com".into()),
            ..body
        };
        let json = serde_json::to_value(&body).unwrap();
        assert_eq!(json["dcvMode"], "EMAIL");
        assert_eq!(json["dcvEmail"], "admin@example.com");
    }
}
