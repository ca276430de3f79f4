//! The broker's allocator is mimalloc (`main.rs` sets it; this library's own tests keep the
//! system allocator, where the call below touches only mimalloc's unused state).
//!
//! mimalloc returns freed memory to the OS lazily: a freed range is purged (`MADV_DONTNEED`) only
//! once its purge delay (1 s) has passed *and* the thread that owns it next calls into the
//! allocator. A shard that goes quiet after a burst (1,000 connections closed, a queue drained)
//! makes no more calls, so its freed memory would stay resident until the next burst. Each shard
//! therefore collects once a second: cheap when there is nothing to do, and it bounds how long
//! freed memory stays counted in the broker's RSS to about two seconds.

use std::rc::Rc;
use std::time::Duration;

use crate::shard::mesh::on_shard;
use crate::shard::{Shard, ShardId};

/// How often a shard hands its expired free memory back (mimalloc's purge delay is 1 s).
const COLLECT_INTERVAL: Duration = Duration::from_secs(1);

/// Starts the shard's collector; it stops at shutdown.
pub fn spawn_collector(shard: &Rc<Shard>) {
    let shard = shard.clone();
    glommio::spawn_local(async move {
        loop {
            futures_lite::future::or(
                glommio::timer::sleep(COLLECT_INTERVAL),
                shard.shutdown.wait(),
            )
            .await;
            if shard.shutdown.is_fired() {
                return;
            }
            // SAFETY: mi_collect takes no pointers; it visits only the calling thread's heap
            // and the arenas' purge lists, which mimalloc synchronises itself.
            unsafe { libmimalloc_sys::mi_collect(false) };
        }
    })
    .detach();
}

/// Hands every shard's free memory back to the OS now, purge delay or not, and returns once
/// all have: the memory alarm calls it before it raises, so that the RSS it compares is live
/// memory and not a burst's garbage (`amqp/alarm/memory.rs`). Each heap is only ever collected
/// by its own thread.
pub async fn collect_everywhere(shard: &Rc<Shard>) {
    for index in 0..shard.mesh.shards.len() {
        // SAFETY: as in `spawn_collector`; `true` also purges ranges still in their delay.
        let collect = |_: &Rc<Shard>| unsafe { libmimalloc_sys::mi_collect(true) };
        // A stopping shard answers nothing; its heap goes with it.
        let _ = on_shard(shard, ShardId(index), collect).await;
    }
}
