//! The shards' snapshots merged and written in Prometheus' text exposition format (0.0.4) with
//! `prometheus-client`: a scrape builds a [`Scrape`] (a `Collector` over the merged numbers) and
//! encodes it; nothing here outlives the scrape. Runs on shard 0, in one go.
//!
//! Cardinality: topics, partitions and queues are named one by one up to
//! `weir.metrics.objects.max` each (the first by name); the rest count in the totals and in
//! `weir_metrics_objects_omitted`, so that a broker with 100,000 queues scrapes in bounded time.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use weir_engine::io::stats::{
    IoStats, Latencies, LATENCY_BUCKETS_MICROS as IO_LATENCY_BUCKETS_MICROS,
};

use super::gather::{GroupOffset, PartitionOffsets, QueueStats, ShardSnapshot};
use super::stall::StallTotals;
use super::{
    ApiStats, ExecutorTotals, ListenerStats, Protocols, TopicStats, LATENCY_BUCKETS_MICROS,
    PARTITION_ERRORS,
};

/// The content type of what `text` writes.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

type Labels = Vec<(&'static str, String)>;

/// Everything one scrape reports, merged over the shards.
#[derive(Debug, Default)]
struct Scrape {
    shards: usize,
    /// Kafka API names by key, of the keys that had requests.
    api_names: BTreeMap<i16, String>,
    /// Kafka error names of `PARTITION_ERRORS`.
    error_names: Vec<&'static str>,
    resident_bytes: Option<u64>,
    objects_max: usize,
    executors: Vec<(usize, ExecutorTotals)>,
    listeners: BTreeMap<&'static str, (u64, u64)>,
    apis: BTreeMap<i16, ApiStats>,
    partition_errors: [[u64; PARTITION_ERRORS.len()]; 2],
    topics: BTreeMap<String, TopicStats>,
    partitions: BTreeMap<String, Vec<PartitionOffsets>>,
    consumer_groups: u64,
    share_groups: u64,
    amqp_channels: u64,
    queues: BTreeMap<String, QueueStats>,
    io: Vec<(usize, IoStats)>,
    stalls: Vec<(usize, StallTotals)>,
    group_offsets: Vec<GroupOffset>,
}

impl Scrape {
    fn merge(snapshots: Vec<ShardSnapshot>, objects_max: usize, protocols: &Protocols) -> Scrape {
        let mut scrape = Scrape {
            shards: snapshots.len(),
            resident_bytes: (protocols.resident_bytes)(),
            objects_max,
            error_names: PARTITION_ERRORS
                .iter()
                .map(|error| (protocols.error_name)(*error))
                .collect(),
            ..Scrape::default()
        };
        for snapshot in snapshots {
            scrape.add(snapshot);
        }
        scrape.api_names = scrape
            .apis
            .keys()
            .map(|key| (*key, (protocols.api_name)(*key)))
            .collect();
        scrape
    }

    fn add(&mut self, snapshot: ShardSnapshot) {
        self.executors.push((snapshot.shard, snapshot.executor));
        self.io.push((snapshot.shard, snapshot.io));
        self.stalls.push((snapshot.shard, snapshot.stalls));
        self.group_offsets.extend(snapshot.group_offsets);
        for ListenerStats {
            name,
            accepted,
            open,
        } in snapshot.listeners
        {
            let entry = self.listeners.entry(name).or_default();
            entry.0 += accepted;
            entry.1 += open;
        }
        for (key, stats) in snapshot.apis {
            let entry = self.apis.entry(key).or_default();
            entry.requests += stats.requests;
            entry.request_bytes += stats.request_bytes;
            entry.response_bytes += stats.response_bytes;
            entry.latency_micros_sum += stats.latency_micros_sum;
            for (sum, add) in entry.buckets.iter_mut().zip(stats.buckets) {
                *sum += add;
            }
        }
        for (op, errors) in snapshot.partition_errors.iter().enumerate() {
            for (index, count) in errors.iter().enumerate() {
                self.partition_errors[op][index] += count;
            }
        }
        for (name, stats) in snapshot.topics {
            let entry = self.topics.entry(name).or_default();
            entry.produced_bytes += stats.produced_bytes;
            entry.produced_records += stats.produced_records;
            entry.fetched_bytes += stats.fetched_bytes;
            entry.fetched_records += stats.fetched_records;
        }
        for (topic, partitions) in snapshot.partitions {
            self.partitions.entry(topic).or_default().extend(partitions);
        }
        self.consumer_groups += snapshot.consumer_groups;
        self.share_groups += snapshot.share_groups;
        self.amqp_channels += snapshot.amqp_channels;
        for queue in snapshot.queues {
            self.queues.insert(queue.name.clone(), queue);
        }
    }
}

/// The snapshots as the text exposition format.
pub fn text(snapshots: Vec<ShardSnapshot>, objects_max: usize, protocols: &Protocols) -> String {
    let mut registry = Registry::default();
    let scrape = Scrape::merge(snapshots, objects_max, protocols);
    registry.register_collector(Box::new(scrape));
    let mut out = String::new();
    // Writing to a String cannot fail, nor can the collector (it only formats numbers).
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
    out
}

/// One histogram without labels (bucket counts not cumulative; past the last bound only in
/// `count`).
fn histogram(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    latencies: &Latencies,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    let buckets: Vec<(f64, u64)> = IO_LATENCY_BUCKETS_MICROS
        .iter()
        .zip(latencies.buckets)
        .map(|(bound, count)| (*bound as f64 / 1e6, count))
        .collect();
    metric.encode_histogram::<NoLabelSet>(
        latencies.micros_sum as f64 / 1e6,
        latencies.count,
        &buckets,
        None,
    )
}

/// One metric family: `rows` of (labels, value).
fn family<V: Value>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    rows: impl IntoIterator<Item = (Labels, V)>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in rows {
        if labels.is_empty() {
            value.encode(&mut metric, kind)?;
        } else {
            value.encode(&mut metric.encode_family(&labels)?, kind)?;
        }
    }
    Ok(())
}

