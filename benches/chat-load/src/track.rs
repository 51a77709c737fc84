//! Counting what arrived: latency, loss, duplicates and reordering.
//!
//! Every chat text the load generator sends is stamped
//! `"<seq> <nanos> <padding>"`: a sequence number per (sender, recipient)
//! stream and the send time on this process's monotonic clock. Sender and
//! receiver live in the same process, so the receiver computes latency
//! from the text alone, with no clock to synchronise and no table of
//! messages in flight.
//!
//! Each reader task keeps its own [`Tally`] (the streams *to* its user are
//! seen by it alone), so readers never contend on a lock; the tallies are
//! merged once the run is over and compared with what the senders say they
//! sent ([`Tally::counts`]).

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use chat_proto::UserId;
use hdrhistogram::Histogram;

/// Largest sequence number a stream may carry. A stream's arrivals are
/// kept as a bit set, so this bounds its memory (2 MiB) even if a server
/// garbled a stamp into a huge number.
pub const MAX_SEQ: u64 = 1 << 24;

/// Longest latency the histograms hold; anything longer counts as this.
const MAX_LATENCY_US: u64 = 300_000_000;

/// The process's clock origin, fixed at the first use.
static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the process's clock origin.
pub fn now_ns() -> u64 {
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// The instant that [`now_ns`] reads as `ns`.
pub fn instant_at(ns: u64) -> Instant {
    *EPOCH.get_or_init(Instant::now) + Duration::from_nanos(ns)
}

/// What a chat text carries besides its padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Position in its (sender, recipient) stream, from 0.
    pub seq: u64,
    /// When it was sent (closed loop) or scheduled (open loop), in [`now_ns`].
    pub sent_ns: u64,
}

impl Stamp {
    /// The chat text for this stamp, padded with dots to `len` bytes (or
    /// longer, if the stamp itself is longer).
    pub fn text(&self, len: usize) -> String {
        let mut text = format!("{} {} ", self.seq, self.sent_ns);
        let pad = len.saturating_sub(text.len());
        text.extend(std::iter::repeat_n('.', pad));
        text
    }

    /// The stamp at the start of `text`, if it has one.
    pub fn parse(text: &str) -> Option<Stamp> {
        let mut parts = text.splitn(3, ' ');
        let seq = parts.next()?.parse().ok()?;
        let sent_ns = parts.next()?.parse().ok()?;
        Some(Stamp { seq, sent_ns })
    }
}

/// The measured part of a run: messages sent (or scheduled) in
/// `[start_ns, end_ns)` count for throughput and latency; those of the
/// warm-up only for loss and order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start_ns: u64,
    pub end_ns: u64,
}

impl Window {
    /// Whether a message sent at `ns` is measured.
    pub fn contains(&self, ns: u64) -> bool {
        (self.start_ns..self.end_ns).contains(&ns)
    }

    /// The window's length in seconds.
    pub fn secs(&self) -> f64 {
        self.end_ns.saturating_sub(self.start_ns) as f64 / 1e9
    }
}

/// A latency distribution in microseconds.
#[derive(Debug, Clone)]
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Latency {
        Latency(
            Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .expect("1 µs to 300 s at 3 digits are valid histogram bounds"),
        )
    }
}

impl Latency {
    /// Records the time from `from_ns` to `to_ns`.
    pub fn record_ns(&mut self, from_ns: u64, to_ns: u64) {
        self.record(Duration::from_nanos(to_ns.saturating_sub(from_ns)));
    }

    /// Records one duration.
    pub fn record(&mut self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.0.saturating_record(us.clamp(1, MAX_LATENCY_US));
    }

    /// Adds another distribution's values.
    pub fn merge(&mut self, other: &Latency) {
        self.0
            .add(&other.0)
            .expect("every latency histogram has the same bounds");
    }

    /// How many values were recorded.
    pub fn len(&self) -> u64 {
        self.0.len()
    }

    /// The value at quantile `q` (0..=1) in microseconds; 0 when empty.
    pub fn quantile_us(&self, q: f64) -> u64 {
        if self.0.is_empty() {
            return 0;
        }
        self.0.value_at_quantile(q)
    }

    /// The largest value in microseconds; 0 when empty.
    pub fn max_us(&self) -> u64 {
        self.0.max()
    }
}

/// How one message's arrival relates to the others of its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// First arrival, after every earlier-numbered one that arrived so far.
    InOrder,
    /// First arrival, but after a later-numbered message of the stream.
    OutOfOrder,
    /// The same sequence number arrived before.
    Duplicate,
}

impl Arrival {
    /// Whether this is the message's first arrival.
    pub fn is_first(self) -> bool {
        !matches!(self, Arrival::Duplicate)
    }
}

