//! The routing-key matcher (`weir_server::routing::topic_matcher::TopicMatcher`, the trie every
//! topic exchange routes through) against its obvious reference (`reference_match`), over
//! arbitrary patterns and keys. Input: fields separated by 0xff; the last is the routing key
//! (bytes), the others are binding patterns (UTF-8, lossy). Patterns with more `#` words than a
//! binding may have (`BINDING_HASH_WORDS_MAX`) are skipped, as the exchange refuses them; the
//! reference is exponential in `#` words (its first timeout here, not the trie's), so keys are
//! capped at 64 bytes and patterns at 3 `#` words.
#![no_main]

use std::collections::BTreeSet;

use libfuzzer_sys::fuzz_target;
use weir_server::routing::exchange::BINDING_HASH_WORDS_MAX;
use weir_server::routing::topic_matcher::{hash_count, reference_match, TopicMatcher};

fuzz_target!(|data: &[u8]| {
    let mut fields: Vec<&[u8]> = data.split(|b| *b == 0xff).collect();
    let Some(key) = fields.pop() else { return };
    if key.len() > 64 || fields.len() > 16 {
        return;
    }
    let patterns: Vec<String> = fields
        .iter()
        .map(|field| String::from_utf8_lossy(field).into_owned())
        .filter(|pattern| hash_count(pattern) <= BINDING_HASH_WORDS_MAX.min(3))
        .collect();
    let mut matcher = TopicMatcher::new();
    for (index, pattern) in patterns.iter().enumerate() {
        matcher.insert(pattern, index);
    }
    let expected: BTreeSet<usize> = patterns
        .iter()
        .enumerate()
        .filter(|(_, pattern)| reference_match(pattern, key))
        .map(|(index, _)| index)
        .collect();
    assert_eq!(matcher.matches(key), expected, "patterns {patterns:?} key {key:?}");
    // Removing every binding leaves a matcher that matches nothing.
    for (index, pattern) in patterns.iter().enumerate() {
        assert!(matcher.remove(pattern, &index));
    }
    assert!(matcher.is_empty());
    assert!(matcher.matches(key).is_empty());
});