/// A sample's value, as a counter or a gauge.
trait Value {
    fn encode(
        &self,
        metric: &mut prometheus_client::encoding::MetricEncoder,
        kind: MetricType,
    ) -> fmt::Result;
}

impl Value for u64 {
    fn encode(
        &self,
        metric: &mut prometheus_client::encoding::MetricEncoder,
        kind: MetricType,
    ) -> fmt::Result {
        match kind {
            MetricType::Counter => metric.encode_counter::<NoLabelSet, _, u64>(self, None),
            _ => metric.encode_gauge(self),
        }
    }
}

impl Value for i64 {
    fn encode(
        &self,
        metric: &mut prometheus_client::encoding::MetricEncoder,
        _kind: MetricType,
    ) -> fmt::Result {
        metric.encode_gauge(self)
    }
}

impl Value for f64 {
    fn encode(
        &self,
        metric: &mut prometheus_client::encoding::MetricEncoder,
        kind: MetricType,
    ) -> fmt::Result {
        match kind {
            MetricType::Counter => metric.encode_counter::<NoLabelSet, _, f64>(self, None),
            _ => metric.encode_gauge(self),
        }
    }
}

fn none() -> Labels {
    Vec::new()
}

fn label(key: &'static str, value: impl Into<String>) -> Labels {
    vec![(key, value.into())]
}

const COUNTER: MetricType = MetricType::Counter;
const GAUGE: MetricType = MetricType::Gauge;

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        self.encode_process(&mut encoder)?;
        self.encode_requests(&mut encoder)?;
        self.encode_errors(&mut encoder)?;
        self.encode_topics(&mut encoder)?;
        self.encode_totals(&mut encoder)?;
        self.encode_partitions(&mut encoder)?;
        self.encode_amqp(&mut encoder)?;
        self.encode_queues(&mut encoder)?;
        let omitted = [
            ("topic", self.topics.len()),
            ("partition", self.partitions.values().map(Vec::len).sum()),
            ("queue", self.queues.len()),
            ("group_partition", self.group_offsets.len()),
        ]
        .map(|(kind, count)| {
            let omitted = count.saturating_sub(self.objects_max) as u64;
            (label("kind", kind), omitted)
        });
        family(
            &mut encoder,
            "weir_metrics_objects_omitted",
            "Topics, partitions or queues past weir.metrics.objects.max, counted only in totals",
            GAUGE,
            omitted,
        )
    }
}

