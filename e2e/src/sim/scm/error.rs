//! The SCM error responses: every `{code, description}` the simulator can answer, with the
//! messages verbatim from the vendor's code table (spec §1.5: `''` rendered as `'`, `{0}` filled).

use hyper::StatusCode;

/// An SCM API error. `Display` is the `description` field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScmError {
    /// Missing or wrong `login`/`password`/`customerUri`, or no acceptable client certificate.
    /// The only 401 in the docs (spec §1.4), and its code is not in the table.
    #[error("Unknown user")]
    UnknownUser,
    /// A required field is absent or empty.
    #[error("{0} is required but missing.")]
    Required(&'static str),
    /// The CSR has characters outside base64 (after PEM armour and whitespace are removed).
    #[error("The CSR is not valid Base-64 data!")]
    CsrNotBase64,
    /// The CSR decodes from base64 but is not a PKCS#10 structure.
    #[error("Error while decoding CSR.")]
    CsrUndecodable,
    /// The CSR's key is neither RSA nor EC P-256/P-384.
    #[error("The CSR uses an unsupported algorithm!")]
    CsrUnsupportedAlgorithm,
    /// The CSR's RSA key is larger than any profile allows.
    #[error("The CSR uses an unsupported key size!")]
    CsrUnsupportedKeySize,
    /// The term is not one of the profile's terms.
    #[error("The validity period (term) is invalid for this certificate profile.")]
    TermInvalid,
    /// `certType` names no profile.
    #[error("The certificate profile id is invalid!")]
    ProfileInvalid,
    /// A mandatory custom field is absent or empty.
    #[error("Missing mandatory custom field!")]
    MandatoryCustomFieldMissing,
    /// Revocation of a certificate that is not `Issued`.
    #[error("Only issued certificates could be revoked.")]
    OnlyIssuedRevocable,
    /// Renewal of a certificate in a state that cannot be renewed.
    #[error("Error was occurred while renewing cert. Status = {0}")]
    RenewFailed(String),
    /// A name in the order is not covered by a completed domain validation.
    #[error(
        "Domain Control Validation is either incomplete or expired for {0}. Please complete it before \
         requesting a certificate."
    )]
    DcvIncomplete(String),
    /// Collect of a revoked certificate.
    #[error("Certificate has been revoked and cannot be downloaded.")]
    CollectRevoked,
    /// `renew/{renewId}` with an unknown renew id.
    #[error("SSL Certificate to renew is invalid (null)")]
    RenewTargetInvalid,
    /// No certificate has this id.
    #[error("Wrong SSL certificate id {0}.")]
    WrongSslId(String),
    /// Collect with a format the API does not know.
    #[error("Unknown SSL certificate file format requested: {0}")]
    UnknownFormat(String),
    /// An operation that needs an `Issued` certificate.
    #[error("SSL state is not 'ISSUED': {0}")]
    NotIssued(String),
    /// The CSR's signature does not verify.
    #[error("Invalid CSR.")]
    CsrInvalid,
    /// The CSR's RSA key is too small.
    #[error("The public key size in the CSR should be {0} bits minimum.")]
    CsrKeyTooSmall(u32),
    /// Revocation of a certificate that is already revoked.
    #[error("Your certificate already revoked")]
    AlreadyRevoked,
    /// Collect of a certificate that will never be issued.
    #[error("Certificate is not collectable.")]
    NotCollectable,
    /// `orgId` is not an organization of this customer.
    #[error("Supplied orgid invalid..")]
    OrgInvalid,
    /// Approve (or decline) of a certificate that is not awaiting approval.
    #[error("Certificate can't be approved cause it has state = {0}")]
    CannotApprove(String),
    /// Collect before issuance, the documented code (spec §3.11 simulator recommendation).
    #[error("The request is being processed by Sectigo.")]
    BeingProcessed,
    /// Collect before issuance, as production clients observe it (spec §3.11, 3rd-party).
    #[error("Being processed by Sectigo")]
    BeingProcessedCodeZero,
    /// Collect before issuance, the table's other "Collect" candidate (spec §3.11).
    #[error("Certificate has not been collected yet.")]
    NotCollectedYet,
    /// A field has a value outside its documented constraints.
    #[error("Field '{0}' has invalid value.")]
    InvalidField(String),
    /// Revoke by serial number of a serial no certificate has.
    #[error("Certificate not found. {0}")]
    CertificateNotFound(String),
    /// The admin lacks a privilege, e.g. `allowDCV` ("DCV validation").
    #[error("You are not authorized to perform {0}.")]
    NotAuthorized(&'static str),
    /// Domain create with a name that is already registered.
    #[error("Such domain already exists")]
    DomainExists,
    /// Domain create without a delegation.
    #[error("Please delegate domain to at least one organization or department.")]
    DelegationRequired,
    /// Domain create with a name shorter than the minimum.
    #[error("The domain name should be at least {0} characters in length.")]
    DomainTooShort(usize),
    /// Domain create with a name longer than the maximum.
    #[error("The domain name should be at most {0} characters in length.")]
    DomainTooLong(usize),
    /// A suspended domain used in DCV or enroll.
    #[error("The domain '{0}' is inactive.")]
    DomainInactive(String),
    /// DCV on a name that cannot carry its own validation (a wildcard, or a name under a
    /// registered domain).
    #[error("{0} is not a high-level domain. Only high-level domains can be validated.")]
    NotHighLevel(String),
    /// A DCV call the order's current state forbids: the domain and the state.
    #[error("The request for '{0}' cannot be processed since it's domain validation status is {1}.")]
    DcvStateForbids(String, String),
    /// DCV on a domain not registered in SCM; with [`StatusCode::NOT_FOUND`] also an unknown
    /// domain id in a Domain API path.
    #[error("The domain '{0}' does not exist.")]
    DomainUnknown(String, StatusCode),
    /// A name that is not a domain name.
    #[error("Invalid domain name.")]
    InvalidDomainName,
    /// Enroll for a name under no registered domain.
    #[error("Domain '{0}' is not allowed.")]
    DomainNotAllowed(String),
    /// A DCV order the backend could not carry out, e.g. a connector submit while the DNS
    /// connector's agent is not connected: the domain.
    #[error("Error while validating the domain {0}")]
    DcvBackendFailed(String),
    /// Any DCV call while the customer has DCV switched off.
    #[error("DCV is not enabled for this customer.")]
    DcvNotEnabled,
    /// A net task without ranges (discovery §2.4).
    #[error("To scan, you must first enter at least one range parameter.")]
    NoScanRange,
    /// A `ranges[].address` that is not a CIDR.
    #[error("Incorrect format CIDR.")]
    CidrFormat,
    /// More public or private address × port pairs in one task than allowed: the public and
    /// private limits.
    #[error(
        "The range is too wide. Maximum of {0} public ip-port pairs and {1} private ip-port pairs per \
         scan are allowed."
    )]
    RangeTooWide(u64, u64),
    /// One range with more address × port pairs than allowed.
    #[error("The range of ip-port pairs is too wide.")]
    RangePairsTooWide,
    /// The task's agent is not configured for its private ranges.
    #[error("Available Agent(s) are not configured to scan the specified private range(s).")]
    AgentPrivateRanges,
    /// The task's agent is not configured for its public ranges.
    #[error("Available Agent(s) are not configured to scan the specified public range(s).")]
    AgentPublicRanges,
    /// A start (update, delete) while a scan of the task runs.
    #[error("Discovery is currently running. Please try again later.")]
    DiscoveryRunning,
    /// A range whose ports are not ports: the range.
    #[error("Invalid scan range: {0}")]
    InvalidScanRange(String),
    /// An assignment rule for an organization the admin cannot access (the table's "don' t"
    /// kept as written).
    #[error("You don' t have access to Organization assigned to the Rule")]
    RuleOrganizationDenied,
    /// An assignment rule without filters.
    #[error("Assignment rules cannot be empty.")]
    AssignmentRulesEmpty,
    /// Deleting an assignment rule net tasks still use: the tasks.
    #[error("Cannot delete. An assignment rule has been assigned to the Net Discovery Tasks {0}")]
    RuleInUse(String),
    /// A simulated server-side failure (fault injection).
    #[error("Internal error. Please contact Support for details.")]
    Internal(StatusCode),
    /// Anything the API answers without a specific code: malformed JSON, unknown paths, wrong
    /// methods, endpoints the simulator does not implement, 429.
    #[error("Unknown error.")]
    Unknown(StatusCode),
}

