//! `kubectl pki inspect secret <name>`: a TLS Secret's certificate chain decoded, and whether
//! `tls.key` is the leaf's key.

use std::fmt::Write as _;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use super::{
    CliError, Context, Outcome,
    decode::{SecretView, decode_secret},
    get_error, now,
    render::{Report, or_dash},
};

impl Report for SecretView {
    fn table(&self) -> String {
        format!("Secret {}\n{}", self.name, describe_secret(self))
    }
}

/// The chain and key check as text; `status` shows the same under its Secret heading.
pub fn describe_secret(secret: &SecretView) -> String {
    let mut out = String::new();
    for (i, cert) in secret.certificates.iter().enumerate() {
        let role = if i == 0 { "leaf" } else { "chain" };
        let _ = writeln!(out, "[{i}] {role}");
        let _ = writeln!(out, "  Subject:    {}", or_dash(Some(&cert.subject)));
        let _ = writeln!(out, "  Issuer:     {}", cert.issuer);
        let _ = writeln!(out, "  Serial:     {}", cert.serial);
        if !cert.sans.is_empty() {
            let _ = writeln!(out, "  SANs:       {}", cert.sans.join(", "));
        }
        let _ = writeln!(out, "  Not before: {}", cert.not_before);
        let _ = writeln!(
            out,
            "  Not after:  {} ({} days left)",
            cert.not_after, cert.days_left
        );
        let _ = writeln!(out, "  Key type:   {}", cert.key_type);
    }
    let key = match secret.key_matches {
        Some(true) => "tls.key matches the leaf",
        Some(false) => "tls.key does NOT match the leaf",
        None => "no readable tls.key",
    };
    let _ = writeln!(out, "Key: {key}");
    out
}

/// Runs `inspect secret`: exit 0 when `tls.key` matches the leaf, 1 when it does not or is
/// missing.
pub async fn run(ctx: &Context, name: &str) -> Result<Outcome<SecretView>, CliError> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let secret = api
        .get(name)
        .await
        .map_err(|e| get_error("Secret", Some(&ctx.namespace), name, e))?;
    let report = decode_secret(&secret, now())?;
    let ok = report.key_matches == Some(true);
    Ok(Outcome { report, ok })
}
