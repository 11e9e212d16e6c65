//! Built backends reused across reconciles: one per issuer, rebuilt when what it was built from
//! (the issuer's spec generation and the resourceVersion of each Secret it read) has changed.
//!
//! Building a backend parses credentials and makes a TLS client; reusing it keeps its connection
//! pool and what the backend learned once (SCM profiles, the InCommon base path). The price is a
//! metadata GET per Secret the backend was built from on every lookup: a consistent read, so a
//! backend built from an older Secret is never served after the Secret changed — not even in the
//! window before a watch event would arrive.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, api::ObjectMeta};

use super::{IssuerError, IssuerSpecView, build, resolve::IssuerTarget};
use crate::{backend::Backend, controller::Context};

/// How many issuers' backends are kept; beyond it the least recently used is dropped (and
/// rebuilt on its next use). Far above the issuers a cluster normally has.
pub const DEFAULT_CAPACITY: usize = 128;

/// The version of one Secret a backend was built from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SecretVersion {
    /// Secret name (in the issuer's Secret namespace).
    pub name: String,
    /// Its `metadata.resourceVersion` when it was read.
    pub resource_version: String,
}

impl SecretVersion {
    /// The version of `secret` as read.
    pub fn of(secret: &Secret) -> Self {
        Self {
            name: secret.metadata.name.clone().unwrap_or_default(),
            resource_version: secret.metadata.resource_version.clone().unwrap_or_default(),
        }
    }
}

/// What a backend was built from. Equal fingerprints mean the same spec and the same Secrets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    /// The issuer object's uid.
    pub uid: String,
    /// Its `metadata.generation` (bumped by every spec change, not by status or labels).
    pub generation: i64,
    /// Every Secret the build read, sorted by name.
    pub secrets: Vec<SecretVersion>,
}

impl Fingerprint {
    /// The fingerprint of a build from `meta`'s spec that read `secrets`; `None` when something
    /// that would reveal a change is missing (no uid, generation or resourceVersion — never the
    /// case for objects from an apiserver): such a backend is not cached.
    pub fn new(meta: &ObjectMeta, mut secrets: Vec<SecretVersion>) -> Option<Self> {
        let uid = meta.uid.clone().filter(|uid| !uid.is_empty())?;
        let generation = meta.generation?;
        if secrets.iter().any(|s| s.resource_version.is_empty()) {
            return None;
        }
        secrets.sort();
        secrets.dedup();
        Some(Self {
            uid,
            generation,
            secrets,
        })
    }
}

/// What a lookup found before asking the apiserver about Secrets.
#[derive(Debug, PartialEq, Eq)]
enum Candidate {
    /// Nothing usable: build.
    Miss,
    /// Same object and spec: usable if these Secrets still have these versions.
    Verify(Vec<SecretVersion>),
}

struct Entry {
    fingerprint: Fingerprint,
    backend: Arc<Backend>,
    /// Value of [`Entries::clock`] at the last use, for least-recently-used eviction.
    used: u64,
}

#[derive(Default)]
struct Entries {
    map: HashMap<IssuerTarget, Entry>,
    clock: u64,
}

impl Entries {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }
}

/// Built backends by issuer (the controller [`Context`] holds one).
pub struct BackendCache {
    entries: Mutex<Entries>,
    capacity: usize,
}

