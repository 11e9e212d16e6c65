//! Which namespaces the operator serves, and the watches that follow from it.
//!
//! Three modes: every namespace (the default), one namespace plus the cluster-scoped kinds
//! (`--namespace`), and namespace-scoped mode (`--watch-namespaces a,b`): only those
//! namespaces, with no cluster-scoped kind at all, so the operator needs no ClusterRole. An
//! identity allowed into a few namespaces cannot list across the cluster, so namespace-scoped
//! mode runs one watch per namespace; [`NamespaceMerge`] joins them into the one event sequence
//! a controller's cache follows.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt::Debug,
};

use futures::{StreamExt as _, stream::BoxStream};
use kube::{
    Api, Client, Resource,
    core::NamespaceResourceScope,
    runtime::{WatchStreamExt as _, reflector::Store, watcher},
};
use serde::de::DeserializeOwned;

/// A namespaced kind this module can watch.
pub trait Watched:
    Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + 'static
{
}

impl<K> Watched for K where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned
        + Send
        + 'static
{
}

/// The watch events of one kind, as a controller's cache or trigger consumes them.
pub type Events<K> = BoxStream<'static, Result<watcher::Event<K>, watcher::Error>>;

/// Which namespaces this operator serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchScope {
    /// The namespaces served; empty: all of them.
    namespaces: Vec<String>,
    /// Whether the cluster-scoped kinds (ClusterIssuer, DomainValidation, AlertConfig) are
    /// served too.
    cluster_scoped: bool,
}

impl Default for WatchScope {
    fn default() -> Self {
        Self::cluster()
    }
}

impl WatchScope {
    /// Every namespace and the cluster-scoped kinds.
    pub fn cluster() -> Self {
        Self {
            namespaces: Vec::new(),
            cluster_scoped: true,
        }
    }

    /// One namespace's namespaced objects plus the cluster-scoped kinds (`--namespace`).
    pub fn namespace(namespace: impl Into<String>) -> Self {
        Self {
            namespaces: vec![namespace.into()],
            cluster_scoped: true,
        }
    }

    /// Namespace-scoped mode (`--watch-namespaces`): these namespaces only, no cluster-scoped
    /// kind. Duplicates are dropped; the order is kept.
    pub fn only_namespaces(namespaces: impl IntoIterator<Item = String>) -> Self {
        let mut unique: Vec<String> = Vec::new();
        for namespace in namespaces {
            if !unique.contains(&namespace) {
                unique.push(namespace);
            }
        }
        Self {
            namespaces: unique,
            cluster_scoped: false,
        }
    }

    /// Whether ClusterIssuers, DomainValidations and AlertConfigs are served.
    pub fn serves_cluster_scoped(&self) -> bool {
        self.cluster_scoped
    }

    /// The namespaces served, or `None` for all.
    pub fn namespaces(&self) -> Option<&[String]> {
        (!self.namespaces.is_empty()).then_some(self.namespaces.as_slice())
    }

    /// Whether objects in `namespace` are served.
    pub fn serves_namespace(&self, namespace: &str) -> bool {
        self.namespaces()
            .is_none_or(|served| served.iter().any(|n| n == namespace))
    }

