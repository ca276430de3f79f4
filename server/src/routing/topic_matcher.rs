//! Topic-exchange matching: binding patterns in a word trie, routing keys matched against all of
//! them in one walk.
//!
//! Runs on every shard, inside that shard's read-only copy of the routing table; a matcher is
//! built and mutated only on the controller shard and then cloned into the broadcast, so it has no
//! interior mutability and no locks.
//!
//! Semantics are RabbitMQ's (`rabbit_exchange_type_topic`): keys and patterns are split on `.`
//! into words; `*` matches exactly one word, `#` zero or more; the empty string is zero words;
//! empty words are words; anything else is literal and case-sensitive.
//!
//! Truth table (the `TRUTH_TABLE` test checks every row against both the trie and the reference):
//!
//! | pattern     | key               | match | why                                          |
//! |-------------|-------------------|-------|----------------------------------------------|
//! | `user.*`    | `user.registered` | yes   | `*` is one word                              |
//! | `user.*`    | `user.`           | yes   | the empty word after the dot is a word       |
//! | `user.*`    | `user`            | no    | `*` needs exactly one word                   |
//! | `user.*`    | `user.a.b`        | no    | `*` is not two words                         |
//! | `*`         | ``                | no    | the empty key is zero words                  |
//! | `#`         | ``                | yes   | `#` is zero or more words                    |
//! | `#`         | `a.b.c`           | yes   |                                              |
//! | ``          | ``                | yes   | zero words match zero words                  |
//! | ``          | `a`               | no    |                                              |
//! | `a.*.c`     | `a..c`            | yes   | the middle word is empty, still one word     |
//! | `a.#.c`     | `a.c`             | yes   | `#` matched zero words                       |
//! | `a.#.c`     | `a.x.y.c`         | yes   |                                              |
//! | `a#`        | `ab`              | no    | `#` only counts as a whole word              |
//! | `a#`        | `a#`              | yes   | ... otherwise it is literal                  |
//! | `a*`        | `a*`              | yes   | same for `*`                                 |
//! | `User.*`    | `user.x`          | no    | case-sensitive                               |
//! | `#.#`       | ``                | yes   | both `#` match zero words                    |
//! | `*.#`       | ``                | no    | `*` still needs a word                       |
//! | `#.*`       | `a`               | yes   |                                              |
//! | `.`         | `.`               | yes   | two empty words each                         |
//! | `*`         | `.`               | no    | `.` is two words                             |
//!
//! Cost: a match visits, for each key word, only the trie children named by that word, `*` and
//! `#`; so it grows with key length and the number of *matching* patterns, not with the number of
//! bindings. `#` nodes are visited at most once per key position (memoised), so patterns with many
//! `#` cannot make a key exponentially expensive.

use std::collections::{BTreeSet, HashMap, HashSet};

/// One word of a binding pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PatternWord<'a> {
    Literal(&'a str),
    /// `*`: exactly one word.
    Star,
    /// `#`: zero or more words.
    Hash,
}

/// Splits a pattern into words; the empty pattern is zero words.
fn pattern_words(pattern: &str) -> impl Iterator<Item = PatternWord<'_>> {
    split_words(pattern).map(|word| match word {
        "*" => PatternWord::Star,
        "#" => PatternWord::Hash,
        literal => PatternWord::Literal(literal),
    })
}

/// Splits a key or pattern on `.`: the empty string is zero words, `"."` is two empty words.
pub fn split_words(text: &str) -> impl Iterator<Item = &str> {
    let empty = text.is_empty();
    text.split('.').filter(move |_| !empty)
}

/// Splits a routing key given as bytes. Keys are compared byte-wise, so non-UTF-8 keys still
/// match literal patterns byte for byte (patterns are UTF-8 because they come from configs).
fn split_key(key: &[u8]) -> Vec<&[u8]> {
    if key.is_empty() {
        return Vec::new();
    }
    key.split(|byte| *byte == b'.').collect()
}

/// How many `#` words a pattern holds; the table limits this per binding.
pub fn hash_count(pattern: &str) -> usize {
    pattern_words(pattern)
        .filter(|word| *word == PatternWord::Hash)
        .count()
}

#[derive(Debug, Clone)]
struct Node<V> {
    literal: HashMap<Box<[u8]>, Node<V>>,
    star: Option<Box<Node<V>>>,
    hash: Option<Box<Node<V>>>,
    /// Values bound with a pattern that ends at this node.
    values: Vec<V>,
}

impl<V> Default for Node<V> {
    fn default() -> Self {
        Node {
            literal: HashMap::new(),
            star: None,
            hash: None,
            values: Vec::new(),
        }
    }
}