/// The arrivals of one (sender, recipient) stream.
#[derive(Debug, Clone, Default)]
pub struct StreamOrder {
    /// One bit per sequence number that arrived.
    seen: Vec<u64>,
    highest: Option<u64>,
    distinct: u64,
    duplicated: u64,
    out_of_order: u64,
}

impl StreamOrder {
    /// Records the arrival of `seq`, which must be below [`MAX_SEQ`].
    pub fn record(&mut self, seq: u64) -> Arrival {
        debug_assert!(seq < MAX_SEQ);
        let word = (seq / 64) as usize;
        let bit = 1u64 << (seq % 64);
        if word >= self.seen.len() {
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & bit != 0 {
            self.duplicated += 1;
            return Arrival::Duplicate;
        }
        self.seen[word] |= bit;
        self.distinct += 1;
        match self.highest {
            Some(highest) if seq < highest => {
                self.out_of_order += 1;
                Arrival::OutOfOrder
            }
            _ => {
                self.highest = Some(seq);
                Arrival::InOrder
            }
        }
    }

    /// Distinct messages that arrived.
    pub fn distinct(&self) -> u64 {
        self.distinct
    }

    fn merge(&mut self, other: &StreamOrder) {
        // A stream is seen by one reader only; merging two halves happens
        // only if a recipient had two connections, and then order between
        // them means nothing, so only the sets and counters are combined.
        if other.seen.len() > self.seen.len() {
            self.seen.resize(other.seen.len(), 0);
        }
        let mut duplicated = 0;
        for (mine, theirs) in self.seen.iter_mut().zip(&other.seen) {
            duplicated += u64::from((*mine & *theirs).count_ones());
            *mine |= *theirs;
        }
        self.distinct = self.seen.iter().map(|w| u64::from(w.count_ones())).sum();
        self.duplicated += other.duplicated + duplicated;
        self.out_of_order += other.out_of_order;
        self.highest = self.highest.max(other.highest);
    }
}

/// What one reader saw: every stream to its user, and the latency of the
/// measured messages.
#[derive(Debug, Clone)]
pub struct Tally {
    window: Window,
    streams: HashMap<(UserId, UserId), StreamOrder>,
    /// Latency of first arrivals of messages sent in the window.
    pub latency: Latency,
    /// First arrivals of messages sent in the window.
    pub in_window: u64,
    /// Texts that carried no readable stamp.
    pub unreadable: u64,
}

impl Tally {
    /// An empty tally measuring `window`.
    pub fn new(window: Window) -> Tally {
        Tally {
            window,
            streams: HashMap::new(),
            latency: Latency::default(),
            in_window: 0,
            unreadable: 0,
        }
    }

    /// Records a message from `from` to `to` that arrived at `now_ns`.
    /// `None` if its text carries no usable stamp.
    pub fn record(
        &mut self,
        from: UserId,
        to: UserId,
        text: &str,
        now_ns: u64,
    ) -> Option<(Stamp, Arrival)> {
        let stamp = match Stamp::parse(text) {
            Some(stamp) if stamp.seq < MAX_SEQ => stamp,
            _ => {
                self.unreadable += 1;
                return None;
            }
        };
        let arrival = self
            .streams
            .entry((from, to))
            .or_default()
            .record(stamp.seq);
        if arrival.is_first() && self.window.contains(stamp.sent_ns) {
            self.in_window += 1;
            self.latency.record_ns(stamp.sent_ns, now_ns);
        }
        Some((stamp, arrival))
    }

    /// Adds another reader's tally.
    pub fn merge(&mut self, other: &Tally) {
        for (key, stream) in &other.streams {
            self.streams.entry(*key).or_default().merge(stream);
        }
        self.latency.merge(&other.latency);
        self.in_window += other.in_window;
        self.unreadable += other.unreadable;
    }

    /// The counts of the run, given how many messages each stream was
    /// sent. A stream that received messages but is not in `sent` counts
    /// them as duplicates: nobody sent them.
    pub fn counts(&self, sent: &HashMap<(UserId, UserId), u64>) -> Counts {
        let mut counts = Counts::default();
        for (key, &count) in sent {
            counts.sent += count;
            let distinct = self.streams.get(key).map_or(0, StreamOrder::distinct);
            counts.lost += count.saturating_sub(distinct);
        }
        for (key, stream) in &self.streams {
            counts.delivered += stream.distinct;
            counts.duplicated += stream.duplicated;
            counts.out_of_order += stream.out_of_order;
            if !sent.contains_key(key) {
                counts.duplicated += stream.distinct;
            }
        }
        counts
    }
}

/// Totals of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Messages sent, times their recipients.
    pub sent: u64,
    /// Distinct messages that arrived.
    pub delivered: u64,
    /// Sent but never arrived.
    pub lost: u64,
    /// Arrivals of a message that had arrived already.
    pub duplicated: u64,
    /// First arrivals after a later message of the same stream.
    pub out_of_order: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window() -> Window {
        Window {
            start_ns: 1_000,
            end_ns: 10_000_000,
        }
    }

