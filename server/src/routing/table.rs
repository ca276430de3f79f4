//! The routing table: every exchange, every binding, the compiled matchers, and `route()`.
//!
//! Concurrency rule: the controller shard owns the authoritative table and is the only one that
//! calls [`RoutingTable::apply`]; after each successful apply it persists the declarations
//! (`store`) and broadcasts a clone, tagged with [`RoutingTable::version`], to every shard. Other
//! shards only ever replace their copy whole with a newer version and call `route()` on it, so the
//! table needs no locks and holds nothing shard-local (`Send + Clone`, no `Rc`, no `Arc`).
//!
//! Routing follows RabbitMQ's `rabbit_exchange:route/2`:
//! ```text
//!  work list = [exchange]; seen = {exchange}
//!  for each exchange X taken from the work list:
//!      D = destinations X's own bindings match for (key, headers)
//!      if X is delayed and the record asks for a delay: X's hold queue joins the result;
//!          next exchange                                         (the plugin's route/2 answers [])
//!      if D is empty and X has an alternate exchange A: D = [A]
//!      topics in D join the result; exchanges in D not yet seen join the work list   (cycles cut)
//!  result = the set of topics (one copy each, however many paths reach them)
//! ```
//! An empty result is an unroutable record: the caller counts and drops it. A hold queue in the
//! result is a topic like any other; its owner routes the record from the delayed exchange once
//! due (`delayed`, `amqp/delayed.rs`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::exchange::{
    Binding, Destination, Exchange, ExchangeType, RoutingError, BINDINGS_MAX, EXCHANGES_MAX,
};
use super::headers_matcher::HeadersMatcher;
use super::topic_matcher::TopicMatcher;

/// One requested change to the declarations. A list of them is applied all or nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Declares an exchange; declaring an identical one again is a no-op, a different one with the
    /// same name is refused (RabbitMQ's "inequivalent arg").
    DeclareExchange(Exchange),
    /// Sets or clears an existing exchange's alternate exchange.
    SetAlternate {
        exchange: String,
        alternate: Option<String>,
    },
    /// Deletes an exchange with every binding from and to it.
    DeleteExchange { name: String },
    /// Adds a binding; adding an existing one is a no-op.
    AddBinding(Binding),
    /// Removes a binding; removing an absent one is a no-op.
    RemoveBinding(Binding),
    /// A topic was deleted: forget every binding to it, as RabbitMQ does for a deleted queue.
    ForgetTopic { name: String },
}

/// A change refused, with the position of the change in the list that was rolled back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("change {index}: {error}")]
pub struct ApplyError {
    pub index: usize,
    #[source]
    pub error: RoutingError,
}

/// What `store` persists: declarations only; matchers are rebuilt on load.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Declarations {
    pub version: u64,
    pub exchanges: Vec<Exchange>,
    pub bindings: Vec<Binding>,
}

#[derive(Debug, Clone)]
enum Matcher {
    /// Binding key → destinations bound with exactly that key.
    Direct(HashMap<Box<[u8]>, Vec<Destination>>),
    /// Every binding matches; the destinations are read from the bindings themselves.
    Fanout,
    Topic(TopicMatcher<Destination>),
    Headers(BTreeMap<Binding, HeadersMatcher>),
}

#[derive(Debug, Clone)]
struct ExchangeEntry {
    exchange: Exchange,
    /// A delayed exchange's hold queue (`delayed::hold_queue`), kept here so that `route_with`
    /// can hand out its name borrowed from the table.
    hold_queue: Option<String>,
    /// Bindings whose source is this exchange.
    bindings: BTreeSet<Binding>,
    matcher: Matcher,
}

impl ExchangeEntry {
    fn new(exchange: Exchange) -> ExchangeEntry {
        let matcher = match exchange.kind.routing() {
            ExchangeType::Direct => Matcher::Direct(HashMap::new()),
            ExchangeType::Fanout => Matcher::Fanout,
            ExchangeType::Topic => Matcher::Topic(TopicMatcher::new()),
            _ => Matcher::Headers(BTreeMap::new()),
        };
        let hold_queue = exchange
            .kind
            .is_delayed()
            .then(|| super::delayed::hold_queue(&exchange.name));
        ExchangeEntry {
            exchange,
            hold_queue,
            bindings: BTreeSet::new(),
            matcher,
        }
    }

    /// Adds a validated, normalised binding whose source is this exchange; false if present.
    fn insert(&mut self, binding: Binding) -> bool {
        if self.bindings.contains(&binding) {
            return false;
        }
        match &mut self.matcher {
            Matcher::Direct(by_key) => by_key
                .entry(binding.key.as_bytes().into())
                .or_default()
                .push(binding.destination.clone()),
            Matcher::Fanout => {}
            Matcher::Topic(trie) => {
                let inserted = trie.insert(&binding.key, binding.destination.clone());
                assert!(inserted, "topic bindings are unique by (key, destination)");
            }
            Matcher::Headers(by_binding) => {
                // Validated before insertion, so the arguments compile.
                if let Ok(matcher) = HeadersMatcher::new(&binding.arguments) {
                    by_binding.insert(binding.clone(), matcher);
                }
            }
        }
        self.bindings.insert(binding);
        true
    }