impl Scrape {
    fn encode_process(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        family(
            encoder,
            "weir_shards",
            "Shards (pinned executors, one per CPU) of the broker",
            GAUGE,
            [(none(), self.shards as u64)],
        )?;
        if let Some(bytes) = self.resident_bytes {
            family(
                encoder,
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                GAUGE,
                [(none(), bytes)],
            )?;
        }
        let shard = |shard: &usize| label("shard", shard.to_string());
        family(
            encoder,
            "weir_shard_busy_seconds",
            "Time the shard's executor spent running tasks and polling I/O",
            COUNTER,
            self.executors
                .iter()
                .map(|(id, totals)| (shard(id), totals.busy_seconds)),
        )?;
        type Field = fn(&ExecutorTotals) -> u64;
        let counters: [(&str, &str, Field); 5] = [
            ("weir_shard_tasks", "Tasks the shard's executor ran", |t| {
                t.tasks
            }),
            (
                "weir_storage_writes",
                "Writes to segment and index files (O_DIRECT), by shard",
                |t| t.file_writes,
            ),
            (
                "weir_storage_written_bytes",
                "Bytes written to segment and index files, by shard",
                |t| t.file_bytes_written,
            ),
            (
                "weir_storage_reads",
                "Reads from segment and index files, by shard",
                |t| t.file_reads,
            ),
            (
                "weir_storage_read_bytes",
                "Bytes read from segment and index files, by shard",
                |t| t.file_bytes_read,
            ),
        ];
        for (name, help, field) in counters {
            let rows = self
                .executors
                .iter()
                .map(|(id, totals)| (shard(id), field(totals)));
            family(encoder, name, help, COUNTER, rows)?;
        }
        self.encode_storage(encoder)?;
        self.encode_stalls(encoder)?;
        self.encode_listeners(encoder)
    }