    /// One API handle per served namespace, or one for all namespaces.
    pub fn apis<K>(&self, client: &Client) -> Vec<Api<K>>
    where
        K: Resource<Scope = NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match self.namespaces() {
            Some(namespaces) => namespaces
                .iter()
                .map(|ns| Api::namespaced(client.clone(), ns))
                .collect(),
            None => vec![Api::all(client.clone())],
        }
    }

    /// The watch events of `K` in the served namespaces, for a cache: one watch, or one per
    /// namespace merged so that `cache` (the reader of the store these events feed) stays exact
    /// ([`NamespaceMerge`]).
    pub fn cached_watch<K>(&self, client: &Client, config: &watcher::Config, cache: Store<K>) -> Events<K>
    where
        K: Watched + Sync,
    {
        let mut watches = self.watches(client, config);
        if watches.len() == 1 {
            return watches.remove(0).1;
        }
        merge(watches, cache)
    }

    /// The watch events of `K` in the served namespaces, for a trigger (which needs no
    /// consistent cache: it maps each applied or deleted object to what it concerns). With
    /// `K = PartialObjectMeta<_>` the requests are metadata-only (e.g. Secrets: never their
    /// data).
    pub fn trigger_watch<K>(&self, client: &Client, config: &watcher::Config) -> Events<K>
    where
        K: Watched,
    {
        let streams = self.watches(client, config).into_iter().map(|(_, events)| events);
        futures::stream::select_all(streams).boxed()
    }

    fn watches<K>(&self, client: &Client, config: &watcher::Config) -> Vec<(String, Events<K>)>
    where
        K: Watched,
    {
        self.apis::<K>(client)
            .into_iter()
            .map(|api| {
                let namespace = api.namespace().unwrap_or_default().to_owned();
                let events = watcher(api, config.clone()).default_backoff().boxed();
                (namespace, events)
            })
            .collect()
    }
}

/// Several namespaces' watches as one stream for the store `cache` reads ([`NamespaceMerge`]).
fn merge<K>(watches: Vec<(String, Events<K>)>, cache: Store<K>) -> Events<K>
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    let (namespaces, streams): (Vec<_>, Vec<_>) = watches.into_iter().unzip();
    let tagged = futures::stream::select_all(
        streams
            .into_iter()
            .enumerate()
            .map(|(index, events)| events.map(move |event| (index, event))),
    );
    let mut merged = NamespaceMerge::new(namespaces.clone());
    tagged
        .flat_map(move |(index, event)| {
            let out: Vec<_> = match event {
                Err(error) => {
                    // Named here: until every namespace has listed, no cache is ready and
                    // nothing is reconciled, so a namespace whose Role is missing must say so.
                    let namespace = namespaces.get(index).map_or("", String::as_str);
                    tracing::warn!(namespace, %error, "watch failed; retrying with backoff");
                    vec![Err(error)]
                }
                Ok(event) => merged
                    .step(index, event, |namespace| cached_in(&cache, namespace))
                    .into_iter()
                    .map(Ok)
                    .collect(),
            };
            futures::stream::iter(out)
        })
        .boxed()
}

/// The objects `cache` holds in `namespace`.
fn cached_in<K>(cache: &Store<K>, namespace: &str) -> Vec<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    cache
        .state()
        .into_iter()
        .filter(|object| object.meta().namespace.as_deref() == Some(namespace))
        .map(|object| (*object).clone())
        .collect()
}

/// Joins the watch events of several namespaces into the sequence one reflector cache follows.
///
/// Each namespace's watch lists (`Init`, `InitApply`…, `InitDone`) at its start and again after
/// any interruption. Passed through as they are, one namespace's `InitDone` would replace the
/// whole cache with that namespace's objects. Instead the first lists are gathered and given as
/// one `Init`…`InitDone` once every namespace has listed — the cache is ready then, and not
/// before — and a later list of one namespace becomes `Apply` for each object it lists and
/// `Delete` for each object the cache still holds there that the list no longer has (deleted
/// while the watch was interrupted).
#[derive(Debug)]
pub struct NamespaceMerge<K> {
    namespaces: Vec<String>,
    /// Until every namespace has listed: what has been seen, by (namespace index, name).
    first_lists: Option<FirstLists<K>>,
    /// Namespaces listing again, with the names listed so far.
    relisting: HashMap<usize, HashSet<String>>,
}

#[derive(Debug)]
struct FirstLists<K> {
    /// Namespaces whose list is not complete.
    pending: HashSet<usize>,
    objects: BTreeMap<(usize, String), K>,
}

impl<K: Resource + Clone> NamespaceMerge<K> {
    /// A merge of the watches of `namespaces`, in the order their events are tagged with.
    pub fn new(namespaces: Vec<String>) -> Self {
        let pending = (0..namespaces.len()).collect();
        Self {
            namespaces,
            first_lists: Some(FirstLists {
                pending,
                objects: BTreeMap::new(),
            }),
            relisting: HashMap::new(),
        }
    }

