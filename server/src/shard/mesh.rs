//! The channel mesh between shards (core: imports no protocol): one bounded MPSC inbox per shard
//! for partition work, group requests and metadata broadcasts, plus the controller inbox on shard 0. Every message is `Send` (payloads as
//! `Bytes`, produced records as the request's own `BytesMut`, moved); replies travel on a one-slot
//! channel created per request.
//!
//! Ordering: messages from one sender to one inbox arrive in send order, and the owner applies
//! produce appends in arrival order, so one connection's pipelined produce requests stay ordered.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::groups::GroupJob;
use crate::metadata::Metadata;
use crate::partition::{FetchOutcome, OffsetOutcome, ProduceOutcome};
use crate::shard::controller::TopicError;
use crate::shard::{Shard, ShardId};

/// Bound of each shard inbox: a full inbox is backpressure on the sending connection.
pub const INBOX_CAPACITY: usize = 4096;

pub type Reply<T> = flume::Sender<T>;

pub fn reply_channel<T>() -> (flume::Sender<T>, flume::Receiver<T>) {
    flume::bounded(1)
}

/// Runs `work` on shard `owner` (at once when that is this shard) and answers what it returns:
/// for state that is only ever touched on its own shard (a share group's, a thread's heap).
/// `None` when that shard no longer takes work (it is stopping).
pub async fn on_shard<T, F>(shard: &Rc<Shard>, owner: ShardId, work: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce(&Rc<Shard>) -> T + Send + 'static,
{
    if owner == shard.id {
        return Some(work(shard));
    }
    let (reply, answer) = reply_channel();
    let job = Job::Run(Box::new(move |shard| {
        // A fresh one-slot channel: this send never waits.
        let _ = reply.try_send(work(&shard));
    }));
    shard.mesh.inbox(owner).send_async(job).await.ok()?;
    answer.recv_async().await.ok()
}

/// Work a shard does for another shard.
pub enum Job {
    Metadata {
        metadata: Arc<Metadata>,
        done: Reply<()>,
    },
    Produce {
        topic: String,
        partition: i32,
        /// The request's own buffer (see `partition::append`): moved, not copied.
        records: Option<BytesMut>,
        /// Answer once durable (true) or once written (false).
        durable: bool,
        reply: Reply<ProduceOutcome>,
    },
    Fetch {
        topic: String,
        partition: i32,
        offset: i64,
        max_bytes: usize,
        reply: Reply<FetchOutcome<Bytes>>,
    },
    WaitForData {
        topic: String,
        partition: i32,
        offset: i64,
        wait: Duration,
        reply: Reply<()>,
    },
    ListOffsets {
        topic: String,
        partition: i32,
        timestamp: i64,
        reply: Reply<OffsetOutcome>,
    },
    Group(Box<GroupJob>),
    /// Work a protocol runs on the shard that owns what it touches (an AMQP queue's deliveries
    /// and acknowledgements), in arrival order, on that shard's job loop. The closure must not
    /// block: anything that waits spawns a task. Keeps the mesh protocol-free: the core runs the
    /// closure without knowing what it does.
    Run(Box<dyn FnOnce(Rc<Shard>) + Send>),
    /// Every shard has recovered and bound its listeners: start accepting (the start barrier,
    /// see `shard::serve`).
    Open,
    Shutdown,
}

/// A topic to create, as the controller receives it.
pub struct NewTopic {
    pub name: String,
    /// -1 = the broker default `num.partitions`.
    pub partitions: i32,
    pub configs: BTreeMap<String, String>,
}

/// One config change of an AlterConfigs / IncrementalAlterConfigs resource.
pub struct ConfigChange {
    pub topic: String,
    /// AlterConfigs replaces the whole set; IncrementalAlterConfigs edits it.
    pub replace_all: bool,
    /// (name, Some(value) = set, None = delete)
    pub edits: Vec<(String, Option<String>)>,
    /// Operations on `weir.*` routing configs (exchanges and bindings), applied by the
    /// controller's routing table rather than stored as topic configs.
    pub routing: Vec<(String, crate::routing::config::ConfigOperation)>,
}

/// One group's config change: IncrementalAlterConfigs / AlterConfigs on resource type GROUP.
pub struct GroupConfigChange {
    pub group: String,
    /// AlterConfigs replaces the whole set; IncrementalAlterConfigs edits it.
    pub replace_all: bool,
    /// (name, Some(value) = set, None = delete)
    pub edits: Vec<(String, Option<String>)>,
}

/// Per-user result of a credential change: (user, outcome).
pub type UserResults = Vec<(String, Result<(), crate::security::users::UserError>)>;

/// Per-item result of a controller change: (name, outcome).
pub type ItemResults = Vec<(String, Result<(), TopicError>)>;

/// Work for the controller (shard 0): every metadata change goes through here, one at a time.
pub enum ControlJob {
    CreateTopics {
        topics: Vec<NewTopic>,
        validate_only: bool,
        reply: Reply<ItemResults>,
    },
    DeleteTopics {
        names: Vec<String>,
        reply: Reply<ItemResults>,
    },
    CreatePartitions {
        items: Vec<(String, i32)>,
        validate_only: bool,
        reply: Reply<ItemResults>,
    },
    AlterConfigs {
        changes: Vec<ConfigChange>,
        validate_only: bool,
        reply: Reply<ItemResults>,
    },
    /// Group configs (`shares::group_configs`), validated and stored in the metadata.
    AlterGroupConfigs {
        changes: Vec<GroupConfigChange>,
        validate_only: bool,
        reply: Reply<ItemResults>,
    },
    AllocateProducerId {
        reply: Reply<Result<i64, TopicError>>,
    },
    /// SCRAM credential changes (`security::users::apply`), per user all or nothing.
    AlterUsers {
        changes: Vec<crate::security::users::UserChange>,
        reply: Reply<UserResults>,
    },
    /// CreateAcls / DeleteAcls: bindings added (each already valid), then the bindings each
    /// filter matches removed; the reply is the removed bindings per filter.
    AlterAcls {
        create: Vec<crate::security::acl::AclBinding>,
        delete: Vec<crate::security::acl::AclFilter>,
        reply: Reply<Vec<Vec<crate::security::acl::AclBinding>>>,
    },
    /// Routing changes (exchanges, bindings) applied all or nothing, as a protocol's own
    /// declarations (AMQP's exchange.declare, queue.bind, ...) ask.
    Routing {
        changes: Vec<crate::routing::table::Change>,
        reply: Reply<Result<(), TopicError>>,
    },
}

/// Senders to every shard's inbox and to the controller; cloned into every shard.
#[derive(Clone)]
pub struct Mesh {
    pub shards: Vec<flume::Sender<Job>>,
    pub controller: flume::Sender<ControlJob>,
}

impl Mesh {
    /// The inbox of shard `shard`.
    pub fn inbox(&self, shard: ShardId) -> &flume::Sender<Job> {
        &self.shards[shard.index()]
    }
}

/// Receivers of one shard, handed to it at start.
pub struct Inbox {
    pub jobs: flume::Receiver<Job>,
    pub control: Option<flume::Receiver<ControlJob>>,
}

/// Builds the mesh for `count` shards: the senders every shard shares, and each shard's inbox.
pub fn build(count: usize) -> (Mesh, Vec<Inbox>) {
    let (control_tx, control_rx) = flume::bounded(INBOX_CAPACITY);
    let mut senders = Vec::with_capacity(count);
    let mut inboxes = Vec::with_capacity(count);
    let mut control_rx = Some(control_rx);
    for _ in 0..count {
        let (tx, rx) = flume::bounded(INBOX_CAPACITY);
        senders.push(tx);
        inboxes.push(Inbox {
            jobs: rx,
            control: control_rx.take(),
        });
    }
    (
        Mesh {
            shards: senders,
            controller: control_tx,
        },
        inboxes,
    )
}