impl Default for BackendCache {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl BackendCache {
    /// An empty cache keeping at most `capacity` backends (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::default(),
            capacity: capacity.max(1),
        }
    }

    /// The entries; a panic elsewhere while holding the lock cannot leave a half-written entry
    /// (every update is a single map operation), so a poisoned lock is still usable.
    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many backends are cached.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Whether no backend is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The backend for the issuer `meta` describes, whose spec is `parts`: the cached one while
    /// the issuer's uid and generation and every Secret it was built from are unchanged,
    /// otherwise a new one, built (reading and checking the Secrets) and remembered.
    pub async fn backend(
        &self,
        ctx: &Context,
        key: &IssuerTarget,
        meta: &ObjectMeta,
        spec: IssuerSpecView<'_>,
        secret_namespace: &str,
    ) -> Result<Arc<Backend>, IssuerError> {
        if let Some((backend, built_from)) = self.candidate(key, meta) {
            let current = current_versions(ctx, secret_namespace, &built_from).await;
            if current.as_ref() == Some(&built_from) {
                return Ok(backend);
            }
            tracing::debug!(issuer = %key, "a Secret of the issuer changed; rebuilding its backend");
        }
        let (backend, secrets) = match build::build_backend(ctx, spec, secret_namespace).await {
            Ok(built) => built,
            Err(error) => {
                // Whatever the entry holds is outdated now; keep no client for it.
                self.forget(key);
                return Err(error);
            }
        };
        let backend = Arc::new(backend);
        self.remember(key, meta, secrets, backend.clone());
        Ok(backend)
    }

    /// The cached backend and the Secret versions to verify, if the entry was built from this
    /// very issuer object at this generation. An entry of another uid (the issuer was deleted and
    /// re-created) is dropped here.
    fn candidate(&self, key: &IssuerTarget, meta: &ObjectMeta) -> Option<(Arc<Backend>, Vec<SecretVersion>)> {
        let mut entries = self.lock();
        let now = entries.tick();
        let entry = entries.map.get_mut(key)?;
        match decide(&entry.fingerprint, meta) {
            Candidate::Verify(secrets) => {
                entry.used = now;
                Some((entry.backend.clone(), secrets))
            }
            Candidate::Miss => {
                if meta.uid.as_ref() != Some(&entry.fingerprint.uid) {
                    entries.map.remove(key);
                }
                None
            }
        }
    }

    /// Remembers `backend` as built from `fingerprint`, unless the entry already holds a backend
    /// of the same object built from a newer spec (a reconcile that read the issuer before an
    /// edit must not push out the backend of the edited spec). Drops the least recently used
    /// entry beyond the capacity.
    pub fn insert(&self, key: IssuerTarget, fingerprint: Fingerprint, backend: Arc<Backend>) {
        let mut entries = self.lock();
        let used = entries.tick();
        if let Some(existing) = entries.map.get(&key)
            && existing.fingerprint.uid == fingerprint.uid
            && existing.fingerprint.generation > fingerprint.generation
        {
            return;
        }
        entries.map.insert(
            key,
            Entry {
                fingerprint,
                backend,
                used,
            },
        );
        while entries.map.len() > self.capacity {
            let Some(oldest) = entries
                .map
                .iter()
                .min_by_key(|(_, entry)| entry.used)
                .map(|(key, _)| key.clone())
            else {
                break;
            };
            entries.map.remove(&oldest);
        }
    }

    /// Remembers `backend`, built for the issuer `meta` describes from `secrets`, unless the
    /// build cannot be fingerprinted (then any entry for the issuer is dropped).
    pub fn remember(
        &self,
        key: &IssuerTarget,
        meta: &ObjectMeta,
        secrets: Vec<SecretVersion>,
        backend: Arc<Backend>,
    ) {
        match Fingerprint::new(meta, secrets) {
            Some(fingerprint) => self.insert(key.clone(), fingerprint, backend),
            None => self.forget(key),
        }
    }

    /// Drops the issuer's backend (the issuer is gone, or its check failed).
    pub fn forget(&self, key: &IssuerTarget) {
        self.lock().map.remove(key);
    }
}

/// Whether an entry built from `built` may serve the issuer `meta` now, pending its Secrets.
fn decide(built: &Fingerprint, meta: &ObjectMeta) -> Candidate {
    if meta.uid.as_ref() == Some(&built.uid) && meta.generation == Some(built.generation) {
        Candidate::Verify(built.secrets.clone())
    } else {
        Candidate::Miss
    }
}

