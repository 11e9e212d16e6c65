//! DNS for domain validation: reading a record at one server, as an authoritative check does
//! (no recursion), and adding or removing one with an RFC 2136 update signed with TSIG. The wire
//! format is hickory's; nothing here encodes DNS by hand.

use std::{net::SocketAddr, str::FromStr as _, sync::Arc, time::Duration};

use hickory_client::{
    ClientErrorKind,
    client::{Client, ClientHandle as _},
    proto::{
        dnssec::{rdata::tsig::TsigAlgorithm, tsig::TSigner},
        op::ResponseCode,
        rr::{DNSClass, Name, RData, Record, RecordType, rdata},
        runtime::TokioRuntimeProvider,
        tcp::TcpClientStream,
        udp::UdpClientStream,
    },
};

use crate::pki::credentials::SecretString;

/// How long one DNS exchange may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);
/// TTL of the records the operator publishes: short, they are temporary.
const RECORD_TTL: u32 = 60;
/// How far the TSIG signature time may differ between us and the server (RFC 8945 default).
const TSIG_FUDGE: u16 = 300;

/// A DNS failure, worded for a condition message (never holding the TSIG secret).
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// A name that is not a DNS name.
    #[error("{0:?} is not a DNS name")]
    InvalidName(String),
    /// The server could not be reached or did not answer.
    #[error("DNS server {server}: {message}")]
    Unreachable {
        /// The server.
        server: SocketAddr,
        /// What happened.
        message: String,
    },
    /// The server answered with an error code (e.g. `REFUSED`, `NOTAUTH` for a wrong key).
    #[error("DNS server {server} answered {code} for {what}")]
    Refused {
        /// The server.
        server: SocketAddr,
        /// The response code.
        code: String,
        /// The query or update.
        what: String,
    },
    /// The TSIG key cannot be used.
    #[error("the TSIG key cannot be used: {0}")]
    Key(String),
}

/// A client error with its cause (hickory's own text of a protocol error is just "proto error").
fn describe(error: &hickory_client::ClientError) -> String {
    match error.kind() {
        ClientErrorKind::Proto(proto) => proto.to_string(),
        other => other.to_string(),
    }
}

fn name(text: &str) -> Result<Name, DnsError> {
    let mut parsed = Name::from_str(text).map_err(|_| DnsError::InvalidName(text.to_owned()))?;
    parsed.set_fqdn(true);
    Ok(parsed)
}

/// The records of `record_type` at `owner` that `server` answers with, asked without recursion.
/// Empty when the name or type does not exist.
pub async fn lookup(
    server: SocketAddr,
    owner: &str,
    record_type: RecordType,
) -> Result<Vec<RData>, DnsError> {
    let owner = name(owner)?;
    let unreachable = |message: String| DnsError::Unreachable { server, message };
    let connect = UdpClientStream::builder(server, TokioRuntimeProvider::default())
        .with_timeout(Some(EXCHANGE_TIMEOUT))
        .build();
    let (mut client, background) = Client::connect(connect)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let background = tokio::spawn(background);
    let response = client.query(owner.clone(), DNSClass::IN, record_type).await;
    background.abort();
    let response = match response {
        Ok(response) => response,
        // NXDOMAIN and NODATA arrive as errors that carry the response code.
        Err(error)
            if matches!(error.kind(), ClientErrorKind::Proto(proto)
                if proto.is_nx_domain() || proto.is_no_records_found()) =>
        {
            return Ok(Vec::new());
        }
        Err(error) => return Err(unreachable(describe(&error))),
    };
    match response.response_code() {
        ResponseCode::NoError => {}
        ResponseCode::NXDomain => return Ok(Vec::new()),
        code => {
            return Err(DnsError::Refused {
                server,
                code: code.to_string(),
                what: format!("{owner} {record_type}"),
            });
        }
    }
    Ok(response
        .answers()
        .iter()
        .filter(|record| record.record_type() == record_type)
        .map(|record| record.data().clone())
        .collect())
}

/// Whether `server` answers `owner` CNAME `target` (case-insensitive, trailing dot normalized).
pub async fn has_cname(server: SocketAddr, owner: &str, target: &str) -> Result<bool, DnsError> {
    let target = target.trim_end_matches('.');
    Ok(lookup(server, owner, RecordType::CNAME)
        .await?
        .iter()
        .filter_map(RData::as_cname)
        .any(|cname| {
            cname
                .0
                .to_string()
                .trim_end_matches('.')
                .eq_ignore_ascii_case(target)
        }))
}

/// Whether `server` answers a TXT record at `owner` whose strings are exactly `value`, byte for
/// byte (the value may hold spaces, backslashes and quotes, `scm-dcv-domains.md` §10.1 item 10).
pub async fn has_txt(server: SocketAddr, owner: &str, value: &str) -> Result<bool, DnsError> {
    Ok(lookup(server, owner, RecordType::TXT)
        .await?
        .iter()
        .filter_map(RData::as_txt)
        .any(|txt| txt.txt_data().concat() == value.as_bytes()))
}

/// The record to publish for a challenge: a CNAME to `target`, or a TXT of one string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Published {
    /// `owner CNAME target`.
    Cname {
        /// Owner name.
        owner: String,
        /// Target.
        target: String,
    },
    /// `owner TXT "value"`, the value as one character-string.
    Txt {
        /// Owner name.
        owner: String,
        /// Value.
        value: String,
    },
}