    fn encode_storage(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let shard = |shard: &usize| label("shard", shard.to_string());
        family(
            encoder,
            "weir_storage_fsyncs",
            "fdatasyncs of segment files, by shard",
            COUNTER,
            self.io.iter().map(|(id, io)| (shard(id), io.fsyncs.count)),
        )?;
        let merged = |field: fn(&IoStats) -> &Latencies| {
            let mut all = Latencies::default();
            for (_, io) in &self.io {
                let one = field(io);
                all.count += one.count;
                all.micros_sum += one.micros_sum;
                for (sum, add) in all.buckets.iter_mut().zip(one.buckets) {
                    *sum += add;
                }
            }
            all
        };
        histogram(
            encoder,
            "weir_storage_fsync_latency_seconds",
            "Time an fdatasync of a segment file took, all shards",
            &merged(|io| &io.fsyncs),
        )?;
        histogram(
            encoder,
            "weir_storage_write_latency_seconds",
            "Time a write of appended data to a segment file took (O_DIRECT), all shards",
            &merged(|io| &io.writes),
        )?;
        // One counter summed over the shards.
        let total =
            |count: fn(&IoStats) -> u64| -> u64 { self.io.iter().map(|(_, io)| count(io)).sum() };
        let reads = |source: &'static str, count: fn(&IoStats) -> u64| {
            (label("source", source), total(count))
        };
        family(
            encoder,
            "weir_log_reads",
            "Reads of partition logs by where they were served from: the tail cache or disk",
            COUNTER,
            [
                reads("tail_cache", |io| io.tail_cache_reads),
                reads("disk", |io| io.disk_reads),
            ],
        )?;
        family(
            encoder,
            "weir_storage_reads",
            "Device reads of segment files (fetches, read-aheads, scans), all shards",
            COUNTER,
            [(Labels::new(), total(|io| io.device_reads))],
        )?;
        family(
            encoder,
            "weir_storage_read_bytes",
            "Bytes the device read for segment files, all shards",
            COUNTER,
            [(Labels::new(), total(|io| io.device_read_bytes))],
        )
    }

    fn encode_stalls(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let shard = |shard: &usize| label("shard", shard.to_string());
        family(
            encoder,
            "weir_reactor_stalls",
            "Times a shard ran its 50 ms watcher timer 10 ms or more late (a task did not yield)",
            COUNTER,
            self.stalls.iter().map(|(id, s)| (shard(id), s.stalls)),
        )?;
        family(
            encoder,
            "weir_reactor_stalled_seconds",
            "How late those timers ran, summed",
            COUNTER,
            self.stalls
                .iter()
                .map(|(id, s)| (shard(id), s.stalled_seconds)),
        )
    }

    fn encode_listeners(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let listener = |name: &str| label("listener", name.replace(' ', "_"));
        family(
            encoder,
            "weir_listener_connections",
            "Open connections, by listener",
            GAUGE,
            self.listeners
                .iter()
                .map(|(name, (_, open))| (listener(name), *open)),
        )?;
        family(
            encoder,
            "weir_listener_connections_accepted",
            "Connections accepted, by listener",
            COUNTER,
            self.listeners
                .iter()
                .map(|(name, (accepted, _))| (listener(name), *accepted)),
        )
    }

    fn encode_requests(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let handler = |key: &i16| {
            let name = self.api_names.get(key).cloned().unwrap_or_default();
            label("handler", name)
        };
        family(
            encoder,
            "weir_kafka_handler_requests",
            "Kafka requests answered (or completed, for acks=0), by API",
            COUNTER,
            self.apis
                .iter()
                .map(|(key, api)| (handler(key), api.requests)),
        )?;
        family(
            encoder,
            "weir_kafka_handler_received_bytes",
            "Bytes of Kafka requests (with their size prefix), by API",
            COUNTER,
            self.apis
                .iter()
                .map(|(key, api)| (handler(key), api.request_bytes)),
        )?;
        family(
            encoder,
            "weir_kafka_handler_sent_bytes",
            "Bytes of Kafka responses, by API",
            COUNTER,
            self.apis
                .iter()
                .map(|(key, api)| (handler(key), api.response_bytes)),
        )?;
        let mut metric = encoder.encode_descriptor(
            "weir_kafka_handler_latency_seconds",
            "Time from a Kafka request read to its answer written (including waits: long polls, acks=all), by API",
            None,
            MetricType::Histogram,
        )?;
        for (key, api) in &self.apis {
            let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS_MICROS
                .iter()
                .zip(api.buckets)
                .map(|(bound, count)| (*bound as f64 / 1e6, count))
                .collect();
            metric
                .encode_family(&handler(key))?
                .encode_histogram::<NoLabelSet>(
                    api.latency_micros_sum as f64 / 1e6,
                    api.requests,
                    &buckets,
                    None,
                )?;
        }
        Ok(())
    }

    fn encode_errors(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let errors = [("produce", 0), ("fetch", 1)]
            .into_iter()
            .flat_map(|(op, index)| {
                self.error_names
                    .iter()
                    .zip(self.partition_errors[index])
                    .filter(|(_, count)| *count > 0)
                    .map(move |(error, count)| {
                        let labels =
                            vec![("request", op.to_string()), ("error", (*error).to_string())];
                        (labels, count)
                    })
            });
        // Two errors map to one Kafka code: merge them.
        let mut merged: BTreeMap<Labels, u64> = BTreeMap::new();
        for (labels, count) in errors {
            *merged.entry(labels).or_default() += count;
        }
        family(
            encoder,
            "weir_kafka_partition_errors",
            "Produced or fetched partitions answered with an error, by Kafka error code name",
            COUNTER,
            merged,
        )
    }

    fn encode_topics(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let named = || self.topics.iter().take(self.objects_max);
        let topic = |name: &String| label("topic", name.clone());
        family(
            encoder,
            "weir_kafka_records_produced",
            "Records appended, by topic (Kafka produce and AMQP publish alike)",
            COUNTER,
            named().map(|(name, stats)| (topic(name), stats.produced_records)),
        )?;
        family(
            encoder,
            "weir_kafka_records_fetched",
            "Records read out by fetches (Kafka Fetch and ShareFetch), by topic",
            COUNTER,
            named().map(|(name, stats)| (topic(name), stats.fetched_records)),
        )?;
        let bytes = named().flat_map(|(name, stats)| {
            [
                ("produce", stats.produced_bytes),
                ("consume", stats.fetched_bytes),
            ]
            .map(|(request, bytes)| {
                (
                    vec![("topic", name.clone()), ("request", request.to_string())],
                    bytes,
                )
            })
        });
        family(
            encoder,
            "weir_kafka_request_bytes",
            "Record bytes produced to and fetched from a topic (request=produce|consume)",
            COUNTER,
            bytes,
        )
    }

    fn encode_totals(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let totals = self.topics.values().fold([0u64; 4], |mut sum, stats| {
            sum[0] += stats.produced_records;
            sum[1] += stats.fetched_records;
            sum[2] += stats.produced_bytes;
            sum[3] += stats.fetched_bytes;
            sum
        });
        family(
            encoder,
            "weir_records_produced",
            "Records appended, all topics",
            COUNTER,
            [(none(), totals[0])],
        )?;
        family(
            encoder,
            "weir_records_fetched",
            "Records read out by fetches, all topics",
            COUNTER,
            [(none(), totals[1])],
        )?;
        family(
            encoder,
            "weir_bytes_produced",
            "Record bytes appended, all topics",
            COUNTER,
            [(none(), totals[2])],
        )?;
        family(
            encoder,
            "weir_bytes_fetched",
            "Record bytes read out by fetches, all topics",
            COUNTER,
            [(none(), totals[3])],
        )
    }

    fn encode_partitions(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let mut partitions: Vec<(&String, &PartitionOffsets)> = self
            .partitions
            .iter()
            .flat_map(|(topic, partitions)| partitions.iter().map(move |p| (topic, p)))
            .collect();
        partitions.sort_by_key(|(topic, p)| (*topic, p.partition));
        partitions.truncate(self.objects_max);
        let labels = |topic: &String, p: &PartitionOffsets| {
            vec![
                ("topic", topic.clone()),
                ("partition", p.partition.to_string()),
            ]
        };
        family(
            encoder,
            "weir_kafka_max_offset",
            "High watermark (the next offset a reader will see) of a partition",
            GAUGE,
            partitions
                .iter()
                .map(|(topic, p)| (labels(topic, p), p.high_watermark)),
        )?;
        family(
            encoder,
            "weir_kafka_log_start_offset",
            "First offset still in a partition's log (after retention and DeleteRecords)",
            GAUGE,
            partitions
                .iter()
                .map(|(topic, p)| (labels(topic, p), p.log_start_offset)),
        )?;
        family(
            encoder,
            "weir_kafka_partitions",
            "Partitions of a topic",
            GAUGE,
            self.partitions
                .iter()
                .take(self.objects_max)
                .map(|(topic, p)| (label("topic", topic.clone()), p.len() as u64)),
        )?;
        self.encode_lag(encoder)?;
        self.encode_cluster(encoder)
    }

    /// Classic groups' committed offsets and their lag behind the high watermark, per partition
    /// (up to `objects_max` rows) and per group (Redpanda's `consumer_group_lag_sum` / `_max`).
    fn encode_lag(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let high_watermarks: HashMap<(&str, i32), i64> = self
            .partitions
            .iter()
            .flat_map(|(topic, partitions)| {
                partitions
                    .iter()
                    .map(move |p| ((topic.as_str(), p.partition), p.high_watermark))
            })
            .collect();
        let mut rows: Vec<(&GroupOffset, Option<i64>)> = self
            .group_offsets
            .iter()
            .map(|o| {
                let hwm = high_watermarks.get(&(o.topic.as_str(), o.partition));
                (o, hwm.map(|hwm| (hwm - o.offset).max(0)))
            })
            .collect();
        rows.sort_by(|(a, _), (b, _)| {
            (&a.group, &a.topic, a.partition).cmp(&(&b.group, &b.topic, b.partition))
        });
        let labels = |o: &GroupOffset| {
            vec![
                ("group", o.group.clone()),
                ("topic", o.topic.clone()),
                ("partition", o.partition.to_string()),
            ]
        };
        let shown = &rows[..rows.len().min(self.objects_max)];
        family(
            encoder,
            "weir_kafka_consumer_group_committed_offset",
            "Offset a classic consumer group committed for a partition",
            GAUGE,
            shown.iter().map(|(o, _)| (labels(o), o.offset)),
        )?;
        family(
            encoder,
            "weir_kafka_consumer_group_lag",
            "Records between a group's committed offset and the partition's high watermark",
            GAUGE,
            shown
                .iter()
                .filter_map(|(o, lag)| Some((labels(o), (*lag)?))),
        )?;
        let mut groups: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
        for (o, lag) in &rows {
            let entry = groups.entry(o.group.as_str()).or_default();
            entry.0 += lag.unwrap_or(0);
            entry.1 = entry.1.max(lag.unwrap_or(0));
        }
        let groups: Vec<_> = groups.into_iter().take(self.objects_max).collect();
        family(
            encoder,
            "weir_kafka_consumer_group_lag_sum",
            "A classic group's lag summed over its partitions",
            GAUGE,
            groups
                .iter()
                .map(|(g, (sum, _))| (label("group", *g), *sum)),
        )?;
        family(
            encoder,
            "weir_kafka_consumer_group_lag_max",
            "A classic group's largest lag on one partition",
            GAUGE,
            groups
                .iter()
                .map(|(g, (_, max))| (label("group", *g), *max)),
        )
    }

    fn encode_cluster(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        family(
            encoder,
            "weir_cluster_topics",
            "Topics (AMQP queues are topics too)",
            GAUGE,
            [(none(), self.partitions.len() as u64)],
        )?;
        family(
            encoder,
            "weir_cluster_partitions",
            "Partitions of all topics",
            GAUGE,
            [(
                none(),
                self.partitions.values().map(Vec::len).sum::<usize>() as u64,
            )],
        )?;
        family(
            encoder,
            "weir_kafka_consumer_groups",
            "Classic consumer groups the broker coordinates",
            GAUGE,
            [(none(), self.consumer_groups)],
        )?;
        family(
            encoder,
            "weir_kafka_share_groups",
            "Share groups (KIP-932) the broker coordinates",
            GAUGE,
            [(none(), self.share_groups)],
        )
    }

    fn encode_amqp(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let (accepted, open) = self.listeners.get("amqp").copied().unwrap_or_default();
        family(
            encoder,
            "rabbitmq_connections",
            "AMQP connections open",
            GAUGE,
            [(none(), open)],
        )?;
        family(
            encoder,
            "rabbitmq_connections_opened",
            "AMQP connections accepted",
            COUNTER,
            [(none(), accepted)],
        )?;
        family(
            encoder,
            "rabbitmq_channels",
            "AMQP channels open",
            GAUGE,
            [(none(), self.amqp_channels)],
        )?;
        family(
            encoder,
            "rabbitmq_consumers",
            "AMQP consumers on all queues",
            GAUGE,
            [(
                none(),
                self.queues.values().map(|q| q.consumers).sum::<u64>(),
            )],
        )?;
        family(
            encoder,
            "rabbitmq_queues",
            "AMQP queues (streams not counted)",
            GAUGE,
            [(none(), self.queues.len() as u64)],
        )
    }

    fn encode_queues(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        type Field = fn(&QueueStats) -> u64;
        let families: [(&str, &str, MetricType, Field); 7] = [
            (
                "rabbitmq_queue_messages_ready",
                "Messages ready to be delivered",
                GAUGE,
                |q| q.ready,
            ),
            (
                "rabbitmq_queue_messages_unacked",
                "Messages delivered and not yet acknowledged",
                GAUGE,
                |q| q.unacked,
            ),
            (
                "rabbitmq_queue_messages",
                "Messages ready and unacknowledged",
                GAUGE,
                |q| q.ready + q.unacked,
            ),
            (
                "rabbitmq_queue_consumers",
                "Consumers of the queue",
                GAUGE,
                |q| q.consumers,
            ),
            (
                "rabbitmq_queue_messages_published",
                "Messages taken into the queue (AMQP publishes and Kafka records alike)",
                COUNTER,
                |q| q.published,
            ),
            (
                "rabbitmq_queue_messages_delivered",
                "Messages handed to consumers or basic.get",
                COUNTER,
                |q| q.delivered,
            ),
            (
                "rabbitmq_queue_messages_acked",
                "Messages acknowledged by consumers",
                COUNTER,
                |q| q.acked,
            ),
        ];
        for (name, help, kind, field) in families {
            let rows = self.queues.values().take(self.objects_max).map(|queue| {
                let labels = vec![("vhost", "/".to_string()), ("queue", queue.name.clone())];
                (labels, field(queue))
            });
            family(encoder, name, help, kind, rows)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static PROTOCOLS: Protocols = Protocols {
        api_name: |key| format!("api{key}"),
        error_name: |_| "SOME_ERROR",
        queues: Vec::new,
        resident_bytes: || Some(1),
    };

    #[test]
    fn renders_counters_histograms_and_caps() {
        let mut snapshot = ShardSnapshot::default();
        let mut api = ApiStats {
            requests: 2,
            latency_micros_sum: 3000,
            ..ApiStats::default()
        };
        api.buckets[3] = 2;
        snapshot.apis.push((0, api));
        for name in ["a", "b"] {
            snapshot.topics.push((
                name.to_string(),
                TopicStats {
                    produced_records: 5,
                    ..TopicStats::default()
                },
            ));
        }
        let text = text(vec![snapshot], 1, &PROTOCOLS);
        assert!(text.contains("weir_kafka_handler_requests_total{handler=\"api0\"} 2\n"));
        let bucket = "weir_kafka_handler_latency_seconds_bucket{handler=\"api0\",le=\"0.001\"} 2\n";
        assert!(text.contains(bucket), "{text}");
        assert!(text.contains("weir_kafka_records_produced_total{topic=\"a\"} 5\n"));
        assert!(!text.contains("topic=\"b\""));
        assert!(text.contains("weir_records_produced_total 10\n"));
        assert!(text.contains("weir_metrics_objects_omitted{kind=\"topic\"} 1\n"));
    }
}