    fn remove(&mut self, binding: &Binding) -> bool {
        if !self.bindings.remove(binding) {
            return false;
        }
        match &mut self.matcher {
            Matcher::Direct(by_key) => {
                if let Some(destinations) = by_key.get_mut(binding.key.as_bytes()) {
                    destinations.retain(|destination| *destination != binding.destination);
                    if destinations.is_empty() {
                        by_key.remove(binding.key.as_bytes());
                    }
                }
            }
            Matcher::Fanout => {}
            Matcher::Topic(trie) => {
                let removed = trie.remove(&binding.key, &binding.destination);
                assert!(removed, "the trie holds every topic binding");
            }
            Matcher::Headers(by_binding) => {
                by_binding.remove(binding);
            }
        }
        true
    }

    /// Pushes the destinations this exchange's own bindings match (possibly repeated).
    fn matches<'a>(
        &'a self,
        key: &[u8],
        headers: &[(&str, Option<&[u8]>)],
        found: &mut Vec<&'a Destination>,
    ) {
        match &self.matcher {
            Matcher::Direct(by_key) => {
                if let Some(destinations) = by_key.get(key) {
                    found.extend(destinations.iter());
                }
            }
            Matcher::Fanout => {
                found.extend(self.bindings.iter().map(|binding| &binding.destination))
            }
            Matcher::Topic(trie) => trie.for_each_match(key, |destination| found.push(destination)),
            Matcher::Headers(by_binding) => found.extend(
                by_binding
                    .iter()
                    .filter(|(_, matcher)| matcher.matches(headers))
                    .map(|(binding, _)| &binding.destination),
            ),
        }
    }

    /// True if `matches` gives the same answer for every key and headers.
    fn is_key_independent(&self) -> bool {
        match &self.matcher {
            Matcher::Direct(by_key) => by_key.is_empty(),
            Matcher::Fanout => true,
            Matcher::Topic(trie) => trie.is_key_independent(),
            Matcher::Headers(by_binding) => by_binding
                .values()
                .all(HeadersMatcher::is_header_independent),
        }
    }
}

/// An undo step recorded while applying a change list; replaying them in reverse restores the
/// table exactly. None of them can fail.
enum Undo {
    RemoveExchange(String),
    RestoreExchange(Exchange),
    SetAlternate(String, Option<String>),
    InsertBinding(Binding),
    RemoveBinding(Binding),
}

/// Buffers `route_with` reuses between calls; borrows names from the table it routes with.
#[derive(Debug, Default)]
pub struct RouteScratch<'a> {
    seen: Vec<&'a str>,
    found: Vec<&'a Destination>,
    topics: Vec<&'a str>,
}

/// How to take back one applied change list.
#[must_use = "dropping a Reversal makes the changes permanent; that is fine once persisted"]
pub struct Reversal {
    steps: Vec<Undo>,
    version_before: u64,
}

impl Reversal {
    /// True if the change list changed nothing (so there is nothing to persist or broadcast).
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

/// Exchanges and bindings, with matchers compiled for `route()`.
#[derive(Debug, Clone, Default)]
pub struct RoutingTable {
    version: u64,
    exchanges: BTreeMap<String, ExchangeEntry>,
    /// Bindings by destination, for deleting exchanges and topics and for describing a
    /// destination's bindings.
    incoming: HashMap<Destination, BTreeSet<Binding>>,
    binding_count: usize,
}

impl RoutingTable {
    pub fn new() -> RoutingTable {
        RoutingTable::default()
    }

    /// Bumped by every `apply` that changed something; shards keep the newest copy they receive.
    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn exchange(&self, name: &str) -> Option<&Exchange> {
        self.exchanges.get(name).map(|entry| &entry.exchange)
    }

    pub fn is_exchange(&self, name: &str) -> bool {
        self.exchanges.contains_key(name)
    }

    pub fn exchanges(&self) -> impl Iterator<Item = &Exchange> {
        self.exchanges.values().map(|entry| &entry.exchange)
    }

    pub fn binding_count(&self) -> usize {
        self.binding_count
    }

    /// Bindings whose source is `exchange`, in order.
    pub fn bindings_from(&self, exchange: &str) -> impl Iterator<Item = &Binding> {
        self.exchanges
            .get(exchange)
            .into_iter()
            .flat_map(|entry| entry.bindings.iter())
    }

    /// Bindings whose destination is `destination`, in order.
    pub fn bindings_to(&self, destination: &Destination) -> impl Iterator<Item = &Binding> {
        self.incoming.get(destination).into_iter().flatten()
    }

    /// The topics a record produced to `exchange` goes to: sorted, each once; empty when the
    /// record is unroutable. A null key routes as the empty key (zero words). The record asks
    /// for no delay (see [`route_delayed`](Self::route_delayed)).
    pub fn route(
        &self,
        exchange: &str,
        key: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
    ) -> Result<Vec<&str>, RoutingError> {
        self.route_delayed(exchange, key, headers, false)
    }

    /// As [`route`](Self::route); `delayed`: the record asks for a delay (its protocol read its
    /// `x-delay` header, `delayed`), so a delayed exchange it reaches holds it.
    pub fn route_delayed(
        &self,
        exchange: &str,
        key: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
        delayed: bool,
    ) -> Result<Vec<&str>, RoutingError> {
        let mut scratch = RouteScratch::default();
        self.route_with(exchange, key, headers, delayed, &mut scratch)
            .map(<[&str]>::to_vec)
    }

