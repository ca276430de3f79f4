//! `weir`: thin entry point; args, shards and the network live in the library.

/// Survives hostile array lengths in requests (see `weir_server::alloc`).
#[global_allocator]
static ALLOCATOR: weir_server::alloc::BrokerAllocator = weir_server::alloc::BrokerAllocator;

fn main() -> anyhow::Result<()> {
    weir_server::main_with_args()
}
