//! `weir`: thin entry point; args, shards and the network live in the library.

fn main() -> anyhow::Result<()> {
    weir_server::main_with_args()
}