    fn text(seq: u64, sent_ns: u64) -> String {
        Stamp { seq, sent_ns }.text(32)
    }

    #[test]
    fn stamps_round_trip_and_pad() {
        let stamp = Stamp {
            seq: 42,
            sent_ns: 123_456_789,
        };
        let text = stamp.text(64);
        assert_eq!(text.len(), 64);
        assert!(text.starts_with("42 123456789 ."));
        assert_eq!(Stamp::parse(&text), Some(stamp));
        // A stamp longer than the asked length is not cut.
        assert_eq!(Stamp::parse(&stamp.text(0)), Some(stamp));
    }

    #[test]
    fn unreadable_texts_are_counted_not_trusted() {
        let mut tally = Tally::new(window());
        assert_eq!(tally.record(1, 2, "hello", 5_000), None);
        assert_eq!(tally.record(1, 2, "7", 5_000), None);
        assert_eq!(tally.record(1, 2, "-1 5 x", 5_000), None);
        let huge = format!("{} 5 x", MAX_SEQ);
        assert_eq!(tally.record(1, 2, &huge, 5_000), None);
        assert_eq!(tally.unreadable, 4);
    }

    #[test]
    fn latency_counts_only_first_arrivals_sent_in_the_window() {
        let mut tally = Tally::new(window());
        // Sent during the warm-up: checked for order, not measured.
        tally.record(1, 2, &text(0, 500), 900);
        tally.record(1, 2, &text(1, 2_000), 1_002_000);
        tally.record(1, 2, &text(1, 2_000), 9_000_000);
        // Sent after the window: not measured either.
        tally.record(1, 2, &text(2, 10_000_000), 10_500_000);
        assert_eq!(tally.in_window, 1);
        assert_eq!(tally.latency.len(), 1);
        assert_eq!(tally.latency.max_us(), 1_000);
    }

    #[test]
    fn loss_duplicates_and_reordering_per_stream() {
        let mut tally = Tally::new(window());
        for seq in [0, 1, 3, 2, 2, 5] {
            tally.record(7, 8, &text(seq, 2_000), 3_000);
        }
        // Another stream to the same recipient has its own numbering.
        for seq in [0, 1] {
            tally.record(9, 8, &text(seq, 2_000), 3_000);
        }
        let sent = HashMap::from([((7, 8), 7), ((9, 8), 2)]);
        let counts = tally.counts(&sent);
        assert_eq!(
            counts,
            Counts {
                sent: 9,
                delivered: 7,
                // Seqs 4 and 6 of the first stream never came.
                lost: 2,
                duplicated: 1,
                // 2 came after 3.
                out_of_order: 1,
            }
        );
    }

    #[test]
    fn arrivals_from_nobody_are_duplicates() {
        let mut tally = Tally::new(window());
        tally.record(3, 4, &text(0, 2_000), 3_000);
        let counts = tally.counts(&HashMap::new());
        assert_eq!(counts.duplicated, 1);
        assert_eq!(counts.lost, 0);
    }

    #[test]
    fn merged_tallies_add_up() {
        let mut a = Tally::new(window());
        let mut b = Tally::new(window());
        a.record(1, 2, &text(0, 2_000), 12_000);
        b.record(1, 3, &text(0, 2_000), 22_000);
        b.record(1, 3, &text(1, 2_000), 32_000);
        a.merge(&b);
        let sent = HashMap::from([((1, 2), 1), ((1, 3), 2)]);
        let counts = a.counts(&sent);
        assert_eq!((counts.sent, counts.delivered, counts.lost), (3, 3, 0));
        assert_eq!(a.in_window, 3);
        assert_eq!(a.latency.max_us(), 30);
    }

    #[test]
    fn merging_the_same_stream_finds_duplicates() {
        let mut a = StreamOrder::default();
        let mut b = StreamOrder::default();
        a.record(0);
        a.record(1);
        b.record(1);
        b.record(2);
        a.merge(&b);
        assert_eq!(a.distinct(), 3);
        assert_eq!(a.duplicated, 1);
    }

    #[test]
    fn reordering_is_counted_once_per_late_message() {
        let mut stream = StreamOrder::default();
        let arrivals: Vec<Arrival> = [0, 4, 1, 2, 3, 5].map(|s| stream.record(s)).to_vec();
        assert_eq!(
            arrivals,
            vec![
                Arrival::InOrder,
                Arrival::InOrder,
                Arrival::OutOfOrder,
                Arrival::OutOfOrder,
                Arrival::OutOfOrder,
                Arrival::InOrder,
            ]
        );
    }

    #[test]
    fn quantiles_of_an_empty_distribution_are_zero() {
        let latency = Latency::default();
        assert_eq!(latency.quantile_us(0.99), 0);
        assert_eq!(latency.max_us(), 0);
    }
}