impl<V> Node<V> {
    fn is_empty(&self) -> bool {
        self.values.is_empty()
            && self.literal.is_empty()
            && self.star.is_none()
            && self.hash.is_none()
    }
}

/// A set of (pattern, value) bindings, matched all at once against a routing key.
///
/// The same (pattern, value) pair may be inserted once; inserting it again is a no-op, as binding
/// the same queue twice with the same key is in RabbitMQ.
#[derive(Debug, Clone)]
pub struct TopicMatcher<V> {
    root: Node<V>,
    len: usize,
}

impl<V> Default for TopicMatcher<V> {
    fn default() -> Self {
        TopicMatcher {
            root: Node::default(),
            len: 0,
        }
    }
}

impl<V: Clone + Eq + Ord> TopicMatcher<V> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of (pattern, value) pairs held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds a binding; returns false if this exact pair was already present.
    pub fn insert(&mut self, pattern: &str, value: V) -> bool {
        let mut node = &mut self.root;
        for word in pattern_words(pattern) {
            node = match word {
                PatternWord::Literal(literal) => {
                    node.literal.entry(literal.as_bytes().into()).or_default()
                }
                PatternWord::Star => node.star.get_or_insert_with(Box::default),
                PatternWord::Hash => node.hash.get_or_insert_with(Box::default),
            };
        }
        if node.values.contains(&value) {
            return false;
        }
        node.values.push(value);
        self.len += 1;
        true
    }

    /// Removes a binding and prunes the nodes it leaves empty; returns false if it was absent.
    pub fn remove(&mut self, pattern: &str, value: &V) -> bool {
        let words: Vec<PatternWord<'_>> = pattern_words(pattern).collect();
        let removed = remove_from(&mut self.root, &words, value);
        if removed {
            self.len -= 1;
        }
        removed
    }

    /// Every value whose pattern matches `key`, each once, in `Ord` order.
    pub fn matches(&self, key: &[u8]) -> BTreeSet<V> {
        let mut found = BTreeSet::new();
        self.for_each_match(key, |value| {
            found.insert(value.clone());
        });
        found
    }

    /// Calls `found` for every value whose pattern matches `key`, without cloning values. A value
    /// bound with several matching patterns is reported once per pattern; callers deduplicate.
    pub fn for_each_match<'a>(&'a self, key: &[u8], mut found: impl FnMut(&'a V)) {
        let words = split_key(key);
        let mut walk = Walk {
            words: &words,
            found: &mut found,
            hash_visited: HashSet::new(),
            _values: std::marker::PhantomData,
        };
        walk.visit(&self.root, 0);
    }

    /// True if every key matches every pattern held (all patterns are `#`, `#.#`, ...) or there are
    /// no patterns at all: then matching needs no key and whole batches can be routed untouched.
    pub fn is_key_independent(&self) -> bool {
        // Below a `#`, every node of a `#`-only chain matches every key; the root itself holds
        // the empty pattern, which matches only the empty key.
        fn only_hashes<V>(node: &Node<V>) -> bool {
            node.literal.is_empty()
                && node.star.is_none()
                && node.hash.as_deref().is_none_or(only_hashes)
        }
        self.root.values.is_empty() && only_hashes(&self.root)
    }
}

fn remove_from<V: Eq>(node: &mut Node<V>, words: &[PatternWord<'_>], value: &V) -> bool {
    let Some((first, rest)) = words.split_first() else {
        let before = node.values.len();
        node.values.retain(|held| held != value);
        return node.values.len() != before;
    };
    match first {
        PatternWord::Literal(literal) => {
            let Some(child) = node.literal.get_mut(literal.as_bytes()) else {
                return false;
            };
            let removed = remove_from(child, rest, value);
            if child.is_empty() {
                node.literal.remove(literal.as_bytes());
            }
            removed
        }
        PatternWord::Star => prune_boxed(&mut node.star, rest, value),
        PatternWord::Hash => prune_boxed(&mut node.hash, rest, value),
    }
}

fn prune_boxed<V: Eq>(
    slot: &mut Option<Box<Node<V>>>,
    rest: &[PatternWord<'_>],
    value: &V,
) -> bool {
    let Some(child) = slot.as_deref_mut() else {
        return false;
    };
    let removed = remove_from(child, rest, value);
    if child.is_empty() {
        *slot = None;
    }
    removed
}

/// One match of one key: the key's words, what was found, and which `#` nodes were already
/// expanded at which key position.
struct Walk<'k, 'a, V, F> {
    words: &'k [&'k [u8]],
    found: &'k mut F,
    hash_visited: HashSet<(*const (), usize)>,
    _values: std::marker::PhantomData<&'a V>,
}

impl<'a, V, F: FnMut(&'a V)> Walk<'_, 'a, V, F> {
    /// Matches `node`'s subtree against the key words from `position` on. Each (node, position)
    /// is visited at most once: a node has one parent, and `#` children are memoised.
    fn visit(&mut self, node: &'a Node<V>, position: usize) {
        if position == self.words.len() {
            node.values.iter().for_each(&mut *self.found);
        } else {
            let word = self.words[position];
            if let Some(child) = node.literal.get(word) {
                self.visit(child, position + 1);
            }
            if let Some(child) = node.star.as_deref() {
                self.visit(child, position + 1);
            }
        }
        if let Some(child) = node.hash.as_deref() {
            self.visit_hash(child, position);
        }
    }

