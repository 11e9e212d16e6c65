//! The Certificate controller's errors: what failed, and what is wrong with a delivered certificate.

use super::RENEW_ANNOTATION;
use crate::backend::BackendError;
use std::time::Duration;

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("cannot {action}")]
    Kube {
        /// What we tried.
        action: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
    /// Writing the Certificate's status failed (refused or not answered).
    #[error("cannot update status")]
    StatusWrite {
        /// Cause.
        #[source]
        source: kube::Error,
    },
    /// A CA call failed.
    #[error("{operation} at the CA failed")]
    Backend {
        /// Our operation.
        operation: &'static str,
        /// Cause.
        #[source]
        source: BackendError,
    },
    /// The CA will never issue this order (declined, rejected, issued for another key, ...).
    #[error("order {order} failed: {reason}")]
    OrderFailed {
        /// The CA's order id.
        order: String,
        /// Why, in the CA's words or ours.
        reason: String,
    },
    /// The certificate the CA delivered cannot be used.
    #[error("the certificate of order {order} was rejected: {problem}")]
    Delivery {
        /// The CA's order id (empty when rewriting outputs from the Secret).
        order: String,
        /// What is wrong with it.
        problem: DeliveryProblem,
    },
    /// The issued certificate does not match what was asked for.
    #[error("the issued certificate was rejected: {0}")]
    Verification(String),
    /// The Secret cannot be repaired from the order without a new order.
    #[error(
        "the Secret cannot be repaired from order {order}: {reason}; annotate the Certificate with {RENEW_ANNOTATION}=<any new value> to order a new certificate"
    )]
    RepairImpossible {
        /// The CA's order id.
        order: String,
        /// Why.
        reason: String,
    },
    /// Key or CSR handling failed.
    #[error("cannot prepare the key or CSR: {0}")]
    Key(String),
    /// The issuer cannot be used (missing, not ready, unreadable Secrets).
    #[error("the issuer cannot be used: {0}")]
    IssuerUnavailable(String),
    /// A failure already recorded in status, with the backoff persisted there: the runner
    /// counts it under its own reason and requeues after `retry`.
    #[error("{source}")]
    Recorded {
        /// The failure.
        source: Box<Error>,
        /// The persisted backoff (or the CA's Retry-After when longer).
        retry: Duration,
    },
}

/// What is wrong with a delivered certificate.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryProblem {
    /// It cannot be parsed.
    #[error("it cannot be read: {0}")]
    Unreadable(String),
    /// It carries another public key than ours (e.g. a CA that renewed with the first CSR).
    #[error("its public key is not the key of this order's CSR")]
    KeyMismatch,
    /// Its names differ from the spec.
    #[error("{0}")]
    NamesDiffer(String),
    /// Its chain does not verify.
    #[error("its chain does not verify: {0}")]
    ChainInvalid(String),
    /// It expired already.
    #[error("it expired at {0}")]
    Expired(String),
    /// It is not valid yet (beyond the tolerated clock skew).
    #[error("it is not valid before {0}")]
    NotYetValid(String),
    /// The CA handed back the certificate being replaced.
    #[error("the CA returned the certificate being replaced (serial {0}) instead of a new one")]
    SameCertificate(String),
}

impl DeliveryProblem {
    /// Whether collecting the order again can never help: the order is failed and the next
    /// attempt (after the backoff) starts a fresh enrollment. Names and chains are left to the
    /// backoff: a new order would most likely come back the same, and collecting is free.
    pub fn ends_order(&self) -> bool {
        matches!(
            self,
            Self::KeyMismatch | Self::Expired(_) | Self::SameCertificate(_)
        )
    }
}

impl Error {
    /// Condition reason, Event reason and metric label ([`crate::controller::errors::certificate`]).
    pub fn category(&self) -> &'static str {
        crate::controller::errors::certificate(self).reason
    }
}

pub(super) fn kube_error(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let action = action.into();
    move |source| Error::Kube { action, source }
}

pub(super) fn backend_error(operation: &'static str) -> impl FnOnce(BackendError) -> Error {
    move |source| Error::Backend { operation, source }
}