/// The current versions of the Secrets `built_from` names (metadata only: their data is not
/// transferred), in the same order; `None` if one cannot be read — the build then reports why.
async fn current_versions(
    ctx: &Context,
    namespace: &str,
    built_from: &[SecretVersion],
) -> Option<Vec<SecretVersion>> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let reads = built_from.iter().map(|secret| {
        let api = api.clone();
        async move {
            let meta = api.get_metadata_opt(&secret.name).await.ok()??;
            Some(SecretVersion {
                name: secret.name.clone(),
                resource_version: meta.metadata.resource_version?,
            })
        }
    });
    futures::future::join_all(reads).await.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use http::{Method, Request, Response};
    use kube::{Client, client::Body};
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose};
    use tower_test::mock::Handle;

    use super::*;
    use crate::{
        backend::{CaBackend as _, ca::CaIssuerBackend},
        crd::v1alpha1::{Issuer, issuer::CaIssuer},
    };

    fn meta(uid: &str, generation: i64) -> ObjectMeta {
        ObjectMeta {
            name: Some("ca".into()),
            namespace: Some("team".into()),
            uid: Some(uid.into()),
            generation: Some(generation),
            ..ObjectMeta::default()
        }
    }

    fn version(name: &str, resource_version: &str) -> SecretVersion {
        SecretVersion {
            name: name.into(),
            resource_version: resource_version.into(),
        }
    }

    fn key(name: &str) -> IssuerTarget {
        IssuerTarget {
            kind: crate::crd::v1alpha1::common::IssuerKind::Issuer,
            namespace: Some("team".into()),
            name: name.into(),
        }
    }

    /// A self-signed CA as `tls.crt` and `tls.key` PEM.
    fn ca_pem() -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn ca_backend() -> Arc<Backend> {
        let (cert, key) = ca_pem();
        Arc::new(Backend::Ca(CaIssuerBackend::new(
            crate::backend::ca::LocalCa::from_pem(&cert, &key).unwrap(),
        )))
    }

    #[test]
    fn a_fingerprint_needs_uid_generation_and_every_resource_version() {
        let secrets = vec![version("b", "7"), version("a", "3"), version("b", "7")];
        let fingerprint = Fingerprint::new(&meta("u1", 2), secrets).unwrap();
        assert_eq!(fingerprint.secrets, [version("a", "3"), version("b", "7")]);
        assert_eq!((fingerprint.uid.as_str(), fingerprint.generation), ("u1", 2));

        assert!(Fingerprint::new(&meta("", 2), vec![]).is_none());
        let mut no_generation = meta("u1", 2);
        no_generation.generation = None;
        assert!(Fingerprint::new(&no_generation, vec![]).is_none());
        assert!(Fingerprint::new(&meta("u1", 2), vec![version("a", "")]).is_none());
    }

    #[test]
    fn only_the_same_object_at_the_same_generation_may_reuse_a_backend() {
        let built = Fingerprint::new(&meta("u1", 2), vec![version("creds", "10")]).unwrap();
        assert_eq!(
            decide(&built, &meta("u1", 2)),
            Candidate::Verify(vec![version("creds", "10")])
        );
        assert_eq!(decide(&built, &meta("u1", 3)), Candidate::Miss, "spec edited");
        assert_eq!(decide(&built, &meta("u2", 2)), Candidate::Miss, "re-created");
    }

    #[test]
    fn a_recreated_issuer_drops_its_predecessors_entry_and_an_edit_keeps_it_until_rebuilt() {
        let cache = BackendCache::new(4);
        let backend = ca_backend();
        let built = Fingerprint::new(&meta("u1", 1), vec![version("creds", "1")]).unwrap();
        cache.insert(key("ca"), built, backend.clone());
        let (found, verify) = cache.candidate(&key("ca"), &meta("u1", 1)).unwrap();
        assert!(Arc::ptr_eq(&found, &backend));
        assert_eq!(verify, [version("creds", "1")]);

        assert!(cache.candidate(&key("ca"), &meta("u1", 2)).is_none());
        assert_eq!(
            cache.len(),
            1,
            "an edited issuer's entry is replaced by its rebuild"
        );
        assert!(cache.candidate(&key("ca"), &meta("u2", 1)).is_none());
        assert!(cache.is_empty(), "a re-created issuer's predecessor is evicted");
    }

    #[test]
    fn an_older_spec_does_not_push_out_a_newer_one() {
        let cache = BackendCache::new(4);
        let (newer, older) = (ca_backend(), ca_backend());
        cache.insert(
            key("ca"),
            Fingerprint::new(&meta("u1", 3), vec![]).unwrap(),
            newer.clone(),
        );
        cache.insert(
            key("ca"),
            Fingerprint::new(&meta("u1", 2), vec![]).unwrap(),
            older,
        );
        let (found, _) = cache.candidate(&key("ca"), &meta("u1", 3)).unwrap();
        assert!(Arc::ptr_eq(&found, &newer));
    }

    #[test]
    fn the_least_recently_used_backend_goes_beyond_the_capacity() {
        let cache = BackendCache::new(2);
        let built = || Fingerprint::new(&meta("u1", 1), vec![]).unwrap();
        cache.insert(key("a"), built(), ca_backend());
        cache.insert(key("b"), built(), ca_backend());
        assert!(
            cache.candidate(&key("a"), &meta("u1", 1)).is_some(),
            "a used after b"
        );
        cache.insert(key("c"), built(), ca_backend());
        assert_eq!(cache.len(), 2);
        assert!(
            cache.candidate(&key("b"), &meta("u1", 1)).is_none(),
            "b was evicted"
        );
        assert!(cache.candidate(&key("a"), &meta("u1", 1)).is_some());
        assert!(cache.candidate(&key("c"), &meta("u1", 1)).is_some());
        cache.forget(&key("a"));
        assert_eq!(cache.len(), 1);
    }

    fn json(body: &serde_json::Value) -> Response<Body> {
        Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(body).unwrap()))
            .unwrap()
    }

    /// Answers the next request, which must be a GET of the `ca-key` Secret: metadata only
    /// (`PartialObjectMetadata`) or the whole Secret.
    async fn answer_secret_get(
        apiserver: &mut Handle<Request<Body>, Response<Body>>,
        metadata_only: bool,
        resource_version: &str,
        pem: Option<&(String, String)>,
    ) {
        let (request, reply) = apiserver.next_request().await.expect("a Secret GET");
        assert_eq!(request.method(), Method::GET);
        assert_eq!(request.uri().path(), "/api/v1/namespaces/team/secrets/ca-key");
        let accept = request
            .headers()
            .get("accept")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert_eq!(
            accept.contains("PartialObjectMetadata"),
            metadata_only,
            "metadata only: {metadata_only}, Accept: {accept}"
        );
        let metadata = serde_json::json!({
            "name": "ca-key", "namespace": "team", "resourceVersion": resource_version,
        });
        reply.send_response(json(&if metadata_only {
            serde_json::json!({
                "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": metadata,
            })
        } else {
            let encode =
                |text: &str| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, text);
            let data = pem.map_or_else(
                || serde_json::json!({}),
                |pem| serde_json::json!({"tls.crt": encode(&pem.0), "tls.key": encode(&pem.1)}),
            );
            serde_json::json!({
                "apiVersion": "v1", "kind": "Secret", "metadata": metadata, "type": "kubernetes.io/tls",
                "data": data,
            })
        }));
    }

    fn ca_issuer() -> CaIssuer {
        CaIssuer {
            secret_name: "ca-key".into(),
        }
    }

    fn ca_spec(ca: &CaIssuer) -> IssuerSpecView<'_> {
        IssuerSpecView {
            scm: None,
            nexus: None,
            ca: Some(ca),
            policy: None,
        }
    }

    /// Answers the Issuer's status patch with the Issuer.
    async fn answer_status_patch(apiserver: &mut Handle<Request<Body>, Response<Body>>, issuer: &Issuer) {
        let (request, reply) = apiserver.next_request().await.expect("status PATCH");
        assert_eq!(request.method(), Method::PATCH);
        assert_eq!(
            request.uri().path(),
            "/apis/pki-operator.io/v1alpha1/namespaces/team/issuers/ca/status"
        );
        reply.send_response(json(&serde_json::to_value(issuer).unwrap()));
    }

    /// Answers the next request, which must create an Event of `reason` and `type_` about the
    /// Issuer.
    async fn answer_event(apiserver: &mut Handle<Request<Body>, Response<Body>>, reason: &str, type_: &str) {
        let (request, reply) = apiserver.next_request().await.expect("an Event POST");
        assert_eq!(request.method(), Method::POST);
        assert_eq!(
            request.uri().path(),
            "/apis/events.k8s.io/v1/namespaces/team/events"
        );
        let body = request.into_body().collect_bytes().await.unwrap();
        let event: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(event["reason"], reason, "{event}");
        assert_eq!(event["type"], type_, "{event}");
        assert_eq!(event["regarding"]["kind"], "Issuer", "{event}");
        reply.send_response(json(&event));
    }

    /// The Issuer's check puts the backend it built and checked into the cache (a Certificate
    /// then reuses it after one metadata GET), and a failed check — here the Secret lost its
    /// key — drops it. Each transition of `Ready` is announced in an Event.
    #[tokio::test]
    async fn the_issuer_check_refreshes_the_entry_and_a_failed_check_drops_it() {
        let (service, mut apiserver) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let ctx = crate::controller::tests::context(Client::new(service, "team"));
        let issuer: Issuer = serde_json::from_value(serde_json::json!({
            "apiVersion": "pki-operator.io/v1alpha1", "kind": "Issuer",
            "metadata": {"name": "ca", "namespace": "team", "uid": "u1", "generation": 1},
            "spec": {"ca": {"secretName": "ca-key"}},
        }))
        .unwrap();
        let pem = ca_pem();
        let answers = {
            let issuer = issuer.clone();
            tokio::spawn(async move {
                answer_secret_get(&mut apiserver, false, "100", Some(&pem)).await;
                answer_status_patch(&mut apiserver, &issuer).await;
                answer_event(&mut apiserver, "Checked", "Normal").await;
                answer_secret_get(&mut apiserver, true, "100", Some(&pem)).await;
                answer_secret_get(&mut apiserver, false, "101", None).await;
                answer_status_patch(&mut apiserver, &issuer).await;
                answer_event(&mut apiserver, "SecretNotFound", "Warning").await;
            })
        };
        super::super::reconcile::<Issuer>(Arc::new(issuer.clone()), ctx.clone())
            .await
            .unwrap();
        assert_eq!(ctx.backends.len(), 1, "the checked backend is cached");
        let ca = ca_issuer();
        ctx.backends
            .backend(&ctx, &key("ca"), &issuer.metadata, ca_spec(&ca), "team")
            .await
            .expect("reused after a metadata GET: the mock answers no other read");
        super::super::reconcile::<Issuer>(Arc::new(issuer), ctx.clone())
            .await
            .unwrap();
        answers.await.unwrap();
        assert!(ctx.backends.is_empty(), "a failed check drops the entry");
    }

    /// The whole round trip against a mocked apiserver: a backend is reused while its Secret
    /// keeps its resourceVersion (one metadata GET, no Secret data read), and rebuilt from the new
    /// Secret as soon as the resourceVersion moved — the old backend is never served again, not
    /// even when the new Secret cannot be used.
    #[tokio::test]
    async fn a_changed_secret_is_never_served_from_the_old_backend() {
        let (service, mut apiserver) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let ctx = crate::controller::tests::context(Client::new(service, "team"));
        let (first, second) = (ca_pem(), ca_pem());
        let ca = ca_issuer();
        let spec = ca_spec(&ca);
        let issuer = meta("u1", 1);
        let answers = tokio::spawn(async move {
            answer_secret_get(&mut apiserver, false, "100", Some(&first)).await;
            answer_secret_get(&mut apiserver, true, "100", Some(&first)).await;
            answer_secret_get(&mut apiserver, true, "101", Some(&second)).await;
            answer_secret_get(&mut apiserver, false, "101", Some(&second)).await;
            answer_secret_get(&mut apiserver, true, "101", Some(&second)).await;
            answer_secret_get(&mut apiserver, true, "102", None).await;
            answer_secret_get(&mut apiserver, false, "102", None).await;
            (first, second)
        });
        let target = key("ca");
        let lookup = || ctx.backends.backend(&ctx, &target, &issuer, spec, "team");
        let built = lookup().await.unwrap();
        let reused = lookup().await.unwrap();
        assert!(Arc::ptr_eq(&built, &reused), "unchanged Secret: the same backend");
        let rebuilt = lookup().await.unwrap();
        assert!(!Arc::ptr_eq(&built, &rebuilt), "changed Secret: a new backend");
        let again = lookup().await.unwrap();
        assert!(Arc::ptr_eq(&rebuilt, &again));
        assert_eq!(ctx.backends.len(), 1);
        let error = lookup().await.expect_err("the Secret lost its keys");
        assert!(
            matches!(error, IssuerError::SecretKeyMissing { ref key, .. } if key == "tls.crt"),
            "{error:?}"
        );
        assert!(ctx.backends.is_empty(), "the outdated backend is dropped");
        let (first, second) = answers.await.unwrap();

        let chain = |backend: &Backend| match backend {
            Backend::Ca(ca) => ca.chain_der(),
            _ => unreachable!("a ca issuer"),
        };
        let der = |pem: &str| pem_rfc7468::decode_vec(pem.as_bytes()).unwrap().1;
        assert_eq!(chain(&built), [der(&first.0)]);
        assert_eq!(chain(&rebuilt), [der(&second.0)], "built from the new Secret");
        assert_eq!(rebuilt.kind().as_str(), "ca");
    }
}