    /// The delayed exchange whose hold queue is `queue`, if one is.
    pub fn held_by(&self, queue: &str) -> Option<&str> {
        let holds = |entry: &ExchangeEntry| entry.hold_queue.as_deref() == Some(queue);
        // The hold queue's name is the exchange's prefixed, but for names too long for that.
        let plain = queue
            .strip_prefix("amq.weir.delayed.")
            .and_then(|name| self.exchanges.get_key_value(name))
            .filter(|(_, entry)| holds(entry));
        let found = plain.or_else(|| self.exchanges.iter().find(|(_, entry)| holds(entry)));
        found.map(|(name, _)| name.as_str())
    }

    /// As [`route`](Self::route), reusing `scratch`'s buffers so that routing a batch of records
    /// allocates nothing per record once the buffers have grown.
    pub fn route_with<'a, 's>(
        &'a self,
        exchange: &str,
        key: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
        delayed: bool,
        scratch: &'s mut RouteScratch<'a>,
    ) -> Result<&'s [&'a str], RoutingError> {
        let (start, _) = self.exchanges.get_key_value(exchange).ok_or_else(|| {
            RoutingError::UnknownExchange {
                name: exchange.to_string(),
            }
        })?;
        let key = key.unwrap_or_default();
        let RouteScratch {
            seen,
            found,
            topics,
        } = scratch;
        seen.clear();
        topics.clear();
        seen.push(start.as_str());
        let mut next = 0;
        while next < seen.len() {
            let current = seen[next];
            next += 1;
            // An alternate exchange may name an exchange that does not exist: nothing to route.
            let Some(entry) = self.exchanges.get(current) else {
                continue;
            };
            if let (true, Some(hold_queue)) = (delayed, &entry.hold_queue) {
                topics.push(hold_queue);
                continue;
            }
            found.clear();
            entry.matches(key, headers, found);
            if found.is_empty() {
                if let Some(alternate) = &entry.exchange.alternate {
                    if !seen.contains(&alternate.as_str()) {
                        seen.push(alternate);
                    }
                }
            }
            for destination in found.iter() {
                match destination {
                    Destination::Topic(topic) => topics.push(topic),
                    Destination::Exchange(name) => {
                        if !seen.contains(&name.as_str()) {
                            seen.push(name);
                        }
                    }
                }
            }
        }
        topics.sort_unstable();
        topics.dedup();
        Ok(topics)
    }

    /// If every record produced to `exchange` goes to the same topics whatever its key and
    /// headers, those topics: then whole batches can be forwarded without decoding records.
    pub fn key_independent_route(&self, exchange: &str) -> Option<Vec<&str>> {
        // Every exchange a record could reach must be key-independent; walk them all.
        let mut reachable: Vec<&str> = vec![self.exchanges.get_key_value(exchange)?.0];
        let mut next = 0;
        while next < reachable.len() {
            let current = reachable[next];
            next += 1;
            let Some(entry) = self.exchanges.get(current) else {
                continue;
            };
            // A delayed exchange holds records by their `x-delay` header.
            if !entry.is_key_independent() || entry.exchange.kind.is_delayed() {
                return None;
            }
            let onward = entry
                .bindings
                .iter()
                .filter_map(|binding| match &binding.destination {
                    Destination::Exchange(name) => Some(name.as_str()),
                    Destination::Topic(_) => None,
                })
                .chain(entry.exchange.alternate.as_deref());
            for name in onward {
                if !reachable.contains(&name) {
                    reachable.push(name);
                }
            }
        }
        self.route(exchange, None, &[]).ok()
    }

    /// Applies `changes` in order, all or nothing. On success the version is bumped if anything
    /// changed and the new version returned; on failure the table is exactly as before.
    pub fn apply(&mut self, changes: &[Change]) -> Result<u64, ApplyError> {
        self.apply_reversible(changes).map(|_| self.version)
    }

    /// As [`apply`](Self::apply), and returns what [`revert`](Self::revert) needs to take the
    /// changes back (the controller reverts when persisting them fails).
    pub fn apply_reversible(&mut self, changes: &[Change]) -> Result<Reversal, ApplyError> {
        let mut undo: Vec<Undo> = Vec::new();
        for (index, change) in changes.iter().enumerate() {
            if let Err(error) = self.apply_one(change, &mut undo) {
                self.undo_all(undo);
                return Err(ApplyError { index, error });
            }
        }
        let changed = !undo.is_empty();
        if changed {
            self.version += 1;
        }
        Ok(Reversal {
            steps: undo,
            version_before: self.version - u64::from(changed),
        })
    }

    /// Takes back the changes of the last `apply_reversible`; nothing may have been applied since.
    pub fn revert(&mut self, reversal: Reversal) {
        self.undo_all(reversal.steps);
        self.version = reversal.version_before;
    }

    fn undo_all(&mut self, mut steps: Vec<Undo>) {
        while let Some(step) = steps.pop() {
            self.undo(step);
        }
    }

    fn declare_exchange(
        &mut self,
        exchange: &Exchange,
        undo: &mut Vec<Undo>,
    ) -> Result<(), RoutingError> {
        exchange.validate()?;
        if let Some(existing) = self.exchanges.get(&exchange.name) {
            if existing.exchange == *exchange {
                return Ok(());
            }
            return Err(RoutingError::ExchangeExists {
                name: exchange.name.clone(),
                existing: existing.exchange.kind.as_str(),
            });
        }
        if self.exchanges.len() >= EXCHANGES_MAX {
            return Err(RoutingError::TableFull {
                what: "exchanges",
                max: EXCHANGES_MAX,
            });
        }
        self.exchanges
            .insert(exchange.name.clone(), ExchangeEntry::new(exchange.clone()));
        undo.push(Undo::RemoveExchange(exchange.name.clone()));
        Ok(())
    }