    /// The events for the cache after `event` of the watch of namespace number `index`;
    /// `cached` gives the objects the cache holds in a namespace.
    pub fn step(
        &mut self,
        index: usize,
        event: watcher::Event<K>,
        cached: impl FnOnce(&str) -> Vec<K>,
    ) -> Vec<watcher::Event<K>> {
        use watcher::Event;
        if let Some(first) = &mut self.first_lists {
            match event {
                Event::Init => {
                    // A namespace listing again before all have listed starts over.
                    first.objects.retain(|(i, _), _| *i != index);
                    first.pending.insert(index);
                }
                Event::InitApply(object) | Event::Apply(object) => {
                    first.objects.insert((index, name_of(&object)), object);
                }
                Event::Delete(object) => {
                    first.objects.remove(&(index, name_of(&object)));
                }
                Event::InitDone => {
                    first.pending.remove(&index);
                    if first.pending.is_empty() {
                        let objects = std::mem::take(&mut first.objects);
                        self.first_lists = None;
                        let mut out = Vec::with_capacity(objects.len() + 2);
                        out.push(Event::Init);
                        out.extend(objects.into_values().map(Event::InitApply));
                        out.push(Event::InitDone);
                        return out;
                    }
                }
            }
            return Vec::new();
        }
        match event {
            Event::Init => {
                self.relisting.insert(index, HashSet::new());
                Vec::new()
            }
            Event::InitApply(object) => {
                self.relisting.entry(index).or_default().insert(name_of(&object));
                vec![Event::Apply(object)]
            }
            Event::InitDone => {
                let listed = self.relisting.remove(&index).unwrap_or_default();
                let namespace = self.namespaces.get(index).map_or("", String::as_str);
                cached(namespace)
                    .into_iter()
                    .filter(|object| !listed.contains(&name_of(object)))
                    .map(Event::Delete)
                    .collect()
            }
            applied_or_deleted => vec![applied_or_deleted],
        }
    }
}

