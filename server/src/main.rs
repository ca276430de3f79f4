//! `weir`: thin entry point; args, shards and the network live in the library.

/// mimalloc rather than glibc's malloc: messages are freed in runs (a `basic.ack multiple`, a
/// segment's cache evicted) larger than glibc's per-thread cache, after which glibc's allocations
/// all take its slow path (`_int_malloc`, a fifth of a shard's time under AMQP load).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    weir_server::main_with_args()
}
