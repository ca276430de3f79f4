//! Where routing stops at a delayed exchange (RabbitMQ's `x-delayed-message`): the name of its
//! hold queue and what makes a message ask for a delay, for every path that routes (an AMQP
//! publish, an exchange-to-exchange binding, a Kafka produce to an exchange, a dead letter).
//!
//! Core module: imports no protocol. A message asks for a delay when its `x-delay` header is a
//! positive number of milliseconds. Each protocol reads its own header form: AMQP takes integer
//! field values only (as the plugin), a Kafka record header the value's decimal text
//! ([`delay_ms_of_text`]). The AMQP side keeps the timers and routes held messages once due
//! (`amqp/delayed.rs`). Pure: no I/O, no state.

use super::exchange::NAME_BYTES_MAX;

/// The header that asks for a delay, in milliseconds.
pub const X_DELAY: &str = "x-delay";
/// Longest delay honoured, as the plugin's (2^32 - 1 ms, about 49 days); longer ones are cut.
pub const DELAY_MS_MAX: i64 = u32::MAX as i64;
const HOLD_PREFIX: &str = "amq.weir.delayed.";
/// Bytes of a long exchange name kept in its hold queue's name before the hash.
const HEAD_BYTES: usize = 200;

/// The hold queue of delayed exchange `exchange` (a core name): its name prefixed, or, for a name
/// too long to take the prefix, its head and a hash of the whole.
pub fn hold_queue(exchange: &str) -> String {
    let name = format!("{HOLD_PREFIX}{exchange}");
    if name.len() <= NAME_BYTES_MAX {
        return name;
    }
    let hash = exchange
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
    // Core exchange names are ASCII (Kafka's topic-name rule), so any byte is a boundary.
    let head = exchange.get(..HEAD_BYTES).unwrap_or(exchange);
    format!("{HOLD_PREFIX}{head}.{hash:016x}")
}

pub fn is_hold_queue(name: &str) -> bool {
    name.starts_with(HOLD_PREFIX)
}

/// The delay a Kafka record header's value asks for: decimal ASCII digits of a positive number
/// of milliseconds (cut at [`DELAY_MS_MAX`]); anything else asks for none and routes at once.
pub fn delay_ms_of_text(value: &[u8]) -> Option<i64> {
    let (negative, digits) = match value.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, value),
    };
    if negative || digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // Every digit string parses; one too long for an i64 is far beyond the cap.
    let delay = std::str::from_utf8(digits)
        .ok()?
        .parse::<i64>()
        .unwrap_or(DELAY_MS_MAX);
    (delay > 0).then_some(delay.min(DELAY_MS_MAX))
}

/// Whether a record with these headers (as `route` takes them) asks for a delay: the first
/// `x-delay` header decides.
pub fn asks_delay(headers: &[(&str, Option<&[u8]>)]) -> bool {
    headers
        .iter()
        .find(|(name, _)| *name == X_DELAY)
        .and_then(|(_, value)| *value)
        .and_then(delay_ms_of_text)
        .is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Option<i64>) {
        assert_eq!(delay_ms_of_text(text.as_bytes()), expected, "{text:?}");
    }

    #[test]
    fn delays_from_header_text() {
        check("5000", Some(5000));
        check("+7", Some(7));
        check("0", None);
        check("-5000", None);
        check("", None);
        check("5s", None);
        check(" 5", None);
        check("1.5", None);
        check("99999999999", Some(DELAY_MS_MAX));
        check("999999999999999999999999", Some(DELAY_MS_MAX));
    }

    #[test]
    fn the_first_x_delay_header_decides() {
        assert!(asks_delay(&[("a", None), (X_DELAY, Some(b"10"))]));
        assert!(!asks_delay(&[
            (X_DELAY, Some(b"-1")),
            (X_DELAY, Some(b"10"))
        ]));
        assert!(!asks_delay(&[(X_DELAY, None)]));
        assert!(!asks_delay(&[]));
    }

    #[test]
    fn hold_queue_names_fit_a_topic_name() {
        assert_eq!(hold_queue("later"), "amq.weir.delayed.later");
        assert!(is_hold_queue(&hold_queue("later")));
        let long = "x".repeat(NAME_BYTES_MAX);
        let held = hold_queue(&long);
        assert!(held.len() <= NAME_BYTES_MAX, "{}", held.len());
        assert_ne!(held, hold_queue(&"x".repeat(NAME_BYTES_MAX - 1)));
    }
}