impl Published {
    fn record(&self, ttl: u32) -> Result<Record, DnsError> {
        Ok(match self {
            Self::Cname { owner, target } => {
                Record::from_rdata(name(owner)?, ttl, RData::CNAME(rdata::CNAME(name(target)?)))
            }
            Self::Txt { owner, value } => Record::from_rdata(
                name(owner)?,
                ttl,
                RData::TXT(rdata::TXT::new(vec![value.clone()])),
            ),
        })
    }

    /// Whether `server` answers this record.
    pub async fn is_served(&self, server: SocketAddr) -> Result<bool, DnsError> {
        match self {
            Self::Cname { owner, target } => has_cname(server, owner, target).await,
            Self::Txt { owner, value } => has_txt(server, owner, value).await,
        }
    }
}

/// TSIG HMAC algorithm of an RFC 2136 server's key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TsigHmac {
    /// `hmac-sha256`.
    Sha256,
    /// `hmac-sha384`.
    Sha384,
    /// `hmac-sha512`.
    Sha512,
}

/// An authoritative server that takes TSIG-signed dynamic updates for `zone`.
#[derive(Clone, Debug)]
pub struct Rfc2136 {
    /// The server.
    pub server: SocketAddr,
    /// The zone updated.
    pub zone: String,
    /// The TSIG key's name.
    pub key_name: String,
    /// The TSIG algorithm.
    pub algorithm: TsigHmac,
    /// The TSIG secret (raw bytes, base64-decoded).
    pub secret: SecretString,
}

enum Change {
    Add,
    Remove,
}

impl Rfc2136 {
    /// Adds `record` to its record set (other values at the name stay: "add yours and do not replace
    /// theirs", §10.3). Adding a record that is there already changes nothing.
    pub async fn add(&self, record: &Published) -> Result<(), DnsError> {
        self.update(record, Change::Add).await
    }

    /// Removes exactly `record`; other values at the name stay.
    pub async fn remove(&self, record: &Published) -> Result<(), DnsError> {
        self.update(record, Change::Remove).await
    }

    async fn update(&self, published: &Published, change: Change) -> Result<(), DnsError> {
        let server = self.server;
        let zone = name(&self.zone)?;
        let algorithm = match self.algorithm {
            TsigHmac::Sha256 => TsigAlgorithm::HmacSha256,
            TsigHmac::Sha384 => TsigAlgorithm::HmacSha384,
            TsigHmac::Sha512 => TsigAlgorithm::HmacSha512,
        };
        let secret = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            self.secret.expose().trim(),
        )
        .map_err(|_| DnsError::Key("the secret is not base64".into()))?;
        let signer = TSigner::new(secret, algorithm, name(&self.key_name)?, TSIG_FUDGE)
            .map_err(|e| DnsError::Key(e.to_string()))?;
        let (stream, sender) =
            TcpClientStream::new(server, None, Some(EXCHANGE_TIMEOUT), TokioRuntimeProvider::new());
        let (mut client, background) = Client::new(stream, sender, Some(Arc::new(signer)))
            .await
            .map_err(|e| DnsError::Unreachable {
                server,
                message: e.to_string(),
            })?;
        let background = tokio::spawn(background);
        let response = match change {
            Change::Add => {
                client
                    .append(published.record(RECORD_TTL)?, zone.clone(), false)
                    .await
            }
            Change::Remove => client.delete_by_rdata(published.record(0)?, zone.clone()).await,
        };
        background.abort();
        let response = response.map_err(|e| {
            let detail = describe(&e);
            // A server that refuses the key answers NOTAUTH/BADSIG with an empty MAC, which
            // hickory reports only as a MAC it cannot verify.
            if detail.contains("TSIG") || detail.contains("HMAC") {
                DnsError::Key(format!(
                    "{server} did not accept the TSIG signature; check tsigKeyName, tsigAlgorithm \
                     and the secret ({detail})"
                ))
            } else {
                DnsError::Unreachable {
                    server,
                    message: detail,
                }
            }
        })?;
        match response.response_code() {
            ResponseCode::NoError => Ok(()),
            code => Err(DnsError::Refused {
                server,
                code: code.to_string(),
                what: format!("an update of zone {zone}"),
            }),
        }
    }
}

/// `host:port` (port 53 when absent) as a socket address, resolving a host name.
pub async fn server_address(text: &str) -> Result<SocketAddr, DnsError> {
    let with_port = if text.parse::<SocketAddr>().is_ok()
        || text
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        text.to_owned()
    } else {
        format!("{text}:53")
    };
    tokio::net::lookup_host(&with_port)
        .await
        .ok()
        .and_then(|mut addresses| addresses.next())
        .ok_or_else(|| DnsError::InvalidName(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn servers_default_to_port_53() {
        assert_eq!(
            server_address("127.0.0.1").await.unwrap(),
            "127.0.0.1:53".parse().unwrap()
        );
        assert_eq!(
            server_address("127.0.0.1:5353").await.unwrap(),
            "127.0.0.1:5353".parse().unwrap()
        );
    }

    #[test]
    fn a_txt_value_is_one_string_kept_byte_for_byte() {
        let value = "F(U_t|L%>8]iU6Yx\\CFm;0O8 \"ViEQ/|`";
        let record = Published::Txt {
            owner: "_pki-validation.example.com.".into(),
            value: value.into(),
        }
        .record(60)
        .unwrap();
        let txt = record.data().as_txt().unwrap();
        assert_eq!(txt.txt_data().len(), 1);
        assert_eq!(txt.txt_data()[0].as_ref(), value.as_bytes());
    }
}