    /// `child` sits below a `#`: the `#` may swallow any number of words from `position` on.
    fn visit_hash(&mut self, child: &'a Node<V>, position: usize) {
        let identity = (child as *const Node<V>).cast::<()>();
        // Every expansion visits `child` from its start position to the end of the key, so the
        // positions already visited below this `#` always form a suffix: the first one found
        // visited means the rest were too.
        for start in position..=self.words.len() {
            if !self.hash_visited.insert((identity, start)) {
                break;
            }
            self.visit(child, start);
        }
    }
}

/// The reference implementation the trie is checked against: a direct recursive match of one
/// pattern against one key, written for obviousness, not speed.
pub fn reference_match(pattern: &str, key: &[u8]) -> bool {
    fn go(pattern: &[PatternWord<'_>], key: &[&[u8]]) -> bool {
        match pattern.split_first() {
            None => key.is_empty(),
            Some((PatternWord::Hash, rest)) => (0..=key.len()).any(|skip| go(rest, &key[skip..])),
            Some((PatternWord::Star, rest)) => !key.is_empty() && go(rest, &key[1..]),
            Some((PatternWord::Literal(literal), rest)) => {
                !key.is_empty() && key[0] == literal.as_bytes() && go(rest, &key[1..])
            }
        }
    }
    let pattern: Vec<PatternWord<'_>> = pattern_words(pattern).collect();
    go(&pattern, &split_key(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The module-level truth table, row for row.
    const TRUTH_TABLE: &[(&str, &str, bool)] = &[
        ("user.*", "user.registered", true),
        ("user.*", "user.", true),
        ("user.*", "user", false),
        ("user.*", "user.a.b", false),
        ("*", "", false),
        ("#", "", true),
        ("#", "a.b.c", true),
        ("", "", true),
        ("", "a", false),
        ("a.*.c", "a..c", true),
        ("a.#.c", "a.c", true),
        ("a.#.c", "a.x.y.c", true),
        ("a#", "ab", false),
        ("a#", "a#", true),
        ("a*", "a*", true),
        ("User.*", "user.x", false),
        ("#.#", "", true),
        ("*.#", "", false),
        ("#.*", "a", true),
        (".", ".", true),
        ("*", ".", false),
    ];

    fn check(pattern: &str, key: &str, expected: bool) {
        assert_eq!(
            reference_match(pattern, key.as_bytes()),
            expected,
            "reference: pattern {pattern:?} key {key:?}"
        );
        let mut matcher = TopicMatcher::new();
        matcher.insert(pattern, 1u32);
        assert_eq!(
            matcher.matches(key.as_bytes()).contains(&1),
            expected,
            "trie: pattern {pattern:?} key {key:?}"
        );
    }

    #[test]
    fn truth_table() {
        for (pattern, key, expected) in TRUTH_TABLE {
            check(pattern, key, *expected);
        }
    }

    #[test]
    fn rabbitmq_topic_suite() {
        // Cases from RabbitMQ's own topic exchange tests (rabbit_exchange_type_topic tests).
        let cases: &[(&str, &str, bool)] = &[
            ("a.b.c", "a.b.c", true),
            ("a.*.c", "a.b.c", true),
            ("a.#.b", "a.b", true),
            ("a.#.b", "a.x.x.b", true),
            ("#", "a.b.c", true),
            ("#.#", "a.b.c", true),
            ("#.b.#", "a.b.c", true),
            ("a.*", "a.b.c", false),
            ("*.b", "a.b.c", false),
            ("#.#.#.b.#", "a.b.c", true),
            ("*.*.*", "a.b.c", true),
            ("*.*.*.*", "a.b.c", false),
            ("*.#.c", "a.b.c", true),
            ("#.*.#", "", false),
            ("#.*.#", "a", true),
        ];
        for (pattern, key, expected) in cases {
            check(pattern, key, *expected);
        }
    }

    #[test]
    fn one_copy_per_value_and_removal_prunes() {
        let mut matcher = TopicMatcher::new();
        assert!(matcher.insert("user.*", "email"));
        assert!(matcher.insert("#", "email"));
        assert!(!matcher.insert("#", "email"), "same pair twice is a no-op");
        assert!(matcher.insert("#", "audit"));
        assert_eq!(matcher.len(), 3);
        let found: Vec<_> = matcher.matches(b"user.x").into_iter().collect();
        assert_eq!(found, vec!["audit", "email"]);

        assert!(matcher.remove("#", &"email"));
        assert!(!matcher.remove("#", &"email"));
        assert!(!matcher.remove("nothing.here", &"email"));
        assert!(matcher.remove("user.*", &"email"));
        assert!(matcher.remove("#", &"audit"));
        assert!(matcher.is_empty());
        assert!(matcher.root.is_empty(), "removal pruned every node");
    }

    #[test]
    fn key_independence() {
        let mut matcher = TopicMatcher::new();
        assert!(matcher.is_key_independent());
        matcher.insert("#", 1);
        matcher.insert("#.#", 2);
        assert!(matcher.is_key_independent());
        matcher.insert("a.#", 3);
        assert!(!matcher.is_key_independent());
        let mut empty_pattern = TopicMatcher::new();
        empty_pattern.insert("", 1);
        assert!(
            !empty_pattern.is_key_independent(),
            "'' matches only the empty key"
        );
    }

    #[test]
    fn many_hashes_stay_cheap() {
        // Without memoisation this is exponential in the number of `#` and key words.
        let pattern = vec!["#"; 16].join(".") + ".z";
        let key = vec!["a"; 64].join(".");
        let mut matcher = TopicMatcher::new();
        matcher.insert(&pattern, 0);
        assert!(matcher.matches(key.as_bytes()).is_empty());
        assert_eq!(matcher.matches((key + ".z").as_bytes()).len(), 1);
    }

    fn word() -> impl Strategy<Value = String> {
        // A small alphabet so that random patterns and keys often share words.
        prop_oneof![
            Just(String::new()),
            Just("a".to_string()),
            Just("b".to_string()),
            Just("ab".to_string()),
            Just("A".to_string()),
        ]
    }

    fn key() -> impl Strategy<Value = String> {
        prop::collection::vec(word(), 0..6).prop_map(|words| words.join("."))
    }

    fn pattern() -> impl Strategy<Value = String> {
        let pattern_word = prop_oneof![
            3 => word(),
            2 => Just("*".to_string()),
            2 => Just("#".to_string()),
            1 => Just("a#".to_string()),
            1 => Just("*b".to_string()),
        ];
        prop::collection::vec(pattern_word, 0..6).prop_map(|words| words.join("."))
    }

    proptest! {
        #[test]
        fn trie_agrees_with_reference(
            patterns in prop::collection::vec(pattern(), 1..24),
            keys in prop::collection::vec(key(), 1..16),
        ) {
            let mut matcher = TopicMatcher::new();
            for (index, pattern) in patterns.iter().enumerate() {
                matcher.insert(pattern, index);
            }
            for key in &keys {
                let expected: BTreeSet<usize> = patterns
                    .iter()
                    .enumerate()
                    .filter(|(_, pattern)| reference_match(pattern, key.as_bytes()))
                    .map(|(index, _)| index)
                    .collect();
                prop_assert_eq!(matcher.matches(key.as_bytes()), expected, "key {:?}", key);
            }
        }

        #[test]
        fn removal_agrees_with_reference(
            patterns in prop::collection::vec(pattern(), 1..16),
            removed in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
            keys in prop::collection::vec(key(), 1..8),
        ) {
            let mut matcher = TopicMatcher::new();
            let mut live: Vec<(String, usize)> = Vec::new();
            for (index, pattern) in patterns.iter().enumerate() {
                matcher.insert(pattern, index);
                live.push((pattern.clone(), index));
            }
            for pick in removed {
                if live.is_empty() { break; }
                let (pattern, value) = live.remove(pick.index(live.len()));
                prop_assert!(matcher.remove(&pattern, &value));
            }
            prop_assert_eq!(matcher.len(), live.len());
            for key in &keys {
                let expected: BTreeSet<usize> = live
                    .iter()
                    .filter(|(pattern, _)| reference_match(pattern, key.as_bytes()))
                    .map(|(_, value)| *value)
                    .collect();
                prop_assert_eq!(matcher.matches(key.as_bytes()), expected);
            }
        }
    }
}