    /// Deletes an exchange with every binding from and to it.
    fn delete_exchange(&mut self, name: &str, undo: &mut Vec<Undo>) -> Result<(), RoutingError> {
        let entry = self.entry_mut(name)?;
        let exchange = entry.exchange.clone();
        let outgoing: Vec<Binding> = entry.bindings.iter().cloned().collect();
        let destination = Destination::Exchange(name.to_string());
        let incoming: Vec<Binding> = self.bindings_to(&destination).cloned().collect();
        for binding in outgoing.into_iter().chain(incoming) {
            // A self-binding is both outgoing and incoming: removed once.
            if self.remove_binding(&binding) {
                undo.push(Undo::InsertBinding(binding));
            }
        }
        self.exchanges.remove(name);
        undo.push(Undo::RestoreExchange(exchange));
        Ok(())
    }

    fn apply_one(&mut self, change: &Change, undo: &mut Vec<Undo>) -> Result<(), RoutingError> {
        match change {
            Change::DeclareExchange(exchange) => self.declare_exchange(exchange, undo)?,
            Change::SetAlternate {
                exchange,
                alternate,
            } => {
                if let Some(alternate) = alternate {
                    super::exchange::validate_name(alternate)?;
                }
                let entry = self.entry_mut(exchange)?;
                if entry.exchange.alternate != *alternate {
                    let old = std::mem::replace(&mut entry.exchange.alternate, alternate.clone());
                    undo.push(Undo::SetAlternate(exchange.clone(), old));
                }
            }
            Change::DeleteExchange { name } => self.delete_exchange(name, undo)?,
            Change::AddBinding(binding) => {
                let binding = self.normalise(binding)?;
                if let Destination::Exchange(name) = &binding.destination {
                    self.entry(name)?;
                }
                let exists = self.entry(&binding.source)?.bindings.contains(&binding);
                if !exists {
                    if self.binding_count >= BINDINGS_MAX {
                        return Err(RoutingError::TableFull {
                            what: "bindings",
                            max: BINDINGS_MAX,
                        });
                    }
                    self.insert_binding(binding.clone());
                    undo.push(Undo::RemoveBinding(binding));
                }
            }
            Change::RemoveBinding(binding) => {
                let binding = self.normalise(binding)?;
                if self.remove_binding(&binding) {
                    undo.push(Undo::InsertBinding(binding));
                }
            }
            Change::ForgetTopic { name } => {
                let destination = Destination::Topic(name.clone());
                let incoming: Vec<Binding> = self.bindings_to(&destination).cloned().collect();
                for binding in incoming {
                    if self.remove_binding(&binding) {
                        undo.push(Undo::InsertBinding(binding));
                    }
                }
            }
        }
        Ok(())
    }

    fn undo(&mut self, step: Undo) {
        match step {
            Undo::RemoveExchange(name) => {
                let entry = self.exchanges.remove(&name);
                assert!(entry.is_some_and(|entry| entry.bindings.is_empty()));
            }
            Undo::RestoreExchange(exchange) => {
                let previous = self
                    .exchanges
                    .insert(exchange.name.clone(), ExchangeEntry::new(exchange));
                assert!(previous.is_none());
            }
            Undo::SetAlternate(name, alternate) => {
                let entry = self.exchanges.get_mut(&name);
                assert!(
                    entry.is_some(),
                    "undo runs in reverse, so the exchange exists"
                );
                if let Some(entry) = entry {
                    entry.exchange.alternate = alternate;
                }
            }
            Undo::InsertBinding(binding) => self.insert_binding(binding),
            Undo::RemoveBinding(binding) => {
                let removed = self.remove_binding(&binding);
                assert!(removed);
            }
        }
    }

    fn entry(&self, name: &str) -> Result<&ExchangeEntry, RoutingError> {
        self.exchanges
            .get(name)
            .ok_or_else(|| RoutingError::UnknownExchange {
                name: name.to_string(),
            })
    }

    fn entry_mut(&mut self, name: &str) -> Result<&mut ExchangeEntry, RoutingError> {
        self.exchanges
            .get_mut(name)
            .ok_or_else(|| RoutingError::UnknownExchange {
                name: name.to_string(),
            })
    }

    /// Validates a binding against its source's type and drops what that type ignores, so that
    /// binding identity is what routing sees: direct and topic bindings are (key, destination),
    /// fanout bindings are (destination), headers bindings are (arguments, destination).
    pub fn normalise(&self, binding: &Binding) -> Result<Binding, RoutingError> {
        let kind = self.entry(&binding.source)?.exchange.kind;
        binding.validate_for(kind)?;
        let mut binding = binding.clone();
        match kind.routing() {
            ExchangeType::Direct | ExchangeType::Topic => binding.arguments.clear(),
            ExchangeType::Fanout => {
                binding.key.clear();
                binding.arguments.clear();
            }
            _ => binding.key.clear(),
        }
        Ok(binding)
    }

    /// Inserts a normalised binding whose source exists.
    fn insert_binding(&mut self, binding: Binding) {
        let entry = self.exchanges.get_mut(&binding.source);
        assert!(entry.is_some(), "the source was checked before insertion");
        if let Some(entry) = entry {
            if entry.insert(binding.clone()) {
                self.binding_count += 1;
                self.incoming
                    .entry(binding.destination.clone())
                    .or_default()
                    .insert(binding);
            }
        }
    }