impl ScmError {
    /// The `code` field.
    pub fn code(&self) -> i64 {
        match self {
            Self::UnknownUser => -16,
            Self::Required(_) => -7,
            Self::CsrNotBase64 => -9,
            Self::CsrUndecodable => -10,
            Self::CsrUnsupportedAlgorithm => -11,
            Self::CsrUnsupportedKeySize => -13,
            Self::TermInvalid => -36,
            Self::ProfileInvalid => -39,
            Self::MandatoryCustomFieldMissing => -62,
            Self::OnlyIssuedRevocable => -102,
            Self::NotCollectedYet => -103,
            Self::RenewFailed(_) => -105,
            Self::DcvIncomplete(_) => -107,
            Self::CollectRevoked => -110,
            Self::RenewTargetInvalid => -123,
            Self::WrongSslId(_) => -124,
            Self::UnknownFormat(_) => -126,
            Self::NotIssued(_) => -130,
            Self::CsrInvalid => -138,
            Self::CsrKeyTooSmall(_) => -141,
            Self::AlreadyRevoked => -159,
            Self::NotCollectable => -183,
            Self::OrgInvalid => -639,
            Self::CannotApprove(_) => -1112,
            Self::BeingProcessed => -1400,
            Self::BeingProcessedCodeZero => 0,
            Self::InvalidField(_) => -1601,
            Self::NotAuthorized(_) => -3,
            Self::DomainExists => -700,
            Self::DelegationRequired => -709,
            Self::DomainTooShort(_) => -712,
            Self::DomainTooLong(_) => -713,
            Self::DomainInactive(_) => -715,
            Self::NotHighLevel(_) => -723,
            Self::DcvStateForbids(..) => -724,
            Self::DomainUnknown(..) => -727,
            Self::InvalidDomainName => -732,
            Self::DomainNotAllowed(_) => -1010,
            Self::DcvBackendFailed(_) => -1603,
            Self::DcvNotEnabled => -1608,
            Self::CertificateNotFound(_) => -5101,
            Self::NoScanRange => -615,
            Self::CidrFormat => -304,
            Self::RangeTooWide(..) => -303,
            Self::RangePairsTooWide => -305,
            Self::AgentPrivateRanges => -607,
            Self::AgentPublicRanges => -637,
            Self::DiscoveryRunning => -618,
            Self::InvalidScanRange(_) => -3301,
            Self::RuleOrganizationDenied => -5001,
            Self::AssignmentRulesEmpty => -5002,
            Self::RuleInUse(_) => -5003,
            Self::Internal(_) => -2,
            Self::Unknown(_) => -1,
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::UnknownUser => StatusCode::UNAUTHORIZED,
            Self::Internal(status) | Self::Unknown(status) | Self::DomainUnknown(_, status) => *status,
            // Inferred (spec §1.4): we chose 400 for every validation and business error,
            // including unknown ids, because the docs list 400 as the error status and show no
            // 404 for a certificate id; a Spring controller that looks an id up and throws its
            // coded exception answers 400 like any other coded error.
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({ "code": self.code(), "description": self.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_verbatim() {
        assert_eq!(
            ScmError::Required("csr").to_string(),
            "csr is required but missing."
        );
        assert_eq!(
            ScmError::CannotApprove("Applied".into()).to_string(),
            "Certificate can't be approved cause it has state = Applied"
        );
        assert_eq!(
            ScmError::DcvIncomplete("a.example.com".into()).to_string(),
            "Domain Control Validation is either incomplete or expired for a.example.com. Please \
             complete it before requesting a certificate."
        );
        assert_eq!(
            ScmError::NotIssued("Applied".into()).to_string(),
            "SSL state is not 'ISSUED': Applied"
        );
        assert_eq!(ScmError::OrgInvalid.to_string(), "Supplied orgid invalid..");
        assert_eq!(
            ScmError::DcvStateForbids("a.example".into(), "SUBMITTED".into()).to_string(),
            "The request for 'a.example' cannot be processed since it's domain validation status is \
             SUBMITTED."
        );
        assert_eq!(
            ScmError::DomainUnknown("a.example".into(), StatusCode::BAD_REQUEST).body(),
            serde_json::json!({"code": -727, "description": "The domain 'a.example' does not exist."})
        );
        assert_eq!(
            ScmError::RangeTooWide(256, 65_536).to_string(),
            "The range is too wide. Maximum of 256 public ip-port pairs and 65536 private ip-port pairs \
             per scan are allowed."
        );
        assert_eq!(
            ScmError::RuleInUse("web, db".into()).body(),
            serde_json::json!({"code": -5003, "description":
                "Cannot delete. An assignment rule has been assigned to the Net Discovery Tasks web, db"})
        );
        assert_eq!(
            ScmError::UnknownUser.body(),
            serde_json::json!({"code": -16, "description": "Unknown user"})
        );
    }
}