fn name_of<K: Resource>(object: &K) -> String {
    object.meta().name.clone().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::{reflector, watcher::Event};

    use super::*;

    fn object(namespace: &str, name: &str, value: &str) -> ConfigMap {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace},
            "data": {"v": value},
        }))
        .unwrap()
    }

    /// Feeds `events` of namespace watch `index` through the merge into a real reflector
    /// store, as the operator's pipeline does.
    struct Harness {
        merge: NamespaceMerge<ConfigMap>,
        reader: reflector::Store<ConfigMap>,
        writer: reflector::store::Writer<ConfigMap>,
    }

    impl Harness {
        fn new(namespaces: &[&str]) -> Self {
            let (reader, writer) = reflector::store();
            Self {
                merge: NamespaceMerge::new(namespaces.iter().map(|n| (*n).to_owned()).collect()),
                reader,
                writer,
            }
        }

        fn feed(&mut self, index: usize, event: Event<ConfigMap>) -> usize {
            let reader = self.reader.clone();
            let out = self
                .merge
                .step(index, event, |namespace| cached_in(&reader, namespace));
            for event in &out {
                self.writer.apply_watcher_event(event);
            }
            out.len()
        }

        fn cached(&self) -> Vec<String> {
            let mut names: Vec<String> = self
                .reader
                .state()
                .iter()
                .map(|o| {
                    format!(
                        "{}/{}={}",
                        o.metadata.namespace.as_deref().unwrap_or_default(),
                        o.metadata.name.as_deref().unwrap_or_default(),
                        o.data
                            .as_ref()
                            .and_then(|d| d.get("v"))
                            .map_or("", String::as_str)
                    )
                })
                .collect();
            names.sort();
            names
        }
    }

    /// One namespace's `InitDone` must neither make the cache ready nor replace what another
    /// namespace listed; the cache holds both once both have listed, including what changed in
    /// between.
    #[test]
    fn the_cache_is_ready_with_every_namespace_once_all_have_listed() {
        let mut h = Harness::new(&["a", "b"]);
        h.feed(0, Event::Init);
        h.feed(0, Event::InitApply(object("a", "one", "1")));
        h.feed(1, Event::Init);
        h.feed(0, Event::InitDone);
        assert!(h.reader.is_empty(), "nothing before every namespace listed");
        h.feed(0, Event::Apply(object("a", "two", "2")));
        h.feed(0, Event::Apply(object("a", "one", "1b")));
        h.feed(1, Event::InitApply(object("b", "three", "3")));
        h.feed(1, Event::InitApply(object("b", "gone", "x")));
        h.feed(1, Event::Delete(object("b", "gone", "x")));
        let reader = h.reader.clone();
        let ready = reader.wait_until_ready();
        futures::pin_mut!(ready);
        assert!(
            futures::FutureExt::now_or_never(&mut ready).is_none(),
            "not ready before b listed"
        );
        h.feed(1, Event::InitDone);
        assert!(
            futures::FutureExt::now_or_never(ready).is_some(),
            "ready once both listed"
        );
        assert_eq!(h.cached(), ["a/one=1b", "a/two=2", "b/three=3"]);
    }

    /// A namespace whose watch lists again (after an interruption) updates what it lists and
    /// removes what it no longer has — in that namespace only.
    #[test]
    fn a_namespace_listing_again_drops_only_its_own_vanished_objects() {
        let mut h = Harness::new(&["a", "b"]);
        for (index, ns) in [(0, "a"), (1, "b")] {
            h.feed(index, Event::Init);
            h.feed(index, Event::InitApply(object(ns, "kept", "1")));
            h.feed(index, Event::InitApply(object(ns, "vanishes", "1")));
            h.feed(index, Event::InitDone);
        }
        assert_eq!(h.cached().len(), 4);
        h.feed(0, Event::Init);
        assert_eq!(h.cached().len(), 4, "a relist start changes nothing yet");
        h.feed(0, Event::InitApply(object("a", "kept", "2")));
        h.feed(1, Event::Apply(object("b", "new", "1")));
        assert_eq!(h.feed(0, Event::InitDone), 1, "one deletion");
        assert_eq!(h.cached(), ["a/kept=2", "b/kept=1", "b/new=1", "b/vanishes=1"]);
    }

    /// A namespace restarting its first list before the others finished does not keep what its
    /// interrupted list had and the others no longer wait on a list that started over.
    #[test]
    fn a_first_list_that_starts_over_is_waited_for_again() {
        let mut h = Harness::new(&["a", "b"]);
        h.feed(0, Event::Init);
        h.feed(0, Event::InitApply(object("a", "stale", "1")));
        h.feed(0, Event::InitDone);
        h.feed(0, Event::Init);
        h.feed(1, Event::Init);
        h.feed(1, Event::InitDone);
        assert!(h.reader.is_empty(), "a is listing again");
        h.feed(0, Event::InitApply(object("a", "fresh", "1")));
        h.feed(0, Event::InitDone);
        assert_eq!(h.cached(), ["a/fresh=1"]);
    }

    #[test]
    fn scopes_say_what_they_serve() {
        let all = WatchScope::cluster();
        assert!(all.serves_cluster_scoped() && all.serves_namespace("x"));
        assert_eq!(all.namespaces(), None);
        let one = WatchScope::namespace("a");
        assert!(one.serves_cluster_scoped() && one.serves_namespace("a") && !one.serves_namespace("b"));
        let only = WatchScope::only_namespaces(["a".into(), "b".into(), "a".into()]);
        assert!(!only.serves_cluster_scoped());
        assert_eq!(only.namespaces(), Some(&["a".to_owned(), "b".to_owned()][..]));
        assert!(only.serves_namespace("b") && !only.serves_namespace("c"));
    }
}