    fn remove_binding(&mut self, binding: &Binding) -> bool {
        let Some(entry) = self.exchanges.get_mut(&binding.source) else {
            return false;
        };
        if !entry.remove(binding) {
            return false;
        }
        self.binding_count -= 1;
        if let Some(set) = self.incoming.get_mut(&binding.destination) {
            set.remove(binding);
            if set.is_empty() {
                self.incoming.remove(&binding.destination);
            }
        }
        true
    }

    /// The declarations to persist.
    pub fn declarations(&self) -> Declarations {
        Declarations {
            version: self.version,
            exchanges: self.exchanges().cloned().collect(),
            bindings: self
                .exchanges
                .values()
                .flat_map(|entry| entry.bindings.iter().cloned())
                .collect(),
        }
    }

    /// Rebuilds a table from persisted declarations, validating them as if newly declared (a
    /// file edited or written by another version must not smuggle in what `apply` would refuse).
    pub fn from_declarations(declarations: &Declarations) -> Result<RoutingTable, ApplyError> {
        let changes: Vec<Change> = declarations
            .exchanges
            .iter()
            .cloned()
            .map(Change::DeclareExchange)
            .chain(
                declarations
                    .bindings
                    .iter()
                    .cloned()
                    .map(Change::AddBinding),
            )
            .collect();
        let mut table = RoutingTable::new();
        table.apply(&changes)?;
        table.version = declarations.version;
        Ok(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::exchange::RoutingErrorKind;

    fn topic(name: &str) -> Destination {
        Destination::Topic(name.to_string())
    }

    fn exchange(name: &str) -> Destination {
        Destination::Exchange(name.to_string())
    }

    fn declare(name: &str, kind: ExchangeType) -> Change {
        Change::DeclareExchange(Exchange::new(name, kind))
    }

    fn bind(source: &str, destination: Destination, key: &str) -> Change {
        Change::AddBinding(Binding::new(source, destination, key))
    }

    fn bind_headers(source: &str, destination: Destination, arguments: &[(&str, &str)]) -> Change {
        let mut binding = Binding::new(source, destination, "");
        binding.arguments = arguments
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        Change::AddBinding(binding)
    }

    fn table(changes: &[Change]) -> RoutingTable {
        let mut table = RoutingTable::new();
        table.apply(changes).expect("valid declarations");
        table
    }

    /// Routes `key` from `exchange` and compares with `expected` topics.
    fn check(table: &RoutingTable, exchange: &str, key: Option<&str>, expected: &[&str]) {
        let routed = table
            .route(exchange, key.map(str::as_bytes), &[])
            .expect("exchange exists");
        assert_eq!(routed, expected, "exchange {exchange} key {key:?}");
    }

    #[test]
    fn topic_exchange_from_the_issue() {
        let table = table(&[
            declare("app", ExchangeType::Topic),
            bind("app", topic("email_queue"), "user.*"),
            bind("app", topic("audit"), "#"),
        ]);
        check(
            &table,
            "app",
            Some("user.registered"),
            &["audit", "email_queue"],
        );
        check(&table, "app", Some("user."), &["audit", "email_queue"]);
        check(&table, "app", Some("order.created"), &["audit"]);
        check(&table, "app", Some(""), &["audit"]);
        check(&table, "app", None, &["audit"]);
    }

    #[test]
    fn direct_and_fanout() {
        let table = table(&[
            declare("jobs", ExchangeType::Direct),
            bind("jobs", topic("pdf"), "pdf"),
            bind("jobs", topic("pdf"), "report"),
            bind("jobs", topic("images"), "png"),
            bind("jobs", topic("all-jobs"), "pdf"),
            declare("broadcast", ExchangeType::Fanout),
            bind("broadcast", topic("a"), "ignored"),
            bind("broadcast", topic("a"), "other key, same destination"),
            bind("broadcast", topic("b"), ""),
        ]);
        check(&table, "jobs", Some("pdf"), &["all-jobs", "pdf"]);
        check(&table, "jobs", Some("report"), &["pdf"]);
        check(&table, "jobs", Some("PDF"), &[]);
        check(&table, "jobs", Some("pd"), &[]);
        check(&table, "jobs", None, &[]);
        check(&table, "broadcast", Some("anything"), &["a", "b"]);
        check(&table, "broadcast", None, &["a", "b"]);
        // Fanout bindings ignore keys: the two bindings to `a` are one.
        assert_eq!(table.bindings_from("broadcast").count(), 2);
    }

    #[test]
    fn headers_exchange() {
        let table = table(&[
            declare("docs", ExchangeType::Headers),
            bind_headers(
                "docs",
                topic("pdf-reports"),
                &[("format", "pdf"), ("type", "report")],
            ),
            bind_headers(
                "docs",
                topic("any-pdf"),
                &[("x-match", "any"), ("format", "pdf"), ("type", "pdf")],
            ),
            bind_headers("docs", topic("everything"), &[]),
            bind_headers("docs", topic("nothing"), &[("x-match", "any")]),
        ]);
        let route = |headers: &[(&str, Option<&[u8]>)]| table.route("docs", None, headers).unwrap();
        assert_eq!(
            route(&[("format", Some(b"pdf")), ("type", Some(b"report"))]),
            ["any-pdf", "everything", "pdf-reports"]
        );
        assert_eq!(
            route(&[("format", Some(b"pdf"))]),
            ["any-pdf", "everything"]
        );
        assert_eq!(route(&[]), ["everything"]);
    }

    #[test]
    fn exchange_to_exchange_with_cycle_and_one_copy() {
        // a → b → c → a (cycle), and both a and c bind topic t: t gets one copy.
        let table = table(&[
            declare("a", ExchangeType::Fanout),
            declare("b", ExchangeType::Topic),
            declare("c", ExchangeType::Direct),
            bind("a", exchange("b"), ""),
            bind("a", topic("t"), ""),
            bind("b", exchange("c"), "k.#"),
            bind("b", exchange("a"), "#"),
            bind("c", topic("t"), "k.x"),
            bind("c", topic("only-c"), "k.x"),
            bind("c", exchange("a"), "k.x"),
            bind("c", exchange("c"), "k.x"),
        ]);
        check(&table, "a", Some("k.x"), &["only-c", "t"]);
        check(&table, "a", Some("other"), &["t"]);
        check(&table, "b", Some("k.x"), &["only-c", "t"]);
        check(&table, "c", Some("k.x"), &["only-c", "t"]);
        check(&table, "c", Some("k.y"), &[]);
    }

    #[test]
    fn alternate_exchange_only_when_nothing_matches() {
        let mut table = table(&[
            declare("orders", ExchangeType::Direct),
            declare("unrouted", ExchangeType::Fanout),
            bind("orders", topic("paid"), "paid"),
            bind("unrouted", topic("dead-letters"), ""),
            Change::SetAlternate {
                exchange: "orders".into(),
                alternate: Some("unrouted".into()),
            },
        ]);
        check(&table, "orders", Some("paid"), &["paid"]);
        check(&table, "orders", Some("refunded"), &["dead-letters"]);

        // A binding to another exchange counts as a match, even if that exchange matches
        // nothing: the alternate of the exchange that matched nothing is used instead.
        table
            .apply(&[
                declare("empty", ExchangeType::Direct),
                bind("orders", exchange("empty"), "refunded"),
            ])
            .unwrap();
        check(&table, "orders", Some("refunded"), &[]);

        // An alternate naming no exchange, and an alternate that is the exchange itself, route
        // nothing and do not loop.
        table
            .apply(&[
                Change::SetAlternate {
                    exchange: "empty".into(),
                    alternate: Some("empty".into()),
                },
                Change::SetAlternate {
                    exchange: "orders".into(),
                    alternate: Some("not-declared".into()),
                },
            ])
            .unwrap();
        check(&table, "orders", Some("refunded"), &[]);
        check(&table, "orders", Some("cancelled"), &[]);
    }

    #[test]
    fn unknown_exchange_routes_to_an_error() {
        let table = RoutingTable::new();
        let error = table.route("nope", None, &[]).unwrap_err();
        assert_eq!(error.kind(), RoutingErrorKind::NotFound);
    }

    #[test]
    fn invalid_changes_are_refused_whole() {
        let mut table = table(&[
            declare("app", ExchangeType::Topic),
            bind("app", topic("audit"), "#"),
        ]);
        let before = table.declarations();
        let refused: &[(Vec<Change>, RoutingErrorKind)] = &[
            // binding to a missing exchange
            (
                vec![
                    bind("app", topic("x"), "a"),
                    bind("app", exchange("missing"), "a"),
                ],
                RoutingErrorKind::NotFound,
            ),
            // binding from a missing exchange
            (
                vec![bind("missing", topic("x"), "")],
                RoutingErrorKind::NotFound,
            ),
            // too many `#`
            (
                vec![bind("app", topic("x"), &["#"; 9].join("."))],
                RoutingErrorKind::InvalidConfig,
            ),
            // bad x-match
            (
                vec![
                    declare("h", ExchangeType::Headers),
                    bind_headers("h", topic("x"), &[("x-match", "most")]),
                ],
                RoutingErrorKind::InvalidConfig,
            ),
            // redeclare with another type
            (
                vec![declare("app", ExchangeType::Direct)],
                RoutingErrorKind::AlreadyExists,
            ),
            // delete then fail: the delete is undone too
            (
                vec![
                    Change::DeleteExchange { name: "app".into() },
                    Change::DeleteExchange { name: "app".into() },
                ],
                RoutingErrorKind::NotFound,
            ),
            (
                vec![declare("bad name", ExchangeType::Fanout)],
                RoutingErrorKind::InvalidName,
            ),
        ];
        for (changes, code) in refused {
            let error = table.apply(changes).unwrap_err();
            assert_eq!(error.error.kind(), *code, "{changes:?}: {error}");
            assert_eq!(
                table.declarations(),
                before,
                "nothing half-applied: {changes:?}"
            );
            check(&table, "app", Some("k"), &["audit"]);
        }
    }

    #[test]
    fn versions_and_idempotence() {
        let mut table = RoutingTable::new();
        assert_eq!(table.version(), 0);
        assert_eq!(table.apply(&[declare("app", ExchangeType::Topic)]), Ok(1));
        assert_eq!(
            table.apply(&[declare("app", ExchangeType::Topic)]),
            Ok(1),
            "no-op"
        );
        assert_eq!(table.apply(&[bind("app", topic("t"), "a.*")]), Ok(2));
        assert_eq!(
            table.apply(&[bind("app", topic("t"), "a.*")]),
            Ok(2),
            "no-op"
        );
        assert_eq!(
            table.apply(&[Change::RemoveBinding(Binding::new("app", topic("t"), "b"))]),
            Ok(2),
            "removing an absent binding is a no-op"
        );
        assert_eq!(
            table.apply(&[Change::RemoveBinding(Binding::new(
                "app",
                topic("t"),
                "a.*"
            ))]),
            Ok(3)
        );
        assert_eq!(table.binding_count(), 0);
    }

    #[test]
    fn deleting_exchanges_and_topics_removes_their_bindings() {
        let mut table = table(&[
            declare("a", ExchangeType::Fanout),
            declare("b", ExchangeType::Fanout),
            bind("a", exchange("b"), ""),
            bind("a", topic("t"), ""),
            bind("b", topic("t"), ""),
            bind("b", topic("u"), ""),
            bind("b", exchange("b"), ""),
        ]);
        assert_eq!(table.binding_count(), 5);
        table
            .apply(&[Change::DeleteExchange { name: "b".into() }])
            .unwrap();
        assert_eq!(table.binding_count(), 1);
        assert_eq!(table.bindings_to(&exchange("b")).count(), 0);
        check(&table, "a", None, &["t"]);
        table
            .apply(&[Change::ForgetTopic { name: "t".into() }])
            .unwrap();
        assert_eq!(table.binding_count(), 0);
        check(&table, "a", None, &[]);
    }

    #[test]
    fn key_independent_routes() {
        let table = table(&[
            declare("fan", ExchangeType::Fanout),
            declare("all", ExchangeType::Topic),
            declare("keyed", ExchangeType::Topic),
            declare("h", ExchangeType::Headers),
            bind("fan", topic("a"), ""),
            bind("fan", exchange("all"), ""),
            bind("all", topic("b"), "#"),
            bind("keyed", topic("c"), "x.*"),
            bind("h", topic("d"), ""),
        ]);
        assert_eq!(table.key_independent_route("fan"), Some(vec!["a", "b"]));
        assert_eq!(table.key_independent_route("h"), Some(vec!["d"]));
        assert_eq!(table.key_independent_route("keyed"), None);
        assert_eq!(table.key_independent_route("missing"), None);
    }

    #[test]
    fn a_delayed_exchange_holds_records_that_ask_for_a_delay() {
        // x → d (delayed, routes as direct) → t, and x → other: a record asking for a delay
        // stops at d, whichever exchange it started from; one asking for none passes d.
        let long = "l".repeat(crate::routing::exchange::NAME_BYTES_MAX);
        let table = table(&[
            declare("x", ExchangeType::Direct),
            declare("d", ExchangeType::DelayedDirect),
            declare(&long, ExchangeType::DelayedFanout),
            bind("x", exchange("d"), "k"),
            bind("x", topic("other"), "k"),
            bind("x", exchange(&long), "k"),
            bind("d", topic("t"), "k"),
            bind(&long, topic("t"), ""),
            declare("fan", ExchangeType::Fanout),
            bind("fan", exchange("d"), ""),
        ]);
        let held_long = crate::routing::delayed::hold_queue(&long);
        let route = |start: &str, delayed: bool| -> Vec<String> {
            let routed = table
                .route_delayed(start, Some(b"k"), &[], delayed)
                .unwrap();
            routed.into_iter().map(str::to_string).collect()
        };
        let mut expected = vec!["amq.weir.delayed.d".to_string(), held_long.clone()];
        expected.push("other".to_string());
        expected.sort();
        assert_eq!(route("x", true), expected);
        assert_eq!(route("x", false), ["other", "t"]);
        assert_eq!(route("d", true), ["amq.weir.delayed.d"]);
        assert_eq!(route("d", false), ["t"]);
        // Whether a record is held depends on its headers: no whole-batch forwarding.
        assert_eq!(table.key_independent_route("fan"), None);
        assert_eq!(table.held_by("amq.weir.delayed.d"), Some("d"));
        assert_eq!(table.held_by(&held_long), Some(long.as_str()));
        assert_eq!(table.held_by("amq.weir.delayed.x"), None);
        assert_eq!(table.held_by("t"), None);
    }

    #[test]
    fn declarations_round_trip() {
        let table = table(&[
            declare("app", ExchangeType::Topic),
            declare("h", ExchangeType::Headers),
            bind("app", topic("email_queue"), "user.*"),
            bind("app", exchange("h"), "#"),
            bind_headers("h", topic("x"), &[("x-match", "any"), ("a", "1")]),
        ]);
        let restored = RoutingTable::from_declarations(&table.declarations()).unwrap();
        assert_eq!(restored.declarations(), table.declarations());
        assert_eq!(restored.version(), table.version());
        let headers: &[(&str, Option<&[u8]>)] = &[("a", Some(b"1"))];
        assert_eq!(
            restored.route("app", Some(b"user.x"), headers).unwrap(),
            ["email_queue", "x"]
        );
    }

    #[test]
    fn revert_restores_the_table_and_version() {
        let mut table = table(&[
            declare("app", ExchangeType::Topic),
            bind("app", topic("audit"), "#"),
        ]);
        let before = table.declarations();
        let reversal = table
            .apply_reversible(&[
                bind("app", topic("x"), "a.*"),
                Change::DeleteExchange { name: "app".into() },
                declare("app", ExchangeType::Fanout),
            ])
            .unwrap();
        assert!(!reversal.is_empty());
        assert_eq!(table.exchange("app").unwrap().kind, ExchangeType::Fanout);
        table.revert(reversal);
        assert_eq!(table.declarations(), before);
        check(&table, "app", Some("a.b"), &["audit"]);
    }

    /// The whole table against a naive model: every binding checked linearly with the reference
    /// matchers, RabbitMQ's work-list algorithm written out plainly.
    mod model {
        use super::*;
        use crate::routing::topic_matcher::reference_match;
        use proptest::prelude::*;

        const EXCHANGES: [&str; 4] = ["e0", "e1", "e2", "e3"];
        const TOPICS: [&str; 3] = ["t0", "t1", "t2"];
        const KINDS: [ExchangeType; 4] = [
            ExchangeType::Direct,
            ExchangeType::Fanout,
            ExchangeType::Topic,
            ExchangeType::Headers,
        ];

        fn binding_matches(kind: ExchangeType, binding: &Binding, key: &str, header: &str) -> bool {
            match kind.routing() {
                ExchangeType::Direct => binding.key == key,
                ExchangeType::Fanout => true,
                ExchangeType::Topic => reference_match(&binding.key, key.as_bytes()),
                _ => {
                    let any = binding.arguments.get("x-match").map(String::as_str) == Some("any");
                    let mut criteria = binding
                        .arguments
                        .iter()
                        .filter(|(name, _)| !name.starts_with("x-"));
                    let satisfied =
                        |(name, value): (&String, &String)| name == "h" && value == header;
                    if any {
                        criteria.any(satisfied)
                    } else {
                        criteria.all(satisfied)
                    }
                }
            }
        }

        fn model_route(
            exchanges: &[(ExchangeType, Option<usize>)],
            bindings: &[Binding],
            start: usize,
            key: &str,
            header: &str,
        ) -> Vec<String> {
            let mut seen = vec![EXCHANGES[start].to_string()];
            let mut topics = BTreeSet::new();
            let mut next = 0;
            while next < seen.len() {
                let current = seen[next].clone();
                next += 1;
                let index = EXCHANGES.iter().position(|name| *name == current).unwrap();
                let (kind, alternate) = exchanges[index];
                let mut matched: Vec<Destination> = bindings
                    .iter()
                    .filter(|binding| binding.source == current)
                    .filter(|binding| binding_matches(kind, binding, key, header))
                    .map(|binding| binding.destination.clone())
                    .collect();
                if matched.is_empty() {
                    if let Some(alternate) = alternate {
                        matched.push(Destination::Exchange(EXCHANGES[alternate].to_string()));
                    }
                }
                for destination in matched {
                    match destination {
                        Destination::Topic(topic) => {
                            topics.insert(topic);
                        }
                        Destination::Exchange(name) => {
                            if !seen.contains(&name) {
                                seen.push(name);
                            }
                        }
                    }
                }
            }
            topics.into_iter().collect()
        }

        fn word() -> impl Strategy<Value = &'static str> {
            prop::sample::select(vec!["a", "b", "", "*", "#"])
        }

        fn binding() -> impl Strategy<Value = Binding> {
            (
                0..EXCHANGES.len(),
                prop::bool::ANY,
                0..4usize,
                prop::collection::vec(word(), 0..3),
                prop::option::of(prop::sample::select(vec!["1", "2"])),
                prop::bool::ANY,
            )
                .prop_map(|(source, to_exchange, destination, words, header, any)| {
                    let destination = if to_exchange {
                        Destination::Exchange(EXCHANGES[destination % EXCHANGES.len()].to_string())
                    } else {
                        Destination::Topic(TOPICS[destination % TOPICS.len()].to_string())
                    };
                    let mut binding =
                        Binding::new(EXCHANGES[source], destination, &words.join("."));
                    if let Some(header) = header {
                        binding.arguments.insert("h".into(), header.into());
                    }
                    if any {
                        binding.arguments.insert("x-match".into(), "any".into());
                    }
                    binding
                })
        }

        proptest! {
            #[test]
            fn table_agrees_with_model(
                exchanges in prop::collection::vec(
                    (0..KINDS.len(), prop::option::of(0..EXCHANGES.len())), EXCHANGES.len()),
                bindings in prop::collection::vec(binding(), 0..16),
                keys in prop::collection::vec(
                    (prop::collection::vec(prop::sample::select(vec!["a", "b", ""]), 0..3),
                     prop::sample::select(vec!["1", "2", "3"])), 1..8),
            ) {
                let exchanges: Vec<(ExchangeType, Option<usize>)> =
                    exchanges.into_iter().map(|(kind, alternate)| (KINDS[kind], alternate)).collect();
                let mut changes = Vec::new();
                for (index, (kind, alternate)) in exchanges.iter().enumerate() {
                    let mut exchange = Exchange::new(EXCHANGES[index], *kind);
                    exchange.alternate = alternate.map(|alternate| EXCHANGES[alternate].to_string());
                    changes.push(Change::DeclareExchange(exchange));
                }
                changes.extend(bindings.iter().cloned().map(Change::AddBinding));
                let mut table = RoutingTable::new();
                table.apply(&changes).unwrap();
                for (words, header) in &keys {
                    let key = words.join(".");
                    let headers: &[(&str, Option<&[u8]>)] = &[("h", Some(header.as_bytes()))];
                    for (start, name) in EXCHANGES.iter().enumerate() {
                        let routed = table.route(name, Some(key.as_bytes()), headers).unwrap();
                        let expected = model_route(&exchanges, &bindings, start, &key, header);
                        prop_assert_eq!(&routed, &expected, "from {} key {:?} h={}", name, key, header);
                        if let Some(constant) = table.key_independent_route(name) {
                            prop_assert_eq!(&constant, &expected, "key-independent route of {}", name);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn table_is_send_and_clone() {
        fn assert_send_clone<T: Send + Clone + 'static>() {}
        assert_send_clone::<RoutingTable>();
    }
}
